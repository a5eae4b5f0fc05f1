"""Tests for aggregator.ingest.fetch against real loopback servers.

Most tests use pytest-httpserver; the slow/hostile servers (drip, hang, keep-alive then
drip) are raw threaded sockets on 127.0.0.1 because they need byte-level control.
No test talks to a non-loopback address: the SSRF tests that name other addresses either
are refused before connecting (a tripwire on ``socket.connect`` makes sure) or only classify
literal addresses.  Host names are ``*.test`` names answered by ``FakeDNS``, a seam on
``socket.getaddrinfo`` that never lets a lookup leave the machine.
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import gzip
import ipaddress
import re
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from aggregator.errors import FetchError
from aggregator.ingest.fetch import body as body_mod
from aggregator.ingest.fetch import fetch, make_session
from aggregator.ingest.fetch import guard as guard_mod
from aggregator.ingest.fetch import protocol as protocol_mod
from aggregator.records import FetchOptions, Source, Validators

OPTIONS = FetchOptions(
    allow_private_networks=True, connect_timeout=2.0, read_timeout=5.0, deadline=10.0
)
GUARDED = FetchOptions(
    allow_private_networks=False, connect_timeout=2.0, read_timeout=5.0, deadline=10.0
)


def source(url: str, **kwargs: object) -> Source:
    return Source(id="test-src", name="Test", url=url, categories=("c",), **kwargs)  # type: ignore[arg-type]


def options(**changes: object) -> FetchOptions:
    values = {
        "allow_private_networks": True,
        "connect_timeout": 2.0,
        "read_timeout": 5.0,
        "deadline": 10.0,
    }
    values.update(changes)
    return FetchOptions(**values)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- raw servers

Handler = Callable[[socket.socket, threading.Event], None]


class RawServer:
    """A threaded TCP server on 127.0.0.1 running ``handler(conn, stop)`` per connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.stop = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.requests: list[bytes] = []
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def url(self, path: str = "/feed") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            conn.settimeout(10)
            self.connections += 1
            self._conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):  # the client went away
            self.handler(conn, self.stop)

    def read_request(self, conn: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        self.requests.append(data)
        return data

    def close(self) -> None:
        self.stop.set()
        for sock in (self.listener, *self._conns):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._acceptor.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)
        for sock in (self.listener, *self._conns):
            sock.close()


@pytest.fixture
def raw_server() -> Iterator[
    Callable[[Callable[[RawServer, socket.socket, threading.Event], None]], RawServer]
]:
    servers: list[RawServer] = []

    def start(handler: Callable[[RawServer, socket.socket, threading.Event], None]) -> RawServer:
        holder: list[RawServer] = []
        server = RawServer(lambda conn, stop: handler(holder[0], conn, stop))
        holder.append(server)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def drip(
    conn: socket.socket, stop: threading.Event, data: bytes = b"x" * 35, interval: float = 0.2
) -> None:
    """Send one byte per ``interval`` until done, stopped or disconnected (server pacing).

    The drip lasts about 7 s, then the server hangs up: a fetch without a working
    deadline fails the ``elapsed < 5`` bounds instead of hanging the test run.
    """
    for byte in data:
        if stop.is_set():
            return
        conn.sendall(bytes([byte]))
        stop.wait(interval)


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def timed_fetch(src: Source, opts: FetchOptions, **kwargs: object) -> tuple[FetchError, float]:
    started = time.monotonic()
    with pytest.raises(FetchError) as info:
        fetch(src, opts, **kwargs)  # type: ignore[arg-type]
    return info.value, time.monotonic() - started


# --------------------------------------------------------------------------- success paths


def test_plain_200_captures_body_headers_and_validators(httpserver: HTTPServer) -> None:
    body = b"<rss><channel><title>t</title></channel></rss>"
    httpserver.expect_request("/feed").respond_with_data(
        body,
        content_type="application/rss+xml",
        headers={
            "ETag": '"v1"',
            "Last-Modified": "Tue, 01 Oct 2024 10:00:00 GMT",
            "X-Custom": "yes",
        },
    )

    result = fetch(source(httpserver.url_for("/feed")), OPTIONS)

    assert result.status == 200
    assert not result.not_modified
    assert result.content == body
    assert result.source_id == "test-src"
    assert result.url == httpserver.url_for("/feed")
    assert result.etag == '"v1"'
    assert result.last_modified == "Tue, 01 Oct 2024 10:00:00 GMT"
    assert result.headers["x-custom"] == "yes"
    assert result.headers["content-type"].startswith("application/rss+xml")
    assert 0 <= result.elapsed < 10


