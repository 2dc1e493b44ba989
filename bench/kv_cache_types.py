"""KV cache types and flash attention: lmdock beside llama-server with the same -ctk/-ctv/-fa (issue 25).

    .venv/bin/python bench/kv_cache_types.py [--config f16:f16:on ...] [--json OUT] [--table IN...]

For each KV configuration, each server (same model, threads, context, one slot) is started fresh and
driven through POST /v1/messages with temperature 0:

  depth 0    a short prompt, then 128 tokens: decode tok/s
  depth 8k   an 8k-token document and a question, then 128 tokens: decode tok/s at that depth
  depth 20k  the same document grown to 20k tokens (its first 8k reused from the slot), then 128 tokens

Prefill tok/s of 20k is the uncached prompt tokens of the two long requests over their two TTFTs: the 8k
prefill and the 12k that continues it are together the work of one 20k prefill, so each configuration
prefills 20k tokens once per server instead of twice. Also reported: peak RSS of the process that holds
the model (lmdock's worker; llama-server itself) and, for lmdock, the bytes per token of the prompt-cache
file the 20k prompt left on disk. A quantized V cache needs flash attention in llama.cpp, so the rows
without it quantize K only (V stays f16). lmdock runs with `--spec-type none`, as llama-server runs
without speculation: the rows compare the KV cache, not speculation (bench/speculation.py does that).

One configuration takes about 12 minutes on 2 cores (both servers); run them on a quiet machine, a few at a
time if need be, appending to the same --json file, then print the table with --table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Server, ServerSpec, peak_rss_mib, wait_quiet  # noqa: E402
from compare_llama_server import model_id, new_client, send, text_of, user  # noqa: E402

CONFIGS = ["f16:f16:on", "f16:f16:off", "q8_0:q8_0:on", "q8_0:f16:off", "q4_0:q4_0:on", "q4_0:f16:off"]
DECODE = 128
CTX = 24576
QUESTION = (
    "Using only functions from the reference above, write a long, complete Python module that syncs a "
    "fleet's cargo manifests. Output only code."
)


def _flags(server: str, k: str, v: str, fa: str) -> tuple[str, ...]:
    if server == "llama-server":
        return ("-ctk", k, "-ctv", v, "-fa", fa)
    # speculation off: both servers do the same work per token (llama-server runs without it too)
    return ("--cache-type-k", k, "--cache-type-v", v, "--flash-attn", fa, "--spec-type", "none")


def _worker_pid(base: str) -> int | None:
    models = httpx.get(base + "/api/v1/models", timeout=30).json()["models"]
    for m in models:
        for instance in m.get("loaded_instances", []):
            return instance["worker"]["pid"]
    return None


def _disk_bytes_per_token(cache_dir: Path) -> float | None:
    best = None
    for meta in cache_dir.rglob("*.meta"):
        info = json.loads(meta.read_text())
        if best is None or info["n_tokens"] > best[0]:
            best = (info["n_tokens"], info["state_size"])
    return best[1] / best[0] if best else None


def _document(tokens: int) -> str:
    """The reference text, `tokens` long; a longer one starts with a shorter one (same seed)."""
    return text_of(tokens, seed=25)


def run_config(config: str, server_name: str, work: Path, depths: tuple[int, ...]) -> dict[str, Any]:
    k, v, fa = config.split(":")
    cache_dir = work / f"cache-{config.replace(':', '-')}"
    spec = ServerSpec(
        server_name, ctx=CTX, parallel=1, cache_dir=cache_dir, extra=_flags(server_name, k, v, fa)
    )
    server = Server(spec, work / f"{server_name}.log")
    row: dict[str, Any] = {"config": config, "server": server_name}
    with server:
        base = server.base_url
        model = model_id(base)
        row["load"] = wait_quiet(60)
        client = new_client()
        short = send(client, base, model, [user(f"[{time.time()}] " + QUESTION)], DECODE)
        row["decode_tps_0"] = short.decode_tps
        prefill_tokens = prefill_seconds = 0.0
        for i, depth in enumerate(depths):
            reply = send(client, base, model, [user(_document(depth) + "\n\n" + QUESTION)], DECODE)
            row[f"decode_tps_{i + 1}"] = reply.decode_tps
            row[f"prompt_tokens_{i + 1}"] = reply.input_tokens + reply.cached_tokens
            row[f"cached_tokens_{i + 1}"] = reply.cached_tokens
            row[f"output_tokens_{i + 1}"] = reply.output_tokens
            prefill_tokens += reply.input_tokens
            prefill_seconds += reply.ttft
        row["depths"] = list(depths)
        row["prefill_tokens"] = prefill_tokens
        row["prefill_tps"] = prefill_tokens / prefill_seconds
        pid = _worker_pid(base) if server_name == "lmdock" else server.proc.pid
        row["rss_mib"] = peak_rss_mib(pid) if pid else None
    if server_name == "lmdock":
        row["disk_bytes_per_token"] = _disk_bytes_per_token(cache_dir)
    return row


def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(rows: list[dict[str, Any]]) -> str:
    """A markdown table: one line per configuration, lmdock / llama-server for each measure."""
    by = {(r["config"], r["server"]): r for r in rows}
    out = [
        "| K / V / FA | decode tok/s depth 0 | depth 8k | depth 20k | prefill tok/s (20k) | worker RSS MiB "
        "| disk bytes/token | decode 20k vs f16 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    f16 = by.get(("f16:f16:on", "lmdock"))
    for config in dict.fromkeys(r["config"] for r in rows):
        lm, ls = by.get((config, "lmdock"), {}), by.get((config, "llama-server"), {})

        def pair(key: str, lm=lm, ls=ls) -> str:
            a, b = lm.get(key), ls.get(key)
            ratio = f" ({a / b:.2f})" if a and b else ""
            return f"{_fmt(a)} / {_fmt(b)}{ratio}"

        vs_f16 = f"{lm['decode_tps_2'] / f16['decode_tps_2']:.2f}" if f16 and lm.get("decode_tps_2") else "–"
        out.append(
            f"| {config.replace(':', ' / ')} | {pair('decode_tps_0')} | {pair('decode_tps_1')} "
            f"| {pair('decode_tps_2')} | {pair('prefill_tps')} | {pair('rss_mib')} "
            f"| {_fmt(lm.get('disk_bytes_per_token'), 0)} | {vs_f16} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", action="append", help="K:V:FA, e.g. q8_0:q8_0:on (repeatable)")
    parser.add_argument("--server", action="append", choices=["lmdock", "llama-server"])
    parser.add_argument("--json", type=Path, help="append each row to this JSON-lines file")
    parser.add_argument("--table", type=Path, nargs="*", help="print the table of these JSON-lines files")
    parser.add_argument("--depths", default="8000,20000", help="the two document lengths (tokens)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/lmdock-bench-kv"))
    args = parser.parse_args()
    if args.table is not None:
        rows = [json.loads(line) for p in args.table for line in p.read_text().splitlines() if line.strip()]
        print(table(rows))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for config in args.config or CONFIGS:
        for server in args.server or ["lmdock", "llama-server"]:
            started = time.monotonic()
            row = run_config(config, server, args.work, tuple(int(d) for d in args.depths.split(",")))
            row["seconds"] = round(time.monotonic() - started, 1)
            row["at"] = datetime.datetime.now().isoformat(timespec="seconds")
            print(json.dumps(row), flush=True)
            rows.append(row)
            if args.json:
                with args.json.open("a") as f:
                    f.write(json.dumps(row) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
