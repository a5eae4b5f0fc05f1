"""Locks across processes on one database: who builds a category, who may poll.

Why: several processes can share a database — PostgreSQL workers on many hosts, or an
SQLite file on one — and some work must be done by one of them at a time (a category's
build, maintenance) or, on SQLite, by one polling process at all.  This module owns those
locks: PostgreSQL session advisory locks held on one connection for a block (released by
PostgreSQL if the process dies), and an OS file lock beside an SQLite database (released
by the kernel).

It must NOT wait for a busy lock (a busy name is left out, a held SQLite file answers
False), must not touch any table, and must not import the
``facade`` (the ``Store`` facade imports this module, never the other way).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from aggregator.errors import StoreError
from aggregator.store.engine import describe


@contextmanager
def exclusive(engine: Engine, names: Iterable[str]) -> Iterator[set[str]]:
    """Which of ``names`` this process holds for the block; see ``Store.exclusive``."""
    wanted = sorted(set(names))
    if engine.dialect.name != "postgresql" or not wanted:
        yield set(wanted)
        return
    try:
        connection = engine.connect()
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot lock {wanted!r}: {describe(exc)}") from exc
    held: set[str] = set()
    try:
        for name in wanted:
            if connection.execute(text("SELECT pg_try_advisory_lock(hashtext(:n))"),
                                  {"n": name}).scalar():
                held.add(name)
        connection.commit()
        try:
            yield set(held)
        finally:
            for name in held:
                connection.execute(text("SELECT pg_advisory_unlock(hashtext(:n))"),
                                   {"n": name})
            connection.commit()
    finally:
        connection.close()


@contextmanager
def sole_poller(engine: Engine) -> Iterator[bool]:
    """Whether this process may poll, for the block; see ``Store.sole_poller``."""
    database = make_url(engine.url).database or ""
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield True
        return
    import fcntl

    with open(f"{database}.pollers", "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
