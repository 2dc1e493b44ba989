"""What an observer may ask of a running engine: its queue (how long and why each request waits), its
slots and what llama.cpp's memory holds under each, and the prompt cache's RAM and disk entries (tests,
`GET /api/v1/models/{key}/engine`). Reads from the calling thread: off hot paths."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from lmdock.engine.types import CachedState, EngineSnapshot, QueuedState, SlotState

if TYPE_CHECKING:
    from lmdock.engine.engine import Engine


def snapshot(engine: Engine) -> EngineSnapshot:
    now, wall = time.monotonic(), time.time()
    cache = engine.cache
    return EngineSnapshot(
        waiting=len(engine.scheduler.waiting),
        active=len(engine.scheduler.running),
        blocked_by=engine.scheduler.blocked_by(),
        failure=engine.failure,
        slots=[
            SlotState(s.seq_id, s.busy, len(s.tokens), engine.runner.kv_pos_max(s.seq_id))
            for s in engine.pool.slots
        ],
        queue=[
            QueuedState(len(s.prompt), s.priority, round(now - s.queued_at, 3), s.blocked_by)
            for s in list(engine.scheduler.waiting)
        ],
        cache=[]
        if cache is None
        else [CachedState("ram", len(e.tokens), e.nbytes, round(wall - e.last_used, 1)) for e in cache.ram]
        + [
            CachedState("disk", len(e.tokens), e.file.size if e.file else 0, round(wall - e.last_used, 1))
            for e in cache.disk
        ],
    )
