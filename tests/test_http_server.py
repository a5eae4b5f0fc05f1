"""Tests for aggregator.service.http.server: FeedServer's lifecycle on 127.0.0.1.

FeedServer serves any WSGI app, so these tests use small apps of their own
rather than ``make_app``.  No sleeps: a slow request is held on an Event.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from wsgiref.types import StartResponse, WSGIEnvironment

import pytest
import requests

from aggregator.service.http import FeedServer


def hello(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    body = f"hello {environ['PATH_INFO']}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return True
    return False


def test_feed_server_serves_reports_its_url_and_identifies_itself() -> None:
    with FeedServer(hello) as running:
        assert running.host == "127.0.0.1"
        assert running.port > 0
        assert running.url == f"http://127.0.0.1:{running.port}/"
        response = requests.get(running.url + "x", timeout=10)
        assert response.text == "hello /x"
        assert response.headers["Server"] == "aggregator"


def test_feed_server_stops_and_frees_the_port() -> None:
    running = FeedServer(hello).start()
    port = running.port
    # A keep-alive connection is open while we stop: stop must still return.
    session = requests.Session()
    assert session.get(running.url + "a", timeout=10).status_code == 200
    running.stop()
    running.stop()  # idempotent
    assert refused(port)
    session.close()
    with pytest.raises(RuntimeError):
        _ = running.port
    with pytest.raises(RuntimeError):
        _ = running.url


def test_feed_server_refuses_a_second_start() -> None:
    with FeedServer(hello) as running, pytest.raises(RuntimeError):
        running.start()


def test_stop_lets_an_in_flight_request_finish() -> None:
    entered, release = threading.Event(), threading.Event()

    def slow(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        entered.set()
        release.wait(10)
        return hello(environ, start_response)

    running = FeedServer(slow).start()
    port = running.port
    with ThreadPoolExecutor(max_workers=2) as pool:
        in_flight = pool.submit(requests.get, running.url + "slow", timeout=10)
        assert entered.wait(10)
        stopping = pool.submit(running.stop)
        # Wait (bounded) until the listener is closed: new connections are refused.
        deadline = time.monotonic() + 10
        while not refused(port):
            assert time.monotonic() < deadline, "listener still open"
        assert not stopping.done()  # still draining the request in flight
        release.set()
        response = in_flight.result(timeout=10)
        stopping.result(timeout=10)
    assert response.status_code == 200
    assert response.text == "hello /slow"


def test_feed_server_resolves_a_host_name() -> None:
    with FeedServer(hello, host="localhost") as running:
        assert running.host in ("127.0.0.1", "::1")
        assert requests.get(running.url + "h", timeout=10).text == "hello /h"
