"""Small file tasks done by the real Claude Code CLI against lmdock, each checked by a script.

    .venv/bin/python bench/agent_tasks.py [--configs defaults,t1] [--only NAME,...] [--timeout 600]
                                          [--base-url URL] [--json OUT]

Every task gets a fresh folder with its starting files, runs `claude -p "<task>" --permission-mode
acceptEdits` (the full Claude Code prompt, not --bare) with the environment `lmdock launch claude` sets,
then a check function looks at the folder. Printed: k/N and seconds per task for each configuration.

Configurations (Claude Code sends no sampling fields, so the server's defaults decide):
  defaults  the model's sampling defaults (lmdock's built-ins for the default model)
  t1        the Messages API's documented default, temperature 1.0 over the whole vocabulary, set as the
            model's preset file ($LMDOCK_HOME/presets/<key>.json): what lmdock did before

Without --base-url the script starts `lmdock serve` (default model, 32k context, 2 threads) with its own
LMDOCK_HOME and stops it at the end; with it, the preset goes to --home (the server's LMDOCK_HOME).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from _common import CLAUDE, MODEL, claude_env, lmdock_server

CONFIGS = {
    "defaults": None,
    "t1": {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0},
}


def _read(folder: Path, name: str) -> str:
    path = folder / name
    return path.read_text(errors="replace") if path.is_file() else ""


def _py(folder: Path, code: str) -> bool:
    """Run a check snippet with the task folder on sys.path (isolated from this process)."""
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, timeout=30
    )
    return proc.returncode == 0


@dataclass
class Task:
    name: str
    prompt: str
    files: dict[str, str]
    check: Callable[[Path], bool]


TASKS = [
    Task(
        "create-file",
        "Create a file hello.txt containing the word hi.",
        {},
        lambda d: _read(d, "hello.txt").strip().lower().rstrip(".!") == "hi",
    ),
    Task(
        "write-function",
        "Create add.py with a function add(a, b) that returns the sum of a and b.",
        {},
        lambda d: _py(d, "from add import add; assert add(2, 3) == 5"),
    ),
    Task(
        "edit-json",
        'In config.json, change "debug" from true to false. Keep the other settings.',
        {"config.json": '{\n  "name": "demo",\n  "debug": true,\n  "port": 8080\n}\n'},
        lambda d: _py(
            d,
            "import json; c = json.load(open('config.json')); "
            "assert c == {'name': 'demo', 'debug': False, 'port': 8080}",
        ),
    ),
    Task(
        "fix-bug",
        "The function square in mathutil.py returns the wrong result. Fix it.",
        {"mathutil.py": "def square(x):\n    return x * 2\n"},
        lambda d: _py(d, "from mathutil import square; assert square(3) == 9 and square(-4) == 16"),
    ),
    Task(
        "read-then-write",
        "Read numbers.txt and write the sum of the numbers in it to sum.txt (just the number).",
        {"numbers.txt": "4\n8\n15\n16\n23\n42\n"},
        lambda d: _read(d, "sum.txt").strip() == "108",
    ),
    Task(
        "rename-function",
        "In greet.py, rename the function helo to hello.",
        {"greet.py": "def helo(name):\n    return f'Hello, {name}'\n"},
        lambda d: _py(
            d, "import greet; assert greet.hello('x') == 'Hello, x' and not hasattr(greet, 'helo')"
        ),
    ),
    Task(
        "append-section",
        "Add a section '## Usage' at the end of README.md with one sentence under it.",
        {"README.md": "# Demo\n\nA demo project.\n"},
        lambda d: "## Usage" in _read(d, "README.md") and _read(d, "README.md").startswith("# Demo"),
    ),
    Task(
        "greeting-from-file",
        "Read name.txt and create greeting.txt containing exactly: Hello, <name>! with the name from the file.",
        {"name.txt": "Ada\n"},
        lambda d: _read(d, "greeting.txt").strip() == "Hello, Ada!",
    ),
    Task(
        "replace-word",
        "In text.txt, replace every occurrence of the word foo with bar.",
        {"text.txt": "foo and foo again\nno more foo here\n"},
        lambda d: _read(d, "text.txt") == "bar and bar again\nno more bar here\n",
    ),
    Task(
        "delete-line",
        "Remove the line that contains TODO from notes.txt. Keep the other lines.",
        {"notes.txt": "buy milk\nTODO: call Bob\nwalk the dog\n"},
        lambda d: _read(d, "notes.txt").splitlines() == ["buy milk", "walk the dog"],
    ),
    Task(
        "fix-syntax",
        "broken.py has a syntax error. Fix it so that it runs.",
        {"broken.py": "def main()\n    print('ok')\n\nmain()\n"},
        lambda d: _py(d, "import runpy; runpy.run_path('broken.py')"),
    ),
    Task(
        "add-constant",
        "Add a constant MAX_RETRIES = 3 at the top of settings.py.",
        {"settings.py": "TIMEOUT = 10\n"},
        lambda d: _py(d, "import settings; assert settings.MAX_RETRIES == 3 and settings.TIMEOUT == 10"),
    ),
]


def run_task(task: Task, base_url: str, work: Path, home: Path, timeout: float) -> tuple[bool, float, str]:
    folder = work / task.name
    folder.mkdir(parents=True)
    for name, text in task.files.items():
        (folder / name).write_text(text)
    env = {**os.environ, **claude_env(base_url), "HOME": str(home)}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [str(CLAUDE), "-p", task.prompt, "--permission-mode", "acceptEdits", "--max-turns", "8"],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        note = (proc.stdout or proc.stderr).strip().replace("\n", " ")[:100]
    except subprocess.TimeoutExpired:
        note = "timeout"
    seconds = time.perf_counter() - t0
    return task.check(folder), seconds, note


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="defaults,t1")
    ap.add_argument("--only", help="comma-separated task names")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--base-url")
    ap.add_argument("--home", type=Path, help="the running server's LMDOCK_HOME (with --base-url)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not CLAUDE.exists():
        sys.exit("Claude Code is missing: run `make clients` first")
    tasks = [t for t in TASKS if not args.only or t.name in args.only.split(",")]
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="lmdock-agent-") as tmp:
        tmp_path = Path(tmp)
        server_home = args.home or tmp_path / "lmdock-home"
        server = None
        if args.base_url:
            base = args.base_url
        else:
            server = lmdock_server(server_home, tmp_path / "server.log")
            base = server.base_url
        preset = server_home / "presets" / f"{MODEL}.json"
        try:
            for config in args.configs.split(","):
                values = CONFIGS[config]
                if values is None:
                    preset.unlink(missing_ok=True)
                else:
                    preset.parent.mkdir(parents=True, exist_ok=True)
                    preset.write_text(json.dumps(values))
                claude_home = tmp_path / f"claude-home-{config}"
                claude_home.mkdir()
                rows = results[config] = []
                for task in tasks:
                    ok, seconds, note = run_task(task, base, tmp_path / config, claude_home, args.timeout)
                    rows.append({"task": task.name, "ok": ok, "seconds": round(seconds, 1), "note": note})
                    print(
                        f"{config:9} {task.name:20} {'PASS' if ok else 'fail'} {seconds:7.1f} s  {note}",
                        flush=True,
                    )
                if args.json:
                    args.json.write_text(json.dumps(results, indent=1))
        finally:
            preset.unlink(missing_ok=True)
            if server is not None:
                server.stop()
    print()
    names = list(results)
    print("| task | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for i, task in enumerate(tasks):
        cells = []
        for name in names:
            rows = results[name]
            if i < len(rows):
                r = rows[i]
                cells.append(f"{'✓' if r['ok'] else '✗'} {r['seconds']:.0f} s")
            else:
                cells.append("-")
        print(f"| {task.name} | " + " | ".join(cells) + " |")
    totals = [f"{sum(r['ok'] for r in results[n])}/{len(results[n])}" for n in names]
    print("| **k/N** | " + " | ".join(totals) + " |")


if __name__ == "__main__":
    main()
