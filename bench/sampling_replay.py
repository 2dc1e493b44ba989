"""Which sampling defaults make a small model call Claude Code's tools right: replay the captured first
request (bench/data/claude_first_alpha.json) with a few user prompts under several server-side defaults.

    .venv/bin/python bench/sampling_replay.py [--samples 5] [--configs t1,llama,t02,greedy] [--base-url URL --home DIR]

Claude Code sends no sampling fields, so each configuration is written as the model's preset file
($LMDOCK_HOME/presets/<key>.json) and the request goes out exactly as captured except for the user's
words. An answer counts as right when its first tool call is the expected tool with the expected
argument. The long system prompt and tools are computed once and then come from the prompt cache, so
each sample costs only the changed tokens and the answer. Prints right/total per configuration.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from _common import HEADERS, MODEL, lmdock_server

DATA = Path(__file__).resolve().parent / "data"
CONFIGS = {
    "t1": {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0},  # the Messages API's default
    "llama": {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05},  # llama.cpp's defaults
    "t05": {"temperature": 0.5, "top_k": 40, "top_p": 0.95, "min_p": 0.05},
    "t02": {"temperature": 0.2, "top_k": 40, "top_p": 0.95, "min_p": 0.05},
    "greedy": {"temperature": 0.0},
}


def _arg(name: str, key: str, test: Callable[[str], bool]) -> Callable[[dict], bool]:
    return lambda call: call.get("name") == name and test(str(call.get("input", {}).get(key, "")))


PROMPTS: list[tuple[str, Callable[[dict], bool]]] = [
    (
        "Create a file hello.txt containing the word hi.",
        _arg("Write", "file_path", lambda p: p.endswith("hello.txt")),
    ),
    ("Show me what is in README.md.", _arg("Read", "file_path", lambda p: p.endswith("README.md"))),
    ("Run the command `ls -la`.", _arg("Bash", "command", lambda c: "ls" in c)),
    ("Create a directory named build.", _arg("Bash", "command", lambda c: "mkdir" in c and "build" in c)),
    (
        "Create notes.md with the heading # Notes.",
        _arg("Write", "file_path", lambda p: p.endswith("notes.md")),
    ),
]


def with_prompt(req: dict[str, Any], text: str) -> dict[str, Any]:
    body = copy.deepcopy(req)
    for msg in body["messages"]:
        if msg["role"] == "user" and isinstance(msg["content"], list):
            msg["content"][-1]["text"] = text
            break
    body["stream"] = False
    body["max_tokens"] = 256
    return body


def first_tool_call(base: str, body: dict[str, Any]) -> dict | None:
    r = httpx.post(base + "/v1/messages", json=body, headers=HEADERS, timeout=3600)
    r.raise_for_status()
    for block in r.json()["content"]:
        if block["type"] == "tool_use":
            return block
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--configs", default="t1,llama,t02,greedy")
    ap.add_argument("--base-url")
    ap.add_argument("--home", type=Path)
    args = ap.parse_args()
    req = json.loads((DATA / "claude_first_alpha.json").read_text())["request"]
    with tempfile.TemporaryDirectory(prefix="lmdock-sampling-") as tmp:
        home = args.home or Path(tmp) / "home"
        server = None
        base = args.base_url
        if base is None:
            server = lmdock_server(home, Path(tmp) / "server.log")
            base = server.base_url
        preset = home / "presets" / f"{MODEL}.json"
        preset.parent.mkdir(parents=True, exist_ok=True)
        try:
            t0 = time.perf_counter()
            first_tool_call(base, with_prompt(req, PROMPTS[0][0]))  # warm the prompt cache
            print(f"warm-up (cold prompt): {time.perf_counter() - t0:.0f} s", flush=True)
            table = []
            for config in args.configs.split(","):
                preset.write_text(json.dumps(CONFIGS[config]))
                right = total = 0
                t0 = time.perf_counter()
                for text, ok in PROMPTS:
                    n = 1 if config == "greedy" else args.samples
                    for _ in range(n):
                        call = first_tool_call(base, with_prompt(req, text))
                        right += bool(call and ok(call))
                        total += 1
                        shown = (
                            f"{call['name']} {json.dumps(call['input'])[:60]}" if call else "(no tool call)"
                        )
                        print(f"  {config:7} {text[:40]:40} {shown}", flush=True)
                seconds = (time.perf_counter() - t0) / max(total, 1)
                table.append((config, right, total, seconds))
                print(f"{config}: {right}/{total} right, {seconds:.1f} s per answer", flush=True)
        finally:
            preset.unlink(missing_ok=True)
            if server is not None:
                server.stop()
    print("\n| defaults | settings | right first tool call | s / answer |\n|---|---|---|---|")
    for config, right, total, seconds in table:
        print(f"| {config} | {json.dumps(CONFIGS[config])} | {right}/{total} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
