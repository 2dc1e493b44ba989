"""What the benchmark scripts share: building, starting and stopping the two servers they compare
(llama-server and `lmdock serve`), the default model, and Claude Code pointed at a server.

llama-server is built from the llama.cpp source vendored in the llama-cpp-python sdist that lmdock depends
on, so both servers run the same ggml kernels. The build lives outside the repository, in
~/.cache/lmdock-bench/llama-server-<version>/ (override with LMDOCK_BENCH_CACHE), and is reused.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from lmdock.cli.client import Server as ClientServer
from lmdock.cli.launch_cmd import Target, claude_settings
from lmdock.core.config import default_models_dir
from lmdock.engine.cpu_check import decide_repack
from lmdock.models.default_model import DEFAULT_MODEL_KEY, default_model_path
from lmdock.models.store import read_metadata

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
CACHE = Path(os.environ.get("LMDOCK_BENCH_CACHE", Path.home() / ".cache" / "lmdock-bench"))
BUILD_ROOT = CACHE / f"llama-server-{LLAMA_CPP_PYTHON_VERSION}"
LLAMA_SERVER = BUILD_ROOT / "build" / "bin" / "llama-server"
DEFAULT_MODEL = default_model_path(default_models_dir())
MODEL = DEFAULT_MODEL_KEY
CLAUDE = REPO / "node_modules" / ".bin" / "claude"  # make clients
HEADERS = {"anthropic-version": "2023-06-01", "x-api-key": "bench"}

# The flags asked for, plus what llama-cpp-python's own CMakeLists forces (shared libraries, LLAMA_CURL
# OFF); GGML_NATIVE, GGML_OPENMP and the Release build type are also its defaults (scikit-build-core builds
# Release). Tests, examples and OpenSSL are left out only to shorten the build.
CMAKE_FLAGS = [
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_CURL=OFF",
    "-DGGML_NATIVE=ON",
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_OPENSSL=OFF",
]


def _run(cmd: list[str], log: Path) -> None:
    print(f"  $ {' '.join(cmd)}  (log: {log})", file=sys.stderr)
    with log.open("a") as out:
        subprocess.run(["nice", "-n", "10", *cmd], stdout=out, stderr=subprocess.STDOUT, check=True)


def build_llama_server() -> Path:
    """Return the cached llama-server binary, building it first (several minutes on 2 cores) if needed."""
    if LLAMA_SERVER.exists():
        return LLAMA_SERVER
    print(
        f"building llama-server from llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} into {BUILD_ROOT}",
        file=sys.stderr,
    )
    BUILD_ROOT.mkdir(parents=True, exist_ok=True)
    log = BUILD_ROOT / "build.log"
    src = BUILD_ROOT / "src"
    if not (src / "vendor" / "llama.cpp" / "CMakeLists.txt").exists():
        sdist_dir = BUILD_ROOT / "sdist"
        sdist = sdist_dir / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
        if not sdist.exists():
            _run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--no-binary",
                    ":all:",
                    f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}",
                    "-d",
                    str(sdist_dir),
                ],
                log,
            )
        with tarfile.open(sdist) as tar:
            tar.extractall(BUILD_ROOT, filter="data")
        (BUILD_ROOT / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}").rename(src)
    build = BUILD_ROOT / "build"
    _run(["cmake", "-S", str(src / "vendor" / "llama.cpp"), "-B", str(build), *CMAKE_FLAGS], log)
    _run(["cmake", "--build", str(build), "--target", "llama-server", "-j", str(os.cpu_count() or 1)], log)
    return LLAMA_SERVER


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    kids = [int(p) for p in text.split()]
    return kids + [g for k in kids for g in _children(k)]


def peak_rss_mib(pid: int) -> float:
    """VmHWM (peak resident set) of a process plus its descendants, in MiB."""
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its descendants so far."""
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def busy_seconds() -> float:
    """CPU time all processes on the machine have used since boot (all but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def wait_quiet(max_wait: float, threshold: float = 0.2, window: float = 2.0) -> float:
    """Wait (up to max_wait s) until the machine uses under `threshold` cores; return the last load seen."""
    deadline = time.monotonic() + max_wait
    while True:
        busy0 = busy_seconds()
        time.sleep(window)
        load = (busy_seconds() - busy0) / window
        if load < threshold or time.monotonic() >= deadline:
            return load
        print(f"  machine busy ({load:.2f} cores in use), waiting ...", file=sys.stderr, flush=True)
        time.sleep(10)


def default_model_repack(threads: int) -> bool:
    """Whether the default model may use llama.cpp's extra buffer types here, decided by lmdock's CPU
    self-check as `lmdock serve` decides: where they crash (Xeons with AMX) an in-process engine would
    die, and llama-server is run with `--no-repack` so that both servers run the same kernels."""
    quantization = read_metadata(DEFAULT_MODEL).quantization
    return decide_repack(DEFAULT_MODEL, DEFAULT_MODEL_KEY, quantization, threads).repack


@dataclass
class ServerSpec:
    """How to start one server; `ctx`, `threads` and `parallel` are the same for both."""

    name: str
    ctx: int
    threads: int = 2
    parallel: int = 4
    cache_dir: Path | None = None  # lmdock only: its on-disk prompt cache
    home: Path | None = None  # lmdock only: its LMDOCK_HOME (presets, database); default: the user's
    extra: tuple[str, ...] = ()  # more flags for this server

    def argv(self, port: int) -> list[str]:
        if self.name == "llama-server":
            # -kvu: one KV buffer shared by all slots, as lmdock shares its context among sequences
            # (without it each of the 4 slots would get ctx/4 tokens, too few for a 6k system prompt).
            return [
                str(build_llama_server()),
                "-m",
                str(DEFAULT_MODEL),
                "-t",
                str(self.threads),
                "-tb",
                str(self.threads),
                "-c",
                str(self.ctx),
                "-np",
                str(self.parallel),
                "-kvu",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-webui",
                *([] if default_model_repack(self.threads) else ["--no-repack"]),
                *self.extra,
            ]
        assert self.cache_dir is not None
        return [
            str(VENV_BIN / "lmdock"),
            "serve",
            "--model",
            str(DEFAULT_MODEL),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--threads",
            str(self.threads),
            "--ctx-size",
            str(self.ctx),
            "--parallel",
            str(self.parallel),
            "--cache-dir",
            str(self.cache_dir),
            *self.extra,
        ]


@dataclass
class Server:
    spec: ServerSpec
    log_path: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    peak_rss: float = 0.0
    cpu_s: float = 0.0  # CPU time of all its runs so far

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 300.0) -> Server:
        argv = self.spec.argv(self.port)
        with self.log_path.open("a") as log:
            log.write(f"\n### {' '.join(argv)}\n")
            log.flush()
            env = {**os.environ, "LMDOCK_HOME": str(self.spec.home)} if self.spec.home else None
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.spec.name} exited with {self.proc.returncode}; see {self.log_path}"
                )
            try:
                r = httpx.get(self.base_url + "/health", timeout=2)
                # llama-server: 503 while loading; lmdock: 200 with "status": "loading" and "loaded": [...]
                health = r.json() if r.status_code == 200 else {}
                if health.get("load_error"):
                    raise RuntimeError(f"{self.spec.name}: {health['load_error']}")
                if health.get("status") == "ok" and health.get("loaded", True):
                    return self
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"{self.spec.name} not ready after {timeout:.0f}s; see {self.log_path}")

    def stop(self) -> None:
        """Stop gracefully (SIGTERM, so lmdock can flush its disk cache), recording the peak RSS first."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.peak_rss = max(self.peak_rss, peak_rss_mib(self.proc.pid))
        self.cpu_s += cpu_seconds(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def lmdock_server(home: Path, log: Path, ctx: int = 32768) -> Server:
    """A started `lmdock serve` on the default model with its own LMDOCK_HOME (the agent benchmarks)."""
    return Server(ServerSpec("lmdock", ctx=ctx, cache_dir=home / "cache", home=home), log).start(timeout=300)


def claude_env(base_url: str, context_length: int = 32768) -> dict[str, str]:
    """What `lmdock launch claude` sets (lmdock.cli.launch_cmd) for the default model at `base_url`, and a
    cap of 1,024 output tokens per request: Claude Code asks for up to 32,000, and a 0.5B model that
    loses its way writes until then (8,000 tokens in one turn, measured), minutes at 10 tok/s."""
    url = httpx.URL(base_url)
    env = claude_settings(Target(ClientServer(url.host, url.port or 80), MODEL, context_length)).env
    return {**env, "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "1024"}


def message_events(
    client: httpx.Client, base: str, body: dict[str, Any], usage: dict[str, int], timeout: float = 900
) -> Iterator[dict[str, Any]]:
    """Stream POST /v1/messages: each SSE event as JSON. The token counts of message_start and
    message_delta are gathered into `usage`; a non-200 answer or an `error` event raises."""
    with client.stream("POST", base + "/v1/messages", json=body, headers=HEADERS, timeout=timeout) as r:
        if r.status_code != 200:
            raise RuntimeError(f"POST /v1/messages -> {r.status_code}: {r.read().decode()[:500]}")
        for line in r.iter_lines():
            if not line.startswith("data:"):
                continue
            data = json.loads(line[5:])
            kind = data.get("type")
            if kind == "error":
                raise RuntimeError(f"stream error: {data}")
            counts = data["message"].get("usage") if kind == "message_start" else data.get("usage")
            for key, value in (counts or {}).items() if kind in ("message_start", "message_delta") else ():
                if isinstance(value, int):
                    usage[key] = value
            yield data
