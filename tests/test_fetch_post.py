"""aggregator.ingest.fetch.post_form: one form POST with the safety of a fetch.

Against real loopback servers: what is sent, statuses as results or typed errors,
redirects not followed, the SSRF guard, the deadline, no environment proxies.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
import test_fetch_harness as harness
from pytest_httpserver import HTTPServer
from test_fetch_harness import GUARDED, OPTIONS, RawServer, closed_port, options

from aggregator.errors import FetchError
from aggregator.ingest.fetch import post_form

loopback_only = harness.loopback_only
raw_server = harness.raw_server

FIELDS = {"hub.mode": "publish", "hub.url": "http://localhost:8080/categories/新闻/rss.xml"}


def test_a_2xx_returns_its_status_and_the_form_was_sent(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hub", method="POST").respond_with_data("", status=202)

    status = post_form(httpserver.url_for("/hub"), FIELDS, options(user_agent="pinger/1"),
                       purpose="websub")

    assert status == 202
    [(request, _)] = httpserver.log
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.headers["User-Agent"] == "pinger/1"
    assert request.form.to_dict() == FIELDS


@pytest.mark.parametrize(("status", "retry_after"), [(500, None), (404, None), (429, 120.0)])
def test_other_statuses_raise_with_the_status_and_retry_after(
        httpserver: HTTPServer, status: int, retry_after: float | None) -> None:
    httpserver.expect_request("/hub", method="POST").respond_with_data(
        "no", status=status, headers={"Retry-After": "120"})

    with pytest.raises(FetchError) as info:
        post_form(httpserver.url_for("/hub"), FIELDS, OPTIONS, purpose="websub")

    assert info.value.status == status
    assert info.value.retry_after == retry_after
    assert info.value.source_id == "websub"
    assert str(info.value).startswith(f"[websub] HTTP {status}")


def test_a_redirect_is_not_followed(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hub", method="POST").respond_with_data(
        "", status=307, headers={"Location": httpserver.url_for("/elsewhere")})
    httpserver.expect_request("/elsewhere").respond_with_data("", status=202)

    with pytest.raises(FetchError) as info:
        post_form(httpserver.url_for("/hub"), FIELDS, OPTIONS, purpose="websub")

    assert info.value.status == 307
    assert "not redirected" in info.value.reason and "/elsewhere" in info.value.reason
    assert [request.path for request, _ in httpserver.log] == ["/hub"]


def test_the_ssrf_guard_refuses_a_loopback_hub_unless_private_networks_are_allowed(
        httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hub", method="POST").respond_with_data("", status=202)

    with pytest.raises(FetchError) as info:
        post_form(httpserver.url_for("/hub"), FIELDS, GUARDED, purpose="websub")

    assert "loopback" in info.value.reason and info.value.status is None
    assert httpserver.log == []
    assert post_form(httpserver.url_for("/hub"), FIELDS, OPTIONS, purpose="websub") == 202


def test_a_non_http_url_is_refused_before_connecting() -> None:
    with pytest.raises(FetchError) as info:
        post_form("file:///etc/passwd", FIELDS, OPTIONS, purpose="websub")
    assert "only http and https" in info.value.reason


def test_a_hub_that_never_answers_fails_at_the_deadline(raw_server) -> None:  # type: ignore[no-untyped-def]
    def hang(server: RawServer, conn: socket.socket, stop: threading.Event) -> None:
        server.read_request(conn)
        stop.wait(30)

    server = raw_server(hang)
    started = time.monotonic()
    with pytest.raises(FetchError) as info:
        post_form(server.url("/hub"), FIELDS, options(read_timeout=30.0, deadline=1.0),
                  purpose="websub")
    elapsed = time.monotonic() - started

    assert "deadline" in info.value.reason
    assert 0.9 <= elapsed < 5
    assert server.requests and server.requests[0].startswith(b"POST /hub ")


def test_a_refused_connection_is_a_fetch_error() -> None:
    with pytest.raises(FetchError) as info:
        post_form(f"http://127.0.0.1:{closed_port()}/hub", FIELDS, OPTIONS, purpose="websub")
    assert info.value.reason == "connection refused"


def test_environment_proxies_are_ignored(httpserver: HTTPServer,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = f"http://127.0.0.1:{closed_port()}"
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    httpserver.expect_request("/hub", method="POST").respond_with_data("", status=204)

    assert post_form(httpserver.url_for("/hub"), FIELDS, OPTIONS, purpose="websub") == 204
    assert len(httpserver.log) == 1
