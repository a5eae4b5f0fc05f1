"""The HTTP side: serve the published files, ``/healthz`` and ``/metrics``.

Why: feed readers and people fetch the generated feeds, ``feeds.opml`` and
``index.html`` from ``output_dir``.  Readers poll often, so every file gets a
strong ETag (hash of its bytes), ``Last-Modified``, conditional 304 answers and
gzip; since ``write_atomic`` replaces files by rename and leaves unchanged
files alone, validators stay stable between builds.  The WSGI app is served by
waitress (a production server) in a background thread for ``aggregator run``
and the tests (``FeedServer``), or in the foreground for ``aggregator serve``.

Layout: the files of ``output_dir`` live at the *path* of ``site_url`` (site
``http://x/feeds/`` -> ``/feeds/categories/…/rss.xml``); anything outside that
prefix is 404.  ``/healthz`` and ``/metrics`` are always at the server root.
``/healthz`` answers 200 while the status is ``ok`` or ``degraded`` (the site
still serves, some sources fail) and 503 only when it is ``down`` (every
enabled source is failing) or the health callable itself failed, so a load
balancer takes the instance out only when it has nothing fresh to serve.

Security: only GET and HEAD; request paths are decoded as UTF-8 and refused
(404) when a segment is empty, starts with ``.`` (``..``, hidden and temp files)
or holds a NUL or backslash; the resolved file must stay inside the resolved
``output_dir`` (no symlink escapes) and be a regular file.

What this module must NOT do: write, delete or generate files in
``output_dir``, touch the store or the network beyond answering requests, or
decide a source's health (``aggregator.service.health.health_report``, re-exported
here, only summarizes the statuses it is given; the scheduler owns polling).
"""

from __future__ import annotations

import gzip
import hashlib
import html
import json
import logging
import mimetypes
import os
import socket
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import formatdate
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import quote, unquote, urlsplit
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import waitress
from waitress.server import create_server

from aggregator.httpsemantics import accepts_gzip, is_not_modified
from aggregator.service.health import health_report, iso_utc
from aggregator.service.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from aggregator.service.metrics import Metrics

__all__ = [
    "CACHE_CONTROL",
    "FeedServer",
    "content_type_for",
    "health_report",
    "make_app",
    "serve_forever",
]

log = logging.getLogger(__name__)

FEED_MAX_AGE = 300  # seconds readers and proxies may reuse a file without asking again
CACHE_CONTROL = f"public, max-age={FEED_MAX_AGE}"
HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"
INDEX_FILENAME = "index.html"  # same name as aggregator.publish.index_page.INDEX_FILENAME
SERVER_IDENT = "aggregator"

MIN_GZIP_BYTES = 256  # smaller bodies gain nothing from compression
MAX_INLINE_BYTES = 8 * 1024 * 1024  # larger files are streamed, hashed in chunks, never gzipped
CACHE_ENTRIES = 512  # files whose version (digest, gzip, bytes) is kept in memory
CACHE_BYTES = 64 * 1024 * 1024  # at most this many bytes of them
MAX_LISTING_FILES = 1000

_UTF8 = "; charset=utf-8"
_ALLOW = "GET, HEAD"
_CHUNK = 64 * 1024

_Headers = list[tuple[str, str]]


# --------------------------------------------------------------------------- content types


def content_type_for(name: str) -> str:
    """The Content-Type of a served file name (feeds and OPML get their registered types)."""
    lower = name.lower()
    if lower.endswith("rss.xml"):  # rss.xml and *.rss.xml
        return "application/rss+xml" + _UTF8
    if lower.endswith("atom.xml"):
        return "application/atom+xml" + _UTF8
    if lower.endswith(".opml"):
        return "text/x-opml" + _UTF8
    if lower.endswith((".html", ".htm")):
        return "text/html" + _UTF8
    guessed, encoding = mimetypes.guess_type(lower, strict=False)
    if guessed is None or encoding is not None:  # x.xml.gz is a gzip file, not XML
        return "application/octet-stream"
    if _is_text(guessed):
        return guessed + _UTF8
    return guessed


