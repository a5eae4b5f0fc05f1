"""Tests for fetch.errors: the one-line reason of a failed fetch.

Refused connections, TLS failures, read timeouts and bad URLs, each a ``FetchError``
naming the source, with the original exception kept as ``__cause__``.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import pytest
import test_fetch_harness as harness
import urllib3
from pytest_httpserver import HTTPServer
from test_fetch_harness import (
    OPTIONS,
    RawServer,
    closed_port,
    options,
    source,
    timed_fetch,
)

from aggregator.errors import FetchError
from aggregator.ingest.fetch import fetch

# The harness fixtures this module uses; ``loopback_only`` is autouse: no connect
# leaves loopback.  (Assigned, not imported, so parameters may shadow them.)
loopback_only = harness.loopback_only
raw_server = harness.raw_server


def test_connection_refused_names_the_source() -> None:
    with pytest.raises(FetchError) as info:
        fetch(source(f"http://127.0.0.1:{closed_port()}/feed"), OPTIONS)

    assert info.value.reason == "connection refused"
    assert "test-src" in str(info.value)
    assert info.value.__cause__ is not None
    assert info.value.status is None


def test_tls_to_a_plain_http_server_is_a_tls_error(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed").respond_with_data(b"plain")

    with pytest.raises(FetchError, match=r"^\[test-src\] TLS error: ") as info:
        fetch(source(f"https://127.0.0.1:{httpserver.port}/feed"), OPTIONS)
    assert info.value.__cause__ is not None


def test_server_that_never_answers_read_timeout(raw_server: Callable[..., RawServer]) -> None:
    def handler(server: RawServer, conn: socket.socket, stop: threading.Event) -> None:
        server.read_request(conn)
        stop.wait()

    server = raw_server(handler)
    error, elapsed = timed_fetch(source(server.url()), options(read_timeout=0.5, deadline=10))

    assert "timed out" in error.reason
    assert error.source_id == "test-src"
    assert isinstance(error.__cause__, urllib3.exceptions.ReadTimeoutError)
    assert elapsed < 5.0
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/feed.xml",
        "file:///etc/passwd",
        "127.0.0.1/feed",
        "http://",
        "http://[::1",
        "http://127.0.0.1:99999/feed",
    ],
)
def test_bad_urls_are_fetch_errors(url: str) -> None:
    with pytest.raises(FetchError) as info:
        fetch(source(url), OPTIONS)
    assert info.value.source_id == "test-src"
