"""A poll's decisions as pure functions: what to ask for, and what the answer means.

Two steps frame every poll (``ingest.poll``):

- ``plan`` — before the fetch: the URL to poll (a confirmed move replaces the
  configured one), the validators to send, the body hash that makes a re-parse
  unnecessary, and whether the source is off after a 410;
- ``decide`` — after fetch and parse: one ``SourceUpdate`` holding the source's whole
  next state (validators, body hash, consecutive errors, next poll time with backoff,
  Retry-After and jitter, redirect confirmations and move, disabled reason) and the
  typed outcome.  The store commits it with the articles in one transaction.

Everything here is arithmetic on records and datetimes — no clock, no I/O, no
randomness (``now`` and the jitter draw are passed in) — so every rule is tested
table-style without a server or a database.  This module must not perform a decision,
only return it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from aggregator.records import (
    FetchResult,
    PollOutcome,
    PollRules,
    Source,
    SourceState,
    SourceUpdate,
    Validators,
)

# A permanent redirect must be seen on this many consecutive polls before the
# stored URL follows it: one misconfigured deploy on the portal's side must not
# move a feed for good.
REDIRECT_CONFIRMATIONS = 3
# HTTP statuses that mean "this feed is gone for good; stop polling".
GONE_STATUSES = frozenset({410})
_NO_VALIDATORS = Validators()


@dataclass(frozen=True, slots=True)
class PollPlan:
    """What a poll asks for, decided from the config and the remembered state."""

    source: Source  # the configured source with the URL to poll
    validators: Validators  # none when the URL differs from the one they belong to
    known_body: str | None  # hash of the document last stored from this URL
    disabled: str | None  # the 410 reason while the source stays off, else None


@dataclass(frozen=True, slots=True)
class Attempt:
    """What fetch and parse produced: a response (and its body's hash when it was not a
    304), whether the body was parsed into articles, or the error that ended it."""

    fetched: FetchResult | None = None
    body_hash: str | None = None
    parsed: bool = False
    error: str | None = None
    status: int | None = None  # the HTTP status behind an error, when there was one
    retry_after: float | None = None  # seconds a 429/503 asked for
    warnings: tuple[str, ...] = ()  # the parser's, when the body was parsed


def plan(configured: Source, remembered: SourceState | None) -> PollPlan:
    source = effective_source(configured, remembered)
    same_url = remembered is not None and remembered.url == source.url
    disabled = None
    if same_url and remembered is not None and remembered.disabled_reason is not None:
        disabled = remembered.disabled_reason
    return PollPlan(
        source=source,
        validators=remembered.validators if same_url and remembered else _NO_VALIDATORS,
        known_body=remembered.body_hash if same_url and remembered else None,
        disabled=disabled,
    )


def decide(configured: Source, remembered: SourceState | None, planned: PollPlan,
           attempt: Attempt, *, now: datetime, rules: PollRules, jitter: float) -> SourceUpdate:
    """The source's next state after ``attempt``; ``jitter`` is a draw from [0, 1)."""
    previous = remembered or SourceState(source_id=configured.id, url=planned.source.url)
    if attempt.error is not None or attempt.fetched is None:
        return _failed(configured, previous, planned, attempt, now=now, rules=rules,
                       jitter=jitter)

    fetched = attempt.fetched
    # One replace of the whole next state (each ``replace`` re-runs every field's
    # checks: they were a tenth of an unchanged poll's CPU).
    changes: dict[str, object] = {
        "url": planned.source.url, "last_poll_at": now, "last_success_at": now,
        "last_error": None, "error_count": 0, "disabled_reason": None}
    if fetched.not_modified:
        result: PollOutcome | None = PollOutcome.NOT_MODIFIED
        # A 304 may leave a validator out: the stored one still holds (HTTP caching).
        changes.update(etag=fetched.etag or planned.validators.etag,
                       last_modified=fetched.last_modified or planned.validators.last_modified)
    else:
        result = None if attempt.parsed else PollOutcome.UNCHANGED
        changes.update(etag=fetched.etag, last_modified=fetched.last_modified)
        if attempt.parsed:
            changes.update(body_hash=attempt.body_hash,
                           last_warnings="; ".join(attempt.warnings) or None)
    redirect, moved = _follow_redirect(configured, previous, fetched.permanent_redirect)
    delay = poll_delay(configured.interval, 0, max_backoff=rules.max_backoff)
    changes.update(redirect, last_result=result.value if result else None,
                   next_poll_at=now + spread(delay, rules, jitter))
    return SourceUpdate(state=replace(previous, **changes), result=result, moved=moved)


def _failed(configured: Source, previous: SourceState, planned: PollPlan, attempt: Attempt, *,
            now: datetime, rules: PollRules, jitter: float) -> SourceUpdate:
    errors = previous.error_count + 1
    reason = attempt.error or "no response"
    if attempt.status in GONE_STATUSES:
        state = replace(previous, url=planned.source.url, last_poll_at=now,
                        last_result=PollOutcome.DISABLED.value, last_error=reason,
                        error_count=errors, disabled_reason=reason, next_poll_at=None)
        return SourceUpdate(state=state, result=PollOutcome.DISABLED)
    # The stored URL keeps the validators it belongs to until a success replaces both.
    delay = poll_delay(configured.interval, errors, max_backoff=rules.max_backoff,
                       retry_after=attempt.retry_after)
    state = replace(previous, last_poll_at=now, last_result=PollOutcome.ERROR.value,
                    last_error=reason, error_count=errors,
                    next_poll_at=now + spread(delay, rules, jitter))
    return SourceUpdate(state=state, result=PollOutcome.ERROR)


def _follow_redirect(configured: Source, state: SourceState,
                     target: str | None) -> tuple[dict[str, object], bool]:
    """Count a 301/308 of the polled URL; move once it is confirmed on consecutive polls.
    The state's changes, and whether it moved."""
    if target is None:
        return {"redirect_target": None, "redirect_count": 0}, False
    count = state.redirect_count + 1 if state.redirect_target == target else 1
    if count < REDIRECT_CONFIRMATIONS:
        return {"redirect_target": target, "redirect_count": count}, False
    return {"moved_from": configured.url, "moved_to": target, "redirect_target": None,
            "redirect_count": 0}, True


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


def spread(delay: timedelta, rules: PollRules, jitter: float) -> timedelta:
    """``delay`` pushed back by ``jitter`` (a draw from [0, 1)) of ``rules.jitter`` × delay,
    at most ``rules.max_jitter``: never earlier than asked, and bounded."""
    room = min(delay * rules.jitter, rules.max_jitter)
    return delay + room * min(max(jitter, 0.0), 1.0)


def first_poll_at(now: datetime, remembered: SourceState | None, jitter: timedelta) -> datetime:
    """When a (re)started daemon polls a source first: its remembered due time if that
    is still ahead (a backoff survives restarts), else now — plus ``jitter`` so a
    restart does not fire every source at the same instant."""
    due = remembered.next_poll_at if remembered is not None else None
    start = due if due is not None and due > now else now
    return start + jitter


def effective_source(source: Source, remembered: SourceState | None) -> Source:
    """The source with the URL to poll: a confirmed move replaces the configured URL
    for as long as the config still names the URL that moved."""
    if remembered is not None and remembered.moved_to and remembered.moved_from == source.url:
        return replace(source, url=remembered.moved_to)
    return source
