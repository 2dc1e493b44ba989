"""The one SQLite database (LMDOCK_HOME/lmdock.db, or `--db-path`) that every durable feature shares.

WAL mode (readers never block the writer, a crash never corrupts), `synchronous=FULL` (a committed
transaction survives a crash of the process and of the machine), foreign keys on. The schema is owned
here as per-feature, append-only migration lists: a feature's tables are created by its list, in order,
and the versions applied are recorded in `schema_migrations`. Never edit or reorder a shipped migration;
append a new one. Features that merge independently each add their own key to `MIGRATIONS`.

It holds people's prompts and outputs, so the files are private (0600, and SQLite gives its `-wal` and
`-shm` files the database's mode; LMDOCK_HOME itself is 0700). A full disk is an ordinary fault: a write
that fails for lack of space raises `InsufficientStorage` with nothing half-written (SQLite rolls the
transaction back), and the next write simply tries again. Space freed by deletes goes back to the
filesystem (`reclaim`: incremental vacuum, then a checkpoint that lets the WAL shrink to its kept size;
the kept WAL is what lets deletes still commit on a full disk).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lmdock.core.config import lmdock_home
from lmdock.core.errors import InsufficientStorage

log = logging.getLogger(__name__)

DB_FILENAME = "lmdock.db"
WAL_KEEP_BYTES = 4 << 20  # the WAL is cut back to this after a checkpoint, and reused from its start
RECLAIM_MIN_BYTES = 1 << 20  # free pages worth giving back to the filesystem
_RECLAIM_STEP_PAGES = 256  # pages per incremental-vacuum step: bounds how far the WAL grows meanwhile

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
        # Owners, and history by reference: a response keeps only its own input items and follows
        # `previous_response_id` for what came before (a chain costs O(n), not O(n^2)); large data: URLs
        # (images, files) are stored once, content-addressed. Rows from version 1 keep their full
        # `history` copy, and a chain walk stops at a row that has one.
        """
        CREATE TABLE responses_v2 (
            id TEXT PRIMARY KEY,
            created_at REAL NOT NULL,
            previous_response_id TEXT,      -- the stored response it continues: its conversation comes first
            owner TEXT,                     -- digest of the API key that stored it (NULL: no keys)
            visible INTEGER NOT NULL DEFAULT 1,  -- 0: deleted or past retention, kept while a visible
                                                 --    response continues from it
            bytes INTEGER NOT NULL,         -- stored size of the row (before the large columns: cheap to sum)
            model TEXT NOT NULL,
            response TEXT NOT NULL,         -- the Response object as returned (JSON)
            input_items TEXT NOT NULL,      -- this request's input items (JSON list, blobs referenced)
            history TEXT                    -- the items before them, only when they could not be referenced
        );
        INSERT INTO responses_v2
            (id, created_at, previous_response_id, owner, visible, bytes, model, response, input_items, history)
            SELECT id, created_at, previous_response_id, NULL, 1,
                LENGTH(CAST(response AS BLOB)) + LENGTH(CAST(input_items AS BLOB))
                    + LENGTH(CAST(history AS BLOB)),
                model, response, input_items, history
            FROM responses;
        DROP TABLE responses;
        ALTER TABLE responses_v2 RENAME TO responses;
        CREATE INDEX responses_created_at ON responses (created_at);
        CREATE INDEX responses_previous ON responses (previous_response_id);
        CREATE TABLE response_blobs (
            digest TEXT PRIMARY KEY,        -- sha256 of the data
            bytes INTEGER NOT NULL,
            data TEXT NOT NULL              -- e.g. an input_image data: URL
        );
        CREATE TABLE response_blob_refs (
            response_id TEXT NOT NULL REFERENCES responses(id) ON DELETE CASCADE,
            digest TEXT NOT NULL REFERENCES response_blobs(digest),
            PRIMARY KEY (response_id, digest)
        );
        CREATE INDEX response_blob_refs_digest ON response_blob_refs (digest);
        """,
    ],
}
MIGRATIONS["batches"].append(
    # Owners and sizes: a batch belongs to the key that created it; `bytes` (its params and results)
    # counts against the batch storage quota.
    """
    ALTER TABLE message_batches ADD COLUMN owner TEXT;
    ALTER TABLE message_batches ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
    UPDATE message_batches SET bytes = (
        SELECT COALESCE(SUM(COALESCE(LENGTH(CAST(params AS BLOB)), 0)
                            + COALESCE(LENGTH(CAST(result AS BLOB)), 0)), 0)
        FROM message_batch_requests WHERE batch_n = message_batches.n);
    CREATE INDEX message_batches_owner ON message_batches (owner, n);
    """
)


class Database:
    """One connection shared by the server's threads, serialised by a lock (SQLite has one writer)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        _private_files(path)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes effect on a new file (see below)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(f"PRAGMA journal_size_limit={WAL_KEEP_BYTES}")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("PRAGMA busy_timeout=5000")
        # zero deleted rows inside live pages only: a delete then writes a few pages, not every page it
        # frees (which fails on a full disk); freed pages leave the file at the next `reclaim`
        self._conn.execute("PRAGMA secure_delete=FAST")
        self.migrate()
        self._incremental_vacuum_on()

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

    def _incremental_vacuum_on(self) -> None:
        """A database made before auto_vacuum was set needs one VACUUM to take it (it needs free space
        about the size of the file; on a full disk it is left for the next start)."""
        if self._conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:
            return
        try:
            with self._lock:
                self._conn.execute("VACUUM")
        except sqlite3.Error as exc:
            log.warning("database: could not convert %s to incremental vacuum yet: %s", self.path, exc)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on an exception); the write lock is taken up front.
        A full disk raises `InsufficientStorage`, with the transaction rolled back."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:  # SQLite may have rolled back already (a full disk)
                        self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                self._raise_full(exc)
                raise

    def query(self, sql: str, args: tuple[Any, ...] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._conn.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                self._raise_full(exc)
                raise

    def query_one(self, sql: str, args: tuple[Any, ...] | dict[str, Any] = ()) -> sqlite3.Row | None:
        rows = self.query(sql, args)
        return rows[0] if rows else None

    def reclaim(self) -> None:
        """Give the pages freed by deletes back to the filesystem, a step at a time: an incremental
        vacuum moves free pages to the end of the file, and the checkpoint after each step truncates the
        file and lets the WAL restart (cut back to its kept size)."""
        with self._lock:
            page = self._conn.execute("PRAGMA page_size").fetchone()[0]
            try:
                while self._conn.execute("PRAGMA freelist_count").fetchone()[0] * page >= RECLAIM_MIN_BYTES:
                    # executescript runs the pragma to the end (execute() frees a single page)
                    self._conn.executescript(f"PRAGMA incremental_vacuum({_RECLAIM_STEP_PAGES});")
                    busy = self._conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0]
                    if busy:
                        return  # a reader holds the WAL: the next delete goes on from here
            except sqlite3.Error as exc:  # e.g. a full disk: the next delete tries again
                log.warning("database: could not give freed space back yet: %s", exc)

    def size_bytes(self) -> int:
        """The database's size on disk, its WAL included."""
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += os.stat(f"{self.path}{suffix}").st_size
        return total

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _raise_full(self, exc: sqlite3.Error) -> None:
        """SQLITE_FULL (no space left, or the database at its size limit) as `InsufficientStorage`."""
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_FULL:
            raise InsufficientStorage(
                f"the disk holding the database ({self.path}) is full: nothing was saved; "
                "this works again once space is freed"
            ) from exc


def _private_files(path: Path) -> None:
    """Create the database 0600 (SQLite gives its -wal and -shm files the same mode) in a folder that
    is 0700 when lmdock creates it or it is LMDOCK_HOME; tighten files an older version left open."""
    parent = path.parent
    if not parent.exists():
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if parent.resolve() == lmdock_home().resolve():
        os.chmod(parent, 0o700)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(f"{path}{suffix}", 0o600)


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


def mib(n: int) -> str:
    """A byte count as people read it in a quota message."""
    return f"{n / (1 << 20):.1f} MiB"


def open_database(home: Path | None = None, *, path: Path | None = None) -> Database:
    """The database at `path`, or LMDOCK_HOME/lmdock.db (`home`: another LMDOCK_HOME)."""
    return Database(path or (home or lmdock_home()) / DB_FILENAME)


def database(app: Any) -> Database:
    """The app's database, opened on first use (every feature shares this one connection)."""
    db = getattr(app.state, "db", None)
    if db is None:
        settings = getattr(app.state, "settings", None)
        db = app.state.db = open_database(path=getattr(settings, "db_path", None))
    return db
