"""Claude Code's first request from a second folder, after one from a first folder: TTFT second / cold.

    .venv/bin/python bench/claude_code_reuse.py [--only lmdock|llama-server] [--ctx 32768] [--json OUT]

Replays the two captured first requests (bench/data/claude_first_{alpha,beta}.json, from
bench/capture_claude.py) to a freshly started server: alpha cold, then beta. The two differ only in the
project path, which Claude Code names half-way through its system prompt (the memory directory) and in
the environment block, so longest-common-prefix caching loses the tool definitions that follow.
lmdock runs with its defaults (chunk reuse on); llama-server with `--cache-reuse 256`. Both get the same
model, threads, context and slots, one server at a time. The requests go out as captured (streaming,
Claude Code's own fields), with max_tokens cut to 8: only the time to the first token matters here.
Target: lmdock second/cold <= 0.15 and below llama-server's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Server, ServerSpec, message_events  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
# Claude Code fields llama-server's Anthropic endpoint may refuse; dropped for it only if it does
_OPTIONAL = ("context_management", "output_config", "thinking", "metadata")


def load(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"claude_first_{name}.json").read_text())["request"]


def send(base: str, body: dict[str, Any]) -> dict[str, Any]:
    """Stream one request; TTFT is the time to the first content_block_delta (text or thinking)."""
    usage: dict[str, int] = {}
    t0 = time.perf_counter()
    ttft = None
    text = []
    client = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))
    with client:
        for data in message_events(client, base, body, usage, timeout=3600):
            kind = data.get("type")
            if kind in ("content_block_delta", "content_block_start") and ttft is None:
                ttft = time.perf_counter() - t0
            if kind == "content_block_delta":
                d = data["delta"]
                text.append(d.get("text") or d.get("partial_json") or "")
    total = time.perf_counter() - t0
    return {
        "ttft": ttft if ttft is not None else total,
        "total": total,
        "usage": usage,
        "text": "".join(text),
    }


def send_captured(base: str, body: dict[str, Any]) -> dict[str, Any]:
    """`send`, retried without Claude Code's optional fields if the server refuses them (llama-server)."""
    try:
        return send(base, body)
    except RuntimeError as exc:
        print(f"  the server refused the request as captured ({exc}); retrying without {_OPTIONAL}")
        return send(base, {k: v for k, v in body.items() if k not in _OPTIONAL})


def run(name: str, ctx: int, threads: int, logs: Path) -> dict[str, Any]:
    extra: tuple[str, ...] = ("--cache-reuse", "256") if name == "llama-server" else ()
    spec = ServerSpec(name=name, ctx=ctx, threads=threads, cache_dir=logs / "cache", extra=extra)
    results: dict[str, Any] = {"server": name, "flags": list(extra)}
    with Server(spec, logs / f"{name}.log") as server:
        for label, req in (("cold", load("alpha")), ("second", load("beta"))):
            body = {**req, "max_tokens": 8, "stream": True}
            r = (
                send_captured(server.base_url, body)
                if name == "llama-server"
                else send(server.base_url, body)
            )
            results[label] = r
            u = r["usage"]
            print(
                f"  {name:12} {label:6} TTFT {r['ttft']:7.1f} s  input {u.get('input_tokens')}  "
                f"cache_read {u.get('cache_read_input_tokens')}",
                flush=True,
            )
    results["ratio"] = results["second"]["ttft"] / results["cold"]["ttft"]
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=("lmdock", "llama-server"))
    ap.add_argument("--ctx", type=int, default=32768)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    names = [args.only] if args.only else ["lmdock", "llama-server"]
    out = []
    with tempfile.TemporaryDirectory(prefix="lmdock-bench-cc-") as tmp:
        for name in names:
            out.append(run(name, args.ctx, args.threads, Path(tmp)))
    print("\n| server | cold TTFT (s) | second-folder TTFT (s) | second / cold | cached tokens (second) |")
    print("| --- | --- | --- | --- | --- |")
    for r in out:
        cached = r["second"]["usage"].get("cache_read_input_tokens", "n/a")
        print(
            f"| {r['server']} {' '.join(r['flags'])} | {r['cold']['ttft']:.1f} | {r['second']['ttft']:.1f} | "
            f"{r['ratio']:.3f} | {cached} |"
        )
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
