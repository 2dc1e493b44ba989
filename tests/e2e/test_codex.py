"""`lmdock launch codex -- exec ...`: the real Codex CLI, pointed at lmdock by `launch` alone (no config
file), creates a file through lmdock's Responses API."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import LMDOCK, REPO, Server, start_server

CODEX = REPO / "node_modules" / ".bin" / "codex"


@pytest.fixture(scope="module")
def codex_server(tmp_path_factory) -> Server:
    """Codex's instructions and tools are about 10k tokens: a server with room for them."""
    srv = start_server(tmp_path_factory.mktemp("codex"), "--ctx-size", "32768")
    yield srv
    srv.stop()


def test_launch_codex_exec_creates_a_file(codex_server: Server, tmp_path: Path):
    if not CODEX.exists():
        pytest.fail("Codex CLI is not installed: run `make clients`")
    home, work = tmp_path / "codex-home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    target = work / "hello.txt"
    out, err = tmp_path / "codex.jsonl", tmp_path / "launch.err"
    command = [*LMDOCK, "launch", "codex", "--port", str(codex_server.port), "--"]
    # exec's own flags: no sandbox (this machine may not allow one), JSON events, no retries (an error
    # must show), and the task in the words
    command += ["exec", "--skip-git-repo-check", "--json", "--dangerously-bypass-approvals-and-sandbox"]
    command += ["-c", "model_providers.lmdock.request_max_retries=0"]
    command += ["-c", "model_providers.lmdock.stream_max_retries=0", "create hello.txt containing hi"]
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(
            command,
            cwd=work,
            env={**os.environ, "CODEX_HOME": str(home)},  # Codex's own state, away from this machine's
            stdout=stdout,
            stderr=stderr,
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
    printed = " ".join(err.read_text(errors="replace").split())
    assert "Starting Codex CLI on qwen2.5-coder-0.5b-instruct (context 32768)" in printed, printed
    assert 'model_providers.lmdock.wire_api="responses"' in printed, printed
    lines = out.read_text(errors="replace").splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    failures = [e for e in events if e.get("type") in ("error", "turn.failed")]
    assert not failures, failures
    assert target.exists(), lines[-20:]
    assert target.read_text().strip() == "hi", target.read_text()
    assert 'POST /v1/responses HTTP/1.1" 200' in codex_server.log()  # through lmdock
    assert not (home / "config.toml").exists()  # launch wrote no configuration
