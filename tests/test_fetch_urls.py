"""Tests for fetch.urls and what the fetch adds to a request: URLs spelled as requests did.

The final URL of a fetch is stored and is the base of every relative link, and requests'
``PreparedRequest.prepare_url`` spelled it for years: the fetch's own spelling is compared
with requests' (a test dependency) over tricky URLs and generated ones, and a redirect's
Location is read as requests read it (latin-1 re-decoded as UTF-8) — by both clients,
against the same loopback server.  Also what requests added to each request and the
fetch still adds: the Basic credentials of a URL's userinfo and the session's cookies.
"""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Callable
from urllib.parse import quote

import pytest
import requests
import test_fetch_harness as harness
from hypothesis import given, settings
from hypothesis import strategies as st
from pytest_httpserver import HTTPServer
from test_fetch_harness import OPTIONS, RawServer, options, source
from werkzeug import Response

from aggregator.errors import FetchError
from aggregator.ingest.fetch import fetch, make_session
from aggregator.ingest.fetch import urls as urls_mod
from aggregator.ingest.fetch.protocol import request_headers
from aggregator.records import Validators

loopback_only = harness.loopback_only
raw_server = harness.raw_server


def requests_spelling(url: str) -> str:
    prepared = requests.PreparedRequest()
    prepared.prepare_url(url, None)
    assert prepared.url is not None
    return prepared.url


def outcome(spell: Callable[[str], str], url: str) -> tuple[str, str]:
    """("ok", spelling) or ("error", message): both spellers must agree on either."""
    try:
        return "ok", spell(url)
    except (ValueError, requests.RequestException) as exc:
        return "error", str(exc)


TRICKY = [
    "http://example.com",  # no path: "/"
    "HTTP://Example.COM:80/A/b",  # scheme and host case, explicit default port
    "http://例子.测试/新闻/列表.xml",  # IDN host, CJK path
    "http://bücher.example/straße",
    "http://xn--bcher-kva.example/",  # already punycode
    "http://example.com/新闻?q=中文&x=1",  # CJK query
    "http://example.com/a b/c d?q=e f",  # spaces
    "http://example.com/%E6%96%B0/%7Euser/%41%2F%3f",  # escapes, unreserved ones undone
    "http://example.com/100%/x%zz?p=%",  # stray percent signs
    "http://example.com/feed.xml#frag ment",  # fragment
    "http://example.com/a?b#c?d#e",
    "https://example.com:8443/feed",  # port
    "http://user:p%40ss@example.com/feed",  # userinfo
    "http://用户:密码@example.com/",
    "http://[::1]:8080/feed",  # IPv6 literal
    "http://[2001:DB8::1]/Feed",
    "http://example.com./feed",  # trailing-dot host
    "http://127.0.0.1:9/feed?a=<b>&c=\"d\"",  # unsafe characters
    "http://example.com/a/../b/./c",  # dot segments
    "http://example.com/path;params?q",
    "http://example.com/\u00e9\u0301",  # combining marks
    "http://example.com/emoji/\U0001f600",
    "  http://example.com/leading-space",
    "http://example.com:0/x",
    "http://example.com:/x",
    "mailto:someone@example.com",  # other schemes are left alone
    "file:///etc/passwd",
    "data:text/xml,<rss/>",
    # failures: the same error message
    "example.com/feed",  # no scheme
    "http://",  # no host
    "http://[::1",
    "http://example.com:99999/",
    "http://*.example.com/",
    "http://.example.com/",
    "http://exa mple.com/",
    "http://ex\u200dample.com/",  # an invalid IDNA label
]


@pytest.mark.parametrize("url", TRICKY)
def test_spelling_is_requests_prepare_url(url: str) -> None:
    assert outcome(urls_mod.prepare_url, url) == outcome(requests_spelling, url)


_HOSTS = st.sampled_from(["example.com", "EXAMPLE.com", "例子.测试", "bücher.de", "127.0.0.1",
                          "[::1]", "[fe80::1%25eth0]", "example.com.", "a-b.example", "xn--p1ai"])
_PIECES = st.sampled_from([*"aZ09-._~!$&'()*+,;=:@/?# %\"<>[]\\^`{|}", "新", "é", "\u00a0",
                          "%41", "%2F", "%e6", "%zz", "\U0001f600"])
_TEXT = st.lists(_PIECES, max_size=12).map("".join)


@settings(max_examples=400, deadline=None)
@given(scheme=st.sampled_from(["http", "https", "HTTP"]), host=_HOSTS,
       port=st.sampled_from(["", ":80", ":8080", ":65535"]),
       userinfo=st.sampled_from(["", "user@", "u:p@", "用户:p%40@"]), rest=_TEXT)
def test_generated_urls_are_spelled_as_requests_spells_them(
        scheme: str, host: str, port: str, userinfo: str, rest: str) -> None:
    url = f"{scheme}://{userinfo}{host}{port}/{rest}"
    assert outcome(urls_mod.prepare_url, url) == outcome(requests_spelling, url)


