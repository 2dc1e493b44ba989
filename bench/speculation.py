"""Benchmark draftless speculative decoding: decode tok/s with and without it, through POST /v1/messages.

Scenarios (greedy, streamed, one request at a time after a warm-up run of the same prompt):
- edit: a 100-line Python file (bench/data/edit_source.txt) to be given back with every function renamed
  (copy-heavy: most output tokens repeat the prompt);
- prose: a story (nothing to copy: speculation must not cost);
- agent: a Claude Code turn: the captured first request of a real session (bench/data/claude_first_alpha.json:
  Claude Code's system prompt and 12 tools, ~11.6k tokens), continued by a Read of the same file (numbered
  lines, as Claude Code's Read returns them) and the ask to write it back renamed, with the Write tool
  forced (`tool_choice`; llama-server's Anthropic endpoint turns that into "required"). The copy is
  grammar-constrained JSON, its lines escaped, behind a KV cache 12k deep (the default model writes the
  file's first lines, ~140 tokens, and closes the call);
- 4 streams: two edit and two prose requests at once; aggregate tok/s is all their output tokens over the
  time from the first delta of any to the last delta of any (drafts share each step with other sequences).
  Measured before the agent scenario, so that no server has its 12k cells in the cache then (lmdock
  moves an idle prefix to host RAM beside this much work; llama-server's slots overwrite it).

Servers: lmdock `--spec-type none`, lmdock with its default (ngram), and with `--llama-server` the vendored
llama-server without speculation and with `--spec-type ngram-map-k`. Decode tok/s is (output tokens - 1)
over the time from the first to the last streamed delta (agent: over the reply's time less that of the
same request cut at one token, `decode_after`); acceptance comes from lmdock's /metrics.

    .venv/bin/python bench/speculation.py [--llama-server] [--repeats 2] [--max-tokens 1000]
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import statistics
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Server, ServerSpec, wait_quiet  # noqa: E402
from claude_code_reuse import DATA  # noqa: E402
from compare_llama_server import Reply, cpu_model, model_id, new_client, send_body, user  # noqa: E402

SOURCE = (DATA / "edit_source.txt").read_text()
RENAME = "Rename every function to camelCase (load_items -> loadItems and so on)"
PROMPTS = {
    "edit": f"Here is a Python file:\n\n```python\n{SOURCE}```\n\n{RENAME} and give me the whole file back, "
    "changed only there.",
    "prose": "Write a 400-word story about a lighthouse keeper who finds a message in a bottle.",
}
AGENT = "agent"
CTX = 16384  # the agent turn's 12k-token prompt and its reply


def agent_turn() -> dict[str, Any]:
    """The agent scenario's request, less model and max_tokens."""
    capture = json.loads((DATA / "claude_first_alpha.json").read_text())
    request, path = capture["request"], f"{capture['folder']}/app.py"
    ask, environment = request["messages"]
    ask = {
        **ask,
        "content": [
            *ask["content"][:-1],
            {
                "type": "text",
                "text": f"{RENAME} in app.py and write the whole file back with the Write tool.",
            },
        ],
    }
    numbered = "".join(f"{i:>6}\t{line}" for i, line in enumerate(SOURCE.splitlines(keepends=True), 1))
    read = {"type": "tool_use", "id": "toolu_bench_read", "name": "Read", "input": {"file_path": path}}
    result = {"type": "tool_result", "tool_use_id": "toolu_bench_read", "content": numbered}
    return {
        "system": request["system"],
        "tools": request["tools"],
        "tool_choice": {"type": "tool", "name": "Write"},
        "messages": [
            ask,
            environment,
            {"role": "assistant", "content": [read]},
            {"role": "user", "content": [result]},
        ],
    }


def request(name: str, model: str, max_tokens: int) -> dict[str, Any]:
    body = agent_turn() if name == AGENT else {"messages": [user(PROMPTS[name])]}
    return {**body, "model": model, "max_tokens": max_tokens}


