"""HTTP transport: the FastAPI app, middleware, error envelopes."""

from lmdock.server.app import create_app

__all__ = ["create_app"]
