"""A scripted Claude Code session on the default model: what the server saw, turn by turn (issue 24).

    .venv/bin/python bench/claude_session.py [--turns 8] [--ctx 32768] [--timeout 900] [--json OUT]

Starts `lmdock serve` (default model, 2 threads, its own LMDOCK_HOME), makes a small project folder and
drives the real Claude Code CLI through a scripted session in it: `claude -p` for the first turn, then
`--resume` with the same session, the full Claude Code prompt (not --bare), `--permission-mode
acceptEdits` (it reads files, edits them, writes a new one), in the environment `lmdock launch claude`
sets. A thread follows the server's request log (GET /api/v1/logs/stream) all along, so every request
Claude Code sends is seen: the main loop's and the side calls between them.

A request is main-loop when its prompt is at least half the longest one of the session (the full system
prompt and tool list are ~20k tokens; side calls carry a short prompt of their own). Printed per turn:
the main-loop requests with prompt tokens, the share read from the cache (prefix plus chunk-reused), the
time to the first token, and the side calls seen. Target: every main-loop request after the first reuses
>= 95% of its prompt.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from _common import CLAUDE, claude_env, lmdock_server

PROJECT = {
    "inventory.py": '''"""Warehouse inventory: load items from a CSV file and report on them."""

import csv


def load_items(path):
    """Each row of the CSV file as a dict with name, weight (float) and count (int)."""
    with open(path, newline="") as f:
        return [
            {"name": row["name"], "weight": float(row["weight"]), "count": int(row["count"])}
            for row in csv.DictReader(f)
        ]


def heaviest(items):
    return max(items, key=lambda item: item["weight"])


def report(path):
    items = load_items(path)
    top = heaviest(items)
    return f"{len(items)} items; heaviest: {top['name']} ({top['weight']} kg)"
''',
    "items.csv": "name,weight,count\nanvil,50.0,2\nrope,1.5,10\nlantern,2.25,4\n",
    "README.md": "# Inventory\n\nReports on a warehouse's items (`report('items.csv')`).\n",
}

TURNS = [
    "Read inventory.py and tell me in one sentence what it does.",
    "Add a function total_weight(items) to inventory.py that returns the sum of weight * count over the items.",
    "Add a short section to README.md that describes total_weight.",
    "In inventory.py, rename the function load_items to read_items and update every call to it.",
    "Create a file CHANGES.md that lists the changes made so far, one per line.",
    "Which functions does inventory.py define now? Answer with their names only.",
    "Add a one-line docstring to total_weight in inventory.py.",
    "Summarize the changes of this session in two sentences.",
]


class LogFollower:
    """Collects the server's request-log entries for POST /v1/messages, with the time each arrived."""

    def __init__(self, base_url: str) -> None:
        self.entries: list[tuple[float, dict[str, Any]]] = []
        self._base = base_url
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)

    def __enter__(self) -> LogFollower:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the request log stream did not open")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def _follow(self) -> None:
        with httpx.stream("GET", self._base + "/api/v1/logs/stream", timeout=None) as r:
            self._ready.set()
            for line in r.iter_lines():
                if self._stop.is_set():
                    return
                if line.startswith("data:"):
                    entry = json.loads(line[5:])
                    if entry["path"] == "/v1/messages" and entry["method"] == "POST":
                        self.entries.append((time.monotonic(), entry))

    def between(self, start: float, end: float) -> list[dict[str, Any]]:
        return [e for at, e in self.entries if start <= at <= end]


def reused(entry: dict[str, Any]) -> float:
    """The share of the prompt read from the cache: the prefix plus what chunk reuse moved in."""
    cache = entry.get("cache") or {}
    got = (cache.get("cached_tokens") or 0) + (cache.get("chunk_reused_tokens") or 0)
    return got / entry["input_tokens"] if entry.get("input_tokens") else 0.0


def run_turn(
    prompt: str, session: str | None, base_url: str, ctx: int, folder: Path, home: Path, timeout: float
) -> dict[str, Any]:
    env = {**os.environ, **claude_env(base_url, ctx), "HOME": str(home)}
    argv = [str(CLAUDE), "-p", prompt, "--output-format", "json", "--permission-mode", "acceptEdits"]
    argv += ["--max-turns", "8", *(("--resume", session) if session else ())]
    started = time.monotonic()
    try:
        proc = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True, timeout=timeout)
        lines = proc.stdout.strip().splitlines()
        result = json.loads(lines[-1]) if lines else {"is_error": True, "result": proc.stderr[-300:]}
    except subprocess.TimeoutExpired:
        result = {"is_error": True, "result": "timeout"}
    result["seconds"] = time.monotonic() - started
    result["started"], result["ended"] = started, time.monotonic()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--turns", type=int, default=len(TURNS))
    ap.add_argument("--ctx", type=int, default=32768)
    ap.add_argument("--timeout", type=float, default=900, help="seconds per turn")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not CLAUDE.exists():
        sys.exit("Claude Code is missing: run `make clients` first")
    with tempfile.TemporaryDirectory(prefix="lmdock-session-") as tmp:
        tmp_path = Path(tmp)
        folder, home = tmp_path / "project", tmp_path / "claude-home"
        folder.mkdir()
        home.mkdir()
        for name, text in PROJECT.items():
            (folder / name).write_text(text)
        server = lmdock_server(tmp_path / "lmdock-home", tmp_path / "server.log", ctx=args.ctx)
        turns: list[dict[str, Any]] = []
        try:
            with LogFollower(server.base_url) as log:
                session = None
                for i, prompt in enumerate(TURNS[: args.turns], 1):
                    result = run_turn(prompt, session, server.base_url, args.ctx, folder, home, args.timeout)
                    time.sleep(1)  # the last request's log entry follows its response
                    session = result.get("session_id") or session
                    requests = log.between(result["started"], result["ended"] + 1)
                    turns.append({"turn": i, "prompt": prompt, "result": result, "requests": requests})
                    print(
                        f"turn {i}: {len(requests)} requests, {result['seconds']:.0f} s, "
                        f"{'error' if result.get('is_error') else 'ok'}: {str(result.get('result'))[:80]!r}",
                        flush=True,
                    )
        finally:
            server.stop()
    longest = max((r["input_tokens"] or 0 for t in turns for r in t["requests"]), default=0)
    print("\n| turn | task | main-loop requests: prompt tokens (reused %, TTFT s) | side calls | turn s |")
    print("|---|---|---|---|---|")
    after_first: list[float] = []
    for t in turns:
        main, side = [], []
        for r in t["requests"]:
            is_main = (r["input_tokens"] or 0) >= longest / 2
            ttft = (r.get("ttft_ms") or 0) / 1000
            cell = f"{r['input_tokens']} ({100 * reused(r):.0f} %, {ttft:.1f})"
            (main if is_main else side).append(cell)
            if is_main and (t["turn"] > 1 or main[:-1]):
                after_first.append(reused(r))
        print(
            f"| {t['turn']} | {t['prompt'][:48]} | {'; '.join(main) or '–'} | {'; '.join(side) or '–'} "
            f"| {t['result']['seconds']:.0f} |"
        )
    if after_first:
        print(
            f"\nmain-loop requests after the first: {len(after_first)}, reuse min "
            f"{100 * min(after_first):.1f} %, mean {100 * sum(after_first) / len(after_first):.1f} %"
        )
    if args.json:
        args.json.write_text(json.dumps(turns, indent=1, default=str))


if __name__ == "__main__":
    main()
