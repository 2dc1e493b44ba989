"""A write path that keeps failing (say, on a full disk): when to try again, and what to tell the log.

It backs off exponentially and says so once when it starts failing and once when it works again, so a
fault that lasts an hour costs two log lines, not a traceback a second. Used by the batch runner (the
database) and the prompt cache (its files).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class Backoff:
    def __init__(
        self,
        what: str,
        logger: logging.Logger,
        *,
        first: float = 1.0,
        cap: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.log = logger
        self.first = first
        self.cap = cap
        self.clock = clock
        self.failures = 0
        self.retry_at = 0.0

    @property
    def failing(self) -> bool:
        return self.failures > 0

    def ready(self) -> bool:
        """Whether to try now (always, unless a recent failure asked to wait)."""
        return self.clock() >= self.retry_at

    def wait_seconds(self) -> float:
        return max(0.0, self.retry_at - self.clock())

    def failed(self, reason: str) -> None:
        delay = min(self.cap, self.first * 2**self.failures)
        if self.failures == 0:
            self.log.warning(
                "%s: %s (retrying with backoff, up to every %.0f s)", self.what, reason, self.cap
            )
        self.failures += 1
        self.retry_at = self.clock() + delay

    def succeeded(self) -> None:
        if self.failures:
            self.log.warning("%s: working again (after %d failed tries)", self.what, self.failures)
        self.failures = 0
        self.retry_at = 0.0
