"""`lmdock launch opencode -- run ...`: the real opencode, pointed at lmdock by `launch` alone (no config
file), makes a round trip through lmdock's Anthropic Messages API."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import LMDOCK, REPO, Server, start_server

OPENCODE = REPO / "node_modules" / ".bin" / "opencode"


@pytest.fixture(scope="module")
def opencode_server(tmp_path_factory) -> Server:
    """opencode's system prompt and tools are about 7k tokens: a server with room for them."""
    srv = start_server(tmp_path_factory.mktemp("opencode"), "--ctx-size", "32768")
    yield srv
    srv.stop()


def test_launch_opencode_round_trip(opencode_server: Server, tmp_path: Path):
    if not OPENCODE.exists():
        pytest.fail("opencode is not installed: run `make clients`")
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    # opencode's own state (sessions, logs) away from this machine's: it lives under HOME / XDG folders
    xdg = {f"XDG_{kind}_HOME": str(home / kind.lower()) for kind in ("CONFIG", "DATA", "CACHE", "STATE")}
    proc = subprocess.run(
        [*LMDOCK, "launch", "opencode", "--port", str(opencode_server.port), "--"]
        + ["run", "--format", "json", "Reply with the word hello"],
        cwd=work,
        env={**os.environ, "HOME": str(home), **xdg},
        capture_output=True,
        text=True,
        timeout=2400,  # the first prompt is read on 2 shared CPU cores: minutes
        stdin=subprocess.DEVNULL,
    )
    printed = " ".join(proc.stderr.split())
    assert "Starting opencode on qwen2.5-coder-0.5b-instruct (context 32768)" in printed, printed
    assert '"npm":"@ai-sdk/anthropic"' in printed, printed
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    texts = [e["part"]["text"] for e in events if e.get("type") == "text"]
    assert texts and texts[-1].strip(), proc.stdout[-3000:]
    finished = [e["part"] for e in events if e.get("type") == "step_finish"]
    assert finished and finished[-1]["tokens"]["input"] > 1000, proc.stdout[-3000:]  # opencode's own prompt
    assert 'POST /v1/messages HTTP/1.1" 200' in opencode_server.log()  # through lmdock
    written = {p.name for p in (home / "config" / "opencode").iterdir()}  # it installs its plugin SDK there
    assert not written & {"opencode.json", "opencode.jsonc", "config.json"}  # but no configuration
