"""Worker-process numbers: server and worker RSS, and the time from a worker crash to the first request
served after the restart.

    .venv/bin/python bench/worker_restart.py [--threads 2] [--rounds 3] [--signal SIGKILL]

Starts its own `lmdock serve` on the default model, prints numbers, stops the server. Run it on a quiet
machine: on a shared one the load times (and so the restart times) are noisy.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BODY = {"model": "default", "max_tokens": 8, "messages": [{"role": "user", "content": "Say hi."}]}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mib(n: int | None) -> str:
    return f"{n / 2**20:.0f} MiB" if n else "?"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--signal", default="SIGKILL")
    args = ap.parse_args()
    sig = signal.Signals[args.signal]
    port = _port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        cmd = [sys.executable, "-m", "lmdock.cli.main", "serve", "--port", str(port)]
        cmd += ["--threads", str(args.threads), "--ctx-size", "4096", "--cache-dir", str(Path(tmp) / "kv")]
        server = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
        try:
            started = time.monotonic()
            while True:
                if server.poll() is not None:
                    sys.exit(f"server exited:\n{log.read_text()}")
                try:
                    if httpx.get(base + "/health", timeout=2).json()["loaded"]:
                        break
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
                time.sleep(0.2)
            print(f"server ready in {time.monotonic() - started:.1f}s")
            httpx.post(base + "/v1/messages", json=BODY, timeout=300).raise_for_status()
            health = httpx.get(base + "/health").json()
            (key, worker), *_ = health["workers"].items()
            print(
                f"RSS after one request: server {_mib(health['server_rss_bytes'])}, worker {_mib(worker['rss_bytes'])}"
            )
            for i in range(args.rounds):
                pid = httpx.get(base + "/health").json()["workers"][key]["pid"]
                os.kill(pid, sig)
                crashed = time.monotonic()
                while True:  # the first request may arrive before the server noticed: retry 503s
                    r = httpx.post(base + "/v1/messages", json=BODY, timeout=300)
                    if r.status_code == 200:
                        break
                    time.sleep(0.05)
                served = time.monotonic() - crashed
                w = httpx.get(base + "/health").json()["workers"][key]
                print(
                    f"round {i + 1}: {sig.name} -> first request served {served:.2f}s later "
                    f"(worker ready after {w['last_restart_seconds']:.2f}s)"
                )
        finally:
            server.terminate()
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
