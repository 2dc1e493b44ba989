"""Stored responses (`store: true`): what GET /v1/responses/{id}, input_items and previous_response_id read.

Each row keeps the Response as returned and this request's input items; the conversation before them is
the chain of `previous_response_id` rows, walked in one query, so a chain of n turns stores O(n) bytes.
Large `data:` URLs in items (images, files) are stored once per content (`response_blobs`) and put back
on read. A response is visible to the key that stored it (or to everyone when the server has no keys)
and to the admin key. Deleting or pruning a response hides it; its row stays only while a visible
response continues from it, so a newer response never loses its history. Retention is bounded by count
and age (pruned on save) and by a byte quota checked before a request that would store runs.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lmdock.core.errors import QuotaExceeded
from lmdock.core.owner import Principal
from lmdock.storage import Database, mib

Item = dict[str, Any]

BLOB_PREFIX = "lmdock-blob:sha256:"
BLOB_MIN_CHARS = 1024  # data: URLs at least this long are stored once, by content

_REACHABLE = """
    WITH RECURSIVE keep(id) AS (
        SELECT id FROM responses WHERE visible = 1
        UNION
        SELECT r.previous_response_id FROM responses r JOIN keep k ON r.id = k.id
        WHERE r.history IS NULL AND r.previous_response_id IS NOT NULL
    )
