"""Public behaviour of aggregator.ingest.fetch: ``fetch``, ``make_session``, ``HttpSession``.

What a caller sees, against real loopback servers: results and validators, the request
headers, sessions (options applied per call, environment ignored), redirects and HTTP
errors.  The other tests/test_fetch_*.py files mirror the package's modules (guard,
resolve, connection, watchdog, body, protocol, errors); test_fetch_harness.py holds the
servers and seams they share.
"""

from __future__ import annotations

import email.utils
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import test_fetch_harness as harness
from pytest_httpserver import HTTPServer
from test_fetch_harness import (
    OPTIONS,
    closed_port,
    options,
    source,
)

from aggregator.errors import FetchError
from aggregator.ingest.fetch import ACCEPT, HttpSession, fetch, make_session
from aggregator.records import Validators

# The harness fixtures this module uses; ``loopback_only`` is autouse: no connect
# leaves loopback.  (Assigned, not imported, so parameters may shadow them.)
loopback_only = harness.loopback_only


# ------------------------------------------------------------------------ success paths


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


def test_a_304_leaves_its_connection_for_the_next_fetch_of_the_host() -> None:
    """Re-polling a portal's many feeds must not open a TCP connection per 304."""
    peers: list[tuple[str, int]] = []

    class NotModified(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive

        def do_GET(self) -> None:
            peers.append(self.client_address)
            self.send_response(304)
            self.send_header("ETag", '"v"')
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotModified)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    session = make_session(OPTIONS)
    try:
        for feed in ("a", "b", "c"):
            url = f"http://127.0.0.1:{server.server_address[1]}/{feed}.xml"
            assert fetch(source(url), OPTIONS, Validators(etag='"v"'), session).status == 304
    finally:
        session.close()
        server.shutdown()
        server.server_close()
    assert len(peers) == 3 and len(set(peers)) == 1  # one connection, three requests


def test_304_that_repeats_a_new_etag_replaces_it(httpserver: HTTPServer) -> None:
    old = Validators(etag='"abc"', last_modified="Tue, 01 Oct 2024 10:00:00 GMT")
    httpserver.expect_request("/feed").respond_with_data(b"", status=304, headers={"ETag": '"def"'})

    result = fetch(source(httpserver.url_for("/feed")), OPTIONS, old)

    assert result.not_modified
    assert result.etag == '"def"'
    assert result.last_modified == old.last_modified


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
        result = fetch(source(httpserver.url_for("/feed")), OPTIONS, session=session)
    finally:
        session.close()

    assert result.content == b"direct"
    assert len(httpserver.log) == 1


def test_no_netrc_credentials_are_sent(
    httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine 127.0.0.1 login someone password secret\n"
                     "machine localhost login someone password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(netrc))
    httpserver.expect_request("/feed").respond_with_data(b"ok")

    assert fetch(source(httpserver.url_for("/feed")), OPTIONS).content == b"ok"

    ((request, _),) = httpserver.log
    assert "Authorization" not in request.headers


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


def test_user_agent_comes_from_each_calls_options_not_from_the_session(
    httpserver: HTTPServer,
) -> None:
    # The scheduler keeps one session per thread across config reloads: a new user_agent
    # must reach the server on the next fetch, on every hop, and an old one must not stick.
    httpserver.expect_request("/old").respond_with_data(
        b"", status=301, headers={"Location": "/feed"}
    )
    httpserver.expect_request("/feed").respond_with_data(b"ok")
    settings_a = options(user_agent="Agent-A/1")
    settings_b = options(user_agent="Agent-B/2")
    session = make_session(settings_a)
    try:
        fetch(source(httpserver.url_for("/old")), settings_b, session=session)
        fetch(source(httpserver.url_for("/feed")), settings_a, session=session)
    finally:
        session.close()

    agents = [(request.path, request.headers["User-Agent"]) for request, _ in httpserver.log]
    assert agents == [("/old", "Agent-B/2"), ("/feed", "Agent-B/2"), ("/feed", "Agent-A/1")]


def test_limits_come_from_each_calls_options_not_from_the_session(
    httpserver: HTTPServer,
) -> None:
    # A session made under strict settings, then a fetch under laxer ones: the fetch's
    # own options decide (redirect count, size limit, private networks).
    httpserver.expect_request("/r0").respond_with_data(
        b"", status=302, headers={"Location": "/r1"}
    )
    httpserver.expect_request("/r1").respond_with_data(
        b"", status=302, headers={"Location": "/feed"}
    )
    httpserver.expect_request("/feed").respond_with_data(b"x" * 100)
    strict = options(max_redirects=0, max_bytes=10, allow_private_networks=False)
    lax = options(max_redirects=2, max_bytes=1000, allow_private_networks=True)
    session = make_session(strict)
    try:
        result = fetch(source(httpserver.url_for("/r0")), lax, session=session)
    finally:
        session.close()

    assert result.content == b"x" * 100
    assert len(httpserver.log) == 3


def test_a_sessions_own_headers_never_replace_the_options_headers(
    httpserver: HTTPServer,
) -> None:
    httpserver.expect_request("/feed").respond_with_data(b"ok")
    own = {"User-Agent": "Session/0", "Accept": "*/*", "Accept-Encoding": "br"}

    with HttpSession(allow_private_networks=True, headers=own) as session:
        fetch(source(httpserver.url_for("/feed")), options(user_agent="Agent-C/3"),
              session=session)

    ((request, _),) = httpserver.log
    assert request.headers["User-Agent"] == "Agent-C/3"
    assert request.headers["Accept"] == ACCEPT
    assert request.headers["Accept-Encoding"] == "gzip, deflate"  # what fetch can decode


# ---------------------------------------------------------------------------- redirects


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


# -------------------------------------------------------------------------- HTTP errors


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
