"""Soak: hours of mixed load, killed workers and a disk that fills, against one `lmdock serve`.

    /work/tools/modelrun .venv/bin/python bench/soak.py --minutes 30 [--clients 6] [--json out.json]

Starts its own server on the default model with LMDOCK_HOME (database and prompt cache) on a small tmpfs
(root: `mount -t tmpfs`; without it the disk-full phases are skipped and the summary says so), then for
`--minutes` runs concurrent clients over every route, and over every surface that stores bytes: Messages
(JSON, streams, tools, count_tokens, abandoned streams, prompts long enough for the prompt cache to save
them to disk), OpenAI chat (JSON with tools, streams) and completions, Responses chains with store on and
off (JSON and streamed, some with an image stored as a blob; retrieve, input_items, delete), small Message
Batches created, read twice and deleted while the load runs, and one long Message Batch; meanwhile a
worker SIGKILL or SIGSEGV every `--kill-every` seconds, and a full disk for `--fill-for` seconds every
`--fill-every` seconds. Then it lets the batch finish and checks:

- no hang (every request ends within its timeout), no malformed response or error (each is the
  protocol's envelope; successful bodies validate against the SDKs' types), no unexplained 5xx (only a
  full disk, a worker crash or restart, or overload explain one);
- the batches intact: each custom_id exactly once, every result succeeded, identical when fetched twice,
  gone once deleted; a stored image read back byte for byte;
- the server pid unchanged, the engine idle at the end, RSS and open fds flat.

It prints a summary table (markdown, for the README) and exits 1 if a check failed. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import errno
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from anthropic.types import Message, MessageTokensCount
from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseItemList

MODEL = "qwen2.5-coder-0.5b-instruct"
EXPLAINED = ("is full", "crashed", "restarting", "unloaded", "overloaded", "interrupted", "quota")
WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
WEATHER_FUNCTION = {
    "type": "function",
    "function": {
        "name": WEATHER["name"],
        "description": WEATHER["description"],
        "parameters": WEATHER["input_schema"],
    },
}
# Three 6 KiB "images" (the model has no vision: the server stores them, once per content, and omits them
# from the prompt); clients reuse them, so the blob store deduplicates.
IMAGES = [
    "data:image/png;base64," + base64.b64encode(random.Random(n).randbytes(6 << 10)).decode()
    for n in range(3)
]
TOPICS = ["sailing", "bread", "volcanoes", "chess", "bees", "rivers", "clocks", "glass", "tea", "owls"]


@dataclass
class Tally:
    """What happened, per route: ok, explained errors, and every problem in words."""

    ok: Counter = field(default_factory=Counter)
    explained: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    faults: Counter = field(default_factory=Counter)

    def problem(self, route: str, what: str) -> None:
        self.problems.append(f"{route}: {what}")
        print(f"  PROBLEM {route}: {what}", file=sys.stderr, flush=True)


def _explained(message: str) -> bool:
    return any(word in message.lower() for word in EXPLAINED)


def _check_error(tally: Tally, route: str, r: httpx.Response, openai_style: bool) -> None:
    """A non-2xx answer: the protocol's envelope, and a 5xx only for a reason the soak provokes."""
    try:
        body = r.json()
        if openai_style:
            message = body["error"]["message"]
            assert isinstance(body["error"]["type"], str)
        else:
            assert body["type"] == "error" and isinstance(body["error"]["type"], str)
            message = body["error"]["message"]
    except (ValueError, KeyError, TypeError, AssertionError):
        tally.problem(route, f"malformed {r.status_code} error: {r.text[:200]!r}")
        return
    if (r.status_code >= 500 or r.status_code in (413, 429)) and _explained(message):
        tally.explained[route] += 1
    else:
        tally.problem(route, f"{r.status_code}: {message[:200]}")


def _sse(lines: list[str]) -> list[tuple[str | None, dict]]:
    events, name = [], None
    for line in lines:
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:") and line[5:].strip() != "[DONE]":
            events.append((name, json.loads(line[5:])))
            name = None
    return events


