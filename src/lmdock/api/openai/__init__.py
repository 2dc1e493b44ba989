"""The OpenAI-compatible API: chat completions, completions and embeddings on the same core and engine."""

from lmdock.api.openai.routes import router

__all__ = ["router"]
