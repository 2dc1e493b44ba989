"""The worker boundary without a model: every message kind and every error class through the codec,
exit descriptions, the repack verdict store."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess

import numpy as np
import pytest

import lmdock
from lmdock.core import errors
from lmdock.core.kv_cache import KvCacheConfig
from lmdock.core.request import SamplingParams
from lmdock.engine import cpu_check, protocol
from lmdock.engine.process import describe_exit
from lmdock.engine.protocol import ProtocolError, WireError, decode, encode
from lmdock.engine.spec import ContextParams, EngineConfig, EngineSpec
from lmdock.engine.types import (
    Admitted,
    EngineInfo,
    EngineRequest,
    EngineSnapshot,
    EngineState,
    EngineStats,
    Finished,
    SlotState,
    TextChunk,
    TokenLogprob,
)

SPEC = EngineSpec(
    key="m",
    path="/models/m.gguf",
    params=ContextParams(
        n_ctx=4096, n_batch=512, n_seq_max=6, n_threads=2, kv=KvCacheConfig("q8_0", "q8_0", "on")
    ),
    engine=EngineConfig(parallel=4, max_queue=64),
    cache_ram_bytes=1 << 30,
    cache_dir="/cache",
    max_ctx=32768,
)
REQUEST = EngineRequest(
    prompt=[1, 2, 3],
    max_tokens=16,
    sampling=SamplingParams(temperature=0.5, seed=7),
    stop=["\n\n"],
    grammar="start: /a+/",
    logprobs=2,
    priority=1,
)
INFO = EngineInfo(
    pid=42,
    n_ctx=4096,
    n_vocab=151936,
    n_embd=896,
    chat_template="{{ messages }}",
    bos_text="",
    eos_text="<|im_end|>",
    special_tokens={"<tool_call>": 151657},
    buffer_types={"CPU_REPACK": 120.5},
    load_seconds=1.5,
)
STATE = EngineState(2, 3, 123.5, EngineStats(prompt_tokens=10, generated_tokens=4, decode_seconds=0.25))
SNAPSHOT = EngineSnapshot(1, 2, "every KV slot is busy", None, [SlotState(0, True, 12, 11)])
EVENTS = {
    1: [
        Admitted(prompt_tokens=10, cached_tokens=4),
        TextChunk("hi", [TokenLogprob("hi", -0.1, [("hi", -0.1), ("yo", -2.0)])]),
    ],
    2: [Finished("stop", 10, 4, 3, stop_sequence="\n\n")],
}
MESSAGES = [
    protocol.Init(SPEC),
    protocol.Submit(7, REQUEST),
    protocol.Cancel(7),
    protocol.GetSnapshot(8),
    protocol.Embed(9, [[1, 2, 3], [4]]),
    protocol.Close(),
    protocol.Ready(INFO),
    protocol.LoadFailed("failed to load m: not a valid GGUF file"),
    protocol.Ack(7),
    protocol.Ack(7, WireError.of(errors.Overloaded("Overloaded: the request queue is full", retry_after=5))),
    protocol.Events(EVENTS, STATE),
    protocol.Reply(8, SNAPSHOT),
    protocol.Reply(9, error=WireError.of(errors.InvalidRequest("input: too long", param="input"))),
]


def test_every_message_kind_has_one_class_and_a_case_here():
    assert {type(m).kind for m in MESSAGES} == set(protocol.Kind)
    assert len({type(m) for m in MESSAGES}) == len(protocol.Kind)


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_crosses_the_codec_unchanged(msg):
    frame = encode(msg)
    assert frame[0] == type(msg).kind
    assert decode(frame) == msg


def test_a_step_sends_a_requests_text_as_one_chunk():
    """A step that accepted a draft emitted a chunk per token: they cross as one, logprobs in order."""
    entries = [TokenLogprob(t, -0.5, [(t, -0.5)]) for t in ("a", "b", "c")]
    step: list = []
    for event in (
        Admitted(prompt_tokens=10, cached_tokens=4),
        TextChunk("a", [entries[0]]),
        TextChunk("", [entries[1]]),  # text held back (a possible stop string): its entry still travels
        TextChunk("bc", [entries[2]]),
        Finished("length", 10, 4, 3),
    ):
        protocol.add_event(step, event)
    assert step == [
        Admitted(prompt_tokens=10, cached_tokens=4),
        TextChunk("abc", entries),
        Finished("length", 10, 4, 3),
    ]
    plain: list = []
    for text in ("x", "y"):
        protocol.add_event(plain, TextChunk(text))
    assert plain == [TextChunk("xy")]


def test_embeddings_cross_as_arrays():
    vectors = [np.arange(4, dtype=np.float32), np.ones(4, dtype=np.float32)]
    back = decode(encode(protocol.Reply(3, protocol.Embeddings(vectors, 11))))
    assert isinstance(back, protocol.Reply) and back.value.n_tokens == 11
    assert all(
        (a == b).all() and a.dtype == np.float32 for a, b in zip(back.value.vectors, vectors, strict=True)
    )


def test_a_frame_whose_kind_and_payload_disagree_is_refused():
    frame = bytearray(encode(protocol.Cancel(1)))
    frame[0] = protocol.Kind.CLOSE
    with pytest.raises(ProtocolError, match="CLOSE frame carried Cancel"):
        decode(bytes(frame))
    with pytest.raises(ProtocolError):
        decode(b"\x63garbage")


# --- errors: every class of the tree, with its status, param and own attributes ---------------------


def _all_error_classes() -> list[type[errors.LmdockError]]:
    for info in pkgutil.walk_packages(lmdock.__path__, "lmdock."):
        if ".webapp" not in info.name and not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    found, todo = [], [errors.LmdockError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return sorted(set(found), key=lambda c: f"{c.__module__}.{c.__qualname__}")


_SAMPLE = {int: 8193, float: 2.5, str: "a message naming the field"}


def _instance(cls: type[errors.LmdockError]) -> errors.LmdockError:
    """An instance with every constructor argument set (a sample value by annotation)."""
    args, kwargs = [], {}
    hints = (
        inspect.get_annotations(cls.__init__, eval_str=True) if cls.__init__ is not object.__init__ else {}
    )
    for name, p in list(inspect.signature(cls.__init__).parameters.items())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        hint = hints.get(name, str)
        base = next((t for t in _SAMPLE if t is hint or t in getattr(hint, "__args__", ())), str)
        value = "messages.0.content" if name == "param" else _SAMPLE[base]
        if p.kind is p.KEYWORD_ONLY:
            kwargs[name] = value
        else:
            args.append(value)
    return cls(*args, **kwargs)


ERROR_CLASSES = _all_error_classes()


def test_the_walk_finds_the_tree():
    names = {c.__name__ for c in ERROR_CLASSES}
    assert {"PromptTooLong", "Overloaded", "ModelFailed", "UpstreamTimeout", "TemplateError"} <= names


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__qualname__)
def test_every_error_class_keeps_its_class_status_and_details_across_the_pipe(cls):
    exc = _instance(cls)
    back = decode(encode(protocol.Ack(1, WireError.of(exc)))).error.rebuild()
    assert type(back) is cls
    assert (back.message, back.param, back.status, back.kind) == (
        exc.message,
        exc.param,
        exc.status,
        exc.kind,
    )
    assert vars(back) == vars(exc) and back.args == exc.args


def test_details_of_the_errors_the_engine_raises():
    too_long = WireError.of(errors.PromptTooLong(9000, 8192)).rebuild()
    assert (too_long.n_tokens, too_long.n_ctx) == (9000, 8192)
    assert too_long.message == "prompt is too long: 9000 tokens > 8192 maximum"
    busy = WireError.of(errors.Overloaded("Overloaded: the request queue is full", retry_after=5)).rebuild()
    assert busy.retry_after == 5 and busy.status == 529


def test_an_unexpected_exception_becomes_a_plain_lmdock_error():
    back = WireError.of(RuntimeError("boom")).rebuild()
    assert type(back) is errors.LmdockError and "RuntimeError: boom" in back.message


def test_a_class_name_that_is_not_an_lmdock_error_rebuilds_as_the_base():
    for name in ("builtins:OSError", "lmdock.core.errors:Nothing", "os:system"):
        back = WireError(name, "msg").rebuild()
        assert type(back) is errors.LmdockError and back.message == "msg"


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
