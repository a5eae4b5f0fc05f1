"""The access log and the listening line: ``aggregator serve`` as a real process, and
``AccessLog`` in a real in-process ``FeedServer``.

Lines are waited for in the process's stderr (``LogWatcher``, bounded), never slept
for; what the process writes last is read after it exited on SIGTERM.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from wsgiref.types import StartResponse, WSGIEnvironment

import pytest
import requests
from test_daemon import LogWatcher

from aggregator.service.http import FeedServer, make_app
from aggregator.service.http.access import AccessLog
from aggregator.service.http.static import MAX_INLINE_BYTES
from aggregator.service.logs import ACCESS_LOGGER, AccessEntry

OPML = ("<?xml version='1.0' encoding='UTF-8'?>\n<opml version=\"2.0\"><body>"
        + "".join(f'<outline text="新闻 {i}" xmlUrl="http://x.test/{i}.xml"/>'
                  for i in range(40))
        + "</body></opml>\n").encode()
AGENT = 'reader/1.0 "quoted" \\ back'
LISTENING = r"serving \S+ at http://localhost:8080/ \(listening on (http://127\.0\.0\.1:\d+/)\)"


@pytest.fixture()
def config(tmp_path: Path) -> Path:
    (tmp_path / "public").mkdir()
    (tmp_path / "public" / "feeds.opml").write_bytes(OPML)
    path = tmp_path / "aggregator.yaml"
    path.write_text("database_url: sqlite:///data/aggregator.db\noutput_dir: public\n"
                    "site_url: http://localhost:8080/\nsources: []\n", encoding="utf-8")
    return path


@pytest.fixture()
def serve(config: Path) -> Iterator[object]:
    started: list[subprocess.Popen[str]] = []

    def start(*options: str) -> tuple[subprocess.Popen[str], LogWatcher]:
        process = subprocess.Popen(
            [sys.executable, "-m", "aggregator", *options, "--config", str(config), "serve",
             "--port", "0"],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        started.append(process)
        return process, LogWatcher(process)

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def stop(process: subprocess.Popen[str], log: LogWatcher) -> list[str]:
    """SIGTERM, a clean exit, and every line the process wrote."""
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    log.wait_for(r"server stopped")
    return log.lines


def requests_for_each_status(url: str) -> dict[str, requests.Response]:
    """A 200 (identity and gzip), a 304 and a 404, with a referer and an agent."""
    headers = {"User-Agent": AGENT, "Referer": "http://r.test/a b"}
    plain = requests.get(url + "feeds.opml", headers={**headers, "Accept-Encoding": "identity"},
                         timeout=10)
    gz = requests.get(url + "feeds.opml?x=1", headers=headers, stream=True, timeout=10)
    gz_bytes = gz.raw.read()  # as sent, still compressed
    gz.close()
    assert gz.headers["Content-Encoding"] == "gzip" and len(gz_bytes) < len(OPML)
    gz._content = gz_bytes  # type: ignore[attr-defined]
    cached = requests.get(url + "feeds.opml", timeout=10,
                          headers={**headers, "Accept-Encoding": "identity",
                                   "If-None-Match": plain.headers["ETag"]})
    missing = requests.get(url + "nope/新闻", headers=headers, timeout=10)
    assert (plain.status_code, gz.status_code, cached.status_code, missing.status_code) == (
        200, 200, 304, 404)
    return {"plain": plain, "gzip": gz, "cached": cached, "missing": missing}


COMBINED = re.compile(
    r'^127\.0\.0\.1 - - \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] '
    r'"(?P<request>[^"\\]*(?:\\.[^"\\]*)*)" (?P<status>\d{3}) (?P<bytes>\d+|-) '
    r'"(?P<referer>[^"\\]*(?:\\.[^"\\]*)*)" "(?P<agent>[^"\\]*(?:\\.[^"\\]*)*)" '
    r"(?P<micros>\d+)$")


def test_serve_logs_where_it_listens_and_one_combined_line_a_request(serve: object) -> None:
    process, log = serve("-v")  # type: ignore[operator]
    url = log.wait_for(LISTENING).group(1)
    responses = requests_for_each_status(url)
    last = requests.get(url + "feeds.opml", headers={"User-Agent": "last"}, timeout=10)
    assert last.status_code == 200
    lines = stop(process, log)

    access = [m for line in lines if (m := COMBINED.match(line))]
    assert [(m["request"], m["status"], m["bytes"]) for m in access] == [
        ("GET /feeds.opml HTTP/1.1", "200", str(len(OPML))),
        ("GET /feeds.opml?x=1 HTTP/1.1", "200", str(len(responses["gzip"].content))),
        ("GET /feeds.opml HTTP/1.1", "304", "-"),  # Apache's %b: no body is "-"
        # the request target as received (percent-encoded by the client)
        ("GET /nope/%E6%96%B0%E9%97%BB HTTP/1.1", "404", str(len(responses["missing"].content))),
        # the last request before SIGTERM: the queue is drained at exit
        ("GET /feeds.opml HTTP/1.1", "200", last.headers["Content-Length"]),
    ]
    assert access[0]["agent"] == 'reader/1.0 \\"quoted\\" \\\\ back'
    assert access[0]["referer"] == "http://r.test/a b"
    assert access[-1]["agent"] == "last" and access[-1]["referer"] == "-"
    assert all(int(m["micros"]) > 0 for m in access)
    # the other lines keep their key=value form
    assert any(" level=INFO logger=aggregator.service.http.server server stopped" in line
               for line in lines)


def test_serve_json_access_lines_carry_fields(serve: object) -> None:
    process, log = serve("-v", "--log-format", "json")  # type: ignore[operator]
    url = json.loads(log.wait_for(r'"message": "serving .*listening on').string)["message"]
    url = re.search(r"listening on (http://\S+/)\)", url).group(1)  # type: ignore[union-attr]
    responses = requests_for_each_status(url)
    entries = [json.loads(line) for line in stop(process, log)]
    access = [e for e in entries if e["logger"] == ACCESS_LOGGER]
    assert [(e["method"], e["path"], e["status"], e["bytes"]) for e in access] == [
        ("GET", "/feeds.opml", 200, len(OPML)),
        ("GET", "/feeds.opml?x=1", 200, len(responses["gzip"].content)),
        ("GET", "/feeds.opml", 304, 0),
        ("GET", "/nope/%E6%96%B0%E9%97%BB", 404, len(responses["missing"].content)),
    ]
    first = access[0]
    assert first["level"] == "info" and first["remote"] == "127.0.0.1"
    assert first["protocol"] == "HTTP/1.1"
    assert first["user_agent"] == AGENT and first["referer"] == "http://r.test/a b"
    assert isinstance(first["duration_ms"], float) and first["duration_ms"] > 0
    assert first["message"] == f"GET /feeds.opml 200 {len(OPML)}"


def test_serve_at_the_default_level_says_where_but_logs_no_requests(serve: object) -> None:
    process, log = serve()  # type: ignore[operator]
    url = log.wait_for(LISTENING).group(1)
    requests_for_each_status(url)
    lines = stop(process, log)  # everything queued would have been written by now
    assert not [line for line in lines if "feeds.opml" in line or "HTTP/1.1" in line]
    assert any("level=INFO" in line for line in lines)


# --------------------------------------------------------------------------- in process


class Collect(logging.Handler):
    """Hands every record to the test through a queue (waited on with a timeout)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.put(record)

    def entry(self) -> AccessEntry:
        entry = self.records.get(timeout=10).access  # type: ignore[attr-defined]
        assert isinstance(entry, AccessEntry)
        return entry