def _is_text(media_type: str) -> bool:
    base = media_type.split(";", 1)[0].strip().lower()
    return (
        base.startswith("text/")
        or base.endswith(("+xml", "/xml", "+json", "/json"))
        or base in ("application/javascript", "image/svg+xml")
    )


# --------------------------------------------------------------------------- file versions


@dataclass(frozen=True, slots=True)
class _Version:
    """What is remembered about one version of one file (an inode at an mtime and size)."""

    digest: str  # hex, used in the ETag
    gz: bytes | None  # gzip of the bytes, when compressible and small enough
    body: bytes | None  # the bytes themselves, when small enough to keep in memory
    content_type: str
    mtime: float | None  # None: no Last-Modified (a generated page)
    last_modified: str | None  # HTTP date of ``mtime``, formatted once

    @property
    def cost(self) -> int:
        return len(self.body or b"") + len(self.gz or b"") + 256


def _stat_key(info: os.stat_result) -> tuple[int, int, int, int]:
    return (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)


class _VersionCache:
    """LRU of served files by path: the version last read there, under its stat key.

    A request for a file that is still the same inode at the same mtime and size
    is answered from memory (one ``stat``, no open, read, hash or gzip), which is
    what lets one Python process answer thousands of feed polls a second.  The
    key comes from ``fstat`` of the descriptor the bytes were read from, so a
    version always describes those bytes, even while ``write_atomic`` renames a
    new version into place; a path whose stat differs is read again.  Bounded by
    entries and by the bytes held.
    """

    def __init__(self, entries: int = CACHE_ENTRIES, max_bytes: int = CACHE_BYTES) -> None:
        self._entries = entries
        self._max_bytes = max_bytes
        self._bytes = 0
        self._lock = threading.Lock()
        self._items: OrderedDict[str, tuple[tuple[int, int, int, int], _Version]] = (
            OrderedDict())

    def get(self, path: str, key: tuple[int, int, int, int]) -> _Version | None:
        with self._lock:
            item = self._items.get(path)
            if item is None or item[0] != key:
                return None
            self._items.move_to_end(path)
            return item[1]

    def put(self, path: str, key: tuple[int, int, int, int], version: _Version) -> None:
        with self._lock:
            old = self._items.pop(path, None)
            if old is not None:
                self._bytes -= old[1].cost
            self._items[path] = (key, version)
            self._bytes += version.cost
            while self._items and (len(self._items) > self._entries
                                   or self._bytes > self._max_bytes):
                _path, (_key, evicted) = self._items.popitem(last=False)
                self._bytes -= evicted.cost


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)  # mtime=0: same bytes, same gzip


# --------------------------------------------------------------------------- responses


def _simple(
    start_response: StartResponse,
    status: str,
    body: bytes,
    content_type: str = "text/plain" + _UTF8,
    extra: _Headers | None = None,
    head: bool = False,
) -> Iterable[bytes]:
    headers: _Headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
        ("X-Content-Type-Options", "nosniff"),
        *(extra or []),
    ]
    start_response(status, headers)
    return [] if head else [body]


def _not_found(start_response: StartResponse, head: bool) -> Iterable[bytes]:
    return _simple(start_response, "404 Not Found", b"not found\n", head=head)


# --------------------------------------------------------------------------- the app


