"""Who a request acts for: the owner of the batches and stored responses it creates and may read.

An owner is a digest of the API key a request offered (never the key itself, so the database holds no
secret), or None when the server has no API keys (one user: everything is theirs). An admin key
(`--admin-key`) sees and manages everything.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


def key_owner(key: bytes) -> str:
    """The stored owner of what a key creates: stable across restarts, not the key."""
    return hashlib.sha256(b"lmdock-owner\0" + key).hexdigest()[:32]


@dataclass(frozen=True)
class Principal:
    owner: str | None = None
    admin: bool = False

    def can_see(self, owner: str | None) -> bool:
        return self.admin or owner == self.owner


ANONYMOUS = Principal()