def test_request_headers_user_agent_accept_and_no_conditionals(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed").respond_with_data(b"ok")
    opts = options(user_agent="TestAgent/9.9 (+https://example.invalid/bot)")

    fetch(source(httpserver.url_for("/feed")), opts)

    ((request, _),) = httpserver.log
    assert request.headers["User-Agent"] == "TestAgent/9.9 (+https://example.invalid/bot)"
    accept = request.headers["Accept"]
    assert accept.startswith("application/rss+xml")
    assert "application/atom+xml" in accept and "*/*;q=0.1" in accept
    assert "gzip" in request.headers["Accept-Encoding"]
    assert "If-None-Match" not in request.headers
    assert "If-Modified-Since" not in request.headers


def test_empty_200_body_is_success(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed").respond_with_data(b"")

    result = fetch(source(httpserver.url_for("/feed")), OPTIONS)

    assert result.status == 200
    assert result.content == b""


def test_conditional_get_sends_validators_and_304_keeps_old_ones(httpserver: HTTPServer) -> None:
    old = Validators(etag='"abc"', last_modified="Tue, 01 Oct 2024 10:00:00 GMT")
    httpserver.expect_request(
        "/feed",
        headers={"If-None-Match": '"abc"', "If-Modified-Since": "Tue, 01 Oct 2024 10:00:00 GMT"},
    ).respond_with_data(b"", status=304)

    result = fetch(source(httpserver.url_for("/feed")), OPTIONS, old)

    assert result.status == 304
    assert result.not_modified
    assert result.content == b""
    assert result.validators == old
    assert len(httpserver.log) == 1


def test_304_that_repeats_a_new_etag_replaces_it(httpserver: HTTPServer) -> None:
    old = Validators(etag='"abc"', last_modified="Tue, 01 Oct 2024 10:00:00 GMT")
    httpserver.expect_request("/feed").respond_with_data(b"", status=304, headers={"ETag": '"def"'})

    result = fetch(source(httpserver.url_for("/feed")), OPTIONS, old)

    assert result.not_modified
    assert result.etag == '"def"'
    assert result.last_modified == old.last_modified


def test_gzip_response_is_decompressed(httpserver: HTTPServer) -> None:
    body = b"<feed>" + b"entry " * 5000 + b"</feed>"
    httpserver.expect_request("/feed").respond_with_data(
        gzip.compress(body), headers={"Content-Encoding": "gzip"}
    )

    result = fetch(source(httpserver.url_for("/feed")), OPTIONS)

    assert result.content == body
    assert result.headers["content-encoding"] == "gzip"


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(zlib.compress, id="zlib-wrapped"),
        pytest.param(
            lambda data: (lambda c: c.compress(data) + c.flush())(
                zlib.compressobj(wbits=-zlib.MAX_WBITS)
            ),
            id="raw-deflate",
        ),
    ],
)
def test_deflate_response_is_decompressed(
    httpserver: HTTPServer, encode: Callable[[bytes], bytes]
) -> None:
    body = b"<rss>" + b"deflated " * 3000 + b"</rss>"
    httpserver.expect_request("/feed").respond_with_data(
        encode(body), headers={"Content-Encoding": "deflate"}
    )

    assert fetch(source(httpserver.url_for("/feed")), OPTIONS).content == body


def test_multi_member_gzip_and_trailing_padding(httpserver: HTTPServer) -> None:
    payload = gzip.compress(b"first-") + gzip.compress(b"second") + b"\0" * 16
    httpserver.expect_request("/feed").respond_with_data(
        payload, headers={"Content-Encoding": "gzip"}
    )

    assert fetch(source(httpserver.url_for("/feed")), OPTIONS).content == b"first-second"


