"""Interactive time to first token while a Message Batch runs, against the same request on an idle server.

Starts `lmdock serve` on the default model with a fresh LMDOCK_HOME, measures the TTFT of a few streaming
interactive requests on the idle server, then creates a 50-request batch and measures the same requests
while the batch runs. Prints medians and maxima, plus the batch's throughput. One run, numbers as they
come (on a shared machine they are noisy).

    .venv/bin/python bench/batch_ttft.py [--requests 50] [--samples 5] [--threads 2] [--parallel 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anthropic
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Server, ServerSpec  # noqa: E402

SYSTEM = (
    "You are a helpful assistant for a team of software engineers. Answer briefly and precisely. "
    "Prefer concrete examples over abstract explanations, and say when you are unsure. " * 6
)


def ttft(client: anthropic.Anthropic, question: str) -> float:
    started = time.perf_counter()
    with client.messages.stream(
        model="default",
        max_tokens=16,
        system=SYSTEM,
        messages=[{"role": "user", "content": question}],
    ) as stream:
        for event in stream:
            if event.type == "content_block_delta":
                return time.perf_counter() - started
    return time.perf_counter() - started


def sample(client: anthropic.Anthropic, n: int, tag: str) -> list[float]:
    out = []
    for i in range(n):
        out.append(ttft(client, f"[{tag} {i}] Name one use of a hash map in {i + 2} words."))
        time.sleep(1.0)
    return out


def describe(name: str, values: list[float]) -> str:
    return (
        f"{name:>14}: median {statistics.median(values) * 1000:7.0f} ms   max {max(values) * 1000:7.0f} ms"
        f"   ({', '.join(f'{v * 1000:.0f}' for v in values)})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--batch-max-tokens", type=int, default=48)
    ap.add_argument("--extra", nargs="*", default=[], help="more `lmdock serve` flags")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="lmdock-batch-bench-") as tmp:
        os.environ["LMDOCK_HOME"] = str(Path(tmp) / "home")
        spec = ServerSpec(
            "lmdock",
            ctx=8192,
            threads=args.threads,
            parallel=args.parallel,
            cache_dir=Path(tmp) / "cache",
            extra=tuple(args.extra),
        )
        with Server(spec, Path(tmp) / "server.log") as server:
            client = anthropic.Anthropic(base_url=server.base_url, api_key="bench", max_retries=0)
            ttft(client, "warm-up")
            idle = sample(client, args.samples, "idle")

            requests = [
                {
                    "custom_id": f"b-{i}",
                    "params": {
                        "model": "default",
                        "max_tokens": args.batch_max_tokens,
                        "system": "You summarise topics for a glossary in one sentence.",
                        "messages": [{"role": "user", "content": f"Summarise topic number {i}: sorting."}],
                    },
                }
                for i in range(args.requests)
            ]
            started = time.perf_counter()
            batch = client.messages.batches.create(requests=requests)
            time.sleep(2.0)  # let the batch fill its slots
            busy = sample(client, args.samples, "busy")
            while client.messages.batches.retrieve(batch.id).processing_status != "ended":
                time.sleep(0.5)
            elapsed = time.perf_counter() - started
            done_during = httpx.get(f"{server.base_url}/v1/messages/batches/{batch.id}").headers.get(
                "lmdock-requests-completed"
            )

    print(f"lmdock batch TTFT benchmark: threads={args.threads} parallel={args.parallel} {args.extra}")
    print(describe("idle", idle))
    print(describe("during batch", busy))
    ratio = statistics.median(busy) / statistics.median(idle)
    print(f"{'ratio':>14}: {ratio:.2f}x median TTFT during the batch vs idle")
    print(
        f"{'batch':>14}: {args.requests} requests x {args.batch_max_tokens} max tokens ended in "
        f"{elapsed:.1f}s ({args.requests / elapsed * 60:.1f} requests/min, {done_during} committed)"
    )


if __name__ == "__main__":
    main()
