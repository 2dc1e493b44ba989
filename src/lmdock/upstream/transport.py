"""HTTP to an upstream's nodes: open a stream with failover, read SSE chunks, probe health and kind.

A request is failed over to another node as long as nothing of it has reached the client: connection
errors, timeouts, busy answers (429/503/529), gateway errors and garbage before the first chunk all move it
on. `open()` returns only once the first chunk has arrived, so everything up to then keeps its HTTP status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from lmdock.core.errors import LmdockError, Overloaded
from lmdock.upstream.config import UpstreamSpec
from lmdock.upstream.errors import (
    BadStream,
    Overflow,
    UpstreamError,
    UpstreamTimeout,
    client_error,
    error_message,
    overflow_of,
    parse_body,
    upstream_json,
)
from lmdock.upstream.reading import (
    MAX_BODY_BYTES,
    MAX_ERROR_BYTES,
    StreamErrorBody,
    read_capped,
    sse_chunks,
)
from lmdock.upstream.router import Node, Router
from lmdock.upstream.stream import Opened

log = logging.getLogger(__name__)
# httpx logs every request at INFO: with health checks every few seconds per node that drowns the log
logging.getLogger("httpx").setLevel(logging.WARNING)

_BUSY = (429, 503, 529)
_GATEWAY = (502, 504)


@dataclass
class ProbeInfo:
    """What probing the upstream found out."""

    kind: str = "openai"
    flavor: str = "unknown"  # llama.cpp, vllm, sglang, lmdock, unknown
    model: str | None = None
    n_ctx: int | None = None
    chat_template: str | None = None
    bos_token: str = ""
    eos_token: str = ""
    probed: bool = False


class RetryClamped(Exception):
    """The upstream said max_tokens does not fit what is left of the context; retry with less."""

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens


class Upstream:
    """One upstream model: its nodes, router, HTTP client, probe results and health checks."""

    def __init__(self, spec: UpstreamSpec) -> None:
        self.spec = spec
        self.nodes = [Node(url, auth=spec.credentials.get(url)) for url in spec.urls]
        self.router = Router(self.nodes, spec.max_outstanding)
        self.info = ProbeInfo(kind=spec.kind if spec.kind != "auto" else "openai")
        self._client: httpx.AsyncClient | None = None
        self._probe_lock = asyncio.Lock()
        self._health_task: asyncio.Task | None = None
        self._probe_after = 0.0

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.spec.timeout, connect=self.spec.connect_timeout),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            )
        return self._client

    def headers(self) -> dict[str, str]:
        key = self.spec.api_key()
        return {"authorization": f"Bearer {key}"} if key else {}

    # --- requests --------------------------------------------------------------------------------

    async def open(
        self,
        path: str,
        body_for: Callable[[int | None], dict[str, Any]],
        key: str | None,
        max_tokens: int | None,
    ) -> Opened:
        """POST a streaming request to the best node, failing over until one delivers a first chunk."""
        await self.ensure_probed()
        tried: set[Node] = set()
        clamped = False
        failure: LmdockError | None = None
        while True:
            node = self.router.pick(key, tried)
            if node is None:
                break
            tried.add(node)
            try:
                opened = await self._try(node, path, body_for(max_tokens), max_tokens)
            except RetryClamped as retry:
                if clamped:
                    raise UpstreamError(f"upstream '{self.spec.name}' refused a clamped max_tokens") from None
                clamped, max_tokens = True, retry.max_tokens
                tried.discard(node)
                continue
            except _Failover as exc:
                node.stats.failovers += 1
                if exc.error is not None and (failure is None or failure.status < exc.error.status):
                    failure = exc.error  # 504 (timeout) over 502 (garbage): the more telling one
                continue
            opened.clamped = clamped
            self.router.bind(key, node)
            return opened
        if failure is not None:
            raise failure
        down = sum(not n.healthy for n in self.nodes)
        raise Overloaded(
            f"upstream model '{self.spec.name}' cannot take the request: "
            f"{down} of {len(self.nodes)} node(s) down, the others busy",
            retry_after=self.router.retry_after(),
        )

    async def _try(self, node: Node, path: str, body: dict[str, Any], max_tokens: int | None) -> Opened:
        node.outstanding += 1
        node.stats.requests += 1
        started = time.monotonic()
        response: httpx.Response | None = None
        try:
            request = self.client.build_request("POST", node.url + path, json=body, headers=self.headers())
            response = await self.client.send(request, stream=True, auth=node.auth)
            if response.status_code != 200:
                raw = await read_capped(response, MAX_ERROR_BYTES, "an error body")
                self._refuse(node, response, parse_body(raw), body)
            rest = sse_chunks(response)
            try:
                first = await anext(rest)
            except StopAsyncIteration:
                raise BadStream(f"upstream '{self.spec.name}' ended the stream without a chunk") from None
            except StreamErrorBody as err:
                self._refuse(node, response, err.body, body, status=400)
        except (RetryClamped, _Failover, LmdockError) as exc:
            await self._abandon(node, response)
            if isinstance(exc, BadStream):
                node.stats.errors += 1
                log.warning("upstream %s node %s: %s", self.spec.name, node.url, exc.message)
                raise _Failover(
                    UpstreamError(f"upstream '{self.spec.name}' sent an invalid response: {exc.message}")
                ) from None
            if isinstance(exc, LmdockError):
                node.stats.errors += 1
            raise
        except httpx.TimeoutException:
            await self._abandon(node, response)
            node.stats.errors += 1  # slow is not dead: the health check decides whether the node is up
            node.last_error = "timed out"
            log.warning(
                "upstream %s node %s: no answer within %gs", self.spec.name, node.url, self.spec.timeout
            )
            raise _Failover(
                UpstreamTimeout(f"upstream '{self.spec.name}' did not answer within {self.spec.timeout:g}s")
            ) from None
        except httpx.TransportError as exc:
            await self._abandon(node, response)
            node.stats.errors += 1
            node.mark_down(repr(exc))
            log.warning("upstream %s node %s is down: %r", self.spec.name, node.url, exc)
            raise _Failover(None) from None
        node.stats.first_byte_seconds_total += time.monotonic() - started
        return Opened(self.spec.name, self.spec.timeout, node, response, first, rest, started, max_tokens)

    async def _abandon(self, node: Node, response: httpx.Response | None) -> None:
        node.outstanding -= 1
        if response is not None:
            with contextlib.suppress(Exception):
                await response.aclose()

    def _refuse(
        self, node: Node, response: httpx.Response, body: Any, sent: dict[str, Any], status: int | None = None
    ) -> None:
        """Raise what an upstream's refusal means: fail over, retry clamped, or a client error."""
        status = status or response.status_code
        message = error_message(body, f"HTTP {status}")
        if status in _BUSY:
            node.mark_busy(_retry_after(response.headers.get("retry-after")))
            raise _Failover(None)
        if status in _GATEWAY:
            node.mark_down(f"HTTP {status}")
            raise _Failover(UpstreamError(f"upstream '{self.spec.name}' failed (HTTP {status}): {message}"))
        overflow = overflow_of(body, message) if status < 500 or "context" in message.lower() else None
        if overflow is not None:
            self._maybe_clamp(overflow, sent)
        raise client_error(self.spec.name, status, body, overflow)

    def _maybe_clamp(self, overflow: Overflow, sent: dict[str, Any]) -> None:
        prompt, n_ctx = overflow.prompt_tokens, overflow.n_ctx
        if prompt is None or n_ctx is None or prompt >= n_ctx:
            return
        asked = sent.get("max_tokens")
        if asked and prompt + asked > n_ctx:
            raise RetryClamped(n_ctx - prompt)

    async def post_json(self, path: str, body: dict[str, Any], key: str | None = None) -> Any:
        """A small non-streamed call (tokenize and the like) to a healthy node; None if it has no such route."""
        await self.ensure_probed()
        node = self.router.pick(key) or (self.nodes[0] if self.nodes else None)
        if node is None:
            return None
        return await self._json("POST", node, path, json=body, timeout=30)

    # --- probing and health ------------------------------------------------------------------------

    async def ensure_probed(self) -> None:
        """Probe once; when no node answers, requests go ahead and probing is retried 10 s later."""
        if self.info.probed or time.monotonic() < self._probe_after:
            return
        async with self._probe_lock:
            if not self.info.probed and time.monotonic() >= self._probe_after:
                await self._probe()
                if not self.info.probed:
                    self._probe_after = time.monotonic() + 10

    async def _get(self, node: Node, path: str) -> Any:
        return await self._json(
            "GET", node, path, timeout=min(self.spec.timeout, self.spec.connect_timeout + 5)
        )

    async def _json(self, method: str, node: Node, path: str, **kwargs: Any) -> Any:
        """A small JSON answer from `node` (at most MAX_BODY_BYTES), or None if there is none."""
        try:
            async with self.client.stream(
                method, node.url + path, headers=self.headers(), auth=node.auth, **kwargs
            ) as r:
                if r.status_code != 200:
                    return None
                return upstream_json(await read_capped(r, MAX_BODY_BYTES), "an answer")
        except httpx.HTTPError:
            return None
        except BadStream as exc:  # oversized or not JSON
            log.warning(
                "upstream %s node %s: %s (%s %s)", self.spec.name, node.url, exc.message, method, path
            )
            return None

    async def _probe(self) -> None:
        """Learn the kind, served model name and context from the first node that answers."""
        info = self.info
        for node in self.nodes:
            health = await self._get(node, "/health")
            models = await self._get(node, "/v1/models")
            if health is None and models is None:
                continue
            if isinstance(health, dict) and "loaded" in health and "version" in health:
                info.flavor = "lmdock"
            props = await self._get(node, "/props") if info.flavor != "lmdock" else None
            if isinstance(props, dict) and "default_generation_settings" in props:
                info.flavor = "llama.cpp"
                settings = props["default_generation_settings"]
                info.n_ctx = settings.get("n_ctx") or settings.get("params", {}).get("n_ctx")
                info.chat_template = props.get("chat_template")
                info.bos_token = props.get("bos_token") or ""
                info.eos_token = props.get("eos_token") or ""
            data = models.get("data") if isinstance(models, dict) else None
            if isinstance(data, list) and data and isinstance(data[0], dict):
                first = data[0]
                owner = str(first.get("owned_by", "")).lower()
                if info.flavor == "unknown" and owner in ("vllm", "sglang"):
                    info.flavor = owner
                info.n_ctx = info.n_ctx or first.get("max_model_len") or first.get("max_input_tokens")
                if self.spec.model is None and info.flavor != "lmdock":
                    info.model = first.get("id")
            if self.spec.kind == "auto":
                info.kind = "lmdock" if info.flavor == "lmdock" else "openai"
            info.probed = True
            log.info(
                "upstream %s: %s (%s), model %s, context %s, %d node(s)",
                self.spec.name,
                info.kind,
                info.flavor,
                self.served_model,
                self.n_ctx or "unknown",
                len(self.nodes),
            )
            return
        log.warning("upstream %s: no node answered the probe; will retry", self.spec.name)

    @property
    def served_model(self) -> str:
        return (
            self.spec.model
            or self.info.model
            or ("default" if self.info.kind == "lmdock" else self.spec.name)
        )

    @property
    def n_ctx(self) -> int | None:
        return self.spec.context_length or self.info.n_ctx

    async def check(self, node: Node) -> None:
        try:
            async with self.client.stream(
                "GET",
                node.url + "/health",
                headers=self.headers(),
                auth=node.auth,
                timeout=self.spec.connect_timeout + 2,
            ) as r:
                ok = r.status_code == 200
                reason = f"health HTTP {r.status_code}"
                await read_capped(r, MAX_ERROR_BYTES, "a health answer")  # keeps the connection
        except httpx.HTTPError as exc:
            ok, reason = False, repr(exc)
        except BadStream as exc:
            ok, reason = False, exc.message
        if ok:
            if not node.healthy:
                log.info("upstream %s node %s is up again", self.spec.name, node.url)
            node.mark_up(self.spec.health_interval)
        else:
            if node.healthy:
                log.warning("upstream %s node %s is down: %s", self.spec.name, node.url, reason)
            node.mark_down(reason)

    async def health_loop(self, tick: float = 0.25) -> None:
        while True:
            now = time.monotonic()
            due = [n for n in self.nodes if n.next_check <= now]
            if due:
                await asyncio.gather(*(self.check(n) for n in due), return_exceptions=True)
                if not self.info.probed and any(n.healthy for n in self.nodes):
                    with contextlib.suppress(Exception):
                        await self.ensure_probed()
            await asyncio.sleep(tick)

    def start(self) -> None:
        if self._health_task is None:
            self._health_task = asyncio.get_running_loop().create_task(self.health_loop())

    async def close(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._health_task
            self._health_task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class _Failover(Exception):
    """This node could not take the request; try another. `error` is what to report if none can."""

    def __init__(self, error: LmdockError | None) -> None:
        self.error = error


def _retry_after(value: str | None) -> float:
    try:
        return float(value) if value else 2.0
    except ValueError:
        return 2.0
