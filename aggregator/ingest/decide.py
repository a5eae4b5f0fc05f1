"""Polling decisions as pure functions: when to poll next, which URL, when a feed moved.

Everything here is arithmetic on records and datetimes — no clock, no I/O, no
randomness (jitter is passed in) — so every rule is tested without a server or
a database.  The pipeline and the scheduler apply these decisions; this module
must not perform them.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from aggregator.records import PollResult, Source, SourceStatus

# A permanent redirect must be seen on this many consecutive polls before the
# stored URL follows it: one misconfigured deploy on the portal's side must not
# move a feed for good.
REDIRECT_CONFIRMATIONS = 3
# HTTP statuses that mean "this feed is gone for good; stop polling".
GONE_STATUSES = frozenset({410})


def poll_delay(interval: timedelta, consecutive_errors: int, *, max_backoff: timedelta,
               retry_after: float | None = None) -> timedelta:
    """How long to wait before the next poll.

    On success the source's interval; after ``n`` consecutive errors
    ``interval × 2^n`` capped at ``max_backoff``; a portal's Retry-After is
    honoured when longer (also capped, so a hostile value cannot park a source
    forever).
    """
    delay = interval
    if consecutive_errors > 0:
        exponent = min(consecutive_errors, 32)  # 2^32 × any interval is past any cap
        delay = min(interval * (2**exponent), max(max_backoff, interval))
    if retry_after is not None and retry_after > 0:
        delay = max(delay, min(timedelta(seconds=retry_after), max(max_backoff, interval)))
    return delay


def first_poll_at(now: datetime, status: SourceStatus | None, jitter: timedelta) -> datetime:
    """When a (re)started daemon polls a source first: its remembered due time if that
    is still ahead (a backoff survives restarts), else now — plus ``jitter`` so a
    restart does not fire every source at the same instant."""
    due = status.next_poll_at if status is not None else None
    start = due if due is not None and due > now else now
    return start + jitter


def effective_source(source: Source, status: SourceStatus | None) -> Source:
    """The source with the URL to poll: a confirmed move replaces the configured URL
    for as long as the config still names the URL that moved."""
    if status is not None and status.moved_to and status.moved_from == source.url:
        return replace(source, url=status.moved_to)
    return source


def is_disabled(source: Source, status: SourceStatus | None) -> bool:
    """A source stays off after 410 Gone until the operator changes its URL."""
    return (status is not None and status.disabled_reason is not None
            and status.url == effective_source(source, status).url)


def is_gone(result: PollResult) -> bool:
    return result.result == "error" and result.status in GONE_STATUSES


def should_move(confirmations: int) -> bool:
    return confirmations >= REDIRECT_CONFIRMATIONS