"""


@dataclass
class StoredResponse:
    response: dict[str, Any]
    input_items: list[Item]
    history: list[Item]

    def conversation(self) -> list[Item]:
        """Every item up to and including this response's output: the history a continuation extends."""
        return [*self.history, *self.input_items, *self.response.get("output", [])]


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    """`value` (JSON) with `fn` applied to every string in it."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _map_strings(v, fn) for k, v in value.items()}
    return value


def _externalize(value: Any, blobs: dict[str, str]) -> Any:
    """`value` with every long data: URL replaced by a reference to its content (collected in `blobs`)."""

    def reference(text: str) -> str:
        if len(text) < BLOB_MIN_CHARS or not text.startswith("data:"):
            return text
        digest = hashlib.sha256(text.encode()).hexdigest()
        blobs[digest] = text
        return BLOB_PREFIX + digest

    return _map_strings(value, reference)


def _internalize(value: Any, blobs: dict[str, str]) -> Any:
    """The inverse of `_externalize`, for the references this row owns (anything else stays as sent)."""
    return _map_strings(
        value,
        lambda text: blobs.get(text[len(BLOB_PREFIX) :], text) if text.startswith(BLOB_PREFIX) else text,
    )


class ResponseStore:
    def __init__(
        self,
        db: Database,
        *,
        max_count: int = 10_000,
        max_age_s: float = 30 * 86400,
        max_bytes: int = 0,
    ) -> None:
        self.db = db
        self.max_count = max_count
        self.max_age_s = max_age_s
        self.max_bytes = max_bytes

    # synchronous (SQLite): call them through asyncio.to_thread from the event loop

    def used_bytes(self) -> int:
        row = self.db.query_one(
            "SELECT (SELECT COALESCE(SUM(bytes), 0) FROM responses)"
            " + (SELECT COALESCE(SUM(bytes), 0) FROM response_blobs) AS n"
        )
        return row["n"] if row else 0

    def check_room(self, incoming_bytes: int) -> None:
        """Refuse, before any work, a request whose stored response would pass the byte quota."""
        if self.max_bytes <= 0:
            return
        quota = f"the stored-responses quota of {mib(self.max_bytes)} (--responses-max-mib)"
        if incoming_bytes > self.max_bytes:
            raise QuotaExceeded(
                f"this request's input ({mib(incoming_bytes)}) alone is over {quota}; "
                "send it with store: false",
                too_large=True,
                param="store",
            )
        used = self.used_bytes()
        if used + incoming_bytes > self.max_bytes:
            raise QuotaExceeded(
                f"stored responses use {mib(used)} of {quota}: delete some (DELETE /v1/responses/{{id}}), "
                "send store: false, or wait for older ones to expire",
                param="store",
            )

    def save(
        self, response: dict[str, Any], input_items: list[Item], history: list[Item], owner: str | None
    ) -> None:
        """Store a response. Its history is kept by reference to `previous_response_id`; only if that
        row is gone by now (deleted while this one was generated) is `history` stored with it."""
        blobs: dict[str, str] = {}
        items_json = _dumps(_externalize(input_items, blobs))
        response_json = _dumps(response)
        previous = response.get("previous_response_id")
        with self.db.transaction() as conn:
            history_json = None
            if (
                previous
                and conn.execute("SELECT 1 FROM responses WHERE id = ?", (previous,)).fetchone() is None
            ):
                history_json = _dumps(_externalize(history, blobs))
            size = len(items_json.encode()) + len(response_json.encode()) + len((history_json or "").encode())
            conn.execute("DELETE FROM responses WHERE id = ?", (response["id"],))
            conn.execute(
                "INSERT INTO responses (id, created_at, previous_response_id, owner, visible, bytes, model,"
                " response, input_items, history) VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?, ?)",
                (
                    response["id"],
                    time.time(),
                    previous,
                    owner,
                    size,
                    response.get("model", ""),
                    response_json,
                    items_json,
                    history_json,
                ),
            )
            for digest, data in blobs.items():
                conn.execute(
                    "INSERT OR IGNORE INTO response_blobs (digest, bytes, data) VALUES (?, ?, ?)",
                    (digest, len(data.encode()), data),
                )
                conn.execute(
                    "INSERT INTO response_blob_refs (response_id, digest) VALUES (?, ?)",
                    (response["id"], digest),
                )
            pruned = self._prune(conn)
        if pruned:
            self.db.reclaim()

    def get(
        self, response_id: str, principal: Principal, *, with_history: bool = False
    ) -> StoredResponse | None:
        """The response if `principal` may see it and it has not expired; `with_history`: also the
        conversation before it (what a continuation needs)."""
        row = self.db.query_one(
            "SELECT id, owner, created_at, response, input_items, history FROM responses"
            " WHERE id = ? AND visible = 1",
            (response_id,),
        )
        if row is None or not principal.can_see(row["owner"]):
            return None
        if self.max_age_s > 0 and row["created_at"] < time.time() - self.max_age_s:
            return None  # expired, not pruned yet
        chain = self._chain(response_id) if with_history else []
        blobs = self._blobs([row["id"], *(r["id"] for r in chain)])
        history: list[Item] = []
        if with_history and row["history"] is not None:  # kept with it: its chain ends here
            history += json.loads(row["history"])
        for r in chain:  # oldest first
            if r["history"] is not None:
                history += json.loads(r["history"])
            history += json.loads(r["input_items"])
            history += json.loads(r["response"]).get("output", [])
        return StoredResponse(
            response=json.loads(row["response"]),
            input_items=_internalize(json.loads(row["input_items"]), blobs),
            history=_internalize(history, blobs),
        )

    def _chain(self, response_id: str) -> list:
        """The rows before `response_id` (oldest first), up to one that holds its own history."""
        return self.db.query(
            """
            WITH RECURSIVE chain(id, depth) AS (
                SELECT previous_response_id, 1 FROM responses
                WHERE id = ? AND history IS NULL AND previous_response_id IS NOT NULL
                UNION ALL
                SELECT r.previous_response_id, c.depth + 1 FROM chain c JOIN responses r ON r.id = c.id
                WHERE r.history IS NULL AND r.previous_response_id IS NOT NULL
            )
            SELECT r.id, r.response, r.input_items, r.history FROM chain c JOIN responses r ON r.id = c.id
            ORDER BY c.depth DESC
            """,
            (response_id,),
        )

    def _blobs(self, response_ids: list[str]) -> dict[str, str]:
        marks = ",".join("?" * len(response_ids))
        rows = self.db.query(
            "SELECT DISTINCT b.digest, b.data FROM response_blob_refs r JOIN response_blobs b USING (digest)"
            f" WHERE r.response_id IN ({marks})",
            tuple(response_ids),
        )
        return {r["digest"]: r["data"] for r in rows}

    def delete(self, response_id: str, principal: Principal) -> bool:
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT owner FROM responses WHERE id = ? AND visible = 1", (response_id,)
            ).fetchone()
            if row is None or not principal.can_see(row["owner"]):
                return False
            conn.execute("UPDATE responses SET visible = 0 WHERE id = ?", (response_id,))
            self._collect(conn)
        self.db.reclaim()
        return True

    def _prune(self, conn) -> bool:
        """Hide what is past the age and count limits, then drop what nothing visible needs."""
        hidden = 0
        if self.max_age_s > 0:
            hidden += conn.execute(
                "UPDATE responses SET visible = 0 WHERE visible = 1 AND created_at < ?",
                (time.time() - self.max_age_s,),
            ).rowcount
        if self.max_count > 0:
            hidden += conn.execute(
                "UPDATE responses SET visible = 0 WHERE id IN (SELECT id FROM responses WHERE visible = 1"
                " ORDER BY created_at DESC LIMIT -1 OFFSET ?)",
                (self.max_count,),
            ).rowcount
        return bool(hidden) and self._collect(conn)

    @staticmethod
    def _collect(conn) -> bool:
        """Delete hidden rows no visible response continues from, and blobs no row refers to."""
        gone = conn.execute(
            _REACHABLE + "DELETE FROM responses WHERE visible = 0 AND id NOT IN (SELECT id FROM keep)"
        ).rowcount
        conn.execute("DELETE FROM response_blobs WHERE digest NOT IN (SELECT digest FROM response_blob_refs)")
        return gone > 0
