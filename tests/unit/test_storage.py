"""The shared SQLite database: private files, a full disk as an ordinary fault, space given back."""

from __future__ import annotations

import json
import os
import sqlite3
import stat

import pytest

from lmdock.core.errors import InsufficientStorage
from lmdock.storage import Database, open_database
from lmdock.storage.db import MIGRATIONS, _statements
from tests.small_disk import fill, small_disk


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _write(db: Database, n: int, size: int) -> None:
    with db.transaction() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS t (i INTEGER PRIMARY KEY, x BLOB)")
        conn.executemany("INSERT INTO t (x) VALUES (?)", ((os.urandom(size),) for _ in range(n)))


def test_the_database_and_its_home_are_private(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("LMDOCK_HOME", str(home))
    db = open_database()
    _write(db, 1, 10)
    assert _mode(home) == 0o700
    for suffix in ("", "-wal", "-shm"):
        assert _mode(f"{db.path}{suffix}") == 0o600, suffix


def test_files_an_older_version_left_readable_are_tightened(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    monkeypatch.setenv("LMDOCK_HOME", str(home))
    path = home / "lmdock.db"
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA journal_mode=WAL")
    raw.execute("CREATE TABLE x (i)")
    os.chmod(path, 0o644)
    os.chmod(home, 0o755)
    Database(path)
    assert _mode(path) == 0o600 and _mode(home) == 0o700


def test_db_path_puts_the_database_elsewhere(tmp_path):
    path = tmp_path / "state" / "nested" / "my.db"
    db = open_database(path=path)
    _write(db, 1, 10)
    assert path.is_file() and _mode(path.parent) == 0o700 and _mode(path) == 0o600


def test_a_full_disk_fails_cleanly_and_recovers_when_space_returns(tmp_path):
    with small_disk(tmp_path / "disk", 4) as disk:
        db = Database(disk / "lmdock.db")
        _write(db, 5, 1000)
        filler = fill(disk)
        with pytest.raises(InsufficientStorage, match="disk holding the database .* is full"):
            _write(db, 50, 100_000)
        with pytest.raises(InsufficientStorage):  # still full: the same clear error, not a wedged connection
            _write(db, 50, 100_000)
        assert (
            db.query_one("SELECT COUNT(*) AS n FROM t")["n"] == 5
        )  # committed rows intact, none half-written
        filler.unlink()
        _write(db, 5, 1000)  # space is back: it just works
        assert db.query_one("SELECT COUNT(*) AS n FROM t")["n"] == 10
        db.close()


def test_space_freed_by_deletes_goes_back_to_the_filesystem(tmp_path):
    db = Database(tmp_path / "lmdock.db")
    _write(db, 200, 50_000)
    db.query("PRAGMA wal_checkpoint(TRUNCATE)")
    full = db.size_bytes()
    assert full > 9_000_000
    with db.transaction() as conn:
        conn.execute("DELETE FROM t WHERE i > 10")
    db.reclaim()
    assert db.size_bytes() < full // 4  # the file and the WAL shrank, no VACUUM needed


def test_an_older_database_takes_the_new_migrations_and_keeps_its_data(tmp_path):
    """A database written before owners and history-by-reference opens, converts, and reads the same."""
    path = tmp_path / "lmdock.db"
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("CREATE TABLE schema_migrations (feature TEXT NOT NULL, version INTEGER NOT NULL)")
    for feature in ("batches", "responses"):
        for statement in _statements(MIGRATIONS[feature][0]):
            raw.execute(statement)
        raw.execute("INSERT INTO schema_migrations VALUES (?, 1)", (feature,))
    user = {"type": "message", "id": "u2", "role": "user", "content": []}
    first = {"type": "message", "id": "u1", "role": "user", "content": []}
    raw.execute(
        "INSERT INTO responses VALUES ('r2', 1e9, 'r1', 'm', ?, ?, ?)",
        (json.dumps({"id": "r2", "output": []}), json.dumps([user]), json.dumps([first])),
    )
    raw.close()

    from lmdock.api.responses.store import ResponseStore
    from lmdock.core.owner import ANONYMOUS

    db = Database(path)
    got = ResponseStore(db, max_age_s=0).get("r2", ANONYMOUS, with_history=True)
    assert [i["id"] for i in got.conversation()] == ["u1", "u2"]  # its stored copy of the history
    assert db.query_one("PRAGMA auto_vacuum")[0] == 2  # converted, so deletes give space back
