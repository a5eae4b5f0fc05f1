"""Atomic file writes shared by the stages that publish files (generate, export).

A reader (a web server, Hexo, a feed reader) must only ever see the old or the new
version of a file, never a partial one, even if the process is killed mid-write:
write a hidden temp file in the same directory, fsync it, then ``os.replace``.
Unchanged files are left untouched so their mtime and ETag stay stable.
This module raises ``OSError``; callers wrap it with the context they know.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_atomic(path: Path, data: bytes, *, durable: bool = True) -> bool:
    """Replace ``path`` with ``data`` unless it already holds these bytes; True if it changed.

    ``durable`` fsyncs before the rename, so the new bytes also survive a power
    loss, not only a killed process; files that can be regenerated in bulk (an
    export of thousands of posts) may skip it.
    """
    path = Path(path)
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return True
