"""Tests for fetch.protocol: Retry-After, Content-Length and status phrases.

The parsers on strings, and the standard phrase through ``fetch`` for a status line that
has none.  Retry-After through a 429/503 response is tested in test_fetch.py.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import pytest
import test_fetch_harness as harness
from test_fetch_harness import OPTIONS, RawServer, source, timed_fetch

from aggregator.ingest.fetch import protocol as protocol_mod

# The harness fixtures this module uses; ``loopback_only`` is autouse: no connect
# leaves loopback.  (Assigned, not imported, so parameters may shadow them.)
loopback_only = harness.loopback_only
raw_server = harness.raw_server


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("  45 ", 45.0),
        ("-3", None),
        ("nan", None),
        ("", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a past date means "now"
    ],
)
def test_parse_retry_after(value: str, expected: float | None) -> None:
    assert protocol_mod.parse_retry_after(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1234", 1234),
        (" 1234 , 1234", 1234),  # a duplicated header, joined by urllib3
        ("10, 20", 20),  # conflicting: the larger one, so the size limit is never undercut
        ("twelve", None),
        ("", None),
        (None, None),
    ],
)
def test_content_length(value: str | None, expected: int | None) -> None:
    assert protocol_mod.content_length(value) == expected


@pytest.mark.parametrize(
    ("status_line", "reason"),
    [
        (b"HTTP/1.1 404", "HTTP 404 Not Found"),  # no phrase: the standard one
        (b"HTTP/1.1 404 Gone Fishing", "HTTP 404 Gone Fishing"),  # the server's own
        (b"HTTP/1.1 599", "HTTP 599"),  # no phrase and no standard one
    ],
)
def test_status_phrase_when_the_server_sends_none(
    raw_server: Callable[..., RawServer], status_line: bytes, reason: str
) -> None:
    def handler(server: RawServer, conn: socket.socket, stop: threading.Event) -> None:
        server.read_request(conn)
        conn.sendall(status_line + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    server = raw_server(handler)
    error, _ = timed_fetch(source(server.url()), OPTIONS)

    assert error.reason == reason
    assert error.status == int(status_line.split()[1])
