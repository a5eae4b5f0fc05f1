"""HTTP rules shared by the aggregator's web server and the demo portal.

Why: ``aggregator.service.http`` (which serves the published feeds) and
``aggregator.demo`` (a stand-in for third-party portals, on loopback) must answer
conditional requests and ``Accept-Encoding`` the same way, by the RFCs; one copy
of those rules keeps them from drifting apart, without the demo depending on the
production server.

What it owns: the pure parsing and comparison of request headers —
``If-None-Match`` / ``If-Modified-Since`` (RFC 9110 13.1.2, 13.2.2) and
``Accept-Encoding`` quality values (RFC 9110 12.5.3).  Functions of header strings
in, booleans out: no I/O, no state.

What this module must NOT do: import anything from the project (it is the bottom
layer; only the standard library), build responses, or know about files, feeds or
portals.
"""

from __future__ import annotations

from datetime import UTC
from email.utils import parsedate_to_datetime

__all__ = ["accepts_gzip", "etag_matches", "is_not_modified"]


def etag_matches(if_none_match: str, etag: str) -> bool:
    """If-None-Match uses the weak comparison: ``W/"x"`` matches ``"x"``; ``*`` matches all."""
    if if_none_match.strip() == "*":
        return True
    wanted = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == wanted for tag in if_none_match.split(","))


def is_not_modified(if_none_match: str | None, if_modified_since: str | None, etag: str,
                    mtime: float | None) -> bool:
    """RFC 9110 13.2.2: If-None-Match wins; If-Modified-Since only without it.

    ``mtime`` is the representation's modification time (POSIX seconds), or None
    when it has no Last-Modified (then only the ETag can match).  An unparseable
    date never matches; a date without a zone is taken as UTC.
    """
    if if_none_match is not None:
        return etag_matches(if_none_match, etag)
    since = if_modified_since
    if not since or mtime is None:
        return False
    try:
        when = parsedate_to_datetime(since)
    except (TypeError, ValueError, IndexError):
        return False
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(mtime) <= when.timestamp()


def accepts_gzip(accept_encoding: str) -> bool:
    """True when an Accept-Encoding value lists gzip (or ``*``) with a non-zero q."""
    qualities: dict[str, float] = {}
    for part in accept_encoding.split(","):
        name, _, params = part.strip().partition(";")
        name = name.strip().lower()
        if not name:
            continue
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        qualities[name] = quality
    for name in ("gzip", "x-gzip", "*"):
        if name in qualities:
            return qualities[name] > 0
    return False
