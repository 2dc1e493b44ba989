"""The Codex CLI (`codex exec`), configured with lmdock as a Responses API provider, does a file task."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, Server, start_server

CODEX = REPO / "node_modules" / ".bin" / "codex"
MODEL = "qwen2.5-coder-0.5b-instruct"


@pytest.fixture(scope="module")
def codex_server(tmp_path_factory) -> Server:
    """Codex's instructions and tools are about 10k tokens: a server with room for them."""
    srv = start_server(tmp_path_factory.mktemp("codex"), "--ctx-size", "32768")
    yield srv
    srv.stop()


def _config(server: Server) -> str:
    return f"""
model = "{MODEL}"
model_provider = "lmdock"
web_search = "disabled"
approval_policy = "never"
sandbox_mode = "danger-full-access"

[model_providers.lmdock]
name = "lmdock"
base_url = "{server.base_url}/v1"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
stream_idle_timeout_ms = 1500000
"""


def _exec(home: Path, work: Path, out: Path, target: Path) -> list[dict]:
    """One `codex exec` run; stops Codex once the file exists. Returns its JSON events."""
    with out.open("w") as stdout:
        proc = subprocess.Popen(
            [
                str(CODEX),
                "exec",
                "--skip-git-repo-check",
                "--json",
                # Codex's goal tools (on by default) draw the 0.5B model into create_goal loops
                "--disable",
                "goals",
                "Run this shell command: echo hi > hello.txt",
            ],
            cwd=work,
            env={**os.environ, "CODEX_HOME": str(home)},
            stdout=stdout,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        # The first prompt (~10k tokens) is read on 2 shared CPU cores: minutes. Once the file exists the
        # task is done; a 0.5B model may go on calling tools, so the test stops Codex there.
        deadline = time.monotonic() + 2400
        while proc.poll() is None and not target.exists() and time.monotonic() < deadline:
            time.sleep(2)
        time.sleep(1)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    lines = out.read_text(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_codex_exec_creates_a_file(codex_server: Server, tmp_path: Path):
    if not CODEX.exists():
        pytest.fail("Codex CLI is not installed: run `make clients`")
    home, work = tmp_path / "codex-home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    (home / "config.toml").write_text(_config(codex_server))
    target = work / "hello.txt"
    # A sampled 0.5B model sometimes asks for `sandbox_permissions: require_escalated`, which Codex
    # itself rejects under approval policy "never" and then ends the turn: one more try, on a warm cache.
    for attempt in range(2):
        out = tmp_path / f"codex-{attempt}.jsonl"
        events = _exec(home, work, out, target)
        failures = [e for e in events if e.get("type") in ("error", "turn.failed")]
        assert not failures, failures
        if target.exists():
            break
    lines = out.read_text(errors="replace").splitlines()
    commands = [e["item"] for e in events if e.get("item", {}).get("type") == "command_execution"]
    assert target.exists(), lines[-20:]
    assert target.read_text().strip() == "hi" and commands, lines[-20:]
