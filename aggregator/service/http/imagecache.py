"""The builtin image proxy's disk cache: one file per image, bounded in bytes.

Why: a signed image URL never changes (``aggregator.imageproxy``), so what its origin
answered once can be served to every reader after it without asking the origin again —
that is the point of proxying.  Each entry is one file, ``<sha256 of the URL>.img``: a
length-prefixed JSON header (content type, validators) then the body, written to a
temporary file and renamed into place, so a reader sees a whole entry or none (an entry
evicted while it is read stays readable through its open file).

The bound: after each write, the least recently served entries (by the modification
time this module sets on every hit — ``atime`` is unreliable with ``noatime``) are
deleted until the folder is within ``max_bytes``.  An image larger than the bound is
served, not kept.

What this module must NOT do: fetch, decide what may be cached (the endpoint does), or
touch files that are not its own entries.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CachedImage", "ImageCache"]

_SUFFIX = ".img"
_LENGTH = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class CachedImage:
    """What is served for one image URL."""

    content_type: str
    etag: str  # the origin's, else a hash of the body
    last_modified: str | None
    body: bytes


class ImageCache:
    """Entries under ``folder``, at most ``max_bytes`` of them in all (0: cache nothing)."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()  # writes and evictions, one at a time
        self._clock_lock = threading.Lock()
        self._clock = 0  # the last access time set, so that two hits never tie

    def get(self, key: str) -> CachedImage | None:
        """The entry of ``key`` (marked as just served), or None."""
        path = self._path(key)
        try:
            with path.open("rb") as file:
                data = file.read()
        except OSError:
            return None
        with contextlib.suppress(OSError):  # evicted since: what was read is still whole
            self._touch(path)
        try:
            (length,) = _LENGTH.unpack_from(data)
            header = json.loads(data[_LENGTH.size:_LENGTH.size + length])
            return CachedImage(content_type=str(header["content_type"]),
                               etag=str(header["etag"]),
                               last_modified=header.get("last_modified"),
                               body=data[_LENGTH.size + length:])
        except (struct.error, ValueError, KeyError, TypeError):
            return None  # not one of ours, or torn: a miss (the next put replaces it)

    def put(self, key: str, image: CachedImage) -> bool:
        """Keep ``image`` as ``key``'s entry, then evict down to the bound; False when
        it is larger than the bound (not kept)."""
        header = json.dumps({"content_type": image.content_type, "etag": image.etag,
                             "last_modified": image.last_modified}).encode("utf-8")
        data = _LENGTH.pack(len(header)) + header + image.body
        if len(data) > self.max_bytes:
            return False
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=self.folder, prefix=".", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as file:
                    file.write(data)
                os.replace(temporary, self._path(key))
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
            self._touch(self._path(key))
            self._evict()
        return True

    def size(self) -> int:
        """Bytes held by the entries now."""
        return sum(size for _mtime, size, _path in self._entries())

    def _evict(self) -> None:
        entries = sorted(self._entries())  # oldest access first
        total = sum(size for _mtime, size, _path in entries)
        for _mtime, size, path in entries:
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size

    def _entries(self) -> list[tuple[int, int, Path]]:
        found: list[tuple[int, int, Path]] = []
        try:
            scan = os.scandir(self.folder)
        except FileNotFoundError:
            return found
        with scan:
            for entry in scan:
                if not entry.name.endswith(_SUFFIX) or entry.name.startswith("."):
                    continue
                try:
                    stat = entry.stat()
                except FileNotFoundError:
                    continue
                found.append((stat.st_mtime_ns, stat.st_size, Path(entry.path)))
        return found

    def _touch(self, path: Path) -> None:
        # File times are coarse (a few ms): a counter keeps the order of accesses.
        with self._clock_lock:
            self._clock = max(time.time_ns(), self._clock + 1)
            stamp = self._clock
        os.utime(path, ns=(stamp, stamp))

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}{_SUFFIX}"

