"""The supervisor's restart policy without a process: when a crashed worker starts again, when lmdock
gives up on the model."""

from __future__ import annotations

from lmdock.engine.crash_policy import CrashPolicy


def test_a_worker_that_crashes_after_it_was_ready_is_restarted_every_time_while_rare():
    policy = CrashPolicy(window=60, limit=5)
    for i in range(10):
        now = i * 100.0  # far apart: the window never holds more than one
        assert policy.crashed(now, was_ready=True) is None
        policy.ready()


def test_one_death_before_ready_is_forgiven_two_in_a_row_are_not():
    policy = CrashPolicy()
    assert policy.crashed(0.0, was_ready=False) is None  # the first start died while loading: retry
    assert policy.crashed(1.0, was_ready=False) == "again while loading or on its first decode"


def test_a_crash_after_ready_then_a_death_while_restarting_gives_up():
    policy = CrashPolicy()
    policy.ready()
    assert policy.crashed(0.0, was_ready=True) is None  # strike one: restart
    assert policy.crashed(5.0, was_ready=False) == "again while loading or on its first decode"


def test_a_worker_that_becomes_ready_in_between_clears_its_strikes():
    policy = CrashPolicy()
    assert policy.crashed(0.0, was_ready=False) is None
    policy.ready()
    assert policy.crashed(100.0, was_ready=True) is None
    assert policy.strikes == 1


def test_too_many_crashes_within_the_window_give_up_however_far_each_got():
    policy = CrashPolicy(window=60, limit=5)
    for i in range(4):
        assert policy.crashed(i * 10.0, was_ready=True) is None
        policy.ready()
    assert policy.crashed(40.0, was_ready=True) == "too often"


def test_crashes_older_than_the_window_do_not_count():
    policy = CrashPolicy(window=60, limit=5)
    for t in (0.0, 10.0, 20.0, 30.0):
        assert policy.crashed(t, was_ready=True) is None
        policy.ready()
    assert policy.crashed(75.0, was_ready=True) is None  # 0 and 10 have left the window: 3 in it
    policy.ready()
    assert policy.crashed(80.0, was_ready=True) is None  # 20, 30, 75, 80
    policy.ready()
    assert policy.crashed(85.0, was_ready=True) is None  # 30, 75, 80, 85 (20 has left)
    policy.ready()
    assert policy.crashed(86.0, was_ready=True) == "too often"  # 30, 75, 80, 85, 86
