"""Thinking-block signatures: an HMAC of the thinking text under a per-installation server key.

Clients must pass thinking blocks back unmodified; the signature lets lmdock tell its own blocks from
edited or foreign ones (those are still accepted, but their text is not fed back to the model).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
from functools import lru_cache
from pathlib import Path

from lmdock.core.config import lmdock_home, signing_key_override

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _server_key() -> bytes:
    override = signing_key_override()
    if override:
        return override
    path = lmdock_home() / "signing.key"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    try:
        return _create_key(path)
    except OSError as exc:  # e.g. a full disk: sign with a key of this process (it does not outlive it)
        log.warning(
            "thinking signatures: cannot save %s (%s); using a key that lasts until restart", path, exc
        )
        return secrets.token_bytes(32)


def _create_key(path: Path) -> bytes:
    """Write a new key readable by the owner only from its first byte: a 0600 temporary file, then a
    hard link to the final name, which fails if another process made the key first (then use theirs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(key)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return path.read_bytes()
        return key
    finally:
        tmp.unlink(missing_ok=True)


def sign_thinking(text: str) -> str:
    mac = hmac.new(_server_key(), text.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(b"lmdock1" + mac).decode()


def verify_thinking(text: str, signature: str) -> bool:
    """Whether `signature` is lmdock's for `text` (bytes compared: a str of non-ASCII would raise)."""
    return hmac.compare_digest(sign_thinking(text).encode(), signature.encode("utf-8", "replace"))
