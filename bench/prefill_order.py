"""A short prompt arriving behind long ones: time to first token of each, lmdock beside llama-server.

    .venv/bin/python bench/prefill_order.py [--llama-server] [--threads 2]

Two prompts of ~3k tokens and one of ~500 (all new to the cache) are sent 50 ms apart to a server with 3
slots, through POST /v1/messages, 4 output tokens each. What Claude Code does when its main loop sends a
turn while subagent requests are still reading their prompts. lmdock prefills the prompt with the least
work left first (a prompt's wait is bounded by about its own length of others' work); a server that
prefills oldest first, or shares each batch among all prompts, makes the short one wait for the long ones.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Server, ServerSpec, wait_quiet  # noqa: E402
from compare_llama_server import cpu_model, model_id, new_client, nonce, send, text_of, user  # noqa: E402

PROMPTS = {"long A": (3000, 1), "long B": (3000, 2), "short C": (400, 3)}


def measure(base: str) -> dict[str, tuple[int, float]]:
    """Prompt tokens and seconds from the first request's start to each reply's first token."""
    model = model_id(base)
    t0 = time.perf_counter()

    def one(i_name: tuple[int, str]) -> tuple[str, int, float]:
        i, name = i_name
        tokens, seed = PROMPTS[name]
        time.sleep(0.05 * i)
        with new_client() as client:
            started = time.perf_counter()
            reply = send(client, base, model, [user(f"{nonce()} {text_of(tokens, seed)}\nSummarize.")], 4)
        return name, reply.input_tokens, started + reply.ttft - t0

    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        rows = list(pool.map(one, enumerate(PROMPTS)))
    return {name: (n, ttft) for name, n, ttft in rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llama-server", action="store_true", help="also the vendored llama-server")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    servers = ["lmdock"] + (["llama-server"] if args.llama_server else [])
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in servers:
            spec = ServerSpec(name, ctx=16384, threads=args.threads, parallel=3)
            if name == "lmdock":
                spec.cache_dir = Path(tmp) / "cache"
            print(f"{name} ...", file=sys.stderr, flush=True)
            with Server(spec, Path(tmp) / "servers.log") as server:
                wait_quiet(60)
                results[name] = measure(server.base_url)
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    print(f"\n{when}, {cpu_model()}, {args.threads} threads, 3 slots; seconds to the first token\n")
    print("| prompt | tokens | " + " | ".join(servers) + " |")
    print("|---|---:|" + "---:|" * len(servers))
    for name in PROMPTS:
        n = results["lmdock"][name][0]
        print(f"| {name} | {n:,} | " + " | ".join(f"{results[s][name][1]:.1f}" for s in servers) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
