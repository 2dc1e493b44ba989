"""What an observer may ask of a running engine: its queue, its slots and what llama.cpp's memory holds
under each (tests, `GET /api/v1/models/{key}/engine`). Reads from the calling thread: off hot paths."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmdock.engine.types import EngineSnapshot, SlotState

if TYPE_CHECKING:
    from lmdock.engine.engine import Engine


def snapshot(engine: Engine) -> EngineSnapshot:
    return EngineSnapshot(
        waiting=len(engine.scheduler.waiting),
        active=len(engine.scheduler.running),
        blocked_by=engine.scheduler.blocked_by(),
        failure=engine.failure,
        slots=[
            SlotState(s.seq_id, s.busy, len(s.tokens), engine.runner.kv_pos_max(s.seq_id))
            for s in engine.pool.slots
        ],
    )
