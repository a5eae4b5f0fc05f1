"""The poll's decisions, table-style: records in, records out, no I/O."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from aggregator.ingest.decide import (
    REDIRECT_CONFIRMATIONS,
    Attempt,
    decide,
    effective_source,
    first_poll_at,
    plan,
    poll_delay,
    spread,
)
from aggregator.records import (
    FetchResult,
    PollOutcome,
    PollRules,
    Source,
    SourceState,
    Validators,
)

NOW = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
OLD, NEW = "http://old.test/feed", "http://new.test/feed"
SOURCE = Source(id="s", name="S", url=OLD, categories=("c",), interval=HOUR)
RULES = PollRules(max_backoff=timedelta(hours=24))
KNOWN = SourceState(source_id="s", url=OLD, etag='"e1"', last_modified="Mon, 01 Jan 2024",
                    body_hash="h1", last_success_at=NOW - HOUR, last_result="new")


def fetched(status: int = 200, *, etag: str | None = None, last_modified: str | None = None,
            redirect: str | None = None) -> FetchResult:
    return FetchResult(source_id="s", url=OLD, status=status, etag=etag,
                       last_modified=last_modified, permanent_redirect=redirect)


def run(remembered: SourceState | None, attempt: Attempt, jitter: float = 0.0,
        source: Source = SOURCE) -> SourceState:
    update = decide(source, remembered, plan(source, remembered), attempt, now=NOW,
                    rules=RULES, jitter=jitter)
    assert update.state.source_id == "s"
    return update.state


@pytest.mark.parametrize(
    ("errors", "expected"),
    [(0, HOUR), (1, 2 * HOUR), (2, 4 * HOUR), (4, 16 * HOUR), (5, 24 * HOUR), (60, 24 * HOUR)],
)
def test_backoff_doubles_per_error_up_to_the_cap(errors: int, expected: timedelta) -> None:
    assert poll_delay(HOUR, errors, max_backoff=timedelta(hours=24)) == expected


def test_retry_after_wins_when_longer_and_is_capped() -> None:
    cap = timedelta(hours=24)
    assert poll_delay(HOUR, 1, max_backoff=cap, retry_after=3 * 3600) == 3 * HOUR
    assert poll_delay(HOUR, 1, max_backoff=cap, retry_after=60) == 2 * HOUR
    assert poll_delay(HOUR, 1, max_backoff=cap, retry_after=10**9) == cap


def test_cap_below_interval_never_shortens_the_interval() -> None:
    assert poll_delay(timedelta(days=2), 3, max_backoff=timedelta(hours=1)) == timedelta(days=2)


@pytest.mark.parametrize(("delay", "draw", "expected"), [
    (HOUR, 0.0, HOUR),
    (HOUR, 0.5, HOUR + timedelta(minutes=3)),  # half of 10% of an hour
    (HOUR, 1.0, HOUR + timedelta(minutes=6)),
    (timedelta(days=1), 0.5, timedelta(days=1, minutes=5)),  # 10% would be 2.4 h: capped
    (HOUR, -3.0, HOUR),  # a bad draw never makes a poll earlier
])
def test_spread_is_a_bounded_push_back(delay: timedelta, draw: float,
                                        expected: timedelta) -> None:
    assert spread(delay, RULES, draw) == expected


def test_first_poll_keeps_a_remembered_backoff_and_adds_jitter() -> None:
    jitter = timedelta(seconds=7)
    later = SourceState(source_id="s", next_poll_at=NOW + HOUR)
    earlier = SourceState(source_id="s", next_poll_at=NOW - HOUR)
    assert first_poll_at(NOW, later, jitter) == NOW + HOUR + jitter
    assert first_poll_at(NOW, earlier, jitter) == NOW + jitter
    assert first_poll_at(NOW, None, jitter) == NOW + jitter


def test_a_confirmed_move_applies_only_while_the_config_names_the_old_url() -> None:
    moved = SourceState(source_id="s", moved_from=OLD, moved_to=NEW)
    assert effective_source(SOURCE, moved).url == NEW
    edited = Source(id="s", name="S", url="http://edited.test/", categories=("c",))
    assert effective_source(edited, moved).url == "http://edited.test/"
    assert effective_source(SOURCE, None) is SOURCE


@pytest.mark.parametrize(("remembered", "url", "validators", "known_body", "disabled"), [
    (None, OLD, Validators(), None, None),
    (KNOWN, OLD, Validators('"e1"', "Mon, 01 Jan 2024"), "h1", None),
    # the validators and body hash belong to another URL: none of them is used
    (replace(KNOWN, url="http://elsewhere.test/"), OLD, Validators(), None, None),
    (replace(KNOWN, moved_from=OLD, moved_to=NEW), NEW, Validators(), None, None),
    (replace(KNOWN, disabled_reason="HTTP 410 Gone"), OLD, KNOWN.validators, "h1",
     "HTTP 410 Gone"),
    # disabled at a URL the config no longer names: polled again
    (replace(KNOWN, url="http://elsewhere.test/", disabled_reason="HTTP 410 Gone"), OLD,
     Validators(), None, None),
])
def test_plan(remembered: SourceState | None, url: str, validators: Validators,
              known_body: str | None, disabled: str | None) -> None:
    planned = plan(SOURCE, remembered)
    assert (planned.source.url, planned.validators, planned.known_body, planned.disabled) == (
        url, validators, known_body, disabled)


@pytest.mark.parametrize(("attempt", "result", "etag", "last_modified", "body_hash"), [
    # 304: a validator the response left out keeps its stored value
    (Attempt(fetched=fetched(304, etag='"e2"')), PollOutcome.NOT_MODIFIED, '"e2"',
     "Mon, 01 Jan 2024", "h1"),
    (Attempt(fetched=fetched(304)), PollOutcome.NOT_MODIFIED, '"e1"', "Mon, 01 Jan 2024", "h1"),
    # same bytes: the response's validators replace the stored ones, nothing parsed
    (Attempt(fetched=fetched(etag='"e3"'), body_hash="h1"), PollOutcome.UNCHANGED, '"e3"',
     None, "h1"),
    # parsed: the articles decide the outcome; the new body hash is kept
    (Attempt(fetched=fetched(last_modified="Wed"), body_hash="h2", parsed=True), None, None,
     "Wed", "h2"),
])
def test_successes(attempt: Attempt, result: PollOutcome | None, etag: str | None,
                   last_modified: str | None, body_hash: str) -> None:
    failing = replace(KNOWN, error_count=3, last_error="HTTP 500")
    update = decide(SOURCE, failing, plan(SOURCE, failing), attempt, now=NOW, rules=RULES,
                    jitter=0.0)
    state = update.state
    assert update.result == result
    assert (state.etag, state.last_modified, state.body_hash) == (etag, last_modified, body_hash)
    assert (state.error_count, state.last_error, state.disabled_reason) == (0, None, None)
    assert (state.last_poll_at, state.last_success_at, state.next_poll_at) == (NOW, NOW, NOW + HOUR)
    assert state.last_result == (result.value if result else None)


@pytest.mark.parametrize(("attempt", "errors", "next_poll_at"), [
    (Attempt(error="HTTP 500", status=500), 1, NOW + 2 * HOUR),
    (Attempt(error="HTTP 429", status=429, retry_after=5 * 3600), 1, NOW + 5 * HOUR),
    (Attempt(error="not a feed: an HTML page", fetched=None), 1, NOW + 2 * HOUR),
])
def test_errors_back_off_and_keep_what_was_known(attempt: Attempt, errors: int,
                                                 next_poll_at: datetime) -> None:
    update = decide(SOURCE, KNOWN, plan(SOURCE, KNOWN), attempt, now=NOW, rules=RULES, jitter=0.0)
    state = update.state
    assert update.result is PollOutcome.ERROR
    assert (state.error_count, state.next_poll_at, state.last_error) == (
        errors, next_poll_at, attempt.error)
    assert (state.etag, state.body_hash, state.last_success_at) == (
        KNOWN.etag, KNOWN.body_hash, KNOWN.last_success_at)


def test_errors_count_on_from_the_remembered_streak() -> None:
    state = run(replace(KNOWN, error_count=4), Attempt(error="HTTP 500", status=500))
    assert state.error_count == 5 and state.next_poll_at == NOW + 24 * HOUR


def test_gone_disables_and_counts_as_a_failure() -> None:
    update = decide(SOURCE, KNOWN, plan(SOURCE, KNOWN), Attempt(error="HTTP 410 Gone", status=410),
                    now=NOW, rules=RULES, jitter=0.5)
    state = update.state
    assert update.result is PollOutcome.DISABLED and PollOutcome.DISABLED.failed
    assert (state.disabled_reason, state.next_poll_at, state.error_count, state.url) == (
        "HTTP 410 Gone", None, 1, OLD)
    assert state.last_result == "disabled"


def test_a_first_error_creates_the_state_at_the_polled_url() -> None:
    state = run(None, Attempt(error="connection refused"))
    assert (state.url, state.error_count, state.etag) == (OLD, 1, None)


def test_a_redirect_moves_the_source_after_consecutive_confirmations() -> None:
    state: SourceState | None = None
    moves = []
    for _ in range(REDIRECT_CONFIRMATIONS):
        update = decide(SOURCE, state, plan(SOURCE, state),
                        Attempt(fetched=fetched(redirect=NEW), body_hash="h", parsed=True),
                        now=NOW, rules=RULES, jitter=0.0)
        state = update.state
        moves.append(update.moved)
    assert moves == [False] * (REDIRECT_CONFIRMATIONS - 1) + [True]
    assert state is not None
    assert (state.moved_from, state.moved_to, state.redirect_count) == (OLD, NEW, 0)
    assert plan(SOURCE, state).source.url == NEW


def test_a_broken_streak_or_another_target_starts_counting_again() -> None:
    seen = replace(KNOWN, redirect_target=NEW, redirect_count=2)
    assert run(seen, Attempt(fetched=fetched(304))).redirect_count == 0
    other = run(seen, Attempt(fetched=fetched(304, redirect="http://third.test/")))
    assert (other.redirect_target, other.redirect_count) == ("http://third.test/", 1)
    assert run(seen, Attempt(error="HTTP 500")).redirect_count == 2  # an error proves nothing


def test_the_last_documents_warnings_are_kept_until_it_is_parsed_again() -> None:
    warned = run(KNOWN, Attempt(fetched=fetched(), body_hash="h2", parsed=True,
                                warnings=("feed is not well-formed", "charset: a guess")))
    assert warned.last_warnings == "feed is not well-formed; charset: a guess"
    assert run(warned, Attempt(fetched=fetched(304))).last_warnings == warned.last_warnings
    assert run(warned, Attempt(error="HTTP 500")).last_warnings == warned.last_warnings
    assert run(warned, Attempt(fetched=fetched(), body_hash="h3", parsed=True)).last_warnings \
        is None
