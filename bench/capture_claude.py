"""Capture the first request of real Claude Code sessions, started in different folders.

    .venv/bin/python bench/capture_claude.py [--out bench/data] [--prompt "Create hello.txt ..."]

Starts a tiny local server that answers every POST /v1/messages with a short streamed "OK" and keeps the
body of the first request that carries tools (the session's main request; Claude Code's small
background calls carry none). Then runs `claude -p` (full prompt, not --bare) in two new folders with
different paths, with the environment `lmdock launch claude` sets, and writes one JSON file per folder:
bench/data/claude_first_<name>.json. No model runs here; bench/claude_code_reuse.py replays the files.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from _common import CLAUDE, MODEL, REPO, claude_env

FOLDERS = {"alpha": "work/alpha-notes", "beta": "projects/beta-service-api"}


def _sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _reply(model: str) -> list[bytes]:
    msg = {
        "id": "msg_capture",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 0},
    }
    return [
        _sse("message_start", {"type": "message_start", "message": msg}),
        _sse(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        _sse(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "OK"}},
        ),
        _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 1},
            },
        ),
        _sse("message_stop", {"type": "message_stop"}),
    ]


class _Capture(BaseHTTPRequestHandler):
    captured: list[dict] = []

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.end_headers()

    def do_GET(self) -> None:
        self._json({"data": [], "has_more": False})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            req = json.loads(body)
        except ValueError:
            req = {}
        path = self.path.split("?")[0]
        if path.endswith("/count_tokens"):
            self._json({"input_tokens": 1})
            return
        if req.get("tools"):
            self.captured.append(req)
        if not req.get("stream"):
            self._json(
                {
                    "id": "msg_capture",
                    "type": "message",
                    "role": "assistant",
                    "model": req.get("model", MODEL),
                    "content": [{"type": "text", "text": "OK"}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": {"input_tokens": 1, "output_tokens": 1},
                }
            )
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        for frame in _reply(req.get("model", MODEL)):
            self.wfile.write(frame)
        self.wfile.flush()

    def _json(self, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "data")
    ap.add_argument("--prompt", default="Create a file hello.txt containing the word hi.")
    args = ap.parse_args()
    if not CLAUDE.exists():
        sys.exit("Claude Code is missing: run `make clients` first")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Capture)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base_url = f"http://127.0.0.1:{server.server_address[1]}"
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lmdock-capture-") as tmp:
        home = Path(tmp) / "home"  # a clean Claude Code config, as a new user has
        home.mkdir()
        for name, rel in FOLDERS.items():
            folder = Path(tmp) / rel
            folder.mkdir(parents=True)
            (folder / "README.md").write_text(f"# {name}\n\nA small project.\n")
            _Capture.captured.clear()
            env = {**os.environ, **claude_env(base_url), "HOME": str(home)}
            proc = subprocess.run(
                [str(CLAUDE), "-p", args.prompt, "--permission-mode", "acceptEdits"],
                cwd=folder,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            if not _Capture.captured:
                sys.exit(f"no request with tools captured from {folder}: {proc.stdout}\n{proc.stderr}")
            first = _Capture.captured[0]
            out = args.out / f"claude_first_{name}.json"
            out.write_text(json.dumps({"folder": str(folder), "request": first}, indent=1))
            print(f"{out}: {len(json.dumps(first))} bytes, {len(first.get('tools', []))} tools")
    server.shutdown()


if __name__ == "__main__":
    main()