SERVERS = {
    "lmdock none": ServerSpec("lmdock", ctx=CTX, extra=("--spec-type", "none")),
    "lmdock ngram": ServerSpec("lmdock", ctx=CTX, extra=("--spec-type", "ngram")),
    "llama-server none": ServerSpec("llama-server", ctx=CTX),
    "llama-server ngram-map-k": ServerSpec("llama-server", ctx=CTX, extra=("--spec-type", "ngram-map-k")),
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


def decode_after(first: Reply, reply: Reply) -> float:
    """Decode tok/s of `reply` from its time less that of the same request cut at one token (`first`).

    A tool call's first delta comes only once the model has written the call's name and opened its
    arguments (both servers send the name in content_block_start), so the span of its deltas misses those
    tokens: both requests read the same cached prompt, and the difference is the other tokens."""
    span = reply.seconds - first.seconds
    return (reply.output_tokens - 1) / span if span > 0 and reply.output_tokens > 1 else float("nan")


def measure(server: Server, max_tokens: int, repeats: int) -> dict[str, dict[str, float]]:
    base = server.base_url
    model = model_id(base)
    out: dict[str, dict[str, float]] = {}
    for name in SCENARIOS:
        if name == AGENT:  # before its 12k-token prompt is cached (lmdock keeps a reused prefix resident)
            out[FOUR] = measure_four(base, model, max_tokens, repeats)
        with new_client() as client:  # the prompt is cached: decode alone is timed
            send_body(client, base, request(name, model, 8))
        rates, tokens = [], 0
        p0, a0 = spec_counts(base)
        for _ in range(repeats):
            wait_quiet(60)
            with new_client() as client:
                first = send_body(client, base, request(name, model, 1)) if name == AGENT else None
                reply = send_body(client, base, request(name, model, max_tokens))
            rates.append(reply.decode_tps if first is None else decode_after(first, reply))
            tokens = reply.output_tokens
        p1, a1 = spec_counts(base)
        out[name] = {
            "tps": statistics.median(rates),
            "tokens": tokens,
            "proposed": p1 - p0,
            "accepted": a1 - a0,
        }
        print(f"  {name}: {out[name]}", file=sys.stderr, flush=True)
    return out


def measure_four(base: str, model: str, max_tokens: int, repeats: int) -> dict[str, float]:
    rounds = []
    for _ in range(repeats):
        wait_quiet(60)
        rounds.append(four_streams(base, model, max_tokens))
    tps, tokens = sorted(rounds)[len(rounds) // 2]
    result = {"tps": tps, "tokens": tokens, "proposed": 0, "accepted": 0}
    print(f"  {FOUR}: {result}", file=sys.stderr, flush=True)
    return result


FOUR = "4 streams"
SCENARIOS = [*PROMPTS, AGENT]
COPYING = ("edit", AGENT)  # the scenarios whose acceptance the table shows


def four_streams(base: str, model: str, max_tokens: int) -> tuple[float, int]:
    """Aggregate decode tok/s of two edit and two prose requests sent together, and their tokens."""

    def one(name: str) -> Reply:
        with new_client() as client:
            return send_body(client, base, request(name, model, max_tokens))

    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(one, ["edit", "prose"] * 2))
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
        + " | ".join(f"{p} tok/s (× lmdock none)" for p in [*SCENARIOS, FOUR])
        + " | "
        + " | ".join(f"{p} accepted/proposed" for p in COPYING)
        + " |"
    )
    print("|---|" + "---|" * (len(SCENARIOS) + 1 + len(COPYING)))
    for name, r in results.items():
        cells = [
            f"{r[p]['tps']:.1f} ({r[p]['tps'] / base[p]['tps']:.2f}×, {r[p]['tokens']:.0f} tok)"
            for p in [*SCENARIOS, FOUR]
        ]
        cells += [
            f"{r[p]['accepted']:.0f}/{r[p]['proposed']:.0f}" if r[p]["proposed"] else "–" for p in COPYING
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