class Clients:
    def __init__(self, base: str, tally: Tally, deadline: float, timeout: float) -> None:
        self.base = base
        self.tally = tally
        self.deadline = deadline
        self.http = httpx.AsyncClient(base_url=base, timeout=timeout)
        self.images: dict[str, str] = {}  # stored response id -> the image its input carried
        self.small_batches: list[tuple[str, list[str]]] = []  # (batch id, its custom_ids), oldest first

    async def run(self, n: int) -> None:
        await asyncio.gather(*(self._client(i) for i in range(n)))

    async def finish_small_batches(self, wait_s: float) -> None:
        """After the load: check (and delete) every small batch once it has ended."""
        deadline = time.monotonic() + wait_s
        while self.small_batches and time.monotonic() < deadline:
            try:
                await self._check_small_batch(*self.small_batches.pop(0))
            except (httpx.HTTPError, ValueError) as exc:
                self.tally.problem("batches (results, delete)", f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(1)
        for batch_id, _ in self.small_batches:
            self.tally.problem("batches (results, delete)", f"{batch_id} did not end after the load stopped")
        await self.http.aclose()

    async def _client(self, i: int) -> None:
        rng = random.Random(i)
        chain: str | None = None
        routes = [
            self.messages_json,
            self.messages_stream,
            self.messages_tools,
            self.count_tokens,
            self.abandoned_stream,
            self.chat_stream,
            self.chat_json,
            self.completions,
            self.embeddings,
            self.long_prompt,
            self.models,
        ]
        while time.monotonic() < self.deadline:
            if rng.random() < 0.3:
                chain = await self.responses(rng, chain)
                continue
            route = self.small_batch if rng.random() < 0.05 else rng.choice(routes)
            try:
                await route(rng)
            except httpx.TimeoutException:
                self.tally.problem(route.__name__, "no answer within the timeout (a hang)")
            except (httpx.HTTPError, ValueError) as exc:
                self.tally.problem(route.__name__, f"{type(exc).__name__}: {exc}")

    def _ask(self, rng: random.Random, max_tokens: int = 16, **extra) -> dict:
        topic = rng.choice(TOPICS)
        text = f"In one sentence, tell me something about {topic} ({rng.randrange(10**6)})."
        return {
            "model": MODEL,
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": text}],
            **extra,
        }

    async def _json(
        self, route: str, path: str, body: dict, model, openai_style: bool = False
    ) -> dict | None:
        r = await self.http.post(path, json=body)
        if r.status_code != 200:
            _check_error(self.tally, route, r, openai_style)
            return None
        try:
            model.model_validate(r.json())
        except Exception as exc:  # noqa: BLE001 (any validation failure is a finding)
            self.tally.problem(route, f"malformed body: {exc}"[:300])
            return None
        self.tally.ok[route] += 1
        return r.json()

    async def messages_json(self, rng: random.Random) -> None:
        await self._json("messages", "/v1/messages", self._ask(rng), Message)

    async def messages_tools(self, rng: random.Random) -> None:
        body = self._ask(rng, 48, tools=[WEATHER], tool_choice={"type": "any"})
        body["messages"][0]["content"] = f"What is the weather in {rng.choice(['Paris', 'Oslo', 'Lima'])}?"
        await self._json("messages+tools", "/v1/messages", body, Message)

    async def long_prompt(self, rng: random.Random) -> None:
        """A prompt long enough for the prompt cache to save it to disk."""
        body = self._ask(rng, 8)
        doc = f"Notes on {rng.choice(TOPICS)}: " + " ".join(rng.choice(TOPICS) for _ in range(400))
        body["system"] = doc
        await self._json("messages (long prompt)", "/v1/messages", body, Message)

    async def count_tokens(self, rng: random.Random) -> None:
        body = self._ask(rng)
        del body["max_tokens"]
        await self._json("count_tokens", "/v1/messages/count_tokens", body, MessageTokensCount)

    async def _stream(self, route: str, path: str, body: dict, openai_style: bool, abandon: bool = False):
        async with self.http.stream("POST", path, json=body) as r:
            if r.status_code != 200:
                await r.aread()
                _check_error(self.tally, route, r, openai_style)
                return None
            lines = []
            async for line in r.aiter_lines():
                lines.append(line)
                if abandon and "content_block_delta" in line:
                    self.tally.ok[route] += 1
                    return None  # the client goes away mid-stream
        return _sse(lines)

    async def messages_stream(self, rng: random.Random) -> None:
        route = "messages (stream)"
        events = await self._stream(route, "/v1/messages", {**self._ask(rng), "stream": True}, False)
        if events is None:
            return
        names = [e["type"] for _, e in events]
        if names and names[-1] == "error":
            message = events[-1][1]["error"]["message"]
            if _explained(message):
                self.tally.explained[route] += 1
            else:
                self.tally.problem(route, f"error event: {message[:200]}")
        elif not names or names[0] != "message_start" or names[-1] != "message_stop":
            self.tally.problem(route, f"malformed stream: {names[:3]}...{names[-3:]}")
        else:
            self.tally.ok[route] += 1

    async def abandoned_stream(self, rng: random.Random) -> None:
        await self._stream(
            "messages (abandoned stream)", "/v1/messages", {**self._ask(rng, 64), "stream": True}, False, True
        )

    async def chat_stream(self, rng: random.Random) -> None:
        route = "chat.completions (stream)"
        ask = self._ask(rng)
        body = {"model": MODEL, "messages": ask["messages"], "max_tokens": 16, "stream": True}
        events = await self._stream(route, "/v1/chat/completions", body, True)
        if events is None:
            return
        errors = [e for _, e in events if "error" in e]
        if errors:
            message = errors[0]["error"]["message"]
            if _explained(message):
                self.tally.explained[route] += 1
            else:
                self.tally.problem(route, f"error chunk: {message[:200]}")
            return
        try:
            for _, chunk in events:
                ChatCompletionChunk.model_validate(chunk)
        except Exception as exc:  # noqa: BLE001
            self.tally.problem(route, f"malformed chunk: {exc}"[:300])
            return
        self.tally.ok[route] += 1

    async def chat_json(self, rng: random.Random) -> None:
        ask = self._ask(rng)
        body = {"model": MODEL, "messages": ask["messages"], "max_tokens": 16}
        route = "chat.completions"
        if rng.random() < 0.3:
            body |= {"tools": [WEATHER_FUNCTION], "tool_choice": "required", "max_tokens": 48}
            route = "chat.completions+tools"
        await self._json(route, "/v1/chat/completions", body, ChatCompletion, True)

    async def small_batch(self, rng: random.Random) -> None:
        """A small Message Batch beside the long one: create one, or check and delete one created
        earlier once it has ended."""
        if self.small_batches and rng.random() < 0.6:
            await self._check_small_batch(*self.small_batches.pop(0))
            return
        route = "batches (create)"
        ids = [f"small-{rng.randrange(10**9)}-{i}" for i in range(2)]
        body = {"requests": [{"custom_id": c, "params": self._ask(rng, 8)} for c in ids]}
        got = await self._json(route, "/v1/messages/batches", body, MessageBatch)
        if got is not None:
            self.small_batches.append((got["id"], ids))

    async def _check_small_batch(self, batch_id: str, ids: list[str]) -> None:
        route = "batches (results, delete)"
        r = await self.http.get(f"/v1/messages/batches/{batch_id}")
        if r.status_code != 200:
            _check_error(self.tally, route, r, False)
            self.small_batches.append((batch_id, ids))
            return
        if r.json()["processing_status"] != "ended":
            self.small_batches.append((batch_id, ids))  # later
            return
        first = await self.http.get(f"/v1/messages/batches/{batch_id}/results")
        second = await self.http.get(f"/v1/messages/batches/{batch_id}/results")
        if first.status_code != 200 or second.status_code != 200:
            _check_error(self.tally, route, first if first.status_code != 200 else second, False)
            return
        try:
            results = [MessageBatchIndividualResponse.model_validate_json(x) for x in first.text.splitlines()]
        except Exception as exc:  # noqa: BLE001
            self.tally.problem(route, f"malformed results: {exc}"[:300])
            return
        if first.text != second.text:
            self.tally.problem(route, f"{batch_id}: results differ between two fetches")
        if sorted(x.custom_id for x in results) != sorted(ids):
            self.tally.problem(route, f"{batch_id}: custom_ids {[x.custom_id for x in results]}, sent {ids}")
        if any(x.result.type != "succeeded" for x in results):
            self.tally.problem(route, f"{batch_id}: {[x.result.type for x in results]}")
        listed = await self.http.get("/v1/messages/batches", params={"limit": 5})
        if listed.status_code != 200 or not isinstance(listed.json().get("data"), list):
            _check_error(self.tally, "batches (list)", listed, False)
        r = await self.http.delete(f"/v1/messages/batches/{batch_id}")
        if r.status_code != 200:
            _check_error(self.tally, route, r, False)
            return
        gone = await self.http.get(f"/v1/messages/batches/{batch_id}")
        if gone.status_code != 404:
            self.tally.problem(route, f"{batch_id}: {gone.status_code} after delete")
        else:
            self.tally.ok[route] += 1

    async def completions(self, rng: random.Random) -> None:
        body = {"model": MODEL, "prompt": f"A fact about {rng.choice(TOPICS)}:", "max_tokens": 12}
        await self._json("completions", "/v1/completions", body, Completion, True)

    async def embeddings(self, rng: random.Random) -> None:
        body = {"model": MODEL, "input": [f"{rng.choice(TOPICS)} {i}" for i in range(3)]}
        await self._json("embeddings", "/v1/embeddings", body, CreateEmbeddingResponse, True)

    async def models(self, rng: random.Random) -> None:
        r = await self.http.get("/v1/models")
        if r.status_code == 200 and r.json().get("data"):
            self.tally.ok["models"] += 1
        else:
            _check_error(self.tally, "models", r, False)

    async def responses(self, rng: random.Random, chain: str | None) -> str | None:
        """A Responses turn: continue this client's chain (store: true; JSON or streamed, sometimes with an
        image) or a one-off; sometimes read back (the response, its input items) or delete. Returns the
        chain's new head."""
        route = "responses"
        try:
            if chain is not None and rng.random() < 0.15:
                return await self._read_back(rng, chain)
            store = rng.random() < 0.8
            content: str | list = self._ask(rng)["messages"][0]["content"]
            image = rng.choice(IMAGES) if store and rng.random() < 0.25 else None
            if image is not None:
                content = [
                    {"type": "input_text", "text": content},
                    {"type": "input_image", "image_url": image, "detail": "auto"},
                ]
            body = {
                "model": MODEL,
                "input": [{"role": "user", "content": content}],
                "max_output_tokens": 16,
                "store": store,
            }
            if store and chain is not None:
                body["previous_response_id"] = chain
            if store and rng.random() < 0.3:
                got = await self._responses_stream(body)
            else:
                got = await self._json(
                    route if store else "responses (store: false)", "/v1/responses", body, Response, True
                )
            if got is None or not store:
                return chain
            if image is not None:
                self.images[got["id"]] = image
            return got["id"]
        except httpx.TimeoutException:
            self.tally.problem(route, "no answer within the timeout (a hang)")
        except (httpx.HTTPError, ValueError) as exc:
            self.tally.problem(route, f"{type(exc).__name__}: {exc}")
        return chain

    async def _responses_stream(self, body: dict) -> dict | None:
        """A streamed, stored Responses turn: the final response, or None after an error."""
        route = "responses (stream)"
        events = await self._stream(route, "/v1/responses", {**body, "stream": True}, True)
        if events is None:
            return None
        kinds = [e.get("type") for _, e in events]
        if "error" in kinds:
            message = events[kinds.index("error")][1].get("message", "")
            if _explained(message):
                self.tally.explained[route] += 1
            else:
                self.tally.problem(route, f"error event: {message[:200]}")
            return None
        if not kinds or kinds[-1] not in ("response.completed", "response.incomplete"):
            self.tally.problem(route, f"malformed stream: {kinds[:3]}...{kinds[-3:]}")
            return None
        try:
            final = Response.model_validate(events[-1][1]["response"])
        except Exception as exc:  # noqa: BLE001
            self.tally.problem(route, f"malformed final response: {exc}"[:300])
            return None
        self.tally.ok[route] += 1
        return final.model_dump(mode="json")

    async def _read_back(self, rng: random.Random, chain: str) -> str | None:
        """Retrieve a stored response and its input items (an image comes back byte for byte); sometimes
        delete it. Returns the chain's head (None once deleted)."""
        r = await self.http.get(f"/v1/responses/{chain}")
        if r.status_code == 200:
            self.tally.ok["responses (retrieve)"] += 1
        else:
            _check_error(self.tally, "responses (retrieve)", r, True)
        route = "responses (input_items)"
        r = await self.http.get(f"/v1/responses/{chain}/input_items", params={"limit": 100, "order": "asc"})
        if r.status_code != 200:
            _check_error(self.tally, route, r, True)
        else:
            try:
                ResponseItemList.model_validate(r.json())
            except Exception as exc:  # noqa: BLE001
                self.tally.problem(route, f"malformed list: {exc}"[:300])
            else:
                image = self.images.get(chain)
                if image is not None and image not in r.text:
                    self.tally.problem(route, f"{chain}: the stored image did not come back intact")
                else:
                    self.tally.ok[route] += 1
        if rng.random() < 0.3:
            r = await self.http.delete(f"/v1/responses/{chain}")
            if r.status_code == 200:
                self.tally.ok["responses (delete)"] += 1
                self.images.pop(chain, None)
                return None
            _check_error(self.tally, "responses (delete)", r, True)
        return chain


# --- the server and the faults ---------------------------------------------------------------------


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _mount_tmpfs(path: Path, mib: int) -> str | None:
    """Mount a tmpfs of `mib` at `path`; the reason it could not be, or None."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(path)], capture_output=True, text=True
    )
    return None if done.returncode == 0 else done.stderr.strip() or "mount failed"


def _fill(disk: Path) -> Path:
    filler = disk / "soak-filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            try:
                if os.write(fd, b"\0" * (1 << 20)) == 0:
                    break
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                with contextlib.suppress(OSError):  # the last few pages
                    while os.write(fd, b"\0" * 4096):
                        pass
                break
    finally:
        os.close(fd)
    return filler


async def _health(base: str) -> dict:
    async with httpx.AsyncClient(timeout=30) as http:
        return (await http.get(base + "/health")).json()


async def _faults(
    base: str,
    tally: Tally,
    deadline: float,
    kill_every: float,
    disk: Path | None,
    fill_every: float,
    fill_for: float,
) -> None:
    """Kill the worker (SIGKILL and SIGSEGV in turn) and fill the disk, each on its own period."""
    signals = [signal.SIGKILL, signal.SIGSEGV]
    next_kill = time.monotonic() + kill_every
    next_fill = time.monotonic() + fill_every / 2
    while time.monotonic() < deadline:
        await asyncio.sleep(1)
        now = time.monotonic()
        if now >= next_kill:
            next_kill = now + kill_every
            workers = (await _health(base))["workers"]
            for w in workers.values():
                if w.get("pid") and w["status"] == "ready":
                    sig = signals[sum(tally.faults[s.name] for s in signals) % 2]
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(w["pid"], sig)
                        tally.faults[sig.name] += 1
                        print(f"  fault: {sig.name} to worker {w['pid']}", file=sys.stderr, flush=True)
        if disk is not None and now >= next_fill and now + fill_for < deadline:
            next_fill = now + fill_every
            filler = _fill(disk)
            tally.faults["disk full"] += 1
            print(f"  fault: disk full for {fill_for:.0f} s", file=sys.stderr, flush=True)
            await asyncio.sleep(fill_for)
            filler.unlink()


async def _sample(pid: int, deadline: float, samples: list[tuple[float, float, int]]) -> None:
    while time.monotonic() < deadline:
        samples.append((time.monotonic(), _rss_mib(pid), _fds(pid)))
        await asyncio.sleep(10)


def _batch_requests(n: int) -> list[dict]:
    out = []
    for i in range(n):
        params = {
            "model": MODEL,
            "max_tokens": 24,
            "messages": [{"role": "user", "content": f"Count to {i % 9 + 2}."}],
        }
        if i % 5 == 0:
            params |= {"tools": [WEATHER], "tool_choice": {"type": "any"}, "max_tokens": 48}
            params["messages"][0]["content"] = f"Weather in city number {i}?"
        out.append({"custom_id": f"req-{i:03d}", "params": params})
    return out


async def _create_batch(base: str, requests: list[dict], tally: Tally) -> str:
    async with httpx.AsyncClient(base_url=base, timeout=300) as http:
        while True:
            r = await http.post("/v1/messages/batches", json={"requests": requests})
            if r.status_code == 200:
                return r.json()["id"]
            _check_error(tally, "batches (create)", r, False)
            await asyncio.sleep(5)


async def _finish_batch(base: str, batch_id: str, requests: list[dict], tally: Tally, wait_s: float) -> dict:
    """Wait for the batch to end; check each custom_id once, all succeeded, the same when read twice."""
    async with httpx.AsyncClient(base_url=base, timeout=300) as http:
        deadline = time.monotonic() + wait_s
        while True:
            batch = (await http.get(f"/v1/messages/batches/{batch_id}")).json()
            if batch.get("processing_status") == "ended":
                break
            if time.monotonic() > deadline:
                tally.problem("batch", f"did not end within {wait_s:.0f} s after the load stopped: {batch}")
                return {"ended": False}
            await asyncio.sleep(2)
        first = (await http.get(f"/v1/messages/batches/{batch_id}/results")).text
        second = (await http.get(f"/v1/messages/batches/{batch_id}/results")).text
    lines = [json.loads(line) for line in first.splitlines()]
    ids = Counter(line["custom_id"] for line in lines)
    states = Counter(line["result"]["type"] for line in lines)
    if first != second:
        tally.problem("batch", "results differ between two fetches")
    if set(ids) != {r["custom_id"] for r in requests} or any(n != 1 for n in ids.values()):
        tally.problem(
            "batch", f"custom_ids not each exactly once: {ids.most_common(3)}, {len(ids)} of {len(requests)}"
        )
    if states.get("succeeded", 0) != len(requests):
        errors = Counter(json.dumps(line["result"].get("error"))[:300] for line in lines)
        tally.problem("batch", f"not every request succeeded: {dict(states)}; errors: {dict(errors)}")
    return {"ended": True, "results": len(lines), "states": dict(states), "identical_twice": first == second}


def _flat(samples: list[tuple[float, float, int]]) -> tuple[str, str, bool]:
    """RSS and fds in the first and last third of the run (after a warm-up tenth)."""
    body = samples[max(1, len(samples) // 10) :] or samples
    third = max(1, len(body) // 3)
    rss0, rss1 = statistics.median(s[1] for s in body[:third]), statistics.median(s[1] for s in body[-third:])
    fd0, fd1 = statistics.median(s[2] for s in body[:third]), statistics.median(s[2] for s in body[-third:])
    ok = rss1 <= rss0 * 1.2 + 50 and fd1 <= fd0 + 10
    return f"{rss0:.0f} -> {rss1:.0f} MiB", f"{fd0:.0f} -> {fd1:.0f}", ok


async def soak(args: argparse.Namespace) -> int:
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="lmdock-soak-") as tmp:
        home = Path(tmp) / "home"
        no_mount = _mount_tmpfs(home, args.disk_mib)
        disk = None if no_mount else home
        if no_mount:
            print(f"note: no tmpfs ({no_mount}); the disk-full phases are skipped", file=sys.stderr)
        port = _port()
        base = f"http://127.0.0.1:{port}"
        log_path = Path(tmp) / "server.log"
        env = {**os.environ, "LMDOCK_HOME": str(home)}
        env.setdefault("LMDOCK_MODELS_DIR", str(Path.home() / ".lmdock" / "models"))
        cmd = [
            sys.executable,
            "-m",
            "lmdock.cli.main",
            "serve",
            "--port",
            str(port),
            "--threads",
            str(args.threads),
        ]
        cmd += ["--ctx-size", "8192", "--parallel", "4", "--cache-dir", str(home / "cache")]
        cmd += ["--batches-max-mib", "16", "--responses-max-mib", "16"]
        server = subprocess.Popen(cmd, stdout=log_path.open("w"), stderr=subprocess.STDOUT, env=env)
        try:
            return await _run(args, tally, server, base, disk, log_path)
        finally:
            if server.poll() is None:
                server.terminate()
                try:
                    server.wait(60)
                except subprocess.TimeoutExpired:
                    server.kill()
            if args.keep_log:
                Path(args.keep_log).write_text(log_path.read_text(errors="replace"))
            if disk is not None:
                subprocess.run(["umount", "-l", str(home)], check=False)


async def _run(
    args, tally: Tally, server: subprocess.Popen, base: str, disk: Path | None, log_path: Path
) -> int:
    started = time.monotonic()
    while True:
        if server.poll() is not None:
            print(log_path.read_text(), file=sys.stderr)
            return 2
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            if (await _health(base))["loaded"]:
                break
        if time.monotonic() - started > 900:
            print("the server did not become ready", file=sys.stderr)
            return 2
        await asyncio.sleep(1)
    pid = server.pid
    requests = _batch_requests(args.batch)
    batch_id = await _create_batch(base, requests, tally)
    deadline = time.monotonic() + args.minutes * 60
    samples: list[tuple[float, float, int]] = []
    print(f"soak: {args.minutes} min, {args.clients} clients, batch {batch_id}", file=sys.stderr, flush=True)
    clients = Clients(base, tally, deadline, args.timeout)
    await asyncio.gather(
        clients.run(args.clients),
        _faults(base, tally, deadline, args.kill_every, disk, args.fill_every, args.fill_for),
        _sample(pid, deadline, samples),
    )
    batch = await _finish_batch(base, batch_id, requests, tally, args.batch_wait)
    await clients.finish_small_batches(args.batch_wait)
    await asyncio.sleep(10)
    health = await _health(base)
    busy = {k: (w["in_flight"], w["active"], w["queued"]) for k, w in health["workers"].items()}
    if any(any(v) for v in busy.values()):
        tally.problem("idle", f"the engine is not idle after the load stopped: {busy}")
    if server.poll() is not None or server.pid != pid:
        tally.problem("server", "the server process exited or changed")
    samples.append((time.monotonic(), _rss_mib(pid), _fds(pid)))
    rss, fds, flat = _flat(samples)
    if not flat:
        tally.problem("resources", f"RSS {rss}, open fds {fds}: not flat")
    log = log_path.read_text(errors="replace")
    tracebacks = log.count("Traceback")
    crashes = sum(w["crashes"] for w in health["workers"].values())
    _print_summary(args, tally, batch, rss, fds, tracebacks, crashes, log, disk is not None)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "minutes": args.minutes,
                    "ok": dict(tally.ok),
                    "explained": dict(tally.explained),
                    "problems": tally.problems,
                    "faults": dict(tally.faults),
                    "batch": batch,
                    "rss": rss,
                    "fds": fds,
                    "worker_crashes": crashes,
                    "tracebacks": tracebacks,
                },
                indent=1,
            )
        )
    return 1 if tally.problems else 0


def _print_summary(
    args, tally: Tally, batch: dict, rss: str, fds: str, tracebacks: int, crashes: int, log: str, disk: bool
) -> None:
    when = time.strftime("%Y-%m-%d")
    print(
        f"\n### Soak, {args.minutes} min, {args.clients} clients, {args.threads} threads ({when}, {os.cpu_count()} cores)\n"
    )
    print("| route | ok | explained errors |")
    print("|---|---:|---:|")
    for route in sorted(set(tally.ok) | set(tally.explained)):
        print(f"| {route} | {tally.ok[route]} | {tally.explained[route]} |")
    faults = ", ".join(f"{k} x{v}" for k, v in sorted(tally.faults.items())) or "none"
    print("\n| check | result |")
    print("|---|---|")
    print(f"| faults injected | {faults}{'' if disk else ' (no tmpfs: no disk-full phases)'} |")
    print(f"| worker crashes seen by the server | {crashes} |")
    print(
        f"| batch ({args.batch} requests) | {batch.get('states')}, identical when fetched twice: {batch.get('identical_twice')} |"
    )
    print(f"| server RSS (first third -> last third) | {rss} |")
    print(f"| server open fds | {fds} |")
    print(f"| 'batch runner: saving results' log lines | {log.count('batch runner: saving results:')} |")
    print(f"| 'prompt cache: saving to disk' log lines | {log.count('prompt cache: saving to disk:')} |")
    print(f"| tracebacks in the server log | {tracebacks} |")
    print(f"| problems | {len(tally.problems)} |")
    for p in tally.problems[:30]:
        print(f"- {p}")
    print(f"\nverdict: {'PASS' if not tally.problems else 'FAIL'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=40, help="requests in the Message Batch")
    ap.add_argument("--kill-every", type=float, default=180.0, help="seconds between worker kills")
    ap.add_argument("--fill-every", type=float, default=300.0, help="seconds between disk-full phases")
    ap.add_argument("--fill-for", type=float, default=60.0, help="seconds each disk-full phase lasts")
    ap.add_argument("--disk-mib", type=int, default=128, help="size of the tmpfs holding LMDOCK_HOME")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds before a request counts as hung")
    ap.add_argument(
        "--batch-wait", type=float, default=1200.0, help="seconds the batch may take after the load"
    )
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--keep-log", help="copy the server log here")
    sys.exit(asyncio.run(soak(ap.parse_args())))


if __name__ == "__main__":
    main()
