"""The test fixtures every tier shares: where the default model lives, a real `lmdock serve` process
(`start_server` -> `Server`), the official SDKs and the CLI pointed at it, and the session's shared
server and its strict Anthropic client (`server`, `client`)."""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from lmdock.core.config import default_models_dir
from lmdock.engine.cpu_check import decide_repack
from lmdock.models.default_model import DEFAULT_MODEL_KEY, default_model_path
from lmdock.models.store import read_metadata

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = default_model_path(default_models_dir())


@functools.cache
def default_model_repack() -> bool:
    """Whether the default model may use llama.cpp's extra buffer types here, decided as `lmdock serve`
    decides (its CPU self-check): an engine in the test process would crash where they crash (Xeons with
    AMX), taking the whole test run with it."""
    quantization = read_metadata(DEFAULT_MODEL).quantization
    return decide_repack(DEFAULT_MODEL, DEFAULT_MODEL_KEY, quantization, n_threads=2).repack


# this checkout's CLI, through the test's Python (`-P`: like the `lmdock` script, nothing of the current
# directory on the import path)
LMDOCK = [sys.executable, "-P", "-m", "lmdock.cli.main"]


def die_with_pytest() -> None:
    """Run in the child before exec: the kernel sends it SIGTERM when pytest goes, even by SIGKILL (a CI
    timeout), so no server outlives the run that started it and holds its port and two cores."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running `lmdock serve` subprocess."""

    proc: subprocess.Popen
    base_url: str
    log_path: Path
    api_key: str = "test-key"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    def anthropic(
        self, *, api_key: str = "unused", timeout: float = 300, strict: bool = True
    ) -> anthropic.Anthropic:
        """The official Anthropic SDK; `strict` validates every response against the SDK's own types."""
        return anthropic.Anthropic(
            base_url=self.base_url,
            api_key=api_key,
            max_retries=0,
            timeout=timeout,
            _strict_response_validation=strict,
        )

    def openai(self, *, api_key: str = "unused", timeout: float = 300, strict: bool = True) -> openai.OpenAI:
        """The official OpenAI SDK on /v1; `strict` as for `anthropic`."""
        return openai.OpenAI(
            base_url=f"{self.base_url}/v1",
            api_key=api_key,
            max_retries=0,
            timeout=timeout,
            _strict_response_validation=strict,
        )

    def cli(
        self, *args: str, timeout: float = 600, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        """`lmdock ARGS --port PORT` against this server (output captured, wide enough for its tables)."""
        return subprocess.run(
            [*LMDOCK, *args, "--port", str(self.port)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "COLUMNS": "250", **(env or {})},
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(
    tmp: Path,
    *args: str,
    env: dict[str, str] | None = None,
    api_key: str = "test-key",
    ready: Callable[[dict], bool] = lambda health: bool(health["loaded"]),
    port: int | None = None,
    new_session: bool = False,
    lmdock: list[str] | None = None,
    cwd: Path | None = None,
) -> Server:
    """Start `lmdock serve` on a free port (or `port`, to restart on the same address) and wait until
    `ready(health)` (the default model is loaded). `new_session`: in a process group of its own, like a
    command in a terminal (so a test can send Ctrl-C to the whole group). `lmdock` is the command that
    runs lmdock (default: this checkout's, through the test's Python). `cwd`: the directory it starts in."""
    port = port or free_port()
    log_path = tmp / f"server-{port}.log"
    full_env = {
        **os.environ,
        "LMDOCK_HOME": str(tmp / "home"),
        "LMDOCK_MODELS_DIR": str(default_models_dir()),
        "LMDOCK_PING_INTERVAL": "1",
        **(env or {}),
    }
    cmd = [*(lmdock or LMDOCK), "serve", "--port", str(port), "--threads", "2", *args]
    if "--cache-dir" not in args:
        cmd += ["--cache-dir", str(tmp / "cache")]
    if "--ctx-size" not in args:
        cmd += ["--ctx-size", "8192"]
    proc = subprocess.Popen(
        cmd,
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
        env=full_env,
        start_new_session=new_session,
        cwd=cwd,
        preexec_fn=die_with_pytest if sys.platform == "linux" else None,
    )
    server = Server(proc=proc, base_url=f"http://127.0.0.1:{port}", log_path=log_path, api_key=api_key)
    deadline = (
        time.monotonic() + 600
    )  # a worker start (CPU self-check, load, warm-up) is slow on a busy machine
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"lmdock serve exited with {proc.returncode}:\n{server.log()}")
        try:
            health = httpx.get(f"{server.base_url}/health", timeout=2).json()
            if ready(health):
                return server
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"lmdock serve did not become ready:\n{server.log()}")


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    """One shared server without authentication, on the default model."""
    if not DEFAULT_MODEL.is_file():
        pytest.fail(f"default model missing at {DEFAULT_MODEL}: run `make model`")
    srv = start_server(tmp_path_factory.mktemp("server"))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def client(server: Server) -> anthropic.Anthropic:
    """The official SDK on the shared server, validating every response strictly against its own types."""
    return server.anthropic()
