"""engine/omp.on_own_thread: the work runs on a thread of its own that is gone afterwards."""

from __future__ import annotations

import threading

import pytest

from lmdock.engine.omp import on_own_thread


def test_runs_on_a_thread_that_ends_with_the_work():
    ran_on: list[threading.Thread] = []

    def work() -> int:
        ran_on.append(threading.current_thread())
        return 42

    assert on_own_thread(work, "probe") == 42
    assert ran_on[0] is not threading.current_thread()
    assert ran_on[0].name == "probe"
    assert not ran_on[0].is_alive()


def test_the_work_s_exception_reaches_the_caller():
    def work() -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError, match="missing"):
        on_own_thread(work, "probe")
