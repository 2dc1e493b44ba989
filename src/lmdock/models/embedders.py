"""One embeddings context per loaded model, created on first use and closed once the model unloads."""

from __future__ import annotations

import asyncio
import threading

from lmdock.engine.embeddings import Embedder
from lmdock.models.loaded import LoadedModel


class Embedders:
    """Follows the manager's loaded models: an embedder lives only while its model is loaded."""

    def __init__(self, n_threads: int) -> None:
        self.n_threads = n_threads
        self._by_key: dict[str, tuple[LoadedModel, Embedder]] = {}
        self._lock = threading.Lock()

    async def get(self, model: LoadedModel, loaded: dict[str, LoadedModel]) -> Embedder:
        """The embedder of a loaded model; also closes those of models unloaded since the last call."""
        return await asyncio.to_thread(self._get, model, dict(loaded))

    def _get(self, model: LoadedModel, loaded: dict[str, LoadedModel]) -> Embedder:
        with self._lock:
            for key, (owner, embedder) in list(self._by_key.items()):
                if loaded.get(key) is not owner:  # unloaded, or reloaded with other settings
                    del self._by_key[key]
                    embedder.close()  # waits for an embedding still running on it
            entry = self._by_key.get(model.key)
            if entry is None:
                entry = (model, Embedder(model.record.path, n_threads=self.n_threads))
                self._by_key[model.key] = entry
            return entry[1]

    def close(self) -> None:
        with self._lock:
            for _, embedder in self._by_key.values():
                embedder.close()
            self._by_key.clear()
