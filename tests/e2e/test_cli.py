"""The `lmdock` commands as subprocesses: against the shared server, against no server at all, and
`lmdock get` against a local stand-in for the Hugging Face Hub (including a download killed midway)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import DEFAULT_MODEL, REPO, Server, free_port
from tests.hf_fixture import FakeHub, write_gguf

QWEN = "qwen2.5-coder-0.5b-instruct"
CMD = [sys.executable, "-m", "lmdock.cli.main"]
CHUNK = 10 << 20


def run(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CMD, *args],
        capture_output=True,
        text=True,
        timeout=300,
        input=stdin,
        env={**os.environ, **(env or {})},
    )


def port_of(server: Server) -> str:
    return server.base_url.rsplit(":", 1)[1]


def test_status_ps_and_ls(server: Server):
    status = run("status", "--port", port_of(server))
    assert status.returncode == 0 and "is running" in status.stdout and QWEN in status.stdout
    as_json = json.loads(run("status", "--json", "--port", port_of(server)).stdout)
    assert as_json["running"] is True and QWEN in as_json["loaded"]
    ps = run("ps", "--port", port_of(server))
    assert ps.returncode == 0 and QWEN in ps.stdout and "loaded" in ps.stdout
    listed = json.loads(run("ls", "--json", "--models-dir", str(DEFAULT_MODEL.parents[2])).stdout)
    assert [m["key"] for m in listed] == [QWEN] and "tools" in listed[0]["capabilities"]


def test_chat_one_shot_and_from_stdin(server: Server):
    once = run(
        "chat", "-p", "Say hello.", "--max-tokens", "10", "--temperature", "0", "--port", port_of(server)
    )
    assert once.returncode == 0, once.stderr
    assert once.stdout.strip()
    piped = run("chat", "--max-tokens", "8", "--port", port_of(server), stdin="What is 2+2?\nAnd 3+3?\n")
    assert piped.returncode == 0, piped.stderr
    assert len([line for line in piped.stdout.splitlines() if line.strip()]) >= 2


def test_launch_claude_sets_the_environment(server: Server):
    printed = run("launch", "claude", "--print-env", "--port", port_of(server))
    assert printed.returncode == 0, printed.stderr
    env = dict(line.removeprefix("export ").split("=", 1) for line in printed.stdout.splitlines())
    assert env["ANTHROPIC_BASE_URL"] == server.base_url
    assert env["ANTHROPIC_MODEL"] == env["CLAUDE_CODE_SUBAGENT_MODEL"] == QWEN
    assert all(env[f"ANTHROPIC_DEFAULT_{t}_MODEL"] == QWEN for t in ("OPUS", "SONNET", "HAIKU"))
    assert env["CLAUDE_CODE_ATTRIBUTION_HEADER"] == "0"
    # the served window, as /v1/models lists it; no auto-compact window (Claude Code raises one below
    # 100k to 100k, three times the context this model is served with)
    listed = server.anthropic().models.retrieve(QWEN)
    assert env["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] == "8192" == str(listed.max_input_tokens)
    assert listed.max_tokens == 8192 and "CLAUDE_CODE_AUTO_COMPACT_WINDOW" not in env
    assert env["ANTHROPIC_AUTH_TOKEN"] == "lmdock" and env["ANTHROPIC_API_KEY"] == "''"
    # Claude Code sends no sampling fields: say what the model's defaults are (on stderr)
    assert "sampling for requests that set none: temperature" in " ".join(printed.stderr.split())


@pytest.mark.skipif(not (REPO / "node_modules/.bin/claude").exists(), reason="run `make clients` first")
def test_launch_claude_execs_claude_code(server: Server):
    launched = run("launch", "claude", "--port", port_of(server), "--", "--version")
    assert launched.returncode == 0, launched.stderr
    assert "Claude Code" in launched.stdout


def test_log_stream_prints_each_request(server: Server):
    proc = subprocess.Popen(
        [*CMD, "log", "stream", "--json", "--port", port_of(server)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert "Streaming the request log" in proc.stdout.readline()
        r = httpx.post(
            f"{server.base_url}/v1/completions",
            json={"model": QWEN, "prompt": "Hello", "max_tokens": 2, "temperature": 0},
            timeout=120,
        )
        assert r.status_code == 200
        # this request's entry; one an earlier test left in flight (Claude Code's side calls) may come first
        entry = json.loads(proc.stdout.readline())
        while entry["request_id"] != r.headers["request-id"]:
            entry = json.loads(proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert (entry["method"], entry["path"], entry["status"], entry["model"]) == (
        "POST",
        "/v1/completions",
        200,
        QWEN,
    )
    assert entry["input_tokens"] > 0 and entry["output_tokens"] == 2 and entry["duration_ms"] > 0
    assert entry["request_id"] == r.headers["request-id"]


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["ps"],
        ["load", QWEN],
        ["unload", "--all"],
        ["chat", "-p", "hi"],
        ["log", "stream"],
        ["launch", "claude", "--print-env"],
    ],
)
def test_commands_say_when_no_server_runs(args):
    result = run(*args, "--port", str(free_port()))
    assert result.returncode == 1
    assert "No lmdock server is running" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hub")
    hub = FakeHub()
    hub.add("acme/Tiny-GGUF", "tiny-Q4_K_M.gguf", write_gguf(tmp / "tiny.gguf").read_bytes())
    # huggingface_hub writes in 10 MiB chunks: a file of 2.5 of them can be killed with one on disk
    big = write_gguf(tmp / "big.gguf", pad_floats=6_500_000).read_bytes()
    hub.add("acme/Slow-GGUF", "slow-Q4_K_M.gguf", big)
    hub.add("acme/Bad-GGUF", "bad-Q4_K_M.gguf", big, corrupt=True)
    yield hub.start()
    hub.stop()


def test_get_downloads_into_the_store(hub: FakeHub, tmp_path: Path):
    done = run("get", "acme/Tiny-GGUF", "--models-dir", str(tmp_path), env={"HF_ENDPOINT": hub.url})
    assert done.returncode == 0, done.stderr
    assert "Model ready: tiny" in done.stdout
    assert (tmp_path / "acme" / "Tiny-GGUF" / "tiny-Q4_K_M.gguf").is_file()
    listed = json.loads(run("ls", "--json", "--models-dir", str(tmp_path)).stdout)
    assert [m["key"] for m in listed] == ["tiny"]


def test_get_resumes_a_killed_download(hub: FakeHub, tmp_path: Path):
    target = tmp_path / "acme" / "Slow-GGUF" / "slow-Q4_K_M.gguf"
    data = hub.repos["acme/Slow-GGUF"]["slow-Q4_K_M.gguf"]
    hub.bytes_per_second = 8_000_000
    proc = subprocess.Popen(
        [*CMD, "get", "acme/Slow-GGUF/slow-Q4_K_M.gguf", "--models-dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HF_ENDPOINT": hub.url},
    )
    try:
        deadline = time.monotonic() + 60
        partial = []
        while time.monotonic() < deadline:
            partial = list(target.parent.glob("*.partial")) if target.parent.is_dir() else []
            if partial and partial[0].stat().st_size >= CHUNK:
                break
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait()
        hub.bytes_per_second = None
    assert partial and not target.exists()
    kept = partial[0].stat().st_size
    assert 0 < kept < len(data.data)
    done = run(
        "get", "acme/Slow-GGUF/slow-Q4_K_M.gguf", "--models-dir", str(tmp_path), env={"HF_ENDPOINT": hub.url}
    )
    assert done.returncode == 0, done.stderr
    assert target.read_bytes() == data.data and not partial[0].exists()
    assert hub.ranged_gets("slow-Q4_K_M.gguf") == [f"bytes={kept}-"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("acme/Bad-GGUF", "corrupt"),
        ("acme/Missing-GGUF", "not found"),
        ("../../etc/passwd", "not a Hugging Face repo"),
        ("acme/Tiny-GGUF/../../../../etc/passwd.gguf", "not a .gguf file inside the repo"),
    ],
)
def test_get_failures_are_one_clear_line(hub: FakeHub, tmp_path: Path, spec: str, message: str):
    failed = run("get", spec, "--models-dir", str(tmp_path), env={"HF_ENDPOINT": hub.url})
    assert failed.returncode == 1 and message in failed.stderr and "Traceback" not in failed.stderr
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
