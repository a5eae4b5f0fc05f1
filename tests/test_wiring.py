"""Tests for aggregator.service.wiring: which config the database holds (``sync_config``)
and the reload rule, with real config files (their modification times set explicitly)
and a real SQLite store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from builders import write_config_file

from aggregator.config import load_config
from aggregator.records import ConfigSync
from aggregator.service import wiring
from aggregator.service.health import ConfigState
from aggregator.service.metrics import Metrics
from aggregator.store import Store

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def config_file(folder: Path, ids: list[str], *, written: datetime, name: str = "a.yaml",
                extra: str = "") -> Path:
    """A config listing ``ids``, its file last modified at ``written``."""
    return write_config_file(folder / name, [f"database_url: sqlite:///{folder / 'db.sqlite'}",
                                             extra],
                             {i: f"https://{i}.example/feed.xml" for i in ids}, written=written)


def claimable(store: Store) -> list[str]:
    due = store.claim_due("probe", limit=100, lease_for=timedelta(seconds=1),
                          now=T0 + timedelta(days=1))
    return [claim.lease.source_id for claim in due]


def test_an_older_config_file_does_not_bring_back_a_removed_source(
    tmp_path: Path, store: Store
) -> None:
    old = load_config(config_file(tmp_path, ["a", "b"], written=T0, name="old.yaml"))
    new = load_config(config_file(tmp_path, ["a"], written=T0 + timedelta(hours=1)))
    first = wiring.sync_config(store, old, holder="w1", now=T0)
    assert (first.outcome, first.applied.generation) == (ConfigSync.APPLIED, 1)
    second = wiring.sync_config(store, new, holder="w2", now=T0 + timedelta(hours=2))
    assert (second.outcome, second.applied.generation) == (ConfigSync.APPLIED, 2)
    assert second.applied.applied_by == "w2"
    # a worker started from the old copy: stale, and b stays removed
    stale = wiring.sync_config(store, old, holder="w3", now=T0 + timedelta(hours=3))
    assert (stale.outcome, stale.applied) == (ConfigSync.STALE, second.applied)
    assert "newer config generation 2" in stale.describe(old)
    assert claimable(store) == ["a"]
    # the same sources again, whatever the file's time or its other keys: nothing to do
    touched = load_config(config_file(tmp_path, ["a"], written=T0 + timedelta(hours=5),
                                      name="touched.yaml", extra="workers: 3"))
    assert wiring.sync_config(store, touched, holder="w4", now=T0).outcome is ConfigSync.CURRENT


def test_an_edit_back_to_an_earlier_content_is_applied(tmp_path: Path, store: Store) -> None:
    """The operator's latest write wins, even when it restores what an older file said."""
    wiring.sync_config(store, load_config(config_file(tmp_path, ["a", "b"], written=T0)),
                       holder="w", now=T0)
    wiring.sync_config(store, load_config(
        config_file(tmp_path, ["a"], written=T0 + timedelta(hours=1))), holder="w", now=T0)
    restored = load_config(config_file(tmp_path, ["a", "b"], written=T0 + timedelta(hours=2)))
    synced = wiring.sync_config(store, restored, holder="w", now=T0)
    assert (synced.outcome, synced.applied.generation) == (ConfigSync.APPLIED, 3)
    assert claimable(store) == ["a", "b"]


def test_removed_sources_are_forgotten_after_the_grace_by_the_databases_config(
    tmp_path: Path, store: Store
) -> None:
    """Retention deletes what the applied config dropped; a stale process pruning with its
    old file neither keeps the source nor deletes the new config's sources."""
    old = load_config(config_file(tmp_path, ["a", "b"], written=T0, name="old.yaml"))
    new = load_config(config_file(tmp_path, ["a", "c"], written=T0 + timedelta(hours=1)))
    wiring.sync_config(store, old, holder="w1", now=T0)
    wiring.sync_config(store, new, holder="w2", now=T0 + timedelta(hours=1))
    later = T0 + new.removed_source_grace + timedelta(days=1)
    pruned = wiring.prune(store, old, later)
    assert pruned.sources == ["b"]
    assert claimable(store) == ["a", "c"]


def test_a_failed_reload_is_kept_before_it_is_logged(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """Whoever reads "config reload failed" in the log finds the failure in the state."""
    path = config_file(tmp_path, ["a"], written=T0)
    settings = load_config(path)
    path.write_text("sources: [", encoding="utf-8")
    kept: list[ConfigState] = []

    def keep(state: ConfigState) -> None:
        assert not any("reload failed" in r.getMessage() for r in caplog.records)
        kept.append(state)

    ok = wiring.reload_config(settings, ConfigState(path, T0), Metrics(), lambda _s: None,
                              keep, T0 + timedelta(minutes=1))
    assert not ok and len(kept) == 1
    assert kept[0].last_error is not None and "invalid YAML" in kept[0].last_error.message
    assert any("reload failed" in r.getMessage() for r in caplog.records)


def test_a_reload_with_a_bad_html_selector_keeps_the_last_good_config(tmp_path: Path) -> None:
    """Selectors are checked by intake (cssselect's one home), not by the config module:
    the reload runs that check too, so a bad one never replaces the running config."""
    path = config_file(tmp_path, ["a"], written=T0)
    settings = load_config(path)
    path.write_text(path.read_text(encoding="utf-8") + (
        "  - id: list\n    name: L\n    url: https://list.example/news.html\n"
        "    categories: [新闻]\n    kind: html\n"
        "    html: {item: 'div.list li[', title: a, link: 'a@href'}\n"), encoding="utf-8")
    applied: list[object] = []
    kept: list[ConfigState] = []
    ok = wiring.reload_config(settings, ConfigState(path, T0), Metrics(), applied.append,
                              kept.append, T0 + timedelta(minutes=1))
    assert not ok and applied == []
    assert kept[0].last_error is not None
    assert "source 'list': field 'html.item'" in kept[0].last_error.message
