"""Tests for aggregator.fetch against real loopback servers.

Most tests use pytest-httpserver; the slow/hostile servers (drip, hang, keep-alive then
drip) are raw threaded sockets on 127.0.0.1 because they need byte-level control.
No test talks to a non-loopback address: the SSRF table below only classifies literal
addresses, it never connects.
"""

from __future__ import annotations

import contextlib
import email.utils
import gzip
import ipaddress
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from aggregator import fetch as fetch_mod
from aggregator.errors import FetchError
from aggregator.fetch import fetch, make_session
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
    assert fetch_mod._parse_retry_after(value) == expected


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
    decoder = fetch_mod._Decoder("gzip")
    sizes = [len(piece) for piece in decoder.feed(bomb)]
    sizes += [len(piece) for piece in decoder.finish()]
    assert max(sizes) <= fetch_mod._CHUNK
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


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "2130706433",
        "0x7f000001",
        "127.1",
        "017700000001",
        "[::ffff:127.0.0.1]",
    ],
)
def test_private_networks_refused_before_connecting(httpserver: HTTPServer, host: str) -> None:
    httpserver.expect_request("/feed").respond_with_data(b"secret")
    url = f"http://{host}:{httpserver.port}/feed"

    with pytest.raises(FetchError, match=r"refusing .* loopback address 127\.0\.0\.1 ") as info:
        fetch(source(url), GUARDED)

    assert info.value.source_id == "test-src"
    assert httpserver.log == []


def test_same_urls_allowed_when_private_networks_allowed(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed").respond_with_data(b"local")

    result = fetch(source(f"http://2130706433:{httpserver.port}/feed"), OPTIONS)

    assert result.content == b"local"


def test_redirect_hop_into_private_network_refused(
    httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pretend 127.0.0.1 is a public portal so the first hop is allowed; the redirect to
    # another loopback address must still be refused by the guard, before connecting.
    real = fetch_mod._forbidden_kind
    monkeypatch.setattr(
        fetch_mod, "_forbidden_kind", lambda ip: None if str(ip) == "127.0.0.1" else real(ip)
    )
    httpserver.expect_request("/feed").respond_with_data(
        b"", status=302, headers={"Location": f"http://127.0.0.2:{httpserver.port}/admin"}
    )

    with pytest.raises(FetchError, match=r"refusing 127\.0\.0\.2: it resolves to loopback"):
        fetch(source(f"http://127.0.0.1:{httpserver.port}/feed"), GUARDED)
    assert len(httpserver.log) == 1


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
    assert fetch_mod._forbidden_kind(ipaddress.ip_address(address)) == kind
