"""Facts about the worker processes the server starts: how to start one, how it ended, what it holds."""

from __future__ import annotations

import os
import signal
import sys

# A worker starts in the file system's root, with nothing of the current directory on its import path
# (`-P`): a `llama_cpp.py` or `lmdock/` lying where `lmdock serve` was started is never imported by it.
# Every path it is given is absolute.
WORKER_CWD = os.path.abspath(os.sep)


def worker_argv(*args: str) -> list[str]:
    """The command line of a worker process (`python -P -m lmdock.engine.worker ARGS`), to be run in
    WORKER_CWD: the model's engine, or the CPU self-check's probe (`--probe ...`)."""
    return [sys.executable, "-P", "-m", "lmdock.engine.worker", *args]


def describe_exit(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exited with status {rc}"


def rss_bytes(pid: int | None) -> int | None:
    """Resident memory of a process (Linux), for /health and `lmdock ps`."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
