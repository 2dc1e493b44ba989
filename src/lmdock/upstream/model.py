"""An upstream model as the manager hands it to the API layers: a `ServedModel` (models/served.py) like a
local one, plus what listings and `lmdock ps` show about its nodes."""

from __future__ import annotations

import time
from typing import Any

from lmdock.upstream.config import UpstreamSpec
from lmdock.upstream.session import UpstreamSession
from lmdock.upstream.transport import Upstream


class UpstreamModel:
    def __init__(self, spec: UpstreamSpec) -> None:
        self.spec = spec
        self.upstream = Upstream(spec)
        self.session = UpstreamSession(self.upstream)
        self.loaded_at = time.time()
        self.last_used = time.monotonic()

    @property
    def key(self) -> str:
        return self.spec.name

    @property
    def n_ctx(self) -> int:
        return self.upstream.n_ctx or 0

    @property
    def busy(self) -> bool:
        return any(n.outstanding for n in self.upstream.nodes)

    @property
    def crashes(self) -> int:
        """An upstream node's failures are its own (see `status()`); no local engine crashes."""
        return 0

    @property
    def embedder(self) -> None:
        """Upstream engines embed nothing here (`/v1/embeddings` says so)."""
        return None

    def touch(self) -> None:
        self.last_used = time.monotonic()

    @property
    def healthy_nodes(self) -> int:
        return sum(n.healthy for n in self.upstream.nodes)

    def status(self, *, urls: bool = True) -> dict[str, Any]:
        """Nodes and health, for /api/v1/models, /health and `lmdock ps`: never a credential, and
        without node URLs when `urls` is false (the open /health of a server with an API key)."""
        info = self.upstream.info
        return {
            "kind": info.kind,
            "engine": info.flavor,
            "prompt": self.spec.prompt,
            "served_model": self.upstream.served_model,
            "healthy_nodes": self.healthy_nodes,
            "nodes": [
                {
                    **({"url": n.url} if urls else {}),
                    "state": n.state(),
                    "outstanding": n.outstanding,
                    "requests": n.stats.requests,
                    "errors": n.stats.errors,
                    "last_error": n.last_error,
                }
                for n in self.upstream.nodes
            ],
        }


class UpstreamRegistry:
    """The configured upstream models, by lower-cased name."""

    def __init__(self, specs: list[UpstreamSpec]) -> None:
        self.models: dict[str, UpstreamModel] = {s.key: UpstreamModel(s) for s in specs}

    def get(self, name: str) -> UpstreamModel | None:
        return self.models.get(name.strip().lower())

    def __iter__(self):
        return iter(self.models.values())

    def __len__(self) -> int:
        return len(self.models)

    def start(self) -> None:
        for m in self.models.values():
            m.upstream.start()

    async def close(self) -> None:
        for m in self.models.values():
            await m.upstream.close()
            await m.session.close()
