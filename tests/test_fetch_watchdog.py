"""Tests for fetch.watchdog: the wall-clock deadline holds whatever the server does.

Servers that drip the body or the headers, never answer, or never finish the TLS
handshake — on a new connection and on a reused keep-alive one.
The drips stop by themselves after about 7 s, so a broken deadline fails the time bounds
instead of hanging the run.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import test_fetch_harness as harness
from test_fetch_harness import (
    RawServer,
    drip,
    options,
    source,
    timed_fetch,
)

from aggregator.ingest.fetch import fetch, make_session

# The harness fixtures this module uses; ``loopback_only`` is autouse: no connect
# leaves loopback.  (Assigned, not imported, so parameters may shadow them.)
loopback_only = harness.loopback_only
raw_server = harness.raw_server


def test_drip_body_abandoned_at_deadline(raw_server: Callable[..., RawServer]) -> None:
    def handler(server: RawServer, conn: socket.socket, stop: threading.Event) -> None:
        server.read_request(conn)
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nContent-Length: 10000\r\n\r\n"
        )
        drip(conn, stop)

    server = raw_server(handler)
    error, elapsed = timed_fetch(source(server.url()), options(deadline=1.5, read_timeout=10))

    assert "deadline" in error.reason
    assert error.source_id == "test-src"
    assert 1.0 <= elapsed < 5.0


def test_drip_without_content_length_is_not_a_short_success(
    raw_server: Callable[..., RawServer],
) -> None:
    def handler(server: RawServer, conn: socket.socket, stop: threading.Event) -> None:
        server.read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n<rss>")
        drip(conn, stop)

    server = raw_server(handler)
    error, elapsed = timed_fetch(source(server.url()), options(deadline=1.0, read_timeout=10))

    assert "deadline" in error.reason
    assert elapsed < 5.0


def test_drip_headers_abandoned_at_deadline(raw_server: Callable[..., RawServer]) -> None:
    def handler(server: RawServer, conn: socket.socket, stop: threading.Event) -> None:
        server.read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        drip(conn, stop)

    server = raw_server(handler)
    error, elapsed = timed_fetch(source(server.url()), options(deadline=1.0, read_timeout=10))

    assert "deadline" in error.reason
    assert elapsed < 5.0


def test_drip_on_a_reused_keep_alive_connection(raw_server: Callable[..., RawServer]) -> None:
    def handler(server: RawServer, conn: socket.socket, stop: threading.Event) -> None:
        server.read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        server.read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        drip(conn, stop)

    server = raw_server(handler)
    opts = options(deadline=1.0, read_timeout=10)
    session = make_session(opts)
    try:
        assert fetch(source(server.url()), opts, session=session).content == b"ok"
        error, elapsed = timed_fetch(source(server.url()), opts, session=session)
    finally:
        session.close()

    assert "deadline" in error.reason
    assert elapsed < 5.0
    assert server.connections == 1  # the second fetch really reused the pooled connection
    assert len(server.requests) == 2


def test_server_that_never_answers_hits_deadline(raw_server: Callable[..., RawServer]) -> None:
    def handler(server: RawServer, conn: socket.socket, stop: threading.Event) -> None:
        server.read_request(conn)
        stop.wait()

    server = raw_server(handler)
    error, elapsed = timed_fetch(source(server.url()), options(read_timeout=30, deadline=1.0))

    assert "exceeded the 1s deadline" in error.reason
    assert elapsed < 5.0


def test_tls_handshake_that_never_completes_hits_deadline(
    raw_server: Callable[..., RawServer],
) -> None:
    def handler(server: RawServer, conn: socket.socket, stop: threading.Event) -> None:
        stop.wait()  # accept, never speak TLS

    server = raw_server(handler)
    error, elapsed = timed_fetch(
        source(f"https://127.0.0.1:{server.port}/feed"),
        options(deadline=1.0, connect_timeout=30, read_timeout=30),
    )

    assert "deadline" in error.reason
    assert elapsed < 5.0
    assert server.connections == 1
