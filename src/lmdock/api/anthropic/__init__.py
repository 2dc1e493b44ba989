"""The Anthropic Messages API: request parsing, conversion to core, response and SSE encoding."""

from lmdock.api.anthropic.routes import router

__all__ = ["router"]
