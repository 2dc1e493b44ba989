"""CPU self-check: may llama.cpp use its extra weight buffer types (CPU repacking, AMX) on this machine?

On some CPUs (Intel Xeons with AMX) llama.cpp crashes in `llama_decode` once Q4_K weights sit in an
extra buffer type. The first time a model of a given weight type loads on a machine, a throwaway
process (`python -m lmdock.engine.worker --probe`, engine/warmup.py) loads it with them and decodes a few tokens. If that
process dies, lmdock loads without them. The verdict is kept in LMDOCK_HOME/cpu-check.json, keyed by the
CPU's flags, llama.cpp's version and build features, and the weight type, so the probe runs once.
`--repack/--no-repack` (LMDOCK_REPACK) skip the probe and force either way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from lmdock.core.config import lmdock_home
from lmdock.core.kv_cache import KvCacheConfig
from lmdock.engine.process import WORKER_CWD, describe_exit, worker_argv

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 300


@dataclass
class RepackVerdict:
    repack: bool
    source: str  # "forced" | "probe" | "remembered" | "unprobed"
    reason: str

    def as_dict(self) -> dict:
        return {"repack": self.repack, "source": self.source, "reason": self.reason}


def cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith(("flags", "Features")):
                return " ".join(sorted(line.partition(":")[2].split()))
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def machine_key(weight_type: str | None, kv: KvCacheConfig) -> str:
    import llama_cpp

    build = llama_cpp.llama_print_system_info().decode(errors="replace")
    raw = f"{cpu_flags()}|llama-cpp-python {llama_cpp.__version__}|{build}|{weight_type or '?'}"
    raw += f"|k={kv.type_k}|v={kv.type_v}|fa={kv.flash_attn}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def verdict_file() -> Path:
    return lmdock_home() / "cpu-check.json"


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write(path: Path, key: str, entry: dict) -> None:
    """Remember a verdict. Only an optimisation: on a full disk the check simply runs again next time."""
    data = _read(path)
    data[key] = entry
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(path)
    except OSError as exc:
        log.warning("CPU self-check: could not remember the verdict in %s: %s", path, exc)
    finally:
        tmp.unlink(missing_ok=True)


def decide_repack(
    model_path: Path,
    model_key: str,
    weight_type: str | None,
    n_threads: int,
    flag: bool | None = None,
    kv: KvCacheConfig | None = None,
) -> RepackVerdict:
    """Whether to load with extra buffer types; probes in a throwaway process the first time (blocking).
    The probe decodes with the KV cache the load will use (`kv`): the attention kernels differ per type."""
    if flag is not None:
        return RepackVerdict(flag, "forced", "set by --repack/--no-repack or LMDOCK_REPACK")
    kv = kv or KvCacheConfig()
    key = machine_key(weight_type, kv)
    path = verdict_file()
    known = _read(path).get(key)
    if known is not None:
        return RepackVerdict(bool(known["repack"]), "remembered", known.get("reason", ""))
    started = time.monotonic()
    try:
        proc = _run_probe(model_path, model_key, n_threads, True, kv)
    except subprocess.TimeoutExpired:
        log.warning("CPU self-check for %s timed out; loading with extra buffer types", model_key)
        return RepackVerdict(True, "unprobed", "the probe timed out")
    seconds = time.monotonic() - started
    if proc.returncode < 0:
        # a crash counts against extra buffer types only if the same probe without them survives
        # (a damaged file that crashes either way says nothing about this CPU)
        try:
            plain = _run_probe(model_path, model_key, n_threads, False, kv)
        except subprocess.TimeoutExpired:
            plain = None
        if plain is None or plain.returncode != 0:
            return RepackVerdict(True, "unprobed", "the probe crashed with and without extra buffer types")
    if proc.returncode == 0:
        reason = f"a probe decoded with extra buffer types in {seconds:.1f}s"
        _write(path, key, {"repack": True, "reason": reason, "weight_type": weight_type, "at": time.time()})
        log.info("CPU self-check: llama.cpp's extra buffer types (weight repacking) work here; using them")
        return RepackVerdict(True, "probe", reason)
    if proc.returncode < 0:
        reason = (
            f"a probe decoding {weight_type or 'the'} weights with extra buffer types was "
            f"{describe_exit(proc.returncode)}"
        )
        _write(path, key, {"repack": False, "reason": reason, "weight_type": weight_type, "at": time.time()})
        log.warning(
            "CPU self-check: %s on this CPU, so models load without extra buffer types (no weight "
            "repacking/AMX); verdict kept in %s (force with --repack/--no-repack)",
            reason,
            path,
        )
        return RepackVerdict(False, "probe", reason)
    # the probe could not load the model at all: the real load will report why; decide nothing
    tail = (proc.stderr or "").strip().splitlines()[-1:] or [""]
    return RepackVerdict(True, "unprobed", f"the probe exited with status {proc.returncode}: {tail[0]}")


def _run_probe(model_path: Path, model_key: str, n_threads: int, extra_bufts: bool, kv: KvCacheConfig):
    cmd = worker_argv("--probe", os.path.abspath(model_path), model_key)
    cmd += [str(n_threads), "on" if extra_bufts else "off", kv.type_k, kv.type_v, kv.flash_attn]
    return subprocess.run(
        cmd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=PROBE_TIMEOUT,
        cwd=WORKER_CWD,
    )
