"""Message Batches in the database: create, read, page, cancel, delete, and commit results atomically.

Every state change is one transaction. A request's result is written with `WHERE state = 'pending'`, so
a result is committed at most once however often work is retried, and the batch's counters and its
`ended` transition change in the same transaction as the result that completes it.

A batch belongs to the key that created it: the API-side methods take the caller's `Principal`, and a
batch it may not see is "not found", exactly like one that does not exist. What batches hold (params and
results) counts against a byte quota, checked when a batch is created.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from anthropic.types.messages import MessageBatch, MessageBatchRequestCounts

from lmdock.api.anthropic.encode import new_id
from lmdock.core.errors import InvalidRequest, NotFound, QuotaExceeded
from lmdock.core.owner import Principal
from lmdock.storage import Database, mib

EXPIRY_SECONDS = 24 * 3600  # Anthropic: a batch expires 24 hours after creation
FINAL_STATES = ("succeeded", "errored", "canceled", "expired")
_COUNTER = {state: f"n_{state}" for state in FINAL_STATES}


class BatchNotFound(NotFound):
    pass


@dataclass
class NewRequest:
    """One validated entry of a create request: `error` set means it is stored as errored at once."""

    custom_id: str
    params: str
    prefix_key: str
    error: dict | None = None


@dataclass
class PendingRequest:
    batch_n: int
    batch_id: str
    idx: int
    custom_id: str
    params: str
    prefix_key: str

    @property
    def key(self) -> tuple[int, int]:
        return (self.batch_n, self.idx)


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=UTC)


def _counts(row) -> dict[str, int]:
    return {state: row[_COUNTER[state]] for state in FINAL_STATES}


def completed_count(row) -> int:
    """Requests with a committed result (live progress, which `request_counts` does not show)."""
    return sum(_counts(row).values())


def batch_object(row, base_url: str) -> dict:
    """The wire MessageBatch. As documented, every request counts as `processing` until the batch ends."""
    ended = row["status"] == "ended"
    counts: dict[str, int] = _counts(row) if ended else dict.fromkeys(FINAL_STATES, 0)
    processing = 0 if ended else row["total"]
    results_url = f"{base_url.rstrip('/')}/v1/messages/batches/{row['id']}/results" if ended else None
    if row["archived_at"] is not None:
        results_url = None
    return MessageBatch(
        id=row["id"],
        type="message_batch",
        processing_status=row["status"],
        request_counts=MessageBatchRequestCounts.model_validate({"processing": processing, **counts}),
        created_at=datetime.fromtimestamp(row["created_at"], tz=UTC),
        expires_at=datetime.fromtimestamp(row["expires_at"], tz=UTC),
        ended_at=_ts(row["ended_at"]),
        cancel_initiated_at=_ts(row["cancel_initiated_at"]),
        archived_at=_ts(row["archived_at"]),
        results_url=results_url,
    ).model_dump(mode="json")


class BatchStore:
    """All SQL of the Message Batches feature."""

    def __init__(self, db: Database, clock=time.time, *, max_bytes: int = 0) -> None:
        self.db = db
        self.clock = clock
        self.max_bytes = max_bytes

    # --- API side ----------------------------------------------------------------------------------

    def create(self, requests: list[NewRequest], owner: str | None = None) -> str:
        batch_id = new_id("msgbatch_")
        now = self.clock()
        errored = sum(1 for r in requests if r.error is not None)
        size = sum(len(r.params.encode()) for r in requests)
        with self.db.transaction() as conn:
            self._check_room(conn, size)
            cur = conn.execute(
                "INSERT INTO message_batches (id, status, total, created_at, expires_at, n_errored, owner, bytes)"
                " VALUES (?, 'in_progress', ?, ?, ?, ?, ?, ?)",
                (batch_id, len(requests), now, now + EXPIRY_SECONDS, errored, owner, size),
            )
            n = cur.lastrowid
            assert n is not None  # set by the INSERT above
            conn.executemany(
                "INSERT INTO message_batch_requests"
                " (batch_n, idx, custom_id, prefix_key, params, state, result, completed_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (
                        n,
                        i,
                        r.custom_id,
                        r.prefix_key,
                        r.params,
                        "pending" if r.error is None else "errored",
                        None if r.error is None else json.dumps({"type": "errored", "error": r.error}),
                        None if r.error is None else now,
                    )
                    for i, r in enumerate(requests)
                ),
            )
            self._end_if_done(conn, n, now)
        return batch_id

    def _check_room(self, conn, size: int) -> None:
        if self.max_bytes <= 0:
            return
        quota = f"the Message Batches storage quota of {mib(self.max_bytes)} (--batches-max-mib)"
        if size > self.max_bytes:
            raise QuotaExceeded(f"this batch ({mib(size)}) alone is over {quota}", too_large=True)
        used = conn.execute("SELECT COALESCE(SUM(bytes), 0) AS n FROM message_batches").fetchone()["n"]
        if used + size > self.max_bytes:
            raise QuotaExceeded(
                f"stored batches use {mib(used)} of {quota}, and this one needs {mib(size)}: delete ended "
                "batches (DELETE /v1/messages/batches/{id}) or wait for them to expire"
            )

    def get(self, batch_id: str, principal: Principal):
        """The batch, if `principal` may see it (another key's batch is not found)."""
        row = self.db.query_one("SELECT * FROM message_batches WHERE id = ?", (batch_id,))
        if row is None or not principal.can_see(row["owner"]):
            raise BatchNotFound(f"message batch '{batch_id}' not found")
        return row

    def page(
        self, principal: Principal, *, limit: int, after_id: str | None, before_id: str | None
    ) -> tuple[list, bool]:
        """Newest first; `after_id` pages towards older batches, `before_id` towards newer ones."""
        if not 1 <= limit <= 1000:
            raise InvalidRequest("limit: must be between 1 and 1000", param="limit")
        mine, args = ("", ()) if principal.admin else (" AND owner IS ?", (principal.owner,))
        if before_id is not None:
            n = self.get(before_id, principal)["n"]
            rows = self.db.query(
                f"SELECT * FROM message_batches WHERE n > ?{mine} ORDER BY n ASC LIMIT ?",
                (n, *args, limit + 1),
            )
            return list(reversed(rows[:limit])), len(rows) > limit
        bound = self.get(after_id, principal)["n"] if after_id is not None else 1 << 62
        rows = self.db.query(
            f"SELECT * FROM message_batches WHERE n < ?{mine} ORDER BY n DESC LIMIT ?",
            (bound, *args, limit + 1),
        )
        return rows[:limit], len(rows) > limit

    def cancel(self, batch_id: str, principal: Principal):
        """Mark a batch `canceling`; the runner then cancels its requests and ends it."""
        now = self.clock()
        row = self.get(batch_id, principal)
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE message_batches SET status = 'canceling', cancel_initiated_at = ?"
                " WHERE n = ? AND status = 'in_progress'",
                (now, row["n"]),
            )
        return self.get(batch_id, principal)

    def delete(self, batch_id: str, principal: Principal) -> None:
        row = self.get(batch_id, principal)
        if row["status"] != "ended":
            raise InvalidRequest(
                f"message batch '{batch_id}' is still {row['status'].replace('_', ' ')}: "
                "a batch can be deleted only once it has ended (cancel it first)"
            )
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM message_batches WHERE n = ?", (row["n"],))
        self.db.reclaim()

    def result_lines(self, row, chunk: int = 500) -> Iterator[str]:
        """One JSONL line per request, in request order, read in chunks (no blank lines)."""
        last = -1
        while True:
            rows = self.db.query(
                "SELECT idx, custom_id, result FROM message_batch_requests"
                " WHERE batch_n = ? AND idx > ? ORDER BY idx LIMIT ?",
                (row["n"], last, chunk),
            )
            if not rows:
                return
            for r in rows:
                yield f'{{"custom_id":{json.dumps(r["custom_id"])},"result":{r["result"]}}}\n'
            last = rows[-1]["idx"]

    # --- runner side -------------------------------------------------------------------------------

    def pending(self, limit: int, prefer: tuple[int, str] | None = None) -> list[PendingRequest]:
        """Pending requests of running batches: the group being worked on (`prefer`: batch and prompt
        prefix) first, then oldest batch first with requests sharing a prefix together, so the prefix
        cache keeps hitting. Both queries walk the pending index in order (no sort)."""
        select = (
            "SELECT r.batch_n, b.id AS batch_id, r.idx, r.custom_id, r.params, r.prefix_key"
            " FROM message_batch_requests r JOIN message_batches b ON b.n = r.batch_n"
            " WHERE r.state = 'pending' AND b.status = 'in_progress'"
        )
        rows = []
        if prefer is not None:
            rows = self.db.query(
                select + " AND r.batch_n = ? AND r.prefix_key = ? ORDER BY r.idx LIMIT ?", (*prefer, limit)
            )
        if len(rows) < limit:
            more = self.db.query(select + " ORDER BY r.batch_n, r.prefix_key, r.idx LIMIT ?", (limit,))
            seen = {(r["batch_n"], r["idx"]) for r in rows}
            rows += [r for r in more if (r["batch_n"], r["idx"]) not in seen][: limit - len(rows)]
        return [PendingRequest(**dict(r)) for r in rows]

    def commit(self, batch_n: int, idx: int, state: str, result: dict) -> bool:
        """Commit one request's result unless it already has one; end its batch if it was the last."""
        now = self.clock()
        text = json.dumps(result, separators=(",", ":"), ensure_ascii=False)
        with self.db.transaction() as conn:
            cur = conn.execute(
                "UPDATE message_batch_requests SET state = ?, result = ?, completed_at = ?"
                " WHERE batch_n = ? AND idx = ? AND state = 'pending'",
                (state, text, now, batch_n, idx),
            )
            if cur.rowcount != 1:
                return False
            col = _COUNTER[state]
            conn.execute(
                f"UPDATE message_batches SET {col} = {col} + 1, bytes = bytes + ? WHERE n = ?",
                (len(text.encode()), batch_n),
            )
            self._end_if_done(conn, batch_n, now)
        return True

    def start_attempt(self, batch_n: int, idx: int) -> int:
        """Count one more start of a request (committed before it runs); returns the count."""
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE message_batch_requests SET attempts = attempts + 1 WHERE batch_n = ? AND idx = ?",
                (batch_n, idx),
            )
            row = conn.execute(
                "SELECT attempts FROM message_batch_requests WHERE batch_n = ? AND idx = ?", (batch_n, idx)
            ).fetchone()
        return row["attempts"]

    def release_attempt(self, batch_n: int, idx: int) -> None:
        """Take back a start that never ran (the model was restarting): it does not count as interrupted."""
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE message_batch_requests SET attempts = attempts - 1"
                " WHERE batch_n = ? AND idx = ? AND attempts > 0",
                (batch_n, idx),
            )

    def sweep(self, in_flight: set[tuple[int, int]], retention_seconds: float | None) -> dict[int, str]:
        """Housekeeping: cancel the idle requests of canceling batches, expire overdue batches, end
        batches with nothing left, archive ended batches past retention. Returns the batches whose
        in-flight requests must stop, with the state those requests end in (canceled or expired)."""
        now = self.clock()
        stop: dict[int, str] = {}
        archived = False
        with self.db.transaction() as conn:
            for b in conn.execute(
                "SELECT n, status, expires_at FROM message_batches WHERE status != 'ended'"
            ).fetchall():
                if b["status"] == "canceling":
                    state = "canceled"
                elif b["expires_at"] <= now:
                    state = "expired"
                else:
                    continue
                stop[b["n"]] = state
                self._finish_idle(conn, b["n"], state, in_flight, now)
                self._end_if_done(conn, b["n"], now)
            if retention_seconds is not None:
                cutoff = now - retention_seconds
                for b in conn.execute(
                    "SELECT n FROM message_batches WHERE status = 'ended' AND archived_at IS NULL"
                    " AND created_at < ?",
                    (cutoff,),
                ).fetchall():
                    conn.execute(
                        "UPDATE message_batch_requests SET params = NULL, result = NULL WHERE batch_n = ?",
                        (b["n"],),
                    )
                    conn.execute(
                        "UPDATE message_batches SET archived_at = ?, bytes = 0 WHERE n = ?", (now, b["n"])
                    )
                    archived = True
        if archived:
            self.db.reclaim()
        return stop

    def _finish_idle(
        self, conn, batch_n: int, state: str, in_flight: set[tuple[int, int]], now: float
    ) -> None:
        busy = [idx for (n, idx) in in_flight if n == batch_n]
        marks = ",".join("?" * len(busy))
        exclude = f" AND idx NOT IN ({marks})" if busy else ""
        cur = conn.execute(
            "UPDATE message_batch_requests SET state = ?, result = ?, completed_at = ?"
            f" WHERE batch_n = ? AND state = 'pending'{exclude}",
            (state, json.dumps({"type": state}), now, batch_n, *busy),
        )
        if cur.rowcount:
            col = _COUNTER[state]
            conn.execute(f"UPDATE message_batches SET {col} = {col} + ? WHERE n = ?", (cur.rowcount, batch_n))

    @staticmethod
    def _end_if_done(conn, batch_n: int, now: float) -> None:
        conn.execute(
            "UPDATE message_batches SET status = 'ended', ended_at = ?"
            " WHERE n = ? AND status != 'ended'"
            " AND total = n_succeeded + n_errored + n_canceled + n_expired",
            (now, batch_n),
        )
