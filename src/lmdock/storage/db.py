"""The one SQLite database of a server: WAL mode under LMDOCK_HOME, schema owned by per-feature migrations.

Every feature that persists (stored responses now, message batches later) registers its own list of
migrations under its own name. The lists are append-only: a shipped step is never edited, a schema change
is a new step at the end. `schema_migrations` records which steps of which feature have run, so features
migrate independently and a database written by an older lmdock upgrades in place.

One connection is shared and serialised by a lock; callers on the event loop use `run()` (a worker thread),
so a slow disk never blocks streaming.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from lmdock.config import lmdock_home

T = TypeVar("T")

DB_FILENAME = "lmdock.db"

# feature -> ordered SQL steps (append only; never edit a step once it has shipped)
MIGRATIONS: dict[str, list[str]] = {
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
    """A SQLite connection in WAL mode; use `execute`/`query` from threads or `run` from asyncio."""

    def __init__(self, path: Path, migrations: dict[str, list[str]] | None = None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self.migrate(MIGRATIONS if migrations is None else migrations)

    def migrate(self, migrations: dict[str, list[str]]) -> None:
        """Run every step not yet recorded, each feature in order, each step in one transaction."""
        with self._lock:
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " feature TEXT NOT NULL, version INTEGER NOT NULL, applied_at TEXT NOT NULL"
                " DEFAULT (datetime('now')), PRIMARY KEY (feature, version))"
            )
            for feature, steps in migrations.items():
                row = self._conn.execute(
                    "SELECT MAX(version) FROM schema_migrations WHERE feature = ?", (feature,)
                ).fetchone()
                done = row[0] or 0
                for version, sql in enumerate(steps, start=1):
                    if version <= done:
                        continue
                    # the step and its record commit together, or not at all
                    try:
                        self._conn.executescript(
                            "BEGIN;\n" + sql + "\nINSERT INTO schema_migrations (feature, version) VALUES "
                            f"('{feature}', {version});\nCOMMIT;"
                        )
                    except sqlite3.Error:
                        if self._conn.in_transaction:
                            self._conn.execute("ROLLBACK")
                        raise

    def version(self, feature: str) -> int:
        row = self.query_one("SELECT MAX(version) AS v FROM schema_migrations WHERE feature = ?", (feature,))
        return (row["v"] if row else None) or 0

    def execute(self, sql: str, params: tuple = ()) -> int:
        """Run one statement; return the number of rows changed."""
        with self._lock:
            return self._conn.execute(sql, params).rowcount

    def query(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def query_one(self, sql: str, params: tuple = ()) -> sqlite3.Row | None:
        with self._lock:
            return self._conn.execute(sql, params).fetchone()

    def transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work(connection)` inside one transaction (rolled back if it raises)."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                result = work(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            return result

    async def run(self, fn: Callable[..., T], *args) -> T:
        """Call `fn(*args)` (typically a method of this database) off the event loop."""
        return await asyncio.to_thread(fn, *args)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def open_database(home: Path | None = None) -> Database:
    """The server's database file, `<LMDOCK_HOME>/lmdock.db`, migrated to the current schema."""
    return Database((home or lmdock_home()) / DB_FILENAME)


_open_lock = threading.Lock()


def shared_database(state: Any) -> Database:
    """The server's database, opened on first use and kept on `state` (the app's `app.state`), so every
    feature shares one connection; the app closes it on shutdown."""
    db = getattr(state, "database", None)
    if db is None:
        with _open_lock:
            db = getattr(state, "database", None)
            if db is None:
                db = state.database = open_database()
    return db
