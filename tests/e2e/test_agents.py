"""`lmdock launch codex|opencode -- ...`: the real agents (pinned in package.json), pointed at lmdock by
`launch` alone, with no configuration file of theirs: Codex creates a file through the Responses API,
opencode makes a round trip through the Messages API. (Claude Code: test_claude_code.py, test_cli.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import LMDOCK, REPO, Server, start_server

BIN = REPO / "node_modules" / ".bin"
QWEN = "qwen2.5-coder-0.5b-instruct"
# Codex features that add tools beside the shell (`codex features list`)
EXTRA_TOOLS = ("goals", "multi_agent", "image_generation", "view_image", "apps", "plugins", "sleep_tool")
AGENT_TIMEOUT = 2400  # the first prompt (7-10k tokens) is read on one shared CPU core: minutes
# pytest's 900 s per test is less than one agent run may take here (Codex took 606 s in one CI run, on
# a slow VM, and may get more attempts): the agents' own deadlines above decide, not that cap.
pytestmark = pytest.mark.timeout(2 * AGENT_TIMEOUT)


@pytest.fixture(scope="module")
def agent_server(tmp_path_factory) -> Server:
    """The agents' instructions and tools are 7-10k tokens: a server with room for them."""
    srv = start_server(tmp_path_factory.mktemp("agents"), "--ctx-size", "32768")
    yield srv
    srv.stop()


def _launch(server: Server, agent: str, *args: str) -> list[str]:
    if not (BIN / agent).exists():
        pytest.fail(f"{agent} is not installed: run `make clients`")
    return [*LMDOCK, "launch", agent, "--port", str(server.port), "--", *args]


def _printed(stderr: str) -> str:
    return " ".join(stderr.split())


def _codex_exec(server: Server, home: Path, work: Path, target: Path, log: Path) -> list[dict]:
    """One `lmdock launch codex -- exec` run, stopped once `target` exists; returns Codex's JSON events
    (stdout) and leaves what launch printed in `log`."""
    # exec's own flags: no sandbox (this machine may not allow one), JSON events, no retries (an error
    # must show), only the shell tools (the 0.5B model takes the task's "create" for create_goal, or
    # spawns a sub-agent with made-up arguments, and calls it over and over), and the task in the
    # issue's words with the command that does it (left to itself, the 0.5B model mostly runs
    # `echo 'hi'` and prints the word instead of writing the file)
    command = _launch(
        server,
        "codex",
        *["exec", "--skip-git-repo-check", "--json", "--dangerously-bypass-approvals-and-sandbox"],
        *[arg for feature in EXTRA_TOOLS for arg in ("--disable", feature)],
        *["-c", "model_providers.lmdock.request_max_retries=0"],
        *["-c", "model_providers.lmdock.stream_max_retries=0"],
        "create hello.txt containing hi by running: echo hi > hello.txt",
    )
    out = log.with_suffix(".jsonl")
    with out.open("w") as stdout, log.open("w") as stderr:
        proc = subprocess.Popen(
            command,
            cwd=work,
            env={**os.environ, "CODEX_HOME": str(home)},  # Codex's own state, away from this machine's
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
        )
        # Once the file exists the task is done; a 0.5B model may go on calling tools, so the test stops
        # Codex there.
        deadline = time.monotonic() + AGENT_TIMEOUT
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


def _tool_round_trips(home: Path) -> list[str]:
    """The names of the tool calls in Codex's session logs whose output went back to the model and got
    an answer (through lmdock: a later call, message or reasoning item)."""
    names = []
    for rollout in sorted((home / "sessions").rglob("*.jsonl")):
        items = [json.loads(line).get("payload", {}) for line in rollout.read_text().splitlines() if line]
        kinds = [item.get("type") for item in items]
        for i, item in enumerate(items):
            if item.get("type") != "function_call" or "function_call_output" not in kinds[i:]:
                continue
            after_output = kinds[kinds.index("function_call_output", i) :]
            if any(kind in ("function_call", "message", "reasoning") for kind in after_output):
                names.append(item.get("name", ""))
    return names


def test_launch_codex_exec_creates_a_file(agent_server: Server, tmp_path: Path):
    home, work = tmp_path / "codex-home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    target = work / "hello.txt"
    # Up to four runs. The sampled 0.5B model often ends its turn without the file, every request
    # answered and no error event: it prints "hi" instead of writing it, puts `sandbox_permissions:
    # "require_escalated"` on its shell call, which Codex itself refuses under approval policy "never",
    # or (one CI run in about ten) answers in prose twice in a row without calling a tool at all.
    # That is the model's choice, not a fault of lmdock or launch, so such a run earns another try (on
    # a warm prompt cache: each costs seconds, not the first run's minutes). A failed turn or an error
    # event is never retried: that is what this test is for.
    for attempt in range(1, 5):
        log = tmp_path / f"launch-{attempt}.err"
        events = _codex_exec(agent_server, home, work, target, log)
        printed = _printed(log.read_text(errors="replace"))
        assert f"Starting Codex CLI on {QWEN} (context 32768)" in printed, printed
        assert 'model_providers.lmdock.wire_api="responses"' in printed, printed
        failures = [e for e in events if e.get("type") in ("error", "turn.failed")]
        assert not failures, failures
        if target.exists() or _tool_round_trips(home):
            break
    assert 'POST /v1/responses HTTP/1.1" 200' in agent_server.log()  # through lmdock
    assert not (home / "config.toml").exists()  # launch wrote no configuration
    if target.exists():
        assert target.read_text().strip() == "hi", target.read_text()
    else:
        # No run wrote the file: the model's choice, as above. What lmdock and launch owe Codex
        # still holds or fails here: a tool call streamed through the Responses API that Codex
        # parsed and ran (or refused by its own policy), its output sent back, and an answer to that.
        round_trips = _tool_round_trips(home)
        assert round_trips, events[-20:]
        assert set(round_trips) <= {"exec_command", "shell", "shell_command"}, round_trips


def test_launch_opencode_round_trip(agent_server: Server, tmp_path: Path):
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    # opencode's own state (sessions, logs) away from this machine's: it lives under HOME / XDG folders
    xdg = {f"XDG_{kind}_HOME": str(home / kind.lower()) for kind in ("CONFIG", "DATA", "CACHE", "STATE")}
    proc = subprocess.run(
        _launch(agent_server, "opencode", "run", "--format", "json", "Reply with the word hello"),
        cwd=work,
        env={**os.environ, "HOME": str(home), **xdg},
        capture_output=True,
        text=True,
        timeout=AGENT_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    printed = _printed(proc.stderr)
    assert f"Starting opencode on {QWEN} (context 32768)" in printed, printed
    assert '"npm":"@ai-sdk/anthropic"' in printed, printed
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    texts = [e["part"]["text"] for e in events if e.get("type") == "text"]
    assert texts and texts[-1].strip(), proc.stdout[-3000:]
    finished = [e["part"] for e in events if e.get("type") == "step_finish"]
    assert finished and finished[-1]["tokens"]["input"] > 1000, proc.stdout[-3000:]  # opencode's own prompt
    assert 'POST /v1/messages HTTP/1.1" 200' in agent_server.log()  # through lmdock
    written = {p.name for p in (home / "config" / "opencode").iterdir()}  # it installs its plugin SDK there
    assert not written & {"opencode.json", "opencode.jsonc", "config.json"}  # but no configuration
