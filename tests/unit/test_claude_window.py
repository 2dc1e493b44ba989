"""The context window as `lmdock launch claude` tells it to Claude Code, and as /v1/models lists it."""

from __future__ import annotations

import mmap
import re
from pathlib import Path

import pytest

from lmdock.cli.launch_cmd import CLAUDE_MIN_AUTO_COMPACT_WINDOW, claude_window_env
from lmdock.upstream.transport import _entry_of

BUNDLE = Path(__file__).resolve().parents[2] / "node_modules/@anthropic-ai/claude-code/bin/claude.exe"


def test_a_small_window_is_the_max_context_tokens_and_no_auto_compact_window():
    assert claude_window_env(24576) == {"CLAUDE_CODE_MAX_CONTEXT_TOKENS": "24576"}
    assert claude_window_env(CLAUDE_MIN_AUTO_COMPACT_WINDOW - 1) == {
        "CLAUDE_CODE_MAX_CONTEXT_TOKENS": "99999"
    }


def test_a_window_claude_code_takes_as_given_sets_both():
    assert claude_window_env(131072) == {
        "CLAUDE_CODE_MAX_CONTEXT_TOKENS": "131072",
        "CLAUDE_CODE_AUTO_COMPACT_WINDOW": "131072",
    }


@pytest.mark.skipif(not BUNDLE.exists(), reason="run `make clients` first")
def test_the_installed_claude_code_reads_these_variables_and_this_minimum():
    """A Claude Code update that renames the variables or moves the minimum fails here, not in use."""
    with BUNDLE.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as bundle:
        # the unknown model's window is read from the environment variable
        at = bundle.find(b".CLAUDE_CODE_MAX_CONTEXT_TOKENS;if(")
        assert at != -1 and re.match(rb"\w+!==void 0&&\w+>0\)return", bundle[at + 35 : at + 80])
        assert bundle.find(b"CLAUDE_CODE_AUTO_COMPACT_WINDOW") != -1
        # a smaller auto-compact window is raised to the minimum (a minified name, found by its use)
        at = bundle.find(b'"below_minimum",tokens:Math.min(')
        below = re.match(rb"([\w$]+)-1", bundle[at + 32 : at + 40])
        assert at != -1 and below is not None
        at = bundle.find(b"," + below.group(1) + b"=")
        minimum = re.match(rb"=(\w+)[,;]", bundle[at + len(below.group(1)) + 1 : at + 20])
        assert at != -1 and minimum is not None
        assert float(minimum.group(1)) == CLAUDE_MIN_AUTO_COMPACT_WINDOW


def test_an_upstreams_window_is_read_from_the_entry_of_the_model_it_serves():
    data = [{"id": "small", "max_model_len": 4096}, {"id": "big", "max_model_len": 65536}]
    assert _entry_of(data, "big") == data[1]
    assert _entry_of(data, "other") is None and _entry_of(data, None) is None
