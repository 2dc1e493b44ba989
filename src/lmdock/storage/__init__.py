"""Durable state: the one SQLite database under LMDOCK_HOME (see `db.py`)."""

from lmdock.storage.db import Database, database, mib, open_database

__all__ = ["Database", "database", "mib", "open_database"]
