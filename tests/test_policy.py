from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aggregator.ingest.decide import (
    REDIRECT_CONFIRMATIONS,
    effective_source,
    first_poll_at,
    is_disabled,
    is_gone,
    poll_delay,
    should_move,
)
from aggregator.records import PollResult, Source, SourceStatus

NOW = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
SOURCE = Source(id="s", name="S", url="http://old.test/feed", categories=("c",), interval=HOUR)


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


def test_first_poll_keeps_a_remembered_backoff_and_adds_jitter() -> None:
    jitter = timedelta(seconds=7)
    later = SourceStatus(source_id="s", next_poll_at=NOW + HOUR)
    earlier = SourceStatus(source_id="s", next_poll_at=NOW - HOUR)
    assert first_poll_at(NOW, later, jitter) == NOW + HOUR + jitter
    assert first_poll_at(NOW, earlier, jitter) == NOW + jitter
    assert first_poll_at(NOW, None, jitter) == NOW + jitter


def test_a_confirmed_move_applies_only_while_the_config_names_the_old_url() -> None:
    moved = SourceStatus(source_id="s", moved_from="http://old.test/feed",
                         moved_to="http://new.test/feed")
    assert effective_source(SOURCE, moved).url == "http://new.test/feed"
    edited = Source(id="s", name="S", url="http://edited.test/", categories=("c",))
    assert effective_source(edited, moved).url == "http://edited.test/"
    assert effective_source(SOURCE, None) is SOURCE


def test_disabled_until_the_url_changes() -> None:
    gone = SourceStatus(source_id="s", url="http://old.test/feed", disabled_reason="HTTP 410 Gone")
    assert is_disabled(SOURCE, gone)
    edited = Source(id="s", name="S", url="http://edited.test/", categories=("c",))
    assert not is_disabled(edited, gone)
    assert not is_disabled(SOURCE, SourceStatus(source_id="s", url="http://old.test/feed"))


def test_gone_and_move_decisions() -> None:
    assert is_gone(PollResult(source_id="s", result="error", status=410))
    assert not is_gone(PollResult(source_id="s", result="error", status=404))
    assert not is_gone(PollResult(source_id="s", result="new", status=200))
    assert not should_move(REDIRECT_CONFIRMATIONS - 1)
    assert should_move(REDIRECT_CONFIRMATIONS)
