"""When a crashed worker is started again, and when lmdock stops trying: pure policy, time passed in.

- A worker that crashes after it was ready is restarted (its requests end with an error; the next ones
  wait for the new worker).
- A worker that dies before it is ready (loading, warm-up decode) right after a crash or a failed first
  attempt is not: the model would only crash again. One early death is forgiven (a first start may race
  something transient); two in a row give up.
- More than `limit` crashes within `window` seconds give up too, however far each worker got.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CRASH_WINDOW = 60.0
CRASH_LIMIT = 5  # crashes within CRASH_WINDOW after which the model is marked failed


@dataclass
class CrashPolicy:
    window: float = CRASH_WINDOW
    limit: int = CRASH_LIMIT
    strikes: int = 0  # deaths before ready, in a row (a ready worker resets it)
    _times: list[float] = field(default_factory=list)

    def ready(self) -> None:
        """A worker loaded its model and decoded its warm-up tokens."""
        self.strikes = 0

    def crashed(self, now: float, *, was_ready: bool) -> str | None:
        """Count a crash at `now` (time.monotonic()); None to restart, else why not (it completes
        "its worker process was killed by SIGSEGV ...")."""
        self._times = [t for t in self._times if now - t < self.window] + [now]
        self.strikes = 1 if was_ready else self.strikes + 1
        if self.strikes >= 2:
            return "again while loading or on its first decode"
        if len(self._times) >= self.limit:
            return "too often"
        return None
