"""The Claude Code CLI, run non-interactively against a real lmdock server."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import LMDOCK, REPO, Server

CLAUDE = REPO / "node_modules" / ".bin" / "claude"
MODEL = "qwen2.5-coder-0.5b-instruct"


# What every run needs whoever sets the model variables: its own config directory, no side traffic, short
# replies, one retry.
QUIET_CLAUDE = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_AUTOUPDATER": "1",
    "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "512",
    "CLAUDE_CODE_MAX_RETRIES": "1",
}


def run_claude(
    server: Server,
    workdir: Path,
    prompt: str,
    *extra: str,
    env_extra: dict | None = None,
    timeout: int = 600,
    launch: bool = False,
) -> dict:
    """`claude --bare -p PROMPT --output-format json` with every model variable pinned to lmdock's model;
    `launch`: through `lmdock launch claude`, which sets those variables (and the window) itself."""
    if not CLAUDE.exists():
        pytest.fail("Claude Code is not installed: run `make clients`")
    env = {**os.environ, **QUIET_CLAUDE, "CLAUDE_CONFIG_DIR": str(workdir / ".claude-config")}
    if not launch:
        env |= {
            "ANTHROPIC_BASE_URL": server.base_url,
            "ANTHROPIC_API_KEY": server.api_key,
            "ANTHROPIC_MODEL": MODEL,
            "ANTHROPIC_DEFAULT_HAIKU_MODEL": MODEL,
            "ANTHROPIC_DEFAULT_SONNET_MODEL": MODEL,
            "ANTHROPIC_DEFAULT_OPUS_MODEL": MODEL,
            "CLAUDE_CODE_SUBAGENT_MODEL": MODEL,
        }
    env |= env_extra or {}
    bare = [] if "--tools" in extra else ["--bare"]  # --bare offers no Write tool
    args = [*bare, "-p", prompt, "--output-format", "json", *extra]
    command = (
        [*LMDOCK, "launch", "claude", "--port", str(server.port), "--", *args]
        if launch
        else [str(CLAUDE), *args, "--model", MODEL]
    )
    proc = subprocess.run(
        command,
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout.strip(), f"claude printed nothing (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_claude_code_round_trip(server: Server, tmp_path: Path):
    result = run_claude(server, tmp_path, "Reply with the word hello", "--max-turns", "2")
    assert result["type"] == "result"
    assert result["is_error"] is False, result
    assert result["result"].strip()
    assert result["usage"]["input_tokens"] + result["usage"]["cache_read_input_tokens"] > 0


def test_claude_code_executes_a_write_tool_call(server: Server, tmp_path: Path):
    """The full Claude Code prompt (not --bare) with its Write tool: the model's call is executed.

    Greedy decoding (through Claude Code's own CLAUDE_CODE_EXTRA_BODY) keeps a 0.5B model on task; after
    writing, a model this small tends to keep calling tools, so the turn limit may end the session.
    """
    result = run_claude(
        server,
        tmp_path,
        "Use the Write tool to create the file hello.txt with the content: hi",
        "--max-turns",
        "2",
        "--tools",
        "Write",
        "--allowedTools",
        "Write",
        "--permission-mode",
        "acceptEdits",
        env_extra={"CLAUDE_CODE_EXTRA_BODY": '{"temperature": 0}'},
    )
    assert result.get("api_error_status") is None, result
    assert (tmp_path / "hello.txt").read_text().strip() == "hi"


def _notes(turn: int, lines: int = 60) -> str:
    """A turn's worth of new text for the conversation to carry (about 1,200 tokens)."""
    return "\n".join(
        f"Note {turn}.{i}: crate {turn * 1000 + i * 37} left dock {i % 9} for the {('north', 'east', 'south')[i % 3]} "
        f"yard at {8 + i % 10}:{(i * 7) % 60:02d} with {i * 13 % 97} parcels."
        for i in range(lines)
    )


def test_a_session_that_outgrows_the_window_compacts_without_an_error(server: Server, tmp_path: Path):
    """The window handshake: `lmdock launch claude` tells Claude Code the served context (8,192 here), so a
    resumed session that keeps growing is compacted by Claude Code before the server would have to refuse
    a prompt (Claude Code's own transcript records the compaction; when depends on what the sampled model
    answered: on turn 2 or 3 here), no prompt it sends exceeds the window and no turn ends in an error."""
    prompts: list[int] = []
    session = None
    compacted_at = None
    for turn in range(1, 11):
        resume = ("--resume", session) if session else ()
        result = run_claude(
            server,
            tmp_path,
            f"Keep these notes for later and reply with only OK.\n\n{_notes(turn)}",
            "--max-turns",
            "2",
            *resume,
            launch=True,
            env_extra={"CLAUDE_CODE_EXTRA_BODY": '{"temperature": 0}'},
        )
        assert result["is_error"] is False and result.get("api_error_status") is None, (turn, result)
        session = result["session_id"]
        usage = result["usage"]
        prompts.append(
            usage["input_tokens"] + usage["cache_read_input_tokens"] + usage["cache_creation_input_tokens"]
        )
        transcripts = "".join(p.read_text() for p in (tmp_path / ".claude-config").rglob("*.jsonl"))
        if compacted_at is None and '"compact_boundary"' in transcripts:
            compacted_at = turn
        elif compacted_at is not None:
            break
    assert compacted_at is not None, f"no compaction in 10 turns; prompt sizes {prompts}"
    assert len(prompts) > compacted_at, prompts  # a turn after the compacted one ran, without an error
    assert max(prompts) <= 8192, prompts
