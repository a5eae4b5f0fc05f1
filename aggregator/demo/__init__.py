"""Bundled sample portals, served on loopback for the ``demo`` command and the tests.

Why: the pipeline's hard cases are the portals' habits, not the happy path — GBK bytes
behind ``encoding="gb2312"`` served as ``text/xml`` without a charset, Big5-HKSCS and cp950
bytes behind ``big5``, Atom with ``xml:base``, JSON Feed, ETag/Last-Modified revalidation and
gzip.  ``DemoPortal`` impersonates such portals over real HTTP on 127.0.0.1 (an ephemeral
port), so the demo and end-to-end tests exercise the real fetch → parse → normalize → store
path offline and deterministically.  The feed files in ``feeds/`` are fixed bytes, written
once and checked by ``tests/test_demo_portal.py``; ``demo.yaml`` is the matching config,
with ``{portal}`` standing for ``DemoPortal.base_url``.

What this module must NOT do: serve the project's own output (it is a stand-in for
third-party portals, not the aggregator's web server), listen on anything but loopback,
serve files from outside its ``feeds/`` folder, or import the pipeline's or the service's
modules — the stages must never know they are talking to a demo.  The HTTP rules it shares
with the aggregator's own server (conditional requests, Accept-Encoding) come from the
bottom-layer ``aggregator.httpsemantics``, never from ``aggregator.service``.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import socket
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from importlib.resources.abc import Traversable
from types import MappingProxyType, TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

from aggregator.httpsemantics import accepts_gzip, is_not_modified

__all__ = [
    "CONTENT_TYPES",
    "LAST_MODIFIED",
    "DemoPortal",
    "Hit",
    "content_type_for",
    "demo_config_template",
    "demo_config_text",
    "feed_bytes",
    "feed_names",
]

PORTAL_PLACEHOLDER = "{portal}"

# What each bundled file is served as, copying what the real portals send: OFweek's
# ``text/xml`` without a charset (the document's own gb2312 declaration is all a client
# gets), Big5 portals' ``charset=big5`` whatever the bytes really are.
CONTENT_TYPES: Mapping[str, str] = MappingProxyType({
    "ofweek-news.xml": "text/xml",
    "hk-news-big5.xml": "application/rss+xml; charset=big5",
    "tw-news-cp950.xml": "application/rss+xml; charset=big5",
    "juejin-atom.xml": "application/atom+xml; charset=utf-8",
    "oschina.json": "application/feed+json",
})
_BY_SUFFIX: Mapping[str, str] = MappingProxyType({
    ".xml": "text/xml",
    ".rss": "application/rss+xml",
    ".atom": "application/atom+xml",
    ".json": "application/feed+json",
})
# The bundled files never change, so they share one fixed, deterministic Last-Modified.
LAST_MODIFIED = "Thu, 14 Oct 2021 08:00:00 GMT"
_FEED_SUFFIXES = (".xml", ".json", ".rss", ".atom")


def _feeds_dir() -> Traversable:
    return files("aggregator.demo") / "feeds"


def feed_names() -> list[str]:
    """The bundled feed files' names, sorted (e.g. ``"ofweek-news.xml"``)."""
    return sorted(entry.name for entry in _feeds_dir().iterdir()
                  if entry.is_file() and entry.name.endswith(_FEED_SUFFIXES))


def feed_bytes(name: str) -> bytes:
    """The exact bytes of one bundled feed; ``KeyError`` for an unknown name."""
    if name not in feed_names():
        raise KeyError(name)
    return (_feeds_dir() / name).read_bytes()


def content_type_for(name: str) -> str:
    """The Content-Type the portal sends for ``name``."""
    if name in CONTENT_TYPES:
        return CONTENT_TYPES[name]
    suffix = name[name.rfind("."):] if "." in name else ""
    return _BY_SUFFIX.get(suffix, "application/octet-stream")


def demo_config_template() -> str:
    """``demo.yaml`` as shipped, with the literal ``{portal}`` placeholders."""
    return (files("aggregator.demo") / "demo.yaml").read_text(encoding="utf-8")


def demo_config_text(base_url: str) -> str:
    """``demo.yaml`` with ``{portal}`` replaced by a running portal's ``base_url``."""
    if not base_url.endswith("/"):
        raise ValueError(f"base_url must end with '/': {base_url!r}")
    return demo_config_template().replace(PORTAL_PLACEHOLDER, base_url)


@dataclass(frozen=True, slots=True)
class Hit:
    """One request the portal answered (for tests that check what a client sent)."""

    method: str
    path: str
    status: int
    headers: Mapping[str, str]  # request headers, keys lower-case


@dataclass(frozen=True, slots=True)
class _Document:
    content: bytes
    gzipped: bytes
    content_type: str
    etag: str
    last_modified: str

    @classmethod
    def of(cls, content: bytes, content_type: str, last_modified: str) -> _Document:
        return cls(
            content=content,
            gzipped=gzip.compress(content, mtime=0),
            content_type=content_type,
            etag='"' + hashlib.sha1(content).hexdigest() + '"',
            last_modified=last_modified,
        )


