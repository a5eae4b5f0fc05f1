"""aggregator.store.quick: the short commands' reads of an up-to-date SQLite file.

``QuickReads`` must read exactly what ``Store.statuses`` / ``Store.applied_config`` read
(they share the statements), must hand anything it is not sure of back to the ``Store``
(None), and must never create or write the file.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from builders import make_article, make_source

from aggregator.errors import StoreError
from aggregator.records import ConfigVersion, PollOutcome, SourceState, SourceUpdate
from aggregator.store import Store
from aggregator.store.quick import QuickReads

T0 = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)


def _filled(path: Path) -> str:
    """A database with sources in several states, articles and an applied config."""
    url = f"sqlite:///{path}"
    with Store.open(url) as store:
        states = [
            SourceState(source_id="alpha", url="http://127.0.0.1:9/a.xml", etag='"v1"',
                        last_poll_at=T0, last_success_at=T0, next_poll_at=T0 + timedelta(hours=1),
                        last_warnings="encoding guessed"),
            SourceState(source_id="beta", url="http://127.0.0.1:9/b.xml", last_poll_at=T0,
                        last_error="HTTP 503 Service Unavailable", error_count=3,
                        last_result=PollOutcome.ERROR.value, next_poll_at=T0),
            SourceState(source_id="gone", url="http://127.0.0.1:9/g.xml", last_poll_at=T0,
                        disabled_reason="HTTP 410 Gone", redirect_target="http://x.test/",
                        redirect_count=2, moved_from="http://127.0.0.1:9/old.xml",
                        moved_to="http://127.0.0.1:9/g.xml"),
        ]
        for state, count in zip(states, (3, 0, 1), strict=True):
            store.commit_poll(SourceUpdate(state=state, result=None),
                              [make_article(f"k{i}", source_id=state.source_id)
                               for i in range(count)])
        store.apply_config(ConfigVersion(digest="d1", written_at=T0),
                           [make_source(source_id="alpha")], after=0, holder="w1",
                           now=T0 + timedelta(minutes=1))
    return url


def test_quick_reads_are_what_the_store_reads(tmp_path: Path) -> None:
    url = _filled(tmp_path / "db.sqlite")
    with Store.open(url) as store:
        expected_statuses, expected_config = store.statuses(), store.applied_config()
    with QuickReads.open(url) as quick:  # type: ignore[union-attr]
        statuses, applied = quick.statuses(), quick.applied_config()

    assert statuses == expected_statuses
    assert applied == expected_config
    with Store.open(url) as store, QuickReads.open(url) as quick:  # type: ignore[union-attr]
        assert quick.source_states() == store.source_states()
        assert len(quick.source_states()) == 3
    assert [(s.source_id, s.article_count) for s in statuses][:3] == [
        ("alpha", 3), ("beta", 0), ("gone", 1)]
    assert statuses[0].last_poll_at == T0  # aware UTC, microseconds kept
    assert applied is not None and applied.generation == 1
    assert applied.applied_at == T0 + timedelta(minutes=1)


def test_no_config_applied_yet_reads_as_none(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    with Store.open(url):
        pass
    with QuickReads.open(url) as quick:  # type: ignore[union-attr]
        assert quick.applied_config() is None
        assert quick.statuses() == []


@pytest.mark.parametrize("url", [
    "postgresql://127.0.0.1/test",
    "sqlite://",
    "sqlite:///:memory:",
    "sqlite:///{folder}/db.sqlite?timeout=5",
    "sqlite:///{folder}/d%62.sqlite",
])
def test_urls_that_are_not_a_plain_file_are_the_stores(tmp_path: Path, url: str) -> None:
    _filled(tmp_path / "db.sqlite")
    assert QuickReads.open(url.format(folder=tmp_path)) is None


def test_a_missing_file_is_not_created(tmp_path: Path) -> None:
    assert QuickReads.open(f"sqlite:///{tmp_path / 'none.sqlite'}") is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("revision", ["0006", None])
def test_a_schema_not_at_the_head_is_the_stores(tmp_path: Path, revision: str | None) -> None:
    path = tmp_path / "db.sqlite"
    url = _filled(path)
    with sqlite3.connect(path) as db:
        if revision is None:
            db.execute("DROP TABLE alembic_version")
        else:
            db.execute("UPDATE alembic_version SET version_num = ?", (revision,))
    assert QuickReads.open(url) is None


def test_a_file_that_is_not_a_database_is_the_stores(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    path.write_bytes(b"not a database at all" * 100)
    assert QuickReads.open(f"sqlite:///{path}") is None
    assert path.read_bytes() == b"not a database at all" * 100


def test_a_read_that_fails_after_the_check_names_the_database(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    url = _filled(path)
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE config_generations")
    with QuickReads.open(url) as quick:  # type: ignore[union-attr]
        assert len(quick.statuses()) == 3
        with pytest.raises(StoreError, match=r"cannot read database .*db\.sqlite"):
            quick.applied_config()


def test_a_path_with_spaces_and_cjk_is_read(tmp_path: Path) -> None:
    url = _filled(tmp_path / "新闻 数据" / "db #1.sqlite")
    with QuickReads.open(url) as quick:  # type: ignore[union-attr]
        assert [s.source_id for s in quick.statuses()] == ["alpha", "beta", "gone"]
