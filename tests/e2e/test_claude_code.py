"""The Claude Code CLI, run non-interactively against a real lmdock server."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, Server

CLAUDE = REPO / "node_modules" / ".bin" / "claude"
MODEL = "qwen2.5-coder-0.5b-instruct"


def run_claude(
    server: Server, workdir: Path, prompt: str, *extra: str, env_extra: dict | None = None, timeout: int = 600
) -> dict:
    """`claude --bare -p PROMPT --output-format json` with every model variable pinned to lmdock's model."""
    if not CLAUDE.exists():
        pytest.fail("Claude Code is not installed: run `make clients`")
    env = {
        **os.environ,
        "ANTHROPIC_BASE_URL": server.base_url,
        "ANTHROPIC_API_KEY": server.api_key,
        "ANTHROPIC_MODEL": MODEL,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": MODEL,
        "ANTHROPIC_DEFAULT_SONNET_MODEL": MODEL,
        "ANTHROPIC_DEFAULT_OPUS_MODEL": MODEL,
        "CLAUDE_CODE_SUBAGENT_MODEL": MODEL,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CONFIG_DIR": str(workdir / ".claude-config"),
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "512",
        "CLAUDE_CODE_MAX_RETRIES": "1",
        **(env_extra or {}),
    }
    bare = [] if "--tools" in extra else ["--bare"]  # --bare offers no Write tool
    proc = subprocess.run(
        [str(CLAUDE), *bare, "-p", prompt, "--output-format", "json", "--model", MODEL, *extra],
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
