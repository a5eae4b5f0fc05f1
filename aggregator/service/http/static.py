"""The files of ``output_dir`` as HTTP responses: path safety, validators, gzip, a version cache.

Why: feed readers poll often, so every file gets a strong ETag (hash of its bytes),
``Last-Modified``, conditional 304 answers and gzip; since ``write_atomic``
replaces files by rename and leaves unchanged files alone, validators stay stable
between builds.  A file that is still the same inode at the same mtime and size is
answered from memory (``VersionCache``).

Security: a request path is refused when a segment is empty, starts with ``.``
(``..``, hidden and temp files) or holds a NUL or backslash; the resolved file
must stay inside the resolved ``output_dir`` (no symlink escapes) and be a regular
file.  Without ``index.html`` the root is a generated listing of the files.

What this module must NOT do: write, delete or generate files in ``output_dir``
(it only reads), route (``app`` decides which paths reach it), or answer errors
itself — ``StaticFiles.serve`` returns None for "not here" and the app says 404.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import mimetypes
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import IO
from urllib.parse import quote
from wsgiref.types import StartResponse, WSGIEnvironment

from aggregator.httpsemantics import accepts_gzip, is_not_modified
from aggregator.publish.paths import INDEX_FILENAME

__all__ = [
    "CACHE_CONTROL",
    "FEED_MAX_AGE",
    "MAX_INLINE_BYTES",
    "MIN_GZIP_BYTES",
    "FileVersion",
    "StaticFiles",
    "VersionCache",
    "content_type_for",
    "is_text",
    "stat_key",
]

FEED_MAX_AGE = 300  # seconds readers and proxies may reuse a file without asking again
CACHE_CONTROL = f"public, max-age={FEED_MAX_AGE}"
MIN_GZIP_BYTES = 256  # smaller bodies gain nothing from compression
MAX_INLINE_BYTES = 8 * 1024 * 1024  # larger files are streamed, hashed in chunks, never gzipped
CACHE_ENTRIES = 512  # files whose version (digest, gzip, bytes) is kept in memory
CACHE_BYTES = 64 * 1024 * 1024  # at most this many bytes of them
MAX_LISTING_FILES = 1000

_UTF8 = "; charset=utf-8"
_CHUNK = 64 * 1024

_Headers = list[tuple[str, str]]
_StatKey = tuple[int, int, int, int]


# --------------------------------------------------------------------------- content types


def content_type_for(name: str) -> str:
    """The Content-Type of a served file name (feeds and OPML get their registered types;
    ``feed.json`` is a JSON Feed, any other ``.json`` plain JSON)."""
    lower = name.lower()
    if lower.endswith("feed.json"):  # feed.json and *.feed.json
        return "application/feed+json" + _UTF8
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
    if is_text(guessed):
        return guessed + _UTF8
    return guessed


def is_text(media_type: str) -> bool:
    """Whether a media type is text-like (gets a charset, gzip and ``Vary``)."""
    base = media_type.split(";", 1)[0].strip().lower()
    return (
        base.startswith("text/")
        or base.endswith(("+xml", "/xml", "+json", "/json"))
        or base in ("application/javascript", "image/svg+xml")
    )


# --------------------------------------------------------------------------- file versions


@dataclass(frozen=True, slots=True)
class FileVersion:
    """What is remembered about one version of one file (an inode at an mtime and size)."""

    digest: str  # hex, used in the ETag
    gz: bytes | None  # gzip of the bytes, when compressible and small enough
    body: bytes | None  # the bytes themselves, when small enough to keep in memory
    content_type: str
    mtime: float | None  # None: no Last-Modified (a generated page)
    last_modified: str | None  # HTTP date of ``mtime``, formatted once

    @property
    def cost(self) -> int:
        """Bytes this version holds in memory, plus a fixed overhead."""
        return len(self.body or b"") + len(self.gz or b"") + 256


def stat_key(info: os.stat_result) -> _StatKey:
    """What identifies one version of a file: device, inode, mtime (ns) and size."""
    return (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)


class VersionCache:
    """LRU of served files by path: the version last read there, under its stat key.

    A request for a file that is still the same inode at the same mtime and size
    is answered from memory (one ``stat``, no open, read, hash or gzip), which is
    what lets one Python process answer thousands of feed polls a second.  The
    key comes from ``fstat`` of the descriptor the bytes were read from, so a
    version always describes those bytes, even while ``write_atomic`` renames a
    new version into place; a path whose stat differs is read again.  Bounded by
    entries and by the bytes held (``FileVersion.cost``).
    """

    def __init__(self, entries: int = CACHE_ENTRIES, max_bytes: int = CACHE_BYTES) -> None:
        self._entries = entries
        self._max_bytes = max_bytes
        self._bytes = 0
        self._lock = threading.Lock()
        self._items: OrderedDict[str, tuple[_StatKey, FileVersion]] = OrderedDict()

    def get(self, path: str, key: _StatKey) -> FileVersion | None:
        """The version stored for ``path`` if it was stored under ``key``; marks it recent."""
        with self._lock:
            item = self._items.get(path)
            if item is None or item[0] != key:
                return None
            self._items.move_to_end(path)
            return item[1]

    def put(self, path: str, key: _StatKey, version: FileVersion) -> None:
        """Remember ``version`` for ``path``; evicts the least recently used over budget."""
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


# --------------------------------------------------------------------------- serving


class StaticFiles:
    """Answers requests for the files below ``output_dir`` (see the module docstring)."""

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = Path(output_dir)
        self.cache = VersionCache()

    def serve(
        self, environ: WSGIEnvironment, start_response: StartResponse, relative: str, head: bool
    ) -> Iterable[bytes] | None:
        """The response for ``relative`` (below the site's path, ``""`` for its root),
        or None without calling ``start_response`` when there is no such file to serve.
        May raise OSError (a file vanishing or unreadable mid-request)."""
        candidate = self._candidate(relative)
        if candidate is None:
            return None
        try:
            version = self.cache.get(candidate, stat_key(os.stat(candidate)))
        except OSError:
            version = None
        if version is not None and version.body is not None:
            # the same file as when it was last read, resolved and checked below
            return _respond(environ, start_response, version.body, version, head)
        target = self._resolve(candidate)
        if target is None:
            if relative in ("", "/") and self.output_dir.is_dir():
                return self._listing_response(environ, start_response, head)
            return None
        handle = open(target, "rb")  # noqa: SIM115 - closed here, or by the WSGI server
        try:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                handle.close()
                return None
            body: bytes | IO[bytes]
            if info.st_size <= MAX_INLINE_BYTES:
                body = handle.read()
                handle.close()
                version = _version(body, target.name, info)
            else:
                version = _version(handle, target.name, info)
                body = handle  # streamed by _respond, which closes it
            self.cache.put(candidate, stat_key(info), version)
        except BaseException:
            handle.close()
            raise
        return _respond(environ, start_response, body, version, head)

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

    def _listing_response(self, environ: WSGIEnvironment, start_response: StartResponse,
                          head: bool) -> Iterable[bytes]:
        listing = self._listing()
        version = FileVersion(_digest(listing), None, listing, "text/html" + _UTF8, None, None)
        return _respond(environ, start_response, listing, version, head,
                        cache_control="no-cache")

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


def _version(data: bytes | IO[bytes], name: str, info: os.stat_result) -> FileVersion:
    """Digest (and gzip) of a file's bytes: ``data``, or an open file hashed in chunks
    (too large to keep or compress, and left at offset 0)."""
    content_type = content_type_for(name)
    last_modified = formatdate(info.st_mtime, usegmt=True)
    if not isinstance(data, bytes):
        hasher = hashlib.blake2b(digest_size=16)
        while chunk := data.read(_CHUNK):
            hasher.update(chunk)
        data.seek(0)
        return FileVersion(hasher.hexdigest(), None, None, content_type, info.st_mtime,
                           last_modified)
    small = not is_text(content_type) or len(data) < MIN_GZIP_BYTES
    return FileVersion(_digest(data), None if small else _gzip(data), data, content_type,
                       info.st_mtime, last_modified)


def _respond(
    environ: WSGIEnvironment,
    start_response: StartResponse,
    body: bytes | IO[bytes],
    version: FileVersion,
    head: bool,
    *,
    cache_control: str = CACHE_CONTROL,
) -> Iterable[bytes]:
    """200 (gzipped when accepted and available) or 304, with the version's validators."""
    gz = version.gz
    use_gzip = gz is not None and accepts_gzip(environ.get("HTTP_ACCEPT_ENCODING", ""))
    etag = f'"{version.digest}-gz"' if use_gzip else f'"{version.digest}"'
    headers: _Headers = [("ETag", etag), ("Cache-Control", cache_control)]
    if version.last_modified is not None:
        headers.append(("Last-Modified", version.last_modified))
    if is_text(version.content_type):
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


def _iter_file(handle: IO[bytes]) -> Iterable[bytes]:
    with handle:
        while chunk := handle.read(_CHUNK):
            yield chunk
