"""llama.cpp computes only on the engine thread, or on threads that end with their work (engine/omp.py):
libgomp keeps an OpenMP pool for every thread that ever ran a graph, and pools beyond the CPU count turn
every barrier of every decode step into a futex sleep."""

from __future__ import annotations

import asyncio
import threading

import llama_cpp as L

from lmdock.engine import make_client
from lmdock.engine.inproc import InProcessClient
from tests.engine.conftest import chatml, engine_spec, generate


def test_no_thread_but_the_engine_s_keeps_having_computed(monkeypatch):
    callers: set[threading.Thread] = set()

    def recording(real):
        def call(*args):
            callers.add(threading.current_thread())
            return real(*args)

        return call

    monkeypatch.setattr(L, "llama_decode", recording(L.llama_decode))
    monkeypatch.setattr(L, "llama_encode", recording(L.llama_encode))

    async def scenario() -> list[str]:
        # One event loop throughout: its executor threads (which run start() and embed()) stay alive.
        client = make_client(engine_spec(parallel=1, n_ctx=2048), in_process=True)
        assert isinstance(client, InProcessClient)
        await client.start()
        try:
            await generate(client, chatml("Say hi."), max_tokens=4)
            await client.embed([client.vocab.tokenize("hello world")])
            engine_thread = client.engine._thread
            assert engine_thread in callers and len(callers) > 1  # the warm-up and the embedding too
            return [t.name for t in callers if t is not engine_thread and t.is_alive()]
        finally:
            await client.close(0)

    assert asyncio.run(scenario()) == []
