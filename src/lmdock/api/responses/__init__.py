"""The OpenAI Responses API (/v1/responses) on the same core, chat layer and engine as the other APIs."""

from lmdock.api.responses.routes import router

__all__ = ["router"]