@pytest.fixture()
def access_log() -> Iterator[Collect]:
    """The access logger on, as ``logs.configure(access_log=True)`` sets it, into a queue."""
    logger = logging.getLogger(ACCESS_LOGGER)
    saved = (logger.level, logger.propagate, logger.handlers[:])
    handler = Collect()
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.handlers[:] = [handler]
    yield handler
    logger.level, logger.propagate, logger.handlers[:] = saved  # type: ignore[misc]


def test_a_file_the_server_streams_is_logged_with_its_length(
    tmp_path: Path, access_log: Collect
) -> None:
    big = b"\x00\x01" * (MAX_INLINE_BYTES // 2 + 1)  # streamed by waitress from the file
    (tmp_path / "big.bin").write_bytes(big)
    with FeedServer(make_app(tmp_path, "http://127.0.0.1/")) as running:
        response = requests.get(running.url + "big.bin", timeout=30)
        assert response.status_code == 200 and len(response.content) == len(big)
        entry = access_log.entry()
        assert (entry.method, entry.uri, entry.status, entry.bytes) == (
            "GET", "/big.bin", 200, len(big))
        head = requests.head(running.url + "big.bin", timeout=10)
        assert head.status_code == 200
        assert access_log.entry().bytes == 0  # HEAD sends no body


def test_an_app_that_fails_is_logged_as_500(access_log: Collect) -> None:
    def broken(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        raise RuntimeError("bug")

    with FeedServer(broken) as running:
        assert requests.get(running.url + "x", timeout=10).status_code == 500
        entry = access_log.entry()
    assert (entry.uri, entry.status, entry.bytes) == ("/x", 500, 0)


def test_off_means_the_app_is_called_as_is() -> None:
    body = [b"hello"]

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [])
        return body

    logger = logging.getLogger("test.access.off")
    logger.setLevel(logging.WARNING)
    assert AccessLog(app, logger)({}, lambda status, headers, exc_info=None: None) is body
    logger.setLevel(logging.INFO)
    wrapped = AccessLog(app, logger)({}, lambda status, headers, exc_info=None: None)
    assert wrapped is not body and list(wrapped) == body
