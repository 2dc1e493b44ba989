"""The engine runs in a supervised worker process per model: crashes end requests cleanly and restart
the worker, a model that keeps crashing is marked failed, the CPU self-check falls back from llama.cpp's
extra buffer types, and unloading waits for requests in flight.

Crashes are real: the tests send SIGKILL / SIGSEGV to the worker, or set LMDOCK_TEST_CRASH, which makes
the worker raise SIGSEGV on itself at a given point (the probe, or its first decode)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import anthropic
import httpx
import pytest

from tests.conftest import DEFAULT_MODEL, Server, start_server

QWEN = "qwen2.5-coder-0.5b-instruct"
SECOND = "second-model"
GREEDY = {
    "model": "default",
    "max_tokens": 24,
    "extra_body": {"temperature": 0},
    "messages": [{"role": "user", "content": "Name three prime numbers."}],
}
LONG = [{"role": "user", "content": "Write a very long story about a lighthouse keeper."}]


def _health(server: Server) -> dict:
    return httpx.get(f"{server.base_url}/health", timeout=30).json()


def _models(server: Server) -> dict[str, dict]:
    return {m["key"]: m for m in httpx.get(f"{server.base_url}/api/v1/models", timeout=30).json()["models"]}


def _wait(predicate, timeout: float = 180.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.link(src, dst)


@pytest.fixture(scope="module")
def crashy(tmp_path_factory) -> Server:
    srv = start_server(tmp_path_factory.mktemp("crashy"), "--parallel", "6")
    yield srv
    srv.stop()


def _start_load(client: anthropic.Anthropic, n_streams: int, n_json: int, max_tokens: int):
    """Start streams and JSON requests in threads; returns (threads, results, first-delta events)."""
    results: dict[int, object] = {}
    first = [threading.Event() for _ in range(n_streams)]

    def stream(i: int) -> None:
        try:
            with client.messages.stream(model="default", max_tokens=max_tokens, messages=LONG) as s:
                for event in s:
                    if event.type == "content_block_delta":
                        first[i].set()
            results[i] = s.get_final_message()
        except Exception as exc:
            results[i] = exc
        finally:
            first[i].set()

    def create(i: int) -> None:
        try:
            results[i] = client.messages.create(model="default", max_tokens=max_tokens, messages=LONG)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(n_streams)]
    threads += [threading.Thread(target=create, args=(n_streams + j,)) for j in range(n_json)]
    for t in threads:
        t.start()
    return threads, results, first


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV], ids=["SIGKILL", "SIGSEGV"])
def test_a_worker_crash_ends_every_request_with_an_error_and_the_model_restarts(
    crashy: Server, sig: signal.Signals
):
    client = crashy.anthropic()
    before = client.messages.create(**GREEDY).content[0].text
    worker = _health(crashy)["workers"][QWEN]
    threads, results, first = _start_load(client, n_streams=4, n_json=2, max_tokens=1000)
    for ev in first:
        assert ev.wait(300)
    _wait(lambda: _health(crashy)["workers"][QWEN]["active"] == 6, what="six generating sequences")
    os.kill(worker["pid"], sig)
    killed = time.monotonic()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), "a request hung after the worker died"
    print(f"all 6 requests ended {time.monotonic() - killed:.2f}s after {sig.name}")
    for i, result in results.items():
        assert isinstance(result, anthropic.APIStatusError), (i, result)
        assert sig.name in str(result) and QWEN in str(result), str(result)
        if i >= 4:  # the JSON requests: an error status, not a 200
            assert result.status_code == 500
    after = client.messages.create(**GREEDY).content[0].text
    assert after == before
    health = _health(crashy)["workers"][QWEN]
    assert health["crashes"] == worker["crashes"] + 1 and sig.name in health["last_crash"]
    assert health["pid"] != worker["pid"] and health["status"] == "ready"
    instance = _models(crashy)[QWEN]["loaded_instances"][0]
    assert instance["worker"]["crashes"] == health["crashes"]
    ps = crashy.cli("ps")
    assert ps.returncode == 0 and sig.name in ps.stdout, ps.stdout + ps.stderr
    assert crashy.proc.poll() is None


def test_unload_lets_streams_in_flight_finish(crashy: Server):
    client = crashy.anthropic()
    threads, results, first = _start_load(client, n_streams=4, n_json=0, max_tokens=48)
    for ev in first:
        assert ev.wait(300)
    r = httpx.post(f"{crashy.base_url}/api/v1/models/unload", json={"model": QWEN}, timeout=120)
    assert r.status_code == 200, r.text
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive()
    for result in results.values():
        assert isinstance(result, anthropic.types.Message), result  # finished normally, no 5xx
        assert result.stop_reason in ("max_tokens", "end_turn")
    assert QWEN not in _health(crashy)["loaded"]
    assert client.messages.create(**GREEDY).content  # loads again just in time


def test_unload_past_the_grace_period_ends_streams_with_an_error_event(tmp_path: Path):
    srv = start_server(tmp_path, "--unload-grace", "1")
    try:
        body = {"model": "default", "max_tokens": 2000, "stream": True, "messages": LONG}
        outcomes: list[tuple[int, str]] = []
        started = [threading.Event() for _ in range(4)]

        def run(i: int) -> None:
            with (
                httpx.Client(base_url=srv.base_url, timeout=300) as http,
                http.stream("POST", "/v1/messages", json=body) as r,
            ):
                text = ""
                for line in r.iter_lines():
                    text += line + "\n"
                    if "content_block_delta" in line:
                        started[i].set()
                outcomes.append((r.status_code, text, unloading.is_set()))
                started[i].set()

        unloading = threading.Event()
        threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for ev in started:
            assert ev.wait(300)
        unloading.set()
        r = httpx.post(f"{srv.base_url}/api/v1/models/unload", json={"model": QWEN}, timeout=120)
        assert r.status_code == 200
        for t in threads:
            t.join(timeout=120)
            assert not t.is_alive()
        assert len(outcomes) == 4
        # a sampled story may end before the unload (a one-line answer): only the streams still running
        # then are cut off, and most of four long stories are
        cut = [text for status, text, during_unload in outcomes if during_unload]
        assert len(cut) >= 2, outcomes
        assert all(status == 200 for status, _, _ in outcomes)
        for text in cut:
            assert "event: error" in text and "was unloaded before this request finished" in text, text[-500:]
        assert srv.proc.poll() is None
        assert srv.anthropic().messages.create(**GREEDY).content
    finally:
        srv.stop()


def test_a_model_that_crashes_on_its_first_decode_is_marked_failed(tmp_path: Path):
    models = tmp_path / "models"
    _link(DEFAULT_MODEL, models / "Qwen" / "Qwen2.5-Coder-0.5B-Instruct-GGUF" / DEFAULT_MODEL.name)
    _link(DEFAULT_MODEL, models / "lmdock-test" / "Second-GGUF" / "second-model-q4_k_m.gguf")
    srv = start_server(
        tmp_path,
        "--max-loaded",
        "2",
        env={"LMDOCK_MODELS_DIR": str(models), "LMDOCK_TEST_CRASH": f"first_decode@{SECOND}"},
    )
    try:
        client = srv.anthropic()
        with pytest.raises(anthropic.InternalServerError) as failed:
            client.messages.create(model=SECOND, max_tokens=8, messages=LONG)
        assert "SIGSEGV" in str(failed.value) and SECOND in str(failed.value)
        entry = _models(srv)[SECOND]
        assert entry["state"] == "failed" and "SIGSEGV" in entry["error"]
        assert SECOND in _health(srv)["failed"]
        # not restarted in a loop: a later request fails at once, without another worker
        with pytest.raises(anthropic.InternalServerError, match="SIGSEGV"):
            client.messages.create(model=SECOND, max_tokens=8, messages=LONG)
        starts = [line for line in srv.log().splitlines() if f"model {SECOND}: worker pid" in line]
        assert len([line for line in starts if "starting" in line]) == 2, starts  # the first try + one retry
        assert client.messages.create(model=QWEN, max_tokens=8, messages=LONG).content
        assert _health(srv)["workers"][QWEN]["crashes"] == 0
    finally:
        srv.stop()


def test_the_cpu_self_check_falls_back_from_extra_buffer_types_and_remembers(tmp_path: Path):
    env = {"LMDOCK_TEST_CRASH": "probe"}
    srv = start_server(tmp_path, env=env)
    try:
        backend = _models(srv)[QWEN]["loaded_instances"][0]["backend"]
        assert backend["extra_buffer_types"] is False
        assert backend["repack_decision"]["source"] == "probe"
        assert "SIGSEGV" in backend["repack_decision"]["reason"]
        assert not any("REPACK" in name or "AMX" in name for name in backend["buffer_types"])
        assert "CPU self-check" in srv.log()
        assert srv.anthropic().messages.create(**GREEDY).content
    finally:
        srv.stop()
    verdicts = json.loads((tmp_path / "home" / "cpu-check.json").read_text())
    assert [v["repack"] for v in verdicts.values()] == [False]
    again = start_server(tmp_path, env=env)  # same LMDOCK_HOME
    try:
        backend = _models(again)[QWEN]["loaded_instances"][0]["backend"]
        assert backend["extra_buffer_types"] is False
        assert backend["repack_decision"]["source"] == "remembered"
        assert "CPU self-check" not in again.log()  # no second probe
        assert again.anthropic().messages.create(**GREEDY).content
    finally:
        again.stop()
