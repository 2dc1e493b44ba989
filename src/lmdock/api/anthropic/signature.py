"""Thinking-block signatures: an HMAC of the thinking text under a per-installation server key.

Clients must pass thinking blocks back unmodified; the signature lets lmdock tell its own blocks from
edited or foreign ones (those are still accepted, but their text is not fed back to the model).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from functools import lru_cache

from lmdock.config import lmdock_home


@lru_cache(maxsize=1)
def _server_key() -> bytes:
    env = os.environ.get("LMDOCK_SIGNING_KEY")
    if env:
        return env.encode()
    path = lmdock_home() / "signing.key"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(32)
        path.write_bytes(key)
        path.chmod(0o600)
        return key


def sign_thinking(text: str) -> str:
    mac = hmac.new(_server_key(), text.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(b"lmdock1" + mac).decode()


def verify_thinking(text: str, signature: str) -> bool:
    return hmac.compare_digest(sign_thinking(text), signature)
