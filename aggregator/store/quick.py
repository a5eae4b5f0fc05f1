"""The short commands' reads of an up-to-date SQLite file, through Python's ``sqlite3``.

Why: ``aggregator status`` and a poll with nothing to fetch run from shells and cron
many times a day, and importing SQLAlchemy is most of their time.  When the database is
an SQLite file that exists and is at ``HEAD_REVISION``, these reads need no engine: the
same statements and decoding as ``Store.statuses`` / ``Store.applied_config`` /
``Store.source_states`` (``status_sql``) run on a plain connection (the last for a poll
that fetches while the store opens: ``store.opening``).  Anything else — a server's
database, a URL with options, a missing file, an older schema, any error on the way —
gets None from ``QuickReads.open``, and the caller opens the ``Store`` (which creates,
migrates and reports errors as it always does).

This module must NOT import SQLAlchemy, write to the database (no schema creation, no
migration, no PRAGMA that changes the file), or hide an error: a read that fails once the
database was found current raises ``StoreError`` naming the database.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import TracebackType

from aggregator.errors import StoreError
from aggregator.records import AppliedConfig, SourceState, SourceStatus
from aggregator.store import status_sql
from aggregator.store.revision import HEAD_REVISION

__all__ = ["QuickReads", "sqlite_path"]

_SQLITE_FILE = "sqlite:///"  # sqlite:///relative.db, sqlite:////absolute.db
_BUSY_SECONDS = 30.0  # as the engine's busy_timeout: a writer's commit is waited for


class QuickReads:
    """``statuses``, ``source_states`` and ``applied_config`` of an SQLite file at
    ``HEAD_REVISION``."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        """Use ``QuickReads.open``."""
        self._connection = connection
        self._path = path

    @classmethod
    def open(cls, database_url: str) -> QuickReads | None:
        """The reads of ``database_url``, or None when the ``Store`` must open it instead."""
        path = _sqlite_file(database_url)
        if path is None:
            return None
        try:
            # mode=rw: never creates the file (``Store.open`` does that)
            connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True,
                                         timeout=_BUSY_SECONDS)
        except sqlite3.Error:
            return None
        try:
            found = connection.execute("SELECT version_num FROM alembic_version").fetchall()
        except sqlite3.Error:
            found = []
        if found != [(HEAD_REVISION,)]:
            connection.close()
            return None
        return cls(connection, path)

    def statuses(self) -> list[SourceStatus]:
        """As ``Store.statuses``: every polled source, by id, with its article count."""
        return [status_sql.status(row) for row in self._rows(status_sql.STATUSES)]

    def source_states(self) -> dict[str, SourceState]:
        """As ``Store.source_states()``: every polled source's state, by id."""
        return {str(row[0]): status_sql.state(row) for row in self._rows(status_sql.STATES)}

    def applied_config(self) -> AppliedConfig | None:
        """As ``Store.applied_config``: the newest applied config, or None."""
        newest = self._rows(status_sql.APPLIED_CONFIG)
        return status_sql.applied_config(newest[0] if newest else None)

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> QuickReads:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def _rows(self, statement: str) -> list[tuple[object, ...]]:
        try:
            return self._connection.execute(statement).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read database {self._path}: {exc}") from exc


def _sqlite_file(database_url: str) -> Path | None:
    """The file of a plain ``sqlite:///PATH`` URL that exists; None for anything else."""
    path = sqlite_path(database_url)
    return path if path is not None and path.is_file() else None


def sqlite_path(database_url: str) -> Path | None:
    """The file a plain ``sqlite:///PATH`` URL names, there or not; None for any other URL."""
    if not database_url.startswith(_SQLITE_FILE):
        return None
    database = database_url[len(_SQLITE_FILE):]
    # options, %-escapes, sqlite:///:memory: and file: URIs are SQLAlchemy's to read
    if not database or any(mark in database for mark in "?%") or database.startswith(
            (":memory:", "file:")):
        return None
    return Path(database)
