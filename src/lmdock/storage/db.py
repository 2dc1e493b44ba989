"""The one SQLite database under LMDOCK_HOME that every durable feature shares.

WAL mode (readers never block the writer, a crash never corrupts), `synchronous=FULL` (a committed
transaction survives a crash of the process and of the machine), foreign keys on. The schema is owned
here as per-feature, append-only migration lists: a feature's tables are created by its list, in order,
and the versions applied are recorded in `schema_migrations`. Never edit or reorder a shipped migration;
append a new one. Features that merge independently each add their own key to `MIGRATIONS`.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lmdock.core.config import lmdock_home

DB_FILENAME = "lmdock.db"

MIGRATIONS: dict[str, list[str]] = {
    # Message Batches (api/anthropic/batches): one row per batch, one per request with its result.
    "batches": [
        """
        CREATE TABLE message_batches (
            n INTEGER PRIMARY KEY AUTOINCREMENT,     -- creation order, for listing
            id TEXT NOT NULL UNIQUE,
            status TEXT NOT NULL,                   -- in_progress | canceling | ended
            total INTEGER NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            ended_at REAL,
            cancel_initiated_at REAL,
            archived_at REAL,
            n_succeeded INTEGER NOT NULL DEFAULT 0, -- committed results by type, kept with each commit
            n_errored INTEGER NOT NULL DEFAULT 0,
            n_canceled INTEGER NOT NULL DEFAULT 0,
            n_expired INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE message_batch_requests (
            batch_n INTEGER NOT NULL REFERENCES message_batches(n) ON DELETE CASCADE,
            idx INTEGER NOT NULL,                   -- position in the create request
            custom_id TEXT NOT NULL,
            prefix_key TEXT NOT NULL,               -- requests sharing it share a prompt prefix
            params TEXT,                            -- the Messages params (JSON); NULL once archived
            state TEXT NOT NULL,                    -- pending | succeeded | errored | canceled | expired
            result TEXT,                            -- the result object (JSON), set with the state
            completed_at REAL,
            attempts INTEGER NOT NULL DEFAULT 0,    -- times the runner started it (crash loops end)
            PRIMARY KEY (batch_n, idx),
            UNIQUE (batch_n, custom_id)
        );
        CREATE INDEX message_batch_requests_pending
            ON message_batch_requests (state, batch_n, prefix_key, idx);
        """,
    ],
    # Stored responses of the Responses API (api/responses/store.py, `store: true`).
    "responses": [
        """
        CREATE TABLE responses (
            id TEXT PRIMARY KEY,
            created_at REAL NOT NULL,
            previous_response_id TEXT,
            model TEXT NOT NULL,
            response TEXT NOT NULL,      -- the Response object as returned (JSON)
            input_items TEXT NOT NULL,   -- this request's input items, with ids (JSON list)
            history TEXT NOT NULL        -- the items before them: the conversation so far (JSON list)
        );
        CREATE INDEX responses_created_at ON responses (created_at);
        """,
    ],
}


class Database:
    """One connection shared by the server's threads, serialised by a lock (SQLite has one writer)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self.migrate()

    def migrate(self) -> None:
        """Apply every migration not yet recorded, each feature's in order, each in one transaction."""
        with self.transaction() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " feature TEXT NOT NULL, version INTEGER NOT NULL, PRIMARY KEY (feature, version))"
            )
        for feature, steps in MIGRATIONS.items():
            for version, sql in enumerate(steps, start=1):
                with self.transaction() as conn:
                    done = conn.execute(
                        "SELECT 1 FROM schema_migrations WHERE feature = ? AND version = ?",
                        (feature, version),
                    ).fetchone()
                    if done:
                        continue
                    for statement in _statements(sql):
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO schema_migrations (feature, version) VALUES (?, ?)", (feature, version)
                    )

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on an exception); the write lock is taken up front."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def query(self, sql: str, args: tuple[Any, ...] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def query_one(self, sql: str, args: tuple[Any, ...] | dict[str, Any] = ()) -> sqlite3.Row | None:
        with self._lock:
            return self._conn.execute(sql, args).fetchone()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _statements(sql: str) -> list[str]:
    """Split a migration script into statements (executescript would commit our transaction)."""
    out, buf = [], ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out


def open_database(home: Path | None = None) -> Database:
    return Database((home or lmdock_home()) / DB_FILENAME)


def database(app: Any) -> Database:
    """The app's database, opened on first use (every feature shares this one connection)."""
    db = getattr(app.state, "db", None)
    if db is None:
        db = app.state.db = open_database()
    return db
