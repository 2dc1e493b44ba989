"""Requests that set no sampling fields get the model's defaults; explicit values win (seen in the request
log, which records the effective settings of every generation request)."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import anthropic
import httpx

from lmdock.core.request import BUILTIN_SAMPLING
from tests.conftest import Server

QWEN = "qwen2.5-coder-0.5b-instruct"
FIELDS = ("temperature", "top_k", "top_p", "min_p", "repeat_penalty")


@contextmanager
def request_log(server: Server) -> Iterator[queue.Queue]:
    """Entries of the server's live request log, from now on."""
    entries: queue.Queue = queue.Queue()
    connected = threading.Event()
    stop = threading.Event()

    def follow() -> None:
        with httpx.stream("GET", f"{server.base_url}/api/v1/logs/stream", timeout=None) as r:
            for line in r.iter_lines():
                if stop.is_set():
                    return
                if line.startswith(": connected"):
                    connected.set()
                elif line.startswith("data:"):
                    entries.put(json.loads(line[5:]))

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    assert connected.wait(30)
    try:
        yield entries
    finally:
        stop.set()


def _entry(entries: queue.Queue, path: str) -> dict:
    while True:
        entry = entries.get(timeout=300)
        if entry["path"] == path:
            return entry


def _defaults(server: Server) -> dict:
    models = httpx.get(f"{server.base_url}/api/v1/models", timeout=30).json()["models"]
    return next(m for m in models if m["key"] == QWEN)["sampling_defaults"]


def test_models_list_shows_the_effective_defaults(server: Server):
    d = _defaults(server)
    assert {k: d[k] for k in FIELDS} == {k: getattr(BUILTIN_SAMPLING, k) for k in FIELDS}
    assert d["source"]["temperature"] == "lmdock"
    assert d["preset_path"].endswith(f"presets/{QWEN}.json")


def test_unset_fields_use_the_model_defaults_and_explicit_ones_win(
    server: Server, client: anthropic.Anthropic
):
    messages = [{"role": "user", "content": "Say hi."}]
    with request_log(server) as entries:
        client.messages.create(model=QWEN, max_tokens=4, messages=messages)
        unset = _entry(entries, "/v1/messages")["sampling"]
        client.messages.create(
            model=QWEN, max_tokens=4, messages=messages, extra_body={"temperature": 0, "top_k": 5}
        )  # this SDK has no temperature parameter any more; the Messages API still takes it
        explicit = _entry(entries, "/v1/messages")["sampling"]
        oai = server.openai(strict=False, timeout=600)
        oai.chat.completions.create(model=QWEN, max_tokens=4, messages=messages, top_p=0.5)
        chat = _entry(entries, "/v1/chat/completions")["sampling"]
    assert {k: unset[k] for k in FIELDS} == {k: getattr(BUILTIN_SAMPLING, k) for k in FIELDS}
    assert explicit["temperature"] == 0 and explicit["top_k"] == 5  # 0 stays greedy
    assert explicit["top_p"] == BUILTIN_SAMPLING.top_p  # what the request left unset
    assert chat["top_p"] == 0.5 and chat["temperature"] == BUILTIN_SAMPLING.temperature


def test_an_edited_preset_applies_without_a_reload(server: Server, client: anthropic.Anthropic):
    preset = server.log_path.parent / "home" / "presets" / f"{QWEN}.json"
    assert _defaults(server)["preset_path"] == str(preset)
    preset.parent.mkdir(parents=True, exist_ok=True)
    preset.write_text(json.dumps({"temperature": 0.7, "top_k": 20}))
    try:
        d = _defaults(server)
        assert (d["temperature"], d["top_k"], d["source"]["temperature"]) == (0.7, 20, "preset")
        with request_log(server) as entries:
            client.messages.create(model=QWEN, max_tokens=2, messages=[{"role": "user", "content": "Hi"}])
            used = _entry(entries, "/v1/messages")["sampling"]
        assert (used["temperature"], used["top_k"]) == (0.7, 20)
    finally:
        preset.unlink()
