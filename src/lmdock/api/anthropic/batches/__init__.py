"""Anthropic's Message Batches API on the local engine: durable (SQLite), resumable, low priority."""

from __future__ import annotations

import asyncio

from lmdock.api.anthropic.batches.routes import router
from lmdock.api.anthropic.batches.runner import BatchRunner
from lmdock.api.anthropic.batches.store import BatchStore
from lmdock.storage import database


def start_batch_runner(app) -> asyncio.Task:
    """Start the app's batch runner (call from the lifespan); cancel the task to stop it."""
    settings = app.state.settings
    retention = settings.batch_retention_days * 86400 if settings.batch_retention_days > 0 else None
    runner = BatchRunner(
        BatchStore(database(app)),
        app.state.manager,
        slots=settings.batch_slots or max(1, settings.parallel - 1),
        retention_seconds=retention,
        limits=settings.limits,
    )
    app.state.batch_runner = runner
    return asyncio.create_task(runner.run(), name="batch-runner")


__all__ = ["BatchRunner", "BatchStore", "router", "start_batch_runner"]
