"""HTTP details: the headers a fetch sends, and the reply headers and statuses it reads.

Why this module exists: portals send every spelling HTTP allows and several it does not
(a duplicated ``Content-Length`` joined into "1234, 1234", a Retry-After of "soon-ish",
a status with no reason phrase).  Reading them is pure text work, kept here apart from
the network code so it can be tested on strings.

What must not happen: an exception out of these parsers (an unusable value is None, and
the fetch goes on without it), or a negative, infinite or NaN delay from Retry-After.
"""

from __future__ import annotations

import email.utils
import http
import math
from datetime import UTC, datetime

from aggregator.records import FetchOptions

__all__ = ["ACCEPT", "ACCEPT_ENCODING", "RETRY_AFTER_STATUSES", "content_length",
           "parse_retry_after", "request_headers", "status_phrase"]

ACCEPT = (
    "application/rss+xml, application/atom+xml, application/feed+json, "
    "application/xml;q=0.9, text/xml;q=0.9, */*;q=0.1"
)
ACCEPT_ENCODING = "gzip, deflate"  # exactly what ``body.Decoder`` can undo
RETRY_AFTER_STATUSES = frozenset({429, 503})  # the statuses whose Retry-After is honoured


def request_headers(options: FetchOptions) -> dict[str, str]:
    """The headers every request of a fetch sends, from that fetch's own ``options``.

    They are set on each request, over whatever the session carries, so a session kept
    across a settings reload never sends the old User-Agent.
    """
    return {
        "User-Agent": options.user_agent,
        "Accept": ACCEPT,
        "Accept-Encoding": ACCEPT_ENCODING,
    }


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date; None if unusable."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def content_length(value: str | None) -> int | None:
    """The declared body length, or None when absent or unusable."""
    if value is None:
        return None
    try:
        # "1234, 1234" (a duplicated header joined by urllib3) still means 1234
        lengths = {int(part.strip()) for part in value.split(",")}
    except ValueError:
        return None
    return max(lengths) if lengths else None


def status_phrase(status: int) -> str:
    """The standard reason phrase of ``status`` ("Not Found"), or "" for an unknown one."""
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""
