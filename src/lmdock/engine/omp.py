"""Keep the engine thread the only thread of a process that holds an OpenMP team of llama.cpp's.

ggml's CPU backend runs each graph in an OpenMP parallel region and syncs its threads at a barrier after
every node (a few hundred per decode step). libgomp keeps a pool of team threads for every thread that
ever started a parallel region, until that thread exits, and counts them all. Once the pools together
hold more threads than the process has CPUs, a thread waiting at a barrier spins about 100 times instead
of 300,000 before it sleeps on a futex (libgomp's `do_spin`, "throttled" spinning), so nearly every
barrier of every step becomes a sleep and a wake-up: a single-stream step of the default model took
41 ms in the worker against 25 ms in llama.cpp alone, with ~180 voluntary context switches per step on
each llama.cpp thread. The warm-up (worker main thread) and embeddings (a call thread) each left such a
pool behind. Work of that kind runs through `on_own_thread`: the thread ends with the work, and its pool
with it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def on_own_thread(work: Callable[[], T], name: str) -> T:
    """Run `work` on a new thread that ends when it returns; return its result or raise its exception."""
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(work())
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]