def test_truncated_gzip_is_an_error(httpserver: HTTPServer) -> None:
    payload = gzip.compress(b"<rss>" + bytes(range(256)) * 100 + b"</rss>")
    httpserver.expect_request("/feed").respond_with_data(
        payload[: len(payload) // 2], headers={"Content-Encoding": "gzip"}
    )

    with pytest.raises(FetchError, match="truncated") as info:
        fetch(source(httpserver.url_for("/feed")), OPTIONS)
    assert info.value.source_id == "test-src"


def test_unsupported_content_encoding_is_an_error(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed").respond_with_data(
        b"\x0b\x02\x80hello\x03", headers={"Content-Encoding": "br"}
    )

    with pytest.raises(FetchError, match="unsupported Content-Encoding"):
        fetch(source(httpserver.url_for("/feed")), OPTIONS)


def test_session_ignores_proxy_environment(
    httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead_proxy = f"http://127.0.0.1:{closed_port()}"
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, dead_proxy)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    httpserver.expect_request("/feed").respond_with_data(b"direct")

    session = make_session(OPTIONS)
    try:
        assert session.trust_env is False
        result = fetch(source(httpserver.url_for("/feed")), OPTIONS, session=session)
    finally:
        session.close()

    assert result.content == b"direct"
    assert len(httpserver.log) == 1


def test_reused_session_fetches_twice(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/a").respond_with_data(b"A")
    httpserver.expect_request("/b").respond_with_data(b"B")
    session = make_session(OPTIONS)
    try:
        first = fetch(source(httpserver.url_for("/a")), OPTIONS, session=session)
        second = fetch(source(httpserver.url_for("/b")), OPTIONS, session=session)
    finally:
        session.close()
    assert (first.content, second.content) == (b"A", b"B")


# --------------------------------------------------------------------------- redirects


def test_redirects_followed_relative_locations_resolved(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/a/start").respond_with_data(
        b"", status=301, headers={"Location": "next?x=1"}
    )
    httpserver.expect_request("/a/next").respond_with_data(
        b"", status=302, headers={"Location": "/final"}
    )
    httpserver.expect_request("/final").respond_with_data(b"<rss/>", headers={"ETag": '"f"'})

    result = fetch(source(httpserver.url_for("/a/start")), OPTIONS)

    assert result.content == b"<rss/>"
    assert result.url == httpserver.url_for("/final")
    assert result.etag == '"f"'
    paths = [request.full_path for request, _ in httpserver.log]
    assert paths == ["/a/start?", "/a/next?x=1", "/final?"]
    # only the unbroken permanent part of the chain counts as "the feed moved"
    assert result.permanent_redirect == httpserver.url_for("/a/next") + "?x=1"


def test_permanent_redirect_chain_is_reported_and_temporary_is_not(
    httpserver: HTTPServer,
) -> None:
    httpserver.expect_request("/p1").respond_with_data(b"", status=301, headers={"Location": "/p2"})
    httpserver.expect_request("/p2").respond_with_data(b"", status=308, headers={"Location": "/p3"})
    httpserver.expect_request("/p3").respond_with_data(b"<rss/>")
    httpserver.expect_request("/t1").respond_with_data(b"", status=307, headers={"Location": "/p3"})
    assert fetch(source(httpserver.url_for("/p1")), OPTIONS).permanent_redirect == (
        httpserver.url_for("/p3")
    )
    assert fetch(source(httpserver.url_for("/t1")), OPTIONS).permanent_redirect is None
    assert fetch(source(httpserver.url_for("/p3")), OPTIONS).permanent_redirect is None


def test_conditional_headers_reach_the_redirect_target(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/old").respond_with_data(
        b"", status=308, headers={"Location": "/new"}
    )
    httpserver.expect_request("/new", headers={"If-None-Match": '"n"'}).respond_with_data(
        b"", status=304
    )

    result = fetch(source(httpserver.url_for("/old")), OPTIONS, Validators(etag='"n"'))

    assert result.not_modified
    assert result.url == httpserver.url_for("/new")
    assert result.etag == '"n"'


def test_redirect_loop_is_an_error(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/a").respond_with_data(b"", status=302, headers={"Location": "/b"})
    httpserver.expect_request("/b").respond_with_data(b"", status=302, headers={"Location": "/a"})

    with pytest.raises(FetchError, match="redirect loop") as info:
        fetch(source(httpserver.url_for("/a")), OPTIONS)
    assert info.value.source_id == "test-src"
    assert len(httpserver.log) == 2


def _redirect_chain(httpserver: HTTPServer, length: int) -> None:
    for index in range(length):
        httpserver.expect_request(f"/r{index}").respond_with_data(
            b"", status=302, headers={"Location": f"/r{index + 1}"}
        )
    httpserver.expect_request(f"/r{length}").respond_with_data(b"end")


def test_too_many_redirects_is_an_error(httpserver: HTTPServer) -> None:
    _redirect_chain(httpserver, 10)

    with pytest.raises(FetchError, match="too many redirects"):
        fetch(source(httpserver.url_for("/r0")), options(max_redirects=3))
    assert len(httpserver.log) == 4  # three hops followed, the fourth refused


def test_exactly_max_redirects_is_allowed(httpserver: HTTPServer) -> None:
    _redirect_chain(httpserver, 3)

    result = fetch(source(httpserver.url_for("/r0")), options(max_redirects=3))

    assert result.content == b"end"
    assert result.url == httpserver.url_for("/r3")


@pytest.mark.parametrize(
    "location",
    [
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/_x",
        "data:text/xml,<rss/>",
        "ftp://127.0.0.1/feed.xml",
    ],
)
def test_redirect_to_non_http_scheme_is_refused(httpserver: HTTPServer, location: str) -> None:
    httpserver.expect_request("/feed").respond_with_data(
        b"", status=302, headers={"Location": location}
    )

    with pytest.raises(FetchError, match="only http and https") as info:
        fetch(source(httpserver.url_for("/feed")), OPTIONS)
    assert info.value.source_id == "test-src"
    assert len(httpserver.log) == 1


# --------------------------------------------------------------------------- HTTP errors


@pytest.mark.parametrize("status", [404, 500, 410, 403])
def test_error_status_is_fetch_error_with_status(httpserver: HTTPServer, status: int) -> None:
    httpserver.expect_request("/feed").respond_with_data(b"nope", status=status)

    with pytest.raises(FetchError) as info:
        fetch(source(httpserver.url_for("/feed")), OPTIONS)

    assert info.value.status == status
    assert info.value.reason.startswith(f"HTTP {status} ")
    assert "test-src" in str(info.value)
    assert info.value.retry_after is None


def test_429_retry_after_seconds(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed").respond_with_data(
        b"slow down", status=429, headers={"Retry-After": "120"}
    )

    with pytest.raises(FetchError) as info:
        fetch(source(httpserver.url_for("/feed")), OPTIONS)

    assert info.value.status == 429
    assert info.value.retry_after == 120.0


def test_503_retry_after_http_date(httpserver: HTTPServer) -> None:
    when = datetime.now(UTC) + timedelta(seconds=300)
    httpserver.expect_request("/feed").respond_with_data(
        b"", status=503, headers={"Retry-After": email.utils.format_datetime(when, True)}
    )

    with pytest.raises(FetchError) as info:
        fetch(source(httpserver.url_for("/feed")), OPTIONS)

    assert info.value.status == 503
    assert info.value.retry_after is not None
    assert 290 <= info.value.retry_after <= 301


def test_429_with_unusable_retry_after(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed").respond_with_data(
        b"", status=429, headers={"Retry-After": "soon-ish"}
    )

    with pytest.raises(FetchError) as info:
        fetch(source(httpserver.url_for("/feed")), OPTIONS)
    assert info.value.status == 429
    assert info.value.retry_after is None


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


# --------------------------------------------------------------------------- size limits


def test_content_length_over_limit_rejected_early(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed").respond_with_data(b"x" * 5000)

    with pytest.raises(FetchError, match="Content-Length 5000 exceeds the 1000-byte limit"):
        fetch(source(httpserver.url_for("/feed"), max_bytes=1000), OPTIONS)


def _streamed(body: bytes, pieces: int = 10) -> Callable[[Request], Response]:
    size = max(1, len(body) // pieces)

    def handler(_: Request) -> Response:  # a generator body: no Content-Length header
        return Response(
            (body[i : i + size] for i in range(0, len(body), size)),
            content_type="application/rss+xml",
        )

    return handler


def test_streamed_body_over_limit_is_abandoned(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed").respond_with_handler(_streamed(b"y" * 300_000))

    with pytest.raises(FetchError, match="exceeds the 100000-byte limit"):
        fetch(source(httpserver.url_for("/feed")), options(max_bytes=100_000))
    ((_, response),) = httpserver.log
    assert "Content-Length" not in response.headers


def test_body_exactly_at_limit_is_accepted(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed").respond_with_handler(_streamed(b"z" * 100_000))

    result = fetch(source(httpserver.url_for("/feed")), options(max_bytes=100_000))

    assert result.content == b"z" * 100_000


def test_source_max_bytes_overrides_options(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed").respond_with_data(b"w" * 5000)

    result = fetch(source(httpserver.url_for("/feed"), max_bytes=10_000), options(max_bytes=10))

    assert len(result.content) == 5000


def test_gzip_bomb_counts_decompressed_bytes(httpserver: HTTPServer) -> None:
    compressed = gzip.compress(b"\0" * 20_000_000)
    assert len(compressed) < 100_000  # the declared Content-Length is far under the limit
    httpserver.expect_request("/feed").respond_with_data(
        compressed, headers={"Content-Encoding": "gzip"}
    )

    with pytest.raises(FetchError, match="exceeds the 1000000-byte limit"):
        fetch(source(httpserver.url_for("/feed"), max_bytes=1_000_000), OPTIONS)


def test_decoder_never_yields_more_than_one_chunk() -> None:
    bomb = gzip.compress(b"\0" * 5_000_000)
    decoder = body_mod.Decoder("gzip")
    sizes = [len(piece) for piece in decoder.feed(bomb)]
    sizes += [len(piece) for piece in decoder.finish()]
    assert max(sizes) <= body_mod.CHUNK
    assert sum(sizes) == 5_000_000


# --------------------------------------------------------------------------- time limits


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


def test_drip_with_a_plain_requests_session(raw_server: Callable[..., RawServer]) -> None:
    def handler(server: RawServer, conn: socket.socket, stop: threading.Event) -> None:
        server.read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n")
        drip(conn, stop)

    server = raw_server(handler)
    with requests.Session() as session:
        error, elapsed = timed_fetch(
            source(server.url()), options(deadline=1.0, read_timeout=10), session=session
        )

    assert "deadline" in error.reason
    assert elapsed < 5.0


def test_server_that_never_answers_read_timeout(raw_server: Callable[..., RawServer]) -> None:
    def handler(server: RawServer, conn: socket.socket, stop: threading.Event) -> None:
        server.read_request(conn)
        stop.wait()

    server = raw_server(handler)
    error, elapsed = timed_fetch(source(server.url()), options(read_timeout=0.5, deadline=10))

    assert "timed out" in error.reason
    assert error.source_id == "test-src"
    assert isinstance(error.__cause__, requests.RequestException)
    assert elapsed < 5.0
    assert len(server.requests) == 1


def test_server_that_never_answers_hits_deadline(raw_server: Callable[..., RawServer]) -> None:
    def handler(server: RawServer, conn: socket.socket, stop: threading.Event) -> None:
        server.read_request(conn)
        stop.wait()

    server = raw_server(handler)
    error, elapsed = timed_fetch(source(server.url()), options(read_timeout=30, deadline=1.0))

    assert "exceeded the 1s deadline" in error.reason
    assert elapsed < 5.0


# --------------------------------------------------------------------------- network errors


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


# --------------------------------------------------------------------------- SSRF guard

# A CA and a leaf certificate for feeds.example.test (EC P-256, valid 2000-2100), made
# with openssl for the TLS test below; nothing else trusts this CA.
TEST_CA_PEM = """-----BEGIN CERTIFICATE-----
MIIBbTCCAROgAwIBAgIBATAKBggqhkjOPQQDAjAdMRswGQYDVQQDDBJhZ2dyZWdh
dG9yIHRlc3QgQ0EwIBcNMDAwMTAxMDAwMDAwWhgPMjEwMDAxMDEwMDAwMDBaMB0x
GzAZBgNVBAMMEmFnZ3JlZ2F0b3IgdGVzdCBDQTBZMBMGByqGSM49AgEGCCqGSM49
AwEHA0IABK08NaN77R8oFV2XMI9cL1ZxwEdnM+iOE+Wj9Oc3Cz1A/St8ta5GLg/j
q/Qr0vUNMlS/ca6hSDm3WADj8wq46a2jQjBAMA8GA1UdEwEB/wQFMAMBAf8wDgYD
VR0PAQH/BAQDAgEGMB0GA1UdDgQWBBSKgGBEnj3CbyuCiGM0Yjo8dkB7VTAKBggq
hkjOPQQDAgNIADBFAiALQYCvdEYtrdoV2wdObs2oGfFfizyYflBc1l1PSHqWJAIh
ANMhR9af+WTSttBZ6xjialFzTPuT4gxfrQKZxljdHqKJ
-----END CERTIFICATE-----
"""
TEST_LEAF_PEM = """-----BEGIN CERTIFICATE-----
MIIBwjCCAWegAwIBAgIBAjAKBggqhkjOPQQDAjAdMRswGQYDVQQDDBJhZ2dyZWdh
dG9yIHRlc3QgQ0EwIBcNMDAwMTAxMDAwMDAwWhgPMjEwMDAxMDEwMDAwMDBaMB0x
GzAZBgNVBAMMEmZlZWRzLmV4YW1wbGUudGVzdDBZMBMGByqGSM49AgEGCCqGSM49
AwEHA0IABLh83Y43WvG3f0rElufPAZARGRpcn2A9mJbrsYxpiO58s4P1gtvLht27
IYS8Y1jiID5lmJ423MrIErNxZmAdfoKjgZUwgZIwDAYDVR0TAQH/BAIwADAOBgNV
HQ8BAf8EBAMCB4AwEwYDVR0lBAwwCgYIKwYBBQUHAwEwHQYDVR0RBBYwFIISZmVl
ZHMuZXhhbXBsZS50ZXN0MB8GA1UdIwQYMBaAFIqAYESePcJvK4KIYzRiOjx2QHtV
MB0GA1UdDgQWBBRvu6lUSQxXGaGL70o1oeu0ZnJjljAKBggqhkjOPQQDAgNJADBG
AiEAsQ3E9soCeTcmFcJGa37jAAjycisuhH8slwis5nOl6LICIQCv8qslEV4Bis6O
sAB4TplWFe8B94xqqtKaFjjs+zNBiw==
-----END CERTIFICATE-----
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg8kyRfiXM5R1Svd1F
5UAPVkvtmIooDBR6IPmGhMvnuf+hRANCAAS4fN2ON1rxt39KxJbnzwGQERkaXJ9g
PZiW67GMaYjufLOD9YLby4bduyGEvGNY4iA+ZZieNtzKyBKzcWZgHX6C
-----END PRIVATE KEY-----
"""


def _is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return address.is_loopback or bool(mapped and mapped.is_loopback)


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Tripwire, not a mock: a connect to anything but loopback fails instead of leaving.

    The SSRF tests hand the fetch link-local, multicast and public-looking addresses; if
    the guard ever let one through, no packet leaves the machine and the test fails.
    """
    attempts: list[object] = []
    real_connect = socket.socket.connect

    def connect(sock: socket.socket, address: tuple[str, int]) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            attempts.append(address)
            raise OSError(errno.ENETUNREACH, f"test tripwire: no traffic to {address}")
        real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    yield attempts
    assert attempts == [], f"something tried to connect outside loopback: {attempts}"


class FakeDNS:
    """Our resolver seam: ``socket.getaddrinfo`` answers ``*.test`` names from a table.

    ``answers[name]`` lists successive answers (each a list of addresses; the last one
    repeats); ``hung[name]`` blocks the lookup until the test ends.  Any other ``.test``
    name fails like NXDOMAIN, so no lookup ever leaves the machine; other names
    (localhost, numeric spellings) go to the real resolver.
    """

    def __init__(self, real: Callable[..., list[Any]]) -> None:
        self.real = real
        self.answers: dict[str, list[list[str]]] = {}
        self.hung: dict[str, threading.Event] = {}
        self.calls: list[str] = []

    def __call__(self, host: str | bytes | None, port: object, family: int = 0,
                 type: int = 0, proto: int = 0, flags: int = 0) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if not name.rstrip(".").endswith(".test"):
            return self.real(host, port, family, type, proto, flags)
        self.calls.append(name)
        if name in self.hung:
            self.hung[name].wait(30)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        queue = self.answers.get(name)
        if not queue:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        addresses = queue.pop(0) if len(queue) > 1 else queue[0]
        rows: list[Any] = []
        for text in addresses:
            if ipaddress.ip_address(text).version == 6:
                if family != socket.AF_INET:
                    rows.append((socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "",
                                 (text, port, 0, 0)))
            elif family != socket.AF_INET6:
                rows.append((socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "",
                             (text, port)))
        return rows


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDNS]:
    fake = FakeDNS(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    yield fake
    for event in fake.hung.values():
        event.set()  # let abandoned lookup threads finish


def _pretend_public(monkeypatch: pytest.MonkeyPatch, *addresses: str) -> None:
    """Classify these loopback addresses as public portals (the servers stay on loopback)."""
    real = guard_mod.forbidden_kind
    monkeypatch.setattr(
        guard_mod, "forbidden_kind", lambda ip: None if str(ip) in addresses else real(ip)
    )


@pytest.mark.parametrize(
    ("host", "kind", "shown"),
    [
        ("127.0.0.1", "loopback", r"127\.0\.0\.1"),
        ("localhost", "loopback", r"(127\.0\.0\.1|::1)"),
        ("2130706433", "loopback", r"127\.0\.0\.1"),
        ("0x7f000001", "loopback", r"127\.0\.0\.1"),
        ("127.1", "loopback", r"127\.0\.0\.1"),
        ("017700000001", "loopback", r"127\.0\.0\.1"),
        ("[::ffff:127.0.0.1]", "loopback", r"127\.0\.0\.1"),
        ("[::1]", "loopback", r"::1"),
        ("0.0.0.0", "unspecified", r"0\.0\.0\.0"),
        ("169.254.169.254", "link-local", r"169\.254\.169\.254"),
        ("[fe80::1]", "link-local", r"fe80::1"),
        ("224.0.0.1", "multicast", r"224\.0\.0\.1"),
        ("100.64.0.1", "non-global", r"100\.64\.0\.1"),
    ],
)
def test_private_networks_refused_before_connecting(
    httpserver: HTTPServer, loopback_only: list[object], host: str, kind: str, shown: str
) -> None:
    httpserver.expect_request("/feed").respond_with_data(b"secret")
    url = f"http://{host}:{httpserver.port}/feed"

    with pytest.raises(FetchError) as info:
        fetch(source(url), GUARDED)

    assert re.fullmatch(
        rf"refusing \S+: it resolves to {kind} address {shown} "
        r"\(private networks are not allowed\)",
        info.value.reason,
    ), info.value.reason
    assert str(info.value).startswith("[test-src] refusing ")
    assert httpserver.log == []


def test_same_urls_allowed_when_private_networks_allowed(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed").respond_with_data(b"local")

    result = fetch(source(f"http://2130706433:{httpserver.port}/feed"), OPTIONS)

    assert result.content == b"local"


def test_hostname_resolving_inward_is_refused_after_one_lookup(
    httpserver: HTTPServer, dns: FakeDNS
) -> None:
    dns.answers["intranet.test"] = [["127.0.0.1"]]
    httpserver.expect_request("/feed").respond_with_data(b"secret")

    with pytest.raises(
        FetchError,
        match=r"^\[test-src\] refusing intranet\.test: it resolves to loopback address "
        r"127\.0\.0\.1 ",
    ):
        fetch(source(f"http://intranet.test:{httpserver.port}/feed"), GUARDED)

    assert httpserver.log == []
    assert dns.calls == ["intranet.test"]


def test_one_inward_address_refuses_the_whole_host(
    httpserver: HTTPServer, dns: FakeDNS, loopback_only: list[object]
) -> None:
    # 93.184.215.14 is only classified (public); the refusal comes before any connect,
    # and the tripwire shows nothing was connected to, not even the public-looking one.
    dns.answers["mixed.test"] = [["93.184.215.14", "127.0.0.1"]]
    httpserver.expect_request("/feed").respond_with_data(b"secret")

    with pytest.raises(FetchError, match=r"refusing mixed\.test: .* loopback address 127\.0\.0\.1"):
        fetch(source(f"http://mixed.test:{httpserver.port}/feed"), GUARDED)

    assert httpserver.log == []
    assert loopback_only == []


@pytest.fixture
def portal(httpserver: HTTPServer) -> Iterator[HTTPServer]:
    """A "public portal" on 127.0.0.2, on the same port as ``httpserver`` (127.0.0.1)."""
    server = HTTPServer(host="127.0.0.2", port=httpserver.port)
    try:
        server.start()
    except OSError as exc:  # the 127/8 block is not all loopback on every system
        pytest.skip(f"cannot listen on 127.0.0.2: {exc}")
    yield server
    server.clear()
    if server.is_running():
        server.stop()


@pytest.mark.parametrize("session_kind", ["fetch's own", "make_session", "plain requests"])
def test_dns_rebinding_connects_only_to_the_checked_address(
    httpserver: HTTPServer,
    portal: HTTPServer,
    dns: FakeDNS,
    monkeypatch: pytest.MonkeyPatch,
    session_kind: str,
) -> None:
    # rebind.test answers "the portal" once, then the internal server at every later
    # lookup.  A fetch that checks one answer and connects with another reaches the
    # internal server; the fixed fetch resolves once and connects to what it checked.
    _pretend_public(monkeypatch, "127.0.0.2")
    dns.answers["rebind.test"] = [["127.0.0.2"], ["127.0.0.1"]]
    portal.expect_request("/feed").respond_with_data(b"portal")
    httpserver.expect_request("/feed").respond_with_data(b"internal secret")
    session = {
        "fetch's own": None,
        "make_session": make_session(GUARDED),
        "plain requests": requests.Session(),
    }[session_kind]

    try:
        result = fetch(source(f"http://rebind.test:{httpserver.port}/feed"), GUARDED,
                       session=session)
    finally:
        if session is not None:
            session.close()

    assert result.content == b"portal"
    assert httpserver.log == []
    assert len(portal.log) == 1
    assert dns.calls == ["rebind.test"]


def test_allowed_private_hostname_is_reached_at_its_resolved_address(
    httpserver: HTTPServer, dns: FakeDNS
) -> None:
    dns.answers["feeds.test"] = [["127.0.0.1"]]
    httpserver.expect_request("/feed").respond_with_data(b"local feed")

    result = fetch(source(f"http://feeds.test:{httpserver.port}/feed"), OPTIONS)

    assert result.content == b"local feed"
    assert dns.calls == ["feeds.test"]  # our one lookup: urllib3 never resolved it again
    ((request, _),) = httpserver.log
    assert request.headers["Host"] == f"feeds.test:{httpserver.port}"  # the name, not the IP


def test_unreachable_checked_address_falls_through_to_the_next_one(
    httpserver: HTTPServer, dns: FakeDNS
) -> None:
    # Nothing listens on [::1] at this port (refused, or no IPv6 at all): the connect moves
    # on to the next checked address, as urllib3's own create_connection would.
    dns.answers["dual.test"] = [["::1", "127.0.0.1"]]
    httpserver.expect_request("/feed").respond_with_data(b"second address")

    result = fetch(source(f"http://dual.test:{httpserver.port}/feed"), OPTIONS)

    assert result.content == b"second address"
    assert dns.calls == ["dual.test"]


def test_peer_address_is_checked_again_after_connecting(
    raw_server: Callable[..., RawServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A classifier that passes 127.0.0.1 once (the pre-connect check) and refuses it from
    # then on stands in for a connect that ended somewhere other than what was checked.
    real = guard_mod.forbidden_kind
    verdicts = iter([None])
    monkeypatch.setattr(
        guard_mod,
        "forbidden_kind",
        lambda ip: next(verdicts, "loopback") if str(ip) == "127.0.0.1" else real(ip),
    )
    finished = threading.Event()

    def handler(server: RawServer, conn: socket.socket, stop: threading.Event) -> None:
        try:
            if server.read_request(conn):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret")
        finally:
            finished.set()

    server = raw_server(handler)
    with pytest.raises(
        FetchError,
        match=r"refusing 127\.0\.0\.1: the connection reached loopback address 127\.0\.0\.1 ",
    ):
        fetch(source(server.url()), GUARDED)

    assert finished.wait(5)
    assert server.connections == 1  # the TCP connect happened...
    assert server.requests == [b""]  # ...but not one byte of a request was sent


def test_kept_alive_connection_is_rechecked_for_a_guarded_fetch(
    raw_server: Callable[..., RawServer],
) -> None:
    finished = threading.Event()

    def handler(server: RawServer, conn: socket.socket, stop: threading.Event) -> None:
        try:
            while server.read_request(conn):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        finally:
            finished.set()

    server = raw_server(handler)
    session = make_session(OPTIONS)
    try:
        assert fetch(source(server.url()), OPTIONS, session=session).content == b"ok"
        with pytest.raises(FetchError, match=r"refusing 127\.0\.0\.1: it resolves to loopback"):
            fetch(source(server.url()), GUARDED, session=session)  # same pooled connection
    finally:
        session.close()

    assert finished.wait(5)
    assert server.connections == 1
    assert [request for request in server.requests if request] == [server.requests[0]]


def test_session_with_a_proxy_is_refused(httpserver: HTTPServer, dns: FakeDNS) -> None:
    httpserver.expect_request("/feed").respond_with_data(b"via proxy")

    with requests.Session() as session:
        session.proxies = {"http": httpserver.url_for("/")}
        with pytest.raises(FetchError, match="refusing to fetch through a proxy") as info:
            fetch(source("http://feeds.test/feed"), OPTIONS, session=session)

    assert info.value.source_id == "test-src"
    assert httpserver.log == []


def test_make_session_used_directly_keeps_its_policy(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed").respond_with_data(b"direct")
    url = httpserver.url_for("/feed")

    with make_session(GUARDED) as guarded, make_session(OPTIONS) as allowed:
        with pytest.raises(FetchError, match=r"refusing \S+: it resolves to loopback address"):
            guarded.get(url)
        assert allowed.get(url).content == b"direct"

    assert len(httpserver.log) == 1


def test_redirect_hop_into_private_network_refused(
    httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pretend 127.0.0.1 is a public portal so the first hop is allowed; the redirect to
    # another loopback address must still be refused by the guard, before connecting.
    _pretend_public(monkeypatch, "127.0.0.1")
    httpserver.expect_request("/feed").respond_with_data(
        b"", status=302, headers={"Location": f"http://127.0.0.2:{httpserver.port}/admin"}
    )

    with pytest.raises(FetchError, match=r"refusing 127\.0\.0\.2: it resolves to loopback"):
        fetch(source(f"http://127.0.0.1:{httpserver.port}/feed"), GUARDED)
    assert len(httpserver.log) == 1


def test_redirect_hop_to_a_name_for_the_metadata_address_refused(
    httpserver: HTTPServer, dns: FakeDNS, monkeypatch: pytest.MonkeyPatch,
    loopback_only: list[object],
) -> None:
    _pretend_public(monkeypatch, "127.0.0.1")
    dns.answers["metadata.test"] = [["169.254.169.254"]]
    httpserver.expect_request("/feed").respond_with_data(
        b"", status=301, headers={"Location": "http://metadata.test/latest/meta-data/"}
    )

    with pytest.raises(
        FetchError,
        match=r"refusing metadata\.test: it resolves to link-local address 169\.254\.169\.254",
    ):
        fetch(source(f"http://127.0.0.1:{httpserver.port}/feed"), GUARDED)

    assert len(httpserver.log) == 1
    assert dns.calls == ["metadata.test"]


def test_hung_dns_lookup_is_cut_by_the_deadline(dns: FakeDNS) -> None:
    dns.hung["slow.test"] = threading.Event()

    error, elapsed = timed_fetch(
        source("http://slow.test/feed"), options(deadline=1.0, connect_timeout=30)
    )

    assert error.reason == "exceeded the 1s deadline"
    assert 0.9 <= elapsed < 3.0
    assert dns.calls == ["slow.test"]


def test_hung_dns_lookup_is_cut_by_the_connect_timeout(dns: FakeDNS) -> None:
    dns.hung["slow.test"] = threading.Event()

    error, elapsed = timed_fetch(
        source("http://slow.test/feed"), options(connect_timeout=0.5, deadline=10)
    )

    assert error.reason == "DNS lookup for slow.test timed out"
    assert elapsed < 3.0


def test_unknown_host_is_a_dns_error(dns: FakeDNS) -> None:
    with pytest.raises(FetchError) as info:
        fetch(source("http://nowhere.test/feed"), GUARDED)

    assert info.value.reason == "DNS lookup failed for nowhere.test: Name or service not known"
    assert dns.calls == ["nowhere.test"]


def test_tls_verifies_and_sends_sni_for_the_url_hostname(
    raw_server: Callable[..., RawServer], dns: FakeDNS, tmp_path: Path
) -> None:
    # The connection goes to the resolved 127.0.0.1, but the certificate (valid only for
    # feeds.example.test) must be checked against the URL's name, and SNI must carry it.
    (tmp_path / "ca.pem").write_text(TEST_CA_PEM)
    (tmp_path / "leaf.pem").write_text(TEST_LEAF_PEM)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "leaf.pem")
    server_names: list[str | None] = []
    context.sni_callback = lambda _sock, name, _ctx: server_names.append(name)

    def handler(server: RawServer, conn: socket.socket, stop: threading.Event) -> None:
        with context.wrap_socket(conn, server_side=True) as tls:
            server.read_request(tls)
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nsecure")

    server = raw_server(handler)
    dns.answers["feeds.example.test"] = [["127.0.0.1"]]
    dns.answers["other.example.test"] = [["127.0.0.1"]]
    session = make_session(OPTIONS)
    session.verify = str(tmp_path / "ca.pem")
    try:
        result = fetch(source(f"https://feeds.example.test:{server.port}/feed"), OPTIONS,
                       session=session)
        with pytest.raises(FetchError, match=r"^\[test-src\] TLS error: .*Hostname mismatch"):
            fetch(source(f"https://other.example.test:{server.port}/feed"), OPTIONS,
                  session=session)
    finally:
        session.close()

    assert result.content == b"secure"
    assert server_names[:2] == ["feeds.example.test", "other.example.test"]


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.1", "private"),
        ("172.16.5.4", "private"),
        ("fc00::1", "private"),
        ("192.0.2.10", "private"),  # TEST-NET-1: documentation only, never routed
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "non-global"),
        ("::ffff:10.0.0.1", "private"),
        ("2002:7f00:1::", "loopback"),
        ("93.184.215.14", None),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", None),
    ],
)
def test_forbidden_address_classification(address: str, kind: str | None) -> None:
    # Pure classification of literal addresses: nothing is resolved or connected to.
    assert guard_mod.forbidden_kind(ipaddress.ip_address(address)) == kind
