"""The worker boundary without a model: error transport, exit descriptions, the repack verdict store."""

from __future__ import annotations

import pickle
import subprocess

import pytest

from lmdock.core import errors
from lmdock.core.kv_cache import KvCacheConfig
from lmdock.engine import cpu_check
from lmdock.engine.ipc import decode_error, encode_error
from lmdock.engine.proxy import describe_exit
from lmdock.engine.types import Finished, TextChunk, TokenLogprob


@pytest.mark.parametrize(
    "exc",
    [
        errors.PromptTooLong(9000, 8192),
        errors.Overloaded("Overloaded: the request queue is full", retry_after=5),
        errors.InvalidRequest("invalid output constraint: bad", param="tools"),
        errors.ModelUnavailable("model 'm' is being unloaded"),
    ],
)
def test_errors_keep_their_class_status_and_details_across_the_pipe(exc: errors.LmdockError):
    back = decode_error(pickle.loads(pickle.dumps(encode_error(exc))))
    assert type(back) is type(exc) and back.message == exc.message and back.status == exc.status
    assert back.param == exc.param
    if isinstance(exc, errors.Overloaded):
        assert back.retry_after == 5
    if isinstance(exc, errors.PromptTooLong):
        assert (back.n_tokens, back.n_ctx) == (9000, 8192)


def test_an_unexpected_exception_becomes_a_plain_lmdock_error():
    back = decode_error(encode_error(RuntimeError("boom")))
    assert type(back) is errors.LmdockError and "RuntimeError: boom" in back.message


def test_engine_events_cross_unchanged():
    events = [
        (1, TextChunk("hi", 1, [TokenLogprob("hi", -0.1, [("hi", -0.1), ("yo", -2.0)])])),
        (2, Finished("stop", 10, 4, 3, stop_sequence="\n\n")),
    ]
    assert pickle.loads(pickle.dumps(events)) == events


def test_exit_descriptions_name_the_signal():
    assert describe_exit(-11) == "killed by SIGSEGV"
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(70) == "exited with status 70"


def _fake_probes(monkeypatch, outcomes: dict[bool, int]) -> list[bool]:
    calls: list[bool] = []

    def run(path, key, n_threads, extra_bufts, kv):
        calls.append(extra_bufts)
        return subprocess.CompletedProcess([], outcomes[extra_bufts], "", "")

    monkeypatch.setattr(cpu_check, "_run_probe", run)
    return calls


def test_a_probe_crash_turns_extra_buffers_off_and_is_remembered(monkeypatch, tmp_path):
    monkeypatch.setenv("LMDOCK_HOME", str(tmp_path))
    monkeypatch.delenv("LMDOCK_REPACK", raising=False)
    calls = _fake_probes(monkeypatch, {True: -11, False: 0})
    first = cpu_check.decide_repack(tmp_path / "m.gguf", "m", "Q4_K_M", 2)
    assert (first.repack, first.source) == (False, "probe") and "SIGSEGV" in first.reason
    assert calls == [True, False]
    again = cpu_check.decide_repack(tmp_path / "m.gguf", "m", "Q4_K_M", 2)
    assert (again.repack, again.source) == (False, "remembered") and calls == [True, False]
    other = cpu_check.decide_repack(tmp_path / "m.gguf", "m", "F16", 2)  # another weight type: probed
    assert other.source == "probe" and calls == [True, False, True, False]
    q8 = KvCacheConfig("q8_0", "q8_0", "auto")  # another KV cache runs other attention kernels: probed
    assert cpu_check.decide_repack(tmp_path / "m.gguf", "m", "Q4_K_M", 2, kv=q8).source == "probe"
    assert cpu_check.decide_repack(tmp_path / "m.gguf", "m", "Q4_K_M", 2, kv=q8).source == "remembered"


def test_a_file_that_crashes_either_way_decides_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("LMDOCK_HOME", str(tmp_path))
    monkeypatch.delenv("LMDOCK_REPACK", raising=False)
    _fake_probes(monkeypatch, {True: -11, False: -11})
    verdict = cpu_check.decide_repack(tmp_path / "m.gguf", "m", "Q4_K_M", 2)
    assert (verdict.repack, verdict.source) == (True, "unprobed")
    assert not (tmp_path / "cpu-check.json").exists()
