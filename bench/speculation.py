"""Benchmark draftless speculative decoding: decode tok/s with and without it, through POST /v1/messages.

Scenarios (greedy, streamed, one request at a time after a warm-up run of the same prompt):
- edit: a 100-line Python file (bench/data/edit_source.txt) to be given back with every function renamed
  (copy-heavy: most output tokens repeat the prompt);
- prose: a story (nothing to copy: speculation must not cost);
- 4 streams: two edit and two prose requests at once; aggregate tok/s is all their output tokens over the
  time from the first delta of any to the last delta of any (drafts share each step with other sequences).

Servers: lmdock `--spec-type none`, lmdock with its default (ngram), and with `--llama-server` the vendored
llama-server without speculation and with `--spec-type ngram-map-k`. Decode tok/s is (output tokens - 1)
over the time from the first to the last streamed delta; acceptance comes from lmdock's /metrics.

    .venv/bin/python bench/speculation.py [--llama-server] [--repeats 2] [--max-tokens 1000]
"""

from __future__ import annotations

import argparse
import datetime
import re
import statistics
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Server, ServerSpec, wait_quiet  # noqa: E402
from compare_llama_server import Reply, cpu_model, model_id, new_client, send, user  # noqa: E402

SOURCE = (Path(__file__).resolve().parent / "data" / "edit_source.txt").read_text()
PROMPTS = {
    "edit": f"Here is a Python file:\n\n```python\n{SOURCE}```\n\nRename every function to camelCase "
    "(load_items -> loadItems and so on) and give me the whole file back, changed only there.",
    "prose": "Write a 400-word story about a lighthouse keeper who finds a message in a bottle.",
}
SERVERS = {
    "lmdock none": ServerSpec("lmdock", ctx=8192, extra=("--spec-type", "none")),
    "lmdock ngram": ServerSpec("lmdock", ctx=8192, extra=("--spec-type", "ngram")),
    "llama-server none": ServerSpec("llama-server", ctx=8192),
    "llama-server ngram-map-k": ServerSpec("llama-server", ctx=8192, extra=("--spec-type", "ngram-map-k")),
}


def spec_counts(base: str) -> tuple[float, float]:
    """lmdock's proposed and accepted draft tokens so far ((0, 0) where there are none)."""
    try:
        text = httpx.get(base + "/metrics", timeout=10).text
    except httpx.HTTPError:
        return 0.0, 0.0

    def total(name: str) -> float:
        return sum(float(v) for v in re.findall(rf"^{name}_total\{{[^}}]*\}} (\S+)$", text, re.M))

    return total("lmdock_spec_proposed_tokens"), total("lmdock_spec_accepted_tokens")


def measure(server: Server, max_tokens: int, repeats: int) -> dict[str, dict[str, float]]:
    base = server.base_url
    model = model_id(base)
    out: dict[str, dict[str, float]] = {}
    for name, prompt in PROMPTS.items():
        with new_client() as client:
            send(client, base, model, [user(prompt)], 8)  # the prompt is cached: decode alone is timed
        rates, tokens = [], 0
        p0, a0 = spec_counts(base)
        for _ in range(repeats):
            wait_quiet(60)
            with new_client() as client:
                reply = send(client, base, model, [user(prompt)], max_tokens)
            rates.append(reply.decode_tps)
            tokens = reply.output_tokens
        p1, a1 = spec_counts(base)
        out[name] = {
            "tps": statistics.median(rates),
            "tokens": tokens,
            "proposed": p1 - p0,
            "accepted": a1 - a0,
        }
        print(f"  {name}: {out[name]}", file=sys.stderr, flush=True)
    rounds = []
    for _ in range(repeats):
        wait_quiet(60)
        rounds.append(four_streams(base, model, max_tokens))
    tps, tokens = sorted(rounds)[len(rounds) // 2]
    out[FOUR] = {"tps": tps, "tokens": tokens, "proposed": 0, "accepted": 0}
    print(f"  {FOUR}: {out[FOUR]}", file=sys.stderr, flush=True)
    return out


FOUR = "4 streams"


def four_streams(base: str, model: str, max_tokens: int) -> tuple[float, int]:
    """Aggregate decode tok/s of two edit and two prose requests sent together, and their tokens."""

    def one(prompt: str) -> Reply:
        with new_client() as client:
            return send(client, base, model, [user(prompt)], max_tokens)

    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(one, [PROMPTS["edit"], PROMPTS["prose"]] * 2))
    span = max(r.t_last for r in replies) - min(r.t_first for r in replies)
    tokens = sum(r.output_tokens for r in replies)
    return tokens / span, tokens


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--llama-server", action="store_true", help="also llama-server without and with ngram-map-k"
    )
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    names = [n for n in SERVERS if args.llama_server or n.startswith("lmdock")]
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            spec = SERVERS[name]
            spec.threads = args.threads
            if spec.name == "lmdock":
                spec.cache_dir = Path(tmp) / name.replace(" ", "-")
            print(f"{name} ...", file=sys.stderr, flush=True)
            with Server(spec, Path(tmp) / "servers.log") as server:
                results[name] = measure(server, args.max_tokens, args.repeats)
    base = results["lmdock none"]
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    print(f"\n{when}, {cpu_model()}, {args.threads} threads, greedy, max_tokens {args.max_tokens}\n")
    print(
        "| server | "
        + " | ".join(f"{p} tok/s (× lmdock none)" for p in [*PROMPTS, FOUR])
        + " | edit accepted/proposed |"
    )
    print("|---|" + "---|" * (len(PROMPTS) + 2))
    for name, r in results.items():
        cells = [
            f"{r[p]['tps']:.1f} ({r[p]['tps'] / base[p]['tps']:.2f}×, {r[p]['tokens']:.0f} tok)"
            for p in [*PROMPTS, FOUR]
        ]
        edit = r["edit"]
        acc = f"{edit['accepted']:.0f}/{edit['proposed']:.0f}" if edit["proposed"] else "–"
        print(f"| {name} | " + " | ".join(cells) + f" | {acc} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
