"""Engines, SQLite connection rules and schema migrations.

Why: a store opens a database in one of three states — new (no tables), behind the
latest revision, or at it — and each needs different work.  A new database gets the
models' schema stamped at ``HEAD_REVISION`` (no Alembic import, no migration replay);
an older one is upgraded with Alembic, in a short-lived child process when the caller
is long-running so that it never keeps Alembic in memory.  SQLite connections run in
WAL mode with a busy timeout, and write transactions start with ``BEGIN IMMEDIATE``.

This module must NOT know about articles or sources beyond the models' metadata, and
must not use SQL that only one backend understands outside the SQLite-only hooks.
"""

from __future__ import annotations

import multiprocessing
import select
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Engine,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    create_engine,
    event,
    insert,
    inspect,
    text,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DisconnectionError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from aggregator.store.models import Base
from aggregator.store.revision import HEAD_REVISION

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
MIGRATION_TIMEOUT = 600.0  # seconds a migration in a child process may take

BEGIN_OPTION = "aggregator_sqlite_begin"  # execution option read by the SQLite "begin" hook
WRITE = {BEGIN_OPTION: "IMMEDIATE"}


def prepare(url: URL, *, migrate_in_child: bool, connections: int | None = None) -> Engine:
    """An engine for ``url`` whose schema is at ``HEAD_REVISION``."""
    engine = make_engine(url, connections=connections)
    try:
        revision = _current_revision(engine)
        if revision is None and _create_fresh(engine):
            revision = HEAD_REVISION
        if revision != HEAD_REVISION:
            if migrate_in_child and not in_memory(url):
                _upgrade_in_child(url.render_as_string(hide_password=False))
            else:
                _upgrade(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def make_engine(url: str | URL, *, connections: int | None = None) -> Engine:
    """An engine with the store's connection settings (also used by migrations/env.py).

    ``connections``: how many threads use it at once.  The pool keeps that many open, so
    a busy moment never opens and closes overflow connections (on PostgreSQL each new
    session is a server transaction of its own, and a round trip or three).
    """
    url = make_url(url)
    if url.get_backend_name() != "sqlite":
        # No pool_pre_ping: its SELECT 1 runs in autocommit, one more server transaction
        # (and round trip) per checkout — a third of a poll's.  A connection the server
        # closed (restart, idle timeout, pg_terminate_backend) is seen for free instead:
        # its socket turns readable (the server's goodbye, then EOF) while it sits idle.
        sizing = {} if connections is None else {"pool_size": max(1, connections)}
        engine = create_engine(url, **sizing)
        event.listen(engine.pool, "checkout", _drop_if_closed)
        return engine
    database = url.database or ""
    if in_memory(url):
        # One shared connection: the schema must outlive the opening thread's
        # connection.  Fine for tests and demos, not for concurrent writers.
        engine = create_engine(url, poolclass=StaticPool,
                               connect_args={"check_same_thread": False})
    else:
        if not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _drop_if_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Make the pool replace a pooled connection that the server has closed.

    An idle client connection has nothing to read; if its socket is readable, the server
    said goodbye (or sent something unasked for): either way a fresh connection is safe.
    """
    if getattr(dbapi_connection, "closed", False) or getattr(dbapi_connection, "broken", False):
        raise DisconnectionError("connection closed")
    try:
        readable, _, _ = select.select([dbapi_connection.fileno()], [], [], 0)
    except (OSError, ValueError, AttributeError):
        raise DisconnectionError("connection unusable") from None
    if readable:
        raise DisconnectionError("the server closed the connection")


def in_memory(url: URL) -> bool:
    """An SQLite database that lives only as long as its connection."""
    database = url.database or ""
    return url.get_backend_name() == "sqlite" and (
        database in ("", ":memory:") or url.query.get("mode") == "memory")


def _sqlite_connect(dbapi_connection: Any, connection_record: Any) -> None:
    # Take BEGIN away from the sqlite3 driver; _sqlite_begin emits it instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout = 30000")  # first: journal_mode may wait for a lock
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _sqlite_begin(connection: Any) -> None:
    mode = connection.get_execution_options().get(BEGIN_OPTION)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if mode == "IMMEDIATE" else "BEGIN")


def _current_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError:  # no version table yet: a new database
        return None


# Alembic's own bookkeeping table, as ``alembic stamp`` would create it.
_ALEMBIC_VERSION = Table(
    "alembic_version", MetaData(),
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)


def _create_fresh(engine: Engine) -> bool:
    """Create the latest schema in a database without tables and stamp it with
    ``HEAD_REVISION`` (Alembic's "create_all, then stamp head"); False if it has tables.

    The tables come from the models, which the tests hold equal to what the
    migrations build.  A first run then neither imports Alembic nor replays every
    migration: a fifth of a second of a first poll.
    """
    with engine.connect() as connection:
        connection.execution_options(**WRITE)
        with connection.begin():  # on SQLite: a write lock against a concurrent creator
            lock_schema(connection)
            if inspect(connection).get_table_names():
                return False
            Base.metadata.create_all(connection)
            _ALEMBIC_VERSION.create(connection)
            connection.execute(insert(_ALEMBIC_VERSION).values(version_num=HEAD_REVISION))
    return True


# Held while a schema is created or migrated, or the config's sources are added: several
# workers starting together on one PostgreSQL database must not all do it at once
# (SQLite's BEGIN IMMEDIATE already serializes).
_SCHEMA_LOCK = 0x61676772  # "aggr"


def lock_schema(connection: Any) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK})


_upgrade_lock = threading.Lock()  # alembic's context is module-global: one upgrade at a time


def _upgrade(engine: Engine) -> None:
    """``alembic upgrade head`` on one connection, in one (write) transaction.

    Only for a database behind ``HEAD_REVISION`` (see ``Store.open``): importing and
    configuring Alembic costs a CLI invocation a few hundred milliseconds.
    """
    from alembic import command
    from alembic.config import Config
    from alembic.util.exc import CommandError

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    with _upgrade_lock, engine.connect() as connection:
        connection.execution_options(**WRITE)
        with connection.begin():
            lock_schema(connection)
            config.attributes["connection"] = connection
            try:
                command.upgrade(config, "head")
            except CommandError as exc:
                raise RuntimeError(f"migration failed: {exc}") from exc


def _upgrade_in_child(url: str) -> None:
    """``_upgrade`` in a spawned process (a clean interpreter: no threads or connections
    inherited); its error, if any, is raised here."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child_upgrade, args=(url, sender),
                            name="aggregator-migrate", daemon=True)
    child.start()
    sender.close()
    try:
        error = receiver.recv() if receiver.poll(MIGRATION_TIMEOUT) else "timed out"
    except EOFError:
        error = "the migration process died"
    finally:
        receiver.close()
        child.join(5)
        if child.is_alive():
            child.kill()
            child.join()
    if error:
        raise RuntimeError(f"migration failed: {error}")


def _child_upgrade(url: str, sender: Connection) -> None:
    error = ""
    engine = make_engine(url)
    try:
        _upgrade(engine)
    except Exception as exc:  # reported to the parent, which raises it as a StoreError
        error = describe(exc)
    finally:
        engine.dispose()
    sender.send(error)
    sender.close()




def describe(exc: BaseException) -> str:
    """A one-line cause: the driver's message, without SQL text or bound parameters."""
    orig = getattr(exc, "orig", None)  # DBAPIError, or StatementError around e.g. a ValueError
    cause = orig if isinstance(orig, BaseException) else exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else ''}"