class _App:
    """The WSGI callable ``make_app`` returns."""

    def __init__(
        self,
        output_dir: Path,
        site_url: str,
        health: Callable[[], Mapping[str, object]] | None,
        metrics: Metrics | None,
    ) -> None:
        self.output_dir = Path(output_dir)
        prefix = unquote(urlsplit(site_url.strip()).path or "/")
        if not prefix.startswith("/"):
            prefix = "/" + prefix
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.health = health
        self.metrics = metrics
        self.cache = _VersionCache()

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        head = method == "HEAD"
        if method not in ("GET", "HEAD"):
            return _simple(
                start_response, "405 Method Not Allowed", b"method not allowed\n",
                extra=[("Allow", _ALLOW)],
            )
        raw = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        try:
            # PEP 3333: the server un-percent-encoded the path and decoded it as latin-1.
            path = raw.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return _not_found(start_response, head)
        if not path.startswith("/"):
            path = "/" + path
        if path == HEALTH_PATH:
            return self._health(start_response, head)
        if path == METRICS_PATH:
            return self._metrics(start_response, head)
        if self.prefix != "/" and path == self.prefix[:-1]:
            # Relative links in index.html only work below the trailing slash.
            location = quote(self.prefix)
            query = environ.get("QUERY_STRING")
            if query:
                location += "?" + query
            return _simple(
                start_response, "301 Moved Permanently", b"moved\n",
                extra=[("Location", location)], head=head,
            )
        if not path.startswith(self.prefix):
            return _not_found(start_response, head)
        try:
            return self._static(environ, start_response, path[len(self.prefix):], head)
        except OSError as exc:
            log.warning("cannot serve %r: %s", path, exc)
            return _not_found(start_response, head)

    # ---------------------------------------------------------------- static files

    def _candidate(self, relative: str) -> str | None:
        """The path ``relative`` names below ``output_dir`` (a directory: its index.html),
        or None when a segment is refused; not resolved, so maybe a symlink or missing."""
        segments = relative.split("/")
        if relative == "" or relative.endswith("/"):
            segments[-1] = INDEX_FILENAME
        for segment in segments:
            if not segment or segment.startswith(".") or "\x00" in segment or "\\" in segment:
                return None
        return os.path.join(self.output_dir, *segments)

    def _static(
        self, environ: WSGIEnvironment, start_response: StartResponse, relative: str, head: bool
    ) -> Iterable[bytes]:
        candidate = self._candidate(relative)
        if candidate is None:
            return _not_found(start_response, head)
        try:
            version = self.cache.get(candidate, _stat_key(os.stat(candidate)))
        except OSError:
            version = None
        if version is not None and version.body is not None:
            # the same file as when it was last read, resolved and checked below
            return self._respond(environ, start_response, version.body, version, head)
        target = self._resolve(candidate)
        if target is None:
            if relative in ("", "/") and self.output_dir.is_dir():
                return self._listing_response(environ, start_response, head)
            return _not_found(start_response, head)
        handle = open(target, "rb")  # noqa: SIM115 - closed here, or by the WSGI server
        try:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                handle.close()
                return _not_found(start_response, head)
            body: bytes | IO[bytes]
            if info.st_size <= MAX_INLINE_BYTES:
                body = handle.read()
                handle.close()
                version = self._version(body, target.name, info)
            else:
                version = self._version(handle, target.name, info)
                body = handle  # streamed by _respond, which closes it
            self.cache.put(candidate, _stat_key(info), version)
        except BaseException:
            handle.close()
            raise
        return self._respond(environ, start_response, body, version, head)

    def _resolve(self, candidate: str) -> Path | None:
        """The regular file ``candidate`` is, if it stays inside the resolved ``output_dir``
        (no symlink escapes)."""
        root = self.output_dir.resolve()
        try:
            resolved = Path(candidate).resolve(strict=True)
        except (OSError, RuntimeError):  # missing, or a symlink loop
            return None
        if not resolved.is_relative_to(root) or not resolved.is_file():
            return None
        return resolved

    @staticmethod
    def _version(data: bytes | IO[bytes], name: str, info: os.stat_result) -> _Version:
        """Digest (and gzip) of a file's bytes: ``data``, or an open file hashed in chunks
        (too large to keep or compress, and left at offset 0)."""
        content_type = content_type_for(name)
        last_modified = formatdate(info.st_mtime, usegmt=True)
        if not isinstance(data, bytes):
            hasher = hashlib.blake2b(digest_size=16)
            while chunk := data.read(_CHUNK):
                hasher.update(chunk)
            data.seek(0)
            return _Version(hasher.hexdigest(), None, None, content_type, info.st_mtime,
                            last_modified)
        small = not _is_text(content_type) or len(data) < MIN_GZIP_BYTES
        return _Version(_digest(data), None if small else _gzip(data), data, content_type,
                        info.st_mtime, last_modified)

    def _listing_response(self, environ: WSGIEnvironment, start_response: StartResponse,
                          head: bool) -> Iterable[bytes]:
        listing = self._listing()
        version = _Version(_digest(listing), None, listing, "text/html" + _UTF8, None, None)
        return self._respond(environ, start_response, listing, version, head,
                             cache_control="no-cache")

    def _respond(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        body: bytes | IO[bytes],
        version: _Version,
        head: bool,
        *,
        cache_control: str = CACHE_CONTROL,
    ) -> Iterable[bytes]:
        gz = version.gz
        use_gzip = gz is not None and accepts_gzip(environ.get("HTTP_ACCEPT_ENCODING", ""))
        etag = f'"{version.digest}-gz"' if use_gzip else f'"{version.digest}"'
        headers: _Headers = [("ETag", etag), ("Cache-Control", cache_control)]
        if version.last_modified is not None:
            headers.append(("Last-Modified", version.last_modified))
        if _is_text(version.content_type):
            headers.append(("Vary", "Accept-Encoding"))
        if is_not_modified(environ.get("HTTP_IF_NONE_MATCH"),
                           environ.get("HTTP_IF_MODIFIED_SINCE"), etag, version.mtime):
            if not isinstance(body, bytes):
                body.close()
            start_response("304 Not Modified", headers)
            return []
        headers += [("Content-Type", version.content_type),
                    ("X-Content-Type-Options", "nosniff")]
        if use_gzip:
            assert gz is not None
            if not isinstance(body, bytes):
                body.close()
            headers += [("Content-Encoding", "gzip"), ("Content-Length", str(len(gz)))]
            start_response("200 OK", headers)
            return [] if head else [gz]
        if isinstance(body, bytes):
            headers.append(("Content-Length", str(len(body))))
            start_response("200 OK", headers)
            return [] if head else [body]
        headers.append(("Content-Length", str(os.fstat(body.fileno()).st_size)))
        start_response("200 OK", headers)
        if head:
            body.close()
            return []
        wrapper = environ.get("wsgi.file_wrapper")
        if wrapper is not None:
            return wrapper(body, _CHUNK)  # type: ignore[no-any-return]
        return _iter_file(body)

    def _listing(self) -> bytes:
        """A minimal page linking every published file, for when there is no index.html."""
        root = self.output_dir.resolve()
        found: list[str] = []
        for directory, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            base = Path(directory).relative_to(root)
            for name in sorted(filenames):
                if not name.startswith("."):
                    found.append((base / name).as_posix())
            if len(found) >= MAX_LISTING_FILES:
                break
        items = "\n".join(
            f'<li><a href="{html.escape(quote(name))}">{html.escape(name)}</a></li>'
            for name in found[:MAX_LISTING_FILES]
        )
        page = (
            '<!DOCTYPE html>\n<html lang="zh-CN">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            "<title>Feeds</title>\n</head>\n<body>\n<h1>Feeds</h1>\n"
            f"<ul>\n{items}\n</ul>\n</body>\n</html>\n"
        )
        return page.encode("utf-8")

    # ---------------------------------------------------------------- health and metrics

    def _health(self, start_response: StartResponse, head: bool) -> Iterable[bytes]:
        report: Mapping[str, object]
        if self.health is None:
            report = {"status": "ok"}
        else:
            try:
                report = self.health()
            except Exception as exc:
                log.exception("health check failed")
                report = {"status": "down", "error": f"{type(exc).__name__}: {exc}"}
        status = report.get("status")
        code = "200 OK" if status in ("ok", "degraded") else "503 Service Unavailable"
        body = json.dumps(report, ensure_ascii=False, default=_json_default, indent=2)
        return _simple(
            start_response, code, body.encode("utf-8") + b"\n", "application/json", head=head
        )

    def _metrics(self, start_response: StartResponse, head: bool) -> Iterable[bytes]:
        if self.metrics is None:
            return _not_found(start_response, head)
        return _simple(
            start_response, "200 OK", self.metrics.exposition(), METRICS_CONTENT_TYPE, head=head
        )


