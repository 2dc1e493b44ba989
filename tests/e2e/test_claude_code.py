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


def run_claude(server: Server, workdir: Path, prompt: str, *extra: str, timeout: int = 600) -> dict:
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
    }
    proc = subprocess.run(
        [str(CLAUDE), "--bare", "-p", prompt, "--output-format", "json", "--model", MODEL, *extra],
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