class DemoPortal:
    """Serves the bundled feeds over HTTP on 127.0.0.1, like the portals they imitate.

    Use as a context manager (or ``start()`` / ``close()``)::

        with DemoPortal() as portal:
            requests.get(portal.url("ofweek-news.xml"))

    ``GET``/``HEAD`` ``/<name>`` answers with the file's bytes, its ``CONTENT_TYPES`` entry,
    a strong ``ETag`` (quoted SHA-1 of the bytes) and ``Last-Modified``; ``If-None-Match``
    (which wins when both are sent) or ``If-Modified-Since`` give ``304``; the body is
    gzipped when ``Accept-Encoding`` allows it; any other path is ``404``.  Query strings
    are ignored, as RSSHub does.  ``set_feed`` changes or adds a document while running.
    """

    def __init__(self, port: int = 0) -> None:
        self._port = port
        self._lock = threading.Lock()
        self._documents: dict[str, _Document] = {
            name: _Document.of(feed_bytes(name), content_type_for(name), LAST_MODIFIED)
            for name in feed_names()
        }
        self._hits: list[Hit] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------

    def start(self) -> DemoPortal:
        if self._server is not None:
            raise RuntimeError("DemoPortal is already running")
        server = _Server(("127.0.0.1", self._port), _Handler, self)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                  name="demo-portal", daemon=True)
        thread.start()
        self._server, self._thread = server, thread
        return self

    def close(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> DemoPortal:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- addresses ----------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("DemoPortal is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/`` — what ``{portal}`` in demo.yaml stands for."""
        return f"http://127.0.0.1:{self.port}/"

    def url(self, name: str) -> str:
        """The URL of one served document; ``KeyError`` for a name it does not serve."""
        if name not in self._documents:
            raise KeyError(name)
        return self.base_url + name

    @property
    def names(self) -> list[str]:
        """The documents currently served, sorted."""
        with self._lock:
            return sorted(self._documents)

    # --- test hooks ---------------------------------------------------------------

    @property
    def hits(self) -> list[Hit]:
        """Every request answered so far, oldest first (a copy)."""
        with self._lock:
            return list(self._hits)

    def set_feed(self, name: str, content: bytes, content_type: str | None = None) -> None:
        """Serve ``content`` at ``/<name>`` from now on, with a new ETag and Last-Modified.

        Last-Modified has one-second resolution: a client that revalidates with
        If-Modified-Since alone may miss a change made within the same second.
        """
        if not name or "/" in name:
            raise ValueError(f"invalid document name {name!r}")
        with self._lock:
            previous = self._documents.get(name)
            kind = content_type or (previous.content_type if previous else content_type_for(name))
            now = format_datetime(datetime.now(UTC).replace(microsecond=0), usegmt=True)
            self._documents[name] = _Document.of(content, kind, now)

    # --- used by the handler ------------------------------------------------------

    def _lookup(self, name: str) -> _Document | None:
        with self._lock:
            return self._documents.get(name)

    def _record(self, hit: Hit) -> None:
        with self._lock:
            self._hits.append(hit)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 portal: DemoPortal) -> None:
        self.portal = portal
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def get_request(self) -> tuple[Any, Any]:
        conn, address = super().get_request()
        with self._connections_lock:
            self._connections.add(conn)
        return conn, address

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-response is normal for a portal; stay quiet.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """End idle keep-alive connections so a closed portal really stops answering."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "nginx"
    sys_version = ""
    timeout = 10  # seconds an idle keep-alive connection is kept

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests and demo output
        return

    def _serve(self, *, head: bool) -> None:
        name = unquote(urlsplit(self.path).path).lstrip("/")
        document = self.server.portal._lookup(name) if name else None
        if document is None:
            self._reply(404, b"404 Not Found\n", {"Content-Type": "text/plain; charset=utf-8"},
                        head=head)
            return
        validators = {"ETag": document.etag, "Last-Modified": document.last_modified,
                      "Vary": "Accept-Encoding"}
        modified_at = parsedate_to_datetime(document.last_modified).timestamp()
        if is_not_modified(self.headers.get("If-None-Match"),
                           self.headers.get("If-Modified-Since"), document.etag, modified_at):
            self._reply(304, b"", validators, head=True)
            return
        headers = {"Content-Type": document.content_type, **validators}
        body = document.content
        if accepts_gzip(self.headers.get("Accept-Encoding", "")):
            body = document.gzipped
            headers["Content-Encoding"] = "gzip"
        self._reply(200, body, headers, head=head)

    def _reply(self, status: int, body: bytes, headers: Mapping[str, str], *,
               head: bool) -> None:
        # Recorded before answering, so a client that has its response sees its hit.
        self.server.portal._record(Hit(
            method=self.command,
            path=self.path,
            status=status,
            headers=MappingProxyType({k.lower(): v for k, v in self.headers.items()}),
        ))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if status != 304:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)