def test_the_final_url_of_a_fetch_is_requests_spelling(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/新闻/a b").respond_with_data(b"<rss/>")
    url = httpserver.url_for("/新闻/a b") + "?q=中文&x=%41"

    result = fetch(source(url), OPTIONS)

    assert result.url == requests_spelling(url)
    assert result.url.endswith("/%E6%96%B0%E9%97%BB/a%20b?q=%E4%B8%AD%E6%96%87&x=A")
    ((request, _),) = httpserver.log
    assert request.query_string == b"q=%E4%B8%AD%E6%96%87&x=A"


def _redirecting_server(raw_server: Callable[..., RawServer], location: bytes) -> RawServer:
    """Answers /start with a 302 to ``location`` (raw bytes), anything else with "end"."""

    def handler(server: RawServer, conn: socket.socket, stop: threading.Event) -> None:
        while request := server.read_request(conn):
            if request.startswith(b"GET /start "):
                conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: " + location +
                             b"\r\nContent-Length: 0\r\n\r\n")
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nend")

    return raw_server(handler)


def test_a_utf8_location_is_followed_as_requests_follows_it(
        raw_server: Callable[..., RawServer]) -> None:
    server = _redirecting_server(raw_server, "/新闻/列表.xml?q=中 文".encode())

    result = fetch(source(server.url("/start")), OPTIONS)
    with requests.get(server.url("/start"), timeout=10) as theirs:
        their_url = theirs.url

    assert result.content == b"end"
    assert result.url == their_url
    assert result.url == server.url("/" + quote("新闻/列表.xml") + "?q=" + quote("中 文"))
    assert urls_mod.redirect_location("/新".encode().decode("latin-1")) == "/新"


def test_a_location_that_is_not_utf8_is_an_error_naming_it(
        raw_server: Callable[..., RawServer]) -> None:
    server = _redirecting_server(raw_server, b"/caf\xe9.xml")

    with pytest.raises(FetchError, match=r"invalid redirect Location '/caf\xe9\.xml'") as info:
        fetch(source(server.url("/start")), OPTIONS)

    assert info.value.source_id == "test-src"
    assert [request.split(b" ")[1] for request in server.requests if request] == [b"/start"]


# ---------------------------------------------------------------- what a request carries


def test_userinfo_is_sent_as_basic_credentials_as_requests_sent_it(
        httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed").respond_with_data(b"ok")
    base = httpserver.url_for("/feed").replace("http://", "")
    with_password = f"http://reader:p%40ss@{base}"
    user_only = f"http://reader@{base}"

    assert fetch(source(with_password), OPTIONS).url == requests_spelling(with_password)
    fetch(source(user_only), OPTIONS)
    requests.get(with_password, timeout=10).close()
    requests.get(user_only, timeout=10).close()

    ours_full, ours_user, theirs_full, theirs_user = (
        request.headers.get("Authorization") for request, _ in httpserver.log)
    assert ours_full == "Basic " + base64.b64encode(b"reader:p@ss").decode()
    assert ours_full == theirs_full
    assert ours_user is None and theirs_user is None  # a user without a password: none


def test_cookies_a_portal_sets_are_sent_back_on_later_requests(httpserver: HTTPServer) -> None:
    # Set on a redirect hop: the next hop of the same fetch carries it, and so do later
    # fetches through the same session; a fresh session carries none.
    httpserver.expect_request("/start").respond_with_response(Response(
        status=302, headers=[("Location", "/feed"), ("Set-Cookie", "sid=abc; Path=/"),
                             ("Set-Cookie", "lang=zh; Path=/")]))
    httpserver.expect_request("/feed").respond_with_data(b"ok")
    httpserver.expect_request("/other").respond_with_data(
        b"", status=304, headers={"Set-Cookie": "seen=1; Path=/other"})

    with make_session(OPTIONS) as session:
        assert fetch(source(httpserver.url_for("/start")), OPTIONS, session=session).content
        fetch(source(httpserver.url_for("/other")), OPTIONS, session=session)
        fetch(source(httpserver.url_for("/other")), OPTIONS, session=session)
        assert sorted(cookie.name for cookie in session.cookies) == ["lang", "seen", "sid"]
    fetch(source(httpserver.url_for("/feed")), OPTIONS)

    sent = [(request.path, request.headers.get("Cookie")) for request, _ in httpserver.log]
    assert sent == [("/start", None), ("/feed", "sid=abc; lang=zh"),
                    ("/other", "sid=abc; lang=zh"), ("/other", "seen=1; sid=abc; lang=zh"),
                    ("/feed", None)]


def test_a_conditional_get_carries_the_headers_requests_sent(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed").respond_with_data(b"", status=304)
    opts = options(user_agent="Agent-W/1")
    url = httpserver.url_for("/feed")

    fetch(source(url), opts,
          Validators(etag='"e"', last_modified="Tue, 01 Oct 2024 10:00:00 GMT"))
    with requests.Session() as theirs:  # as make_session built one before
        theirs.trust_env = False
        theirs.headers.update(request_headers(opts))
        theirs.get(url, headers={"If-None-Match": '"e"',
                                 "If-Modified-Since": "Tue, 01 Oct 2024 10:00:00 GMT"}).close()

    ours, their = (dict(request.headers) for request, _ in httpserver.log)
    assert ours == their
    assert ours["Connection"] == "keep-alive" and ours["If-None-Match"] == '"e"'
