"""Which node of an upstream serves a request: conversation affinity, least outstanding requests, health.

A conversation is known by a hash of its stable prefix (system + tools + first user turn), so every turn of
it lands on the node whose prefix cache already holds it. A new conversation goes to the healthy node with
the fewest requests in flight. A node that fails to connect is marked down and probed again with
exponential backoff; one that says it is busy (429/503) is skipped until its retry-after passes.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from lmdock.chat.messages import normalize_billing_header
from lmdock.core.request import ChatRequest

AFFINITY_ENTRIES = 8192
BACKOFF_START = 0.5
BACKOFF_MAX = 30.0


@dataclass
class NodeStats:
    """Counters for /metrics, per node."""

    requests: int = 0
    errors: int = 0
    failovers: int = 0
    seconds_total: float = 0.0
    first_byte_seconds_total: float = 0.0
    completed: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    cached_tokens: int = 0


@dataclass(eq=False)
class Node:
    url: str  # credential-free: shown in listings, /metrics and logs
    auth: tuple[str, str] | None = field(default=None, repr=False)  # HTTP basic, from the configured URL
    outstanding: int = 0
    healthy: bool = True  # optimistic until the first probe says otherwise
    failures: int = 0
    next_check: float = 0.0  # monotonic time of the next health probe
    busy_until: float = 0.0  # monotonic time until which the node asked not to get more work
    last_error: str | None = None
    stats: NodeStats = field(default_factory=NodeStats)

    def mark_down(self, reason: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.healthy = False
        self.failures += 1
        self.last_error = reason
        self.next_check = now + min(BACKOFF_MAX, BACKOFF_START * 2 ** (self.failures - 1))

    def mark_up(self, interval: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.healthy = True
        self.failures = 0
        self.last_error = None
        self.next_check = now + interval

    def mark_busy(self, seconds: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.busy_until = now + max(0.5, min(seconds, 60.0))

    def state(self) -> str:
        if not self.healthy:
            return "down"
        return "busy" if self.busy_until > time.monotonic() else "up"


def affinity_key(req: ChatRequest) -> str:
    """A hash of what stays the same across a conversation's turns."""
    head: list[object] = []
    for m in req.messages:
        if m.role == "system":  # Claude Code's attribution line changes every request: pinned
            head.append(["system", normalize_billing_header(m.content)])
            continue
        head.append([m.role, m.content])
        break
    tools = [[t.name, t.description, t.parameters] for t in req.tools]
    raw = json.dumps([head, tools], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


class Router:
    def __init__(self, nodes: list[Node], max_outstanding: int = 0) -> None:
        self.nodes = nodes
        self.max_outstanding = max_outstanding
        self._affinity: OrderedDict[str, Node] = OrderedDict()

    def available(self, exclude: set[Node] | frozenset[Node] = frozenset()) -> list[Node]:
        now = time.monotonic()
        return [
            n
            for n in self.nodes
            if n not in exclude
            and n.healthy
            and n.busy_until <= now
            and (not self.max_outstanding or n.outstanding < self.max_outstanding)
        ]

    def pick(self, key: str | None, exclude: set[Node] | frozenset[Node] = frozenset()) -> Node | None:
        """The node for a request, or None when every node is down, busy or full."""
        candidates = self.available(exclude)
        if not candidates:
            return None
        if key is not None:
            node = self._affinity.get(key)
            if node is not None and node in candidates:
                self._affinity.move_to_end(key)
                return node
        return min(candidates, key=lambda n: (n.outstanding, n.stats.requests))

    def bind(self, key: str | None, node: Node) -> None:
        """Remember where a conversation ran (after its request was accepted there)."""
        if key is None:
            return
        self._affinity[key] = node
        self._affinity.move_to_end(key)
        while len(self._affinity) > AFFINITY_ENTRIES:
            self._affinity.popitem(last=False)

    def retry_after(self) -> int:
        """Seconds a client should wait before trying again when no node can take a request."""
        now = time.monotonic()
        waits = []
        for n in self.nodes:
            if not n.healthy:
                waits.append(n.next_check - now)
            elif n.busy_until > now:
                waits.append(n.busy_until - now)
            else:
                waits.append(1.0)  # full with outstanding requests: one should finish soon
        return int(max(1, min(60, round(min(waits, default=1.0) + 0.5))))
