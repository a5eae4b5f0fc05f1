"""Fixtures the test modules share; the builders they share live in tests/builders.py.

One way for each: a builder (a record or a document made from defaults and keyword
overrides: ``make_article``, ``make_source``, ``rss_items``, ``rss_document``) is a plain
function in ``builders``, imported by name (``from builders import make_article``; tests/
is on ``sys.path``, as for served_site).  What needs a teardown, such as ``held_portal``,
is a fixture here.  Tests use public names only.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from builders import LoopbackPortal
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from aggregator.ingest.fetch import HttpFetcher
from aggregator.store import Store


@pytest.fixture()
def held_portal() -> Iterator[Callable[[str], LoopbackPortal]]:
    """Start loopback portals (on 127.0.0.1, 127.0.0.2, …) whose answers wait for the
    test's ``release``; all are released and closed at the end."""
    portals: list[LoopbackPortal] = []

    def start(address: str) -> LoopbackPortal:
        portals.append(LoopbackPortal(address, held=True))
        return portals[-1]

    yield start
    for portal in portals:
        portal.close()


@pytest.fixture()
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts (``aggregator run`` …): killed after it if still running."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[Store]:
    """A store on a fresh SQLite file (test_store.py's own fixture adds PostgreSQL)."""
    with Store.open(f"sqlite:///{tmp_path / 'db.sqlite'}") as opened:
        yield opened


@pytest.fixture()
def http() -> Iterator[HttpFetcher]:
    """The real fetch, with its sessions closed at the end."""
    fetcher = HttpFetcher()
    yield fetcher
    fetcher.close()


PG_URL = os.environ.get("AGGREGATOR_TEST_PG_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture()
def pg_admin() -> Iterator[Engine]:
    """An autocommit engine on the test PostgreSQL; the test skips where none answers."""
    engine = create_engine(PG_URL, poolclass=NullPool, isolation_level="AUTOCOMMIT",
                           connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # any failure just means "no PostgreSQL here"
        engine.dispose()
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {type(exc).__name__}")
    yield engine
    engine.dispose()


@pytest.fixture()
def pg_database(pg_admin: Engine) -> Iterator[str]:
    """The URL of a fresh PostgreSQL database of its own (dropped at the end), so its
    statistics and rows count only this test's work."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with pg_admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
