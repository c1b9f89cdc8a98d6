"""The SQLite engine lives in :mod:`server.database.sqlite`; the index imports it from here."""

from server.database.sqlite import SqliteDatabase

__all__ = ["SqliteDatabase"]
