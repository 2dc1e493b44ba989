"""Durable state: one SQLite database under LMDOCK_HOME shared by every feature that persists."""

from lmdock.storage.db import Database, open_database, shared_database

__all__ = ["Database", "open_database", "shared_database"]
