"""Fixtures the test modules share; the builders they share live in tests/builders.py.

One way for each: a builder (a record or a document made from defaults and keyword
overrides: ``make_article``, ``make_source``, ``rss_items``, ``rss_document``) is a plain
function in ``builders``, imported by name (``from builders import make_article``; tests/
is on ``sys.path``, as for served_site).  What needs a teardown, such as ``held_portal``,
is a fixture here.  Tests use public names only.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from builders import rss_document
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from aggregator.ingest.fetch import HttpFetcher
from aggregator.store import Store


class HeldPortal(ThreadingHTTPServer):
    """A loopback portal whose answers wait until the test releases them."""

    daemon_threads = True

    def __init__(self, address: str) -> None:
        self.release = threading.Event()
        self.arrived = threading.Semaphore(0)
        self.lock = threading.Lock()
        self.active = self.peak = 0
        portal = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with portal.lock:
                    portal.active += 1
                    portal.peak = max(portal.peak, portal.active)
                portal.arrived.release()
                portal.release.wait(30)
                with portal.lock:
                    portal.active -= 1
                body = rss_document(self.path.strip("/"))
                self.send_response(200)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        super().__init__((address, 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://{self.server_address[0]}:{self.server_address[1]}/{path}"


@pytest.fixture()
def held_portal() -> Iterator[Callable[[str], HeldPortal]]:
    """Start loopback portals (on 127.0.0.1, 127.0.0.2, …) whose answers wait for the
    test's ``release``; all are released and closed at the end."""
    portals: list[HeldPortal] = []

    def start(address: str) -> HeldPortal:
        portals.append(HeldPortal(address))
        return portals[-1]

    yield start
    for portal in portals:
        portal.release.set()
        portal.shutdown()
        portal.server_close()


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
