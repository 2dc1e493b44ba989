"""The worker's state as /metrics shows it stays current while a long prompt is read (issue 22): the
worker sends its counters during a prefill too, not only with generated tokens."""

from __future__ import annotations

import random
import threading
import time

import httpx

from tests.conftest import Server

METRIC = "lmdock_prompt_tokens_processed_total"


def _processed(server: Server) -> float:
    lines = httpx.get(f"{server.base_url}/metrics").text.splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(METRIC + "{"))


def test_prompt_progress_shows_during_a_long_prefill(server: Server):
    words = random.Random().choices(["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa"], k=4000)
    prompt = " ".join(words)  # a prompt no cache holds: thousands of tokens to read, in many steps
    before = _processed(server)
    done = threading.Event()

    def ask() -> None:
        try:
            server.anthropic().messages.create(
                model="default", max_tokens=1, messages=[{"role": "user", "content": prompt}]
            )
        finally:
            done.set()

    worker = threading.Thread(target=ask)
    worker.start()
    seen = set()
    while not done.is_set():
        seen.add(_processed(server))
        time.sleep(0.05)
    worker.join()
    after = _processed(server)
    assert after - before > 3000
    between = {v for v in seen if before < v < after}
    assert between, (
        f"/metrics only ever showed {sorted(seen)} while {after - before:g} prompt tokens were read"
    )
