"""Stored responses (`store: true`): what GET /v1/responses/{id}, input_items and previous_response_id read.

Each row keeps the Response as returned, this request's input items, and the conversation before them
(`history`), so continuing from a response needs one row, and deleting or pruning an older response
never breaks a newer one. Retention is bounded by count and by age, pruned on every save.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from lmdock.storage import Database

Item = dict[str, Any]


@dataclass
class StoredResponse:
    response: dict[str, Any]
    input_items: list[Item]
    history: list[Item]

    def conversation(self) -> list[Item]:
        """Every item up to and including this response's output: the history a continuation extends."""
        return [*self.history, *self.input_items, *self.response.get("output", [])]


class ResponseStore:
    def __init__(self, db: Database, *, max_count: int = 10_000, max_age_s: float = 30 * 86400) -> None:
        self.db = db
        self.max_count = max_count
        self.max_age_s = max_age_s

    # synchronous (SQLite): call them through asyncio.to_thread from the event loop

    def save(self, response: dict[str, Any], input_items: list[Item], history: list[Item]) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO responses (id, created_at, previous_response_id, model, response,"
                " input_items, history) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    response["id"],
                    time.time(),
                    response.get("previous_response_id"),
                    response.get("model", ""),
                    json.dumps(response),
                    json.dumps(input_items),
                    json.dumps(history),
                ),
            )
            self._prune(conn)

    def _prune(self, conn) -> None:
        if self.max_age_s > 0:
            conn.execute("DELETE FROM responses WHERE created_at < ?", (time.time() - self.max_age_s,))
        if self.max_count > 0:
            conn.execute(
                "DELETE FROM responses WHERE id IN (SELECT id FROM responses ORDER BY created_at DESC"
                " LIMIT -1 OFFSET ?)",
                (self.max_count,),
            )

    def get(self, response_id: str) -> StoredResponse | None:
        row = self.db.query_one(
            "SELECT response, input_items, history, created_at FROM responses WHERE id = ?", (response_id,)
        )
        if row is None:
            return None
        if self.max_age_s > 0 and row["created_at"] < time.time() - self.max_age_s:
            return None  # expired, not pruned yet
        return StoredResponse(
            response=json.loads(row["response"]),
            input_items=json.loads(row["input_items"]),
            history=json.loads(row["history"]),
        )

    def delete(self, response_id: str) -> bool:
        with self.db.transaction() as conn:
            return conn.execute("DELETE FROM responses WHERE id = ?", (response_id,)).rowcount > 0
