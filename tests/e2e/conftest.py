"""Clients of the shared server, built from the official SDKs."""

from __future__ import annotations

import anthropic
import pytest

from tests.conftest import Server


@pytest.fixture(scope="session")
def client(server: Server) -> anthropic.Anthropic:
    """The official SDK, validating every response strictly against its own types."""
    return anthropic.Anthropic(
        base_url=server.base_url,
        api_key="unused",
        max_retries=0,
        _strict_response_validation=True,
        timeout=300,
    )