def _iter_file(handle: IO[bytes]) -> Iterable[bytes]:
    with handle:
        while chunk := handle.read(_CHUNK):
            yield chunk


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def make_app(
    output_dir: Path,
    site_url: str,
    *,
    health: Callable[[], Mapping[str, object]] | None = None,
    metrics: Metrics | None = None,
) -> WSGIApplication:
    """The WSGI app serving ``output_dir`` at ``site_url``'s path, plus /healthz and /metrics.

    ``health`` is called on every ``/healthz`` request and should return
    ``health_report(...)`` (any JSON-able mapping with a ``status`` works);
    without it ``/healthz`` answers ``{"status": "ok"}``.  Without ``metrics``,
    ``/metrics`` is 404.
    """
    return _App(Path(output_dir), site_url, health, metrics)


# --------------------------------------------------------------------------- servers


class FeedServer:
    """waitress serving ``app`` in a background thread; ``port=0`` picks a free port.

    ``with FeedServer(app) as server: requests.get(server.url + "feeds.opml")``.
    """

    def __init__(
        self, app: WSGIApplication, host: str = "127.0.0.1", port: int = 0, threads: int = 8
    ) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._threads = threads
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> FeedServer:
        """Bind and start serving; returns once the socket listens (requests can connect)."""
        if self._server is not None:
            raise RuntimeError("FeedServer already started")
        # One address only (waitress would listen on each address "localhost" resolves to).
        *_, address = socket.getaddrinfo(
            self._host, self._port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )[0]
        host = str(address[0])
        server = create_server(
            self._app, host=host, port=self._port, threads=self._threads,
            ident=SERVER_IDENT, clear_untrusted_proxy_headers=True,
        )
        self._server = server
        self._thread = threading.Thread(
            target=server.run, name=f"feed-server-{server.effective_port}", daemon=True
        )
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FeedServer not started")
        return int(self._server.effective_port)

    @property
    def host(self) -> str:
        if self._server is None:
            raise RuntimeError("FeedServer not started")
        return str(self._server.effective_host)

    @property
    def url(self) -> str:
        """``http://host:port/`` (IPv6 hosts bracketed)."""
        host = self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish (up to ``timeout``), then close all.

        Idempotent.  Every socket is closed from inside the event loop's own
        thread (waitress is not thread-safe otherwise); the loop ends as soon as
        its socket map is empty.
        """
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._server = None
        self._thread = None
        from waitress import wasyncore

        srv: Any = server

        def in_loop(action: Callable[[], None]) -> None:
            if not thread.is_alive():
                action()
                return
            done = threading.Event()

            def thunk() -> None:
                try:
                    action()
                finally:
                    done.set()

            srv.trigger.pull_trigger(thunk)
            if not done.wait(timeout):
                log.warning("feed server event loop did not respond within %.0f s", timeout)

        def close_everything() -> None:
            # A worker thread that outlived the drain must not write its wake-up
            # byte into a closed (and maybe reused) file descriptor.
            srv.trigger.trigger = -1
            wasyncore.close_all(srv._map, ignore_all=True)

        in_loop(lambda: wasyncore.dispatcher.close(srv))  # the listening socket only
        srv.task_dispatcher.shutdown(timeout=timeout)  # workers finish their current request
        in_loop(close_everything)
        thread.join(timeout)
        if thread.is_alive():
            log.warning("feed server thread did not stop within %.0f s", timeout)

    def __enter__(self) -> FeedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def serve_forever(app: WSGIApplication, host: str, port: int) -> None:
    """Serve ``app`` with waitress in the foreground until interrupted (``aggregator serve``)."""
    waitress.serve(app, host=host, port=port, ident=SERVER_IDENT,
                   clear_untrusted_proxy_headers=True)
