"""Tests for aggregator.service.health: the pure polling-health summary."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from aggregator.records import Source, SourceStatus
from aggregator.service.health import ConfigState, ReloadError, health_report, iso_utc

NOW = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def _source(source_id: str, *, enabled: bool = True) -> Source:
    return Source(id=source_id, name=source_id, url=f"https://{source_id}.example/rss",
                  categories=("新闻",), enabled=enabled)


def _ok(source_id: str) -> SourceStatus:
    return SourceStatus(
        source_id=source_id, last_poll_at=NOW - timedelta(minutes=3),
        last_success_at=NOW - timedelta(minutes=3), last_result="unchanged",
        next_poll_at=NOW + timedelta(minutes=27),
    )


def _failed(source_id: str, count: int = 2) -> SourceStatus:
    return SourceStatus(
        source_id=source_id, last_poll_at=NOW - timedelta(minutes=1),
        last_success_at=NOW - timedelta(days=1), last_result="error",
        last_error="HTTP 500 from portal", error_count=count,
        next_poll_at=NOW + timedelta(minutes=4),
    )


def test_health_report_ok() -> None:
    report = health_report([_source("a"), _source("b")], [_ok("a"), _ok("b")], NOW)
    assert report["status"] == "ok"
    assert report["checked_at"] == "2026-11-25T08:00:00Z"
    assert report["sources_enabled"] == 2
    assert report["sources_failing"] == 0
    sources = report["sources"]
    assert isinstance(sources, list)
    assert [s["id"] for s in sources] == ["a", "b"]
    assert sources[0] == {
        "id": "a",
        "enabled": True,
        "last_success_at": "2026-11-25T07:57:00Z",
        "last_poll_at": "2026-11-25T07:57:00Z",
        "last_result": "unchanged",
        "last_error": None,
        "error_count": 0,
        "next_poll_at": "2026-11-25T08:27:00Z",
        "disabled_reason": None,
    }
    json.dumps(report)  # JSON-able as is


def test_health_report_degraded_and_down() -> None:
    sources = [_source("a"), _source("b")]
    degraded = health_report(sources, [_ok("a"), _failed("b")], NOW)
    assert degraded["status"] == "degraded"
    assert degraded["sources_failing"] == 1
    failed = degraded["sources"][1]  # type: ignore[index]
    assert failed["last_error"] == "HTTP 500 from portal"
    assert failed["error_count"] == 2
    assert failed["last_success_at"] == "2026-11-24T08:00:00Z"
    down = health_report(sources, [_failed("a", 1), _failed("b")], NOW)
    assert down["status"] == "down"
    assert down["sources_failing"] == 2


def test_health_report_disabled_and_unpolled_sources() -> None:
    sources = [_source("a"), _source("off", enabled=False), _source("new")]
    # A source switched off in the config never counts, even with errors.
    report = health_report(sources, [_ok("a"), _failed("off", 9)], NOW)
    assert report["status"] == "ok"
    assert report["sources_enabled"] == 2
    listed = {s["id"]: s for s in report["sources"]}  # type: ignore[attr-defined]
    assert listed["off"]["enabled"] is False
    assert listed["new"] == {
        "id": "new", "enabled": True, "last_success_at": None, "last_poll_at": None,
        "last_result": None, "last_error": None, "error_count": 0, "next_poll_at": None,
        "disabled_reason": None,
    }
    # A portal that said 410 Gone disabled the source: it fails until the config changes.
    gone = SourceStatus(source_id="new", last_poll_at=NOW, last_result="error",
                        disabled_reason="410 Gone", error_count=0)
    assert health_report(sources, [_ok("a"), gone], NOW)["status"] == "degraded"
    assert health_report([_source("new")], [gone], NOW)["status"] == "down"
    # Statuses of sources no longer configured are ignored; no sources at all is ok.
    assert health_report([_source("a")], [_ok("a"), _failed("gone")], NOW)["status"] == "ok"
    assert health_report([], [], NOW)["status"] == "ok"
    # Every enabled source switched off: nothing counts, so nothing is down.
    assert health_report([_source("off", enabled=False)], [_failed("off")], NOW)["status"] == "ok"


def test_health_report_converts_to_utc() -> None:
    east = datetime(2026, 11, 25, 16, 0, 30, 123, tzinfo=UTC).astimezone(
        timezone(timedelta(hours=8))
    )
    status = SourceStatus(source_id="a", last_poll_at=east, last_success_at=east)
    report = health_report([_source("a")], [status], NOW)
    assert report["sources"][0]["last_poll_at"] == "2026-11-25T16:00:30Z"  # type: ignore[index]


def test_iso_utc() -> None:
    assert iso_utc(None) is None
    assert iso_utc(datetime(2026, 1, 2, 3, 4, 5, 999_999)) == "2026-01-02T03:04:05Z"  # naive: UTC
    west = timezone(timedelta(hours=-5))
    assert iso_utc(datetime(2026, 1, 1, 22, 0, tzinfo=west)) == "2026-01-02T03:00:00Z"


def test_health_report_shows_the_running_config_and_a_failed_reload() -> None:
    loaded = ConfigState(Path("/etc/aggregator.yaml"), NOW - timedelta(hours=2))
    report = health_report([_source("a")], [_ok("a")], NOW, loaded)
    assert report["status"] == "ok"
    assert report["config"] == {"path": "/etc/aggregator.yaml",
                                "loaded_at": "2026-11-25T06:00:00Z", "last_error": None}

    broken = loaded.failed("/etc/aggregator.yaml: source 'a': field 'interval': bad",
                           NOW - timedelta(minutes=5))
    assert broken.loaded_at == loaded.loaded_at and broken.path == loaded.path
    assert broken.last_error == ReloadError(
        "/etc/aggregator.yaml: source 'a': field 'interval': bad", NOW - timedelta(minutes=5))
    report = health_report([_source("a")], [_ok("a")], NOW, broken)
    # the file on disk is not the config that runs: something is wrong, still served
    assert report["status"] == "degraded"
    assert report["sources_failing"] == 0
    assert report["config"] == {
        "path": "/etc/aggregator.yaml", "loaded_at": "2026-11-25T06:00:00Z",
        "last_error": {"message": "/etc/aggregator.yaml: source 'a': field 'interval': bad",
                       "at": "2026-11-25T07:55:00Z"},
    }
    json.dumps(report)
    # a failed reload never hides that every source is failing
    assert health_report([_source("a")], [_failed("a")], NOW, broken)["status"] == "down"
    # no config state given (a caller that has none): no "config" key
    assert "config" not in health_report([_source("a")], [_ok("a")], NOW)
    # no file (settings built in code)
    assert ConfigState(None, NOW).as_dict()["path"] is None
