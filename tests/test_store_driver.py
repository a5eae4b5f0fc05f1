"""``store.driver``: a statement run through the driver's executemany stores exactly what
SQLAlchemy's own execution of it stores — the same bound values (aware datetimes as
naive UTC, booleans, NULLs) on SQLite and on the real PostgreSQL (skipped where no server
answers on 127.0.0.1:5432)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, bindparam, insert, select, text, update
from sqlalchemy.orm import Session

from aggregator.store import make_engine
from aggregator.store.driver import execute_many
from aggregator.store.models import Base, SourceRow

SOURCES = SourceRow.__table__
INSERT = insert(SOURCES)
COLUMNS = ("id", "url", "etag", "last_poll_at", "next_poll_at", "error_count",
           "redirect_count", "lease_token")
EAST = timezone(timedelta(hours=8))


def rows(first: str) -> list[dict[str, Any]]:
    return [
        {"id": f"{first}-aware", "url": "http://a.test/", "etag": '"1"',
         "last_poll_at": datetime(2026, 12, 1, 8, 0, 0, 123456, tzinfo=EAST),
         "next_poll_at": datetime(2026, 12, 1, 0, 0, tzinfo=UTC), "error_count": 3,
         "redirect_count": 0, "lease_token": 7},
        {"id": f"{first}-nulls", "url": "", "etag": None, "last_poll_at": None,
         "next_poll_at": None, "error_count": 0, "redirect_count": 1, "lease_token": 0},
    ]


def raw(engine: Engine, prefix: str) -> list[tuple[Any, ...]]:
    """The stored values as the database hands them back, without SQLAlchemy's types."""
    with engine.connect() as connection:
        return [tuple(row[1:]) for row in connection.execute(text(
            "SELECT id, url, etag, CAST(last_poll_at AS TEXT), "
            "CAST(next_poll_at AS TEXT), error_count, redirect_count, lease_token "
            "FROM sources WHERE id LIKE :p ORDER BY id"), {"p": f"{prefix}-%"})]


def stores_what_sqlalchemy_stores(engine: Engine) -> None:
    Base.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        session.execute(INSERT, rows("orm"))
        execute_many(session, INSERT, rows("drv"), COLUMNS)
    driven = raw(engine, "drv")
    assert driven == raw(engine, "orm")
    assert len(driven) == 2 and driven[0][2] is not None and driven[1][2] is None
    with Session(engine) as session:  # and read back as the store reads it: aware UTC
        polled = session.scalar(select(SOURCES.c.last_poll_at).where(SOURCES.c.id == "drv-aware"))
    assert polled == datetime(2026, 12, 1, 0, 0, 0, 123456, tzinfo=UTC)


def test_sqlite_stores_the_same_values(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'driver.db'}")
    try:
        stores_what_sqlalchemy_stores(engine)
    finally:
        engine.dispose()


def test_postgresql_stores_the_same_values(pg_database: str) -> None:
    engine = make_engine(pg_database)
    try:
        stores_what_sqlalchemy_stores(engine)
    finally:
        engine.dispose()


def test_an_update_by_key_runs_once_per_row(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'driver.db'}")
    try:
        Base.metadata.create_all(engine)
        bump = (update(SOURCES).where(SOURCES.c.id == bindparam("b_id"))
                .values(error_count=bindparam("b_count")))
        with Session(engine) as session, session.begin():
            execute_many(session, INSERT, rows("drv"), COLUMNS)
            execute_many(session, bump, [{"b_id": "drv-aware", "b_count": 5},
                                         {"b_id": "drv-nulls", "b_count": 6}])
            execute_many(session, bump, [])  # nothing to run: no statement at all
        assert [row[4] for row in raw(engine, "drv")] == [5, 6]
    finally:
        engine.dispose()


@pytest.mark.parametrize("missing", ["url", "lease_token"])
def test_a_row_without_a_column_is_refused_before_anything_is_stored(
        tmp_path: Path, missing: str) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'driver.db'}")
    try:
        Base.metadata.create_all(engine)
        broken = rows("drv")
        del broken[1][missing]
        with pytest.raises(KeyError), Session(engine) as session, session.begin():
            execute_many(session, INSERT, broken, COLUMNS)
        assert raw(engine, "drv") == []
    finally:
        engine.dispose()
