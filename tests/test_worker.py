"""Tests for aggregator.service.worker (``ClaimWorker``) in one process: the per-host claim
limit and a worker whose config is older than the database's.  Real SQLite store, real
config files, a real loopback portal; the many-process behaviour is in test_workers.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from builders import LoopbackPortal, write_config_file

from aggregator.config import load_config
from aggregator.ingest.poll import utc_now
from aggregator.service.metrics import Metrics
from aggregator.service.worker import HOST_BUSY_RETRY, INDEX_LOCK, ClaimWorker
from aggregator.store import Store

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def config_file(path: Path, portal: LoopbackPortal, ids: list[str], *,
                written: datetime = T0) -> Path:
    settings = [f"database_url: sqlite:///{path.parent / 'db.sqlite'}",
                f"output_dir: {path.parent / 'public'}", "allow_private_networks: true",
                "parse_workers: 0", "workers: 4", "host_concurrency: 1"]
    return write_config_file(path, settings, {i: portal.url(f"{i}.xml") for i in ids},
                             written=written)


@pytest.fixture()
def portal() -> Iterator[LoopbackPortal]:
    held = LoopbackPortal(held=True)
    yield held
    held.release.set()
    held.close()


def test_claims_beyond_the_host_limit_are_given_back_at_once(
    tmp_path: Path, store: Store, portal: LoopbackPortal
) -> None:
    """host_concurrency 1, three due sources of one host, four free threads: one poll
    starts, the two others are released due shortly, not queued behind it."""
    settings = load_config(config_file(tmp_path / "a.yaml", portal, ["s1", "s2", "s3"]))
    worker = ClaimWorker(settings, store, Metrics(), holder="w1")
    try:
        assert worker.reload()  # applies the config: three rows, due now
        before = utc_now()
        assert worker.claim_once() == 1
        after = utc_now()
        [started] = portal.wait_for_requests(1, timeout=10)
        given_back = {s.source_id: s for s in store.statuses() if s.source_id != started}
        assert len(given_back) == 2
        for state in given_back.values():
            assert state.next_poll_at is not None
            assert before + HOST_BUSY_RETRY <= state.next_poll_at <= after + HOST_BUSY_RETRY
        # another worker may claim them at once when due; this one is still full
        assert worker.claim_once() == 0
    finally:
        portal.release.set()
        assert worker.wait_idle(30)
        worker.stop(timeout=10)
    assert [name for name, _ in portal.requests] == [started]
    assert store.source_status(started) is not None
    assert store.count_articles(started) == 1


def test_a_worker_with_an_older_config_claims_nothing_and_says_why(
    tmp_path: Path, store: Store, portal: LoopbackPortal
) -> None:
    old = load_config(config_file(tmp_path / "old.yaml", portal, ["s1", "s2"], written=T0))
    new = load_config(config_file(tmp_path / "new.yaml", portal, ["s1"],
                                  written=T0 + timedelta(hours=1)))
    stale = ClaimWorker(old, store, Metrics(), holder="old")
    current = ClaimWorker(new, store, Metrics(), holder="new")
    portal.release.set()
    try:
        assert stale.reload() and not stale.stale  # first: generation 1 lists s2
        assert current.reload()  # generation 2 removes s2
        assert stale.reload()  # the old file loads, but it is older than generation 2
        assert stale.stale
        assert stale.claim_once() == 0
        error = stale.config_state.last_error
        assert error is not None and "newer config generation 2" in error.message
        assert not current.stale and current.config_state.last_error is None
        assert current.claim_once() == 1
        assert current.wait_idle(30)
    finally:
        stale.stop(timeout=10)
        current.stop(timeout=10)
    assert [name for name, _ in portal.requests] == ["s1"]  # s2 stays removed


def test_the_index_page_waits_while_a_peer_builds_it(
    tmp_path: Path, pg_database: str, portal: LoopbackPortal
) -> None:
    """Category feeds build at once; the index page (every category's newest articles) is
    left pending while another process holds its lock, and built once it is free."""
    settings = load_config(config_file(tmp_path / "a.yaml", portal, ["s1"]))
    index = tmp_path / "public" / "index.html"
    feed = tmp_path / "public" / "categories" / "新闻" / "rss.xml"
    portal.release.set()
    with Store.open(pg_database) as store, Store.open(pg_database) as peer:
        worker = ClaimWorker(settings, store, Metrics(), holder="w1")  # the file's database
        try:                                                            # is not used
            assert worker.reload()
            assert worker.claim_once() == 1 and worker.wait_idle(30)
            with peer.exclusive([INDEX_LOCK]) as held:
                assert held == {INDEX_LOCK}
                worker.build_now()
                assert feed.exists() and not index.exists()
            worker.build_now()  # only the index page was pending
            assert "s1 一" in index.read_text(encoding="utf-8")
        finally:
            worker.stop(timeout=10)


def test_a_failed_build_keeps_its_categories_pending(
    tmp_path: Path, store: Store, portal: LoopbackPortal, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_config(config_file(tmp_path / "a.yaml", portal, ["s1"]))
    public = tmp_path / "public"
    public.write_text("in the way", encoding="utf-8")  # the output folder cannot be made
    portal.release.set()
    worker = ClaimWorker(settings, store, Metrics(), holder="w1")
    try:
        assert worker.reload()
        assert worker.claim_once() == 1 and worker.wait_idle(30)
        worker.build_now()
        assert "build of 新闻 failed" in caplog.text
        public.unlink()
        worker.build_now()  # the next round builds what the failed one could not
        feed = public / "categories" / "新闻" / "rss.xml"
        assert "s1 一" in feed.read_text(encoding="utf-8")
    finally:
        worker.stop(timeout=10)
