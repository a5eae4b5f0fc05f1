"""The access log: one record a request, for any WSGI app (``AccessLog``).

Why: an operator wants to see who fetches what, with which answer, how big and how
fast — for ``aggregator serve`` and the daemon's server alike (both wrap their app
in ``AccessLog``).

What it owns: measuring a request (status, body bytes sent, duration from the
app's call until the response was handed to the server) and handing one
``logs.AccessEntry`` to the ``aggregator.access`` logger.  When that logger is not
enabled for INFO (the default) the app is called as is: nothing is timed or
wrapped.  Records skip ``findCaller`` and go straight to the logger's handlers —
the CLI routes them to a queue (``service.logs.configure``), so the request
thread does no I/O for them.

What this module must NOT do: format or write lines (``service.logs`` does), or
change a response.  A body the server streams from a file itself
(``wsgi.file_wrapper``) is logged when it is handed over, with its
``Content-Length``, so that the server keeps streaming it without a worker thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from aggregator.service.logs import ACCESS_LOGGER, AccessEntry

__all__ = ["AccessLog"]


class AccessLog:
    """WSGI middleware logging every request ``app`` answers to ``aggregator.access``."""

    def __init__(self, app: WSGIApplication, logger: logging.Logger | None = None) -> None:
        self.app = app
        self.logger = logger or logging.getLogger(ACCESS_LOGGER)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if not self.logger.isEnabledFor(logging.INFO):
            return self.app(environ, start_response)
        request = _Request(self.logger, environ)

        def recording(status: str, headers: list[tuple[str, str]],
                      exc_info: Any = None) -> Callable[[bytes], object]:
            request.status = status
            request.headers = headers
            write = start_response(status, headers, exc_info)

            def counting_write(data: bytes) -> object:
                request.sent += len(data)
                return write(data)

            return counting_write

        try:
            body = self.app(environ, recording)
        except BaseException:
            request.status = "500 Internal Server Error"  # what the server answers instead
            request.done()
            raise
        wrapper = environ.get("wsgi.file_wrapper")
        if isinstance(wrapper, type) and isinstance(body, wrapper):
            request.sent += request.content_length()
            request.done()
            return body
        return _Body(body, request)


class _Request:
    """What is measured of one request while it is answered."""

    __slots__ = ("environ", "headers", "logged", "logger", "sent", "start", "started",
                 "status")

    def __init__(self, logger: logging.Logger, environ: WSGIEnvironment) -> None:
        self.logger = logger
        self.environ = environ
        self.started = time.time()
        self.start = time.perf_counter()
        self.status = "500 Internal Server Error"
        self.headers: list[tuple[str, str]] = []
        self.sent = 0
        self.logged = False

    def content_length(self) -> int:
        for name, value in self.headers:
            if name.lower() == "content-length" and value.isdigit():
                return int(value)
        return 0

    def done(self) -> None:
        if self.logged:
            return
        self.logged = True
        duration = time.perf_counter() - self.start
        environ = self.environ
        uri = environ.get("REQUEST_URI")
        if not uri:
            uri = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
            if environ.get("QUERY_STRING"):
                uri += "?" + environ["QUERY_STRING"]
        try:
            status = int(self.status[:3])
        except ValueError:
            status = 0
        entry = AccessEntry(
            remote=environ.get("REMOTE_ADDR", ""),
            method=environ.get("REQUEST_METHOD", ""),
            uri=uri,
            protocol=environ.get("SERVER_PROTOCOL", ""),
            status=status,
            bytes=self.sent,
            started=self.started,
            duration=duration,
            referer=environ.get("HTTP_REFERER"),
            user_agent=environ.get("HTTP_USER_AGENT"),
        )
        record = self.logger.makeRecord(
            self.logger.name, logging.INFO, __file__, 0, "%s %s %d %d",
            (entry.method, entry.uri, entry.status, entry.bytes), None,
            extra={"access": entry},
        )
        self.logger.handle(record)


class _Body:
    """The app's body, counting the bytes the server takes; logs when closed."""

    __slots__ = ("inner", "request")

    def __init__(self, inner: Iterable[bytes], request: _Request) -> None:
        self.inner = inner
        self.request = request

    def __iter__(self) -> Iterator[bytes]:
        request = self.request
        for chunk in self.inner:
            request.sent += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self.inner, "close", None)
            if close is not None:
                close()
        finally:
            self.request.done()
