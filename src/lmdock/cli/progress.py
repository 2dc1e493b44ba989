"""Rich progress bars for long byte-counted work (model assembly, downloads)."""

from __future__ import annotations

from collections.abc import Callable

from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from lmdock.models.default_model import DEFAULT_MODEL_SIZE


def byte_progress(label: str, total: int = DEFAULT_MODEL_SIZE) -> Callable[[int], None]:
    """A callback that advances a progress bar by n bytes; the bar appears on first use."""
    state: dict = {}

    def advance(n: int) -> None:
        if "bar" not in state:
            bar = Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                transient=False,
            )
            bar.start()
            state["bar"], state["task"] = bar, bar.add_task(label, total=total)
        bar = state["bar"]
        bar.advance(state["task"], n)
        if bar.tasks[0].completed >= total:
            bar.stop()

    return advance
