"""``store.opening``: the store a poll opens on a thread while it starts fetching.

The states it gives before the store is open must be the store's own (a current SQLite
file) or none at all (no file yet); any other database is the ``Store``'s to open first;
an opening that fails makes every commit fail with its error, and nothing is written.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from builders import make_article

from aggregator.errors import StoreError
from aggregator.records import SourceState, SourceUpdate
from aggregator.store import Store
from aggregator.store.opening import OpeningStore

T0 = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)


def update(source_id: str, etag: str | None = None) -> SourceUpdate:
    return SourceUpdate(state=SourceState(source_id=source_id, url=f"http://{source_id}.test/",
                                          etag=etag, last_poll_at=T0), result=None)


def test_no_file_yet_means_no_states_and_the_first_commit_creates_it(tmp_path: Path) -> None:
    path = tmp_path / "new" / "aggregator.db"
    opening = OpeningStore.start(f"sqlite:///{path}")
    assert opening is not None
    try:
        assert opening.source_states(["alpha"]) == {} and opening.source_states() == {}
        counts = opening.commit_poll(update("alpha", '"1"'),
                                     [make_article("k1", source_id="alpha")])
        assert counts.new == 1
    finally:
        opening.close()
    assert opening.failure is None
    with Store.open(f"sqlite:///{path}") as store:
        assert store.count_articles("alpha") == 1
        assert store.source_states()["alpha"].etag == '"1"'


def test_a_current_file_gives_the_states_the_store_reads(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'aggregator.db'}"
    article = make_article(source_id="alpha")
    with Store.open(url) as store:
        store.commit_polls([(update("alpha", '"a"'), [article], None),
                            (update("beta"), None, None)])
        expected = store.source_states(["alpha", "gamma"])
    opening = OpeningStore.start(url)
    assert opening is not None
    try:
        assert opening.source_states(["alpha", "gamma"]) == expected
        assert set(opening.source_states()) == {"alpha", "beta"}
        # what needs the store waits for it
        assert opening.known_keys("alpha", {article.key: article.content_hash}) == {article.key}
    finally:
        opening.close()


@pytest.mark.parametrize("database", [
    "postgresql+psycopg://127.0.0.1:5432/test",  # a server's: the Store reads its states
    "sqlite:///{tmp}/aggregator.db?timeout=5",  # options: SQLAlchemy's to read
    "sqlite:///{tmp}/not-a-database.db",  # there, but not at HEAD (here: not a database)
    "sqlite://",  # in memory
])
def test_other_databases_are_the_stores_to_open_first(tmp_path: Path, database: str) -> None:
    (tmp_path / "not-a-database.db").write_text("plain text", encoding="utf-8")
    assert OpeningStore.start(database.format(tmp=tmp_path)) is None


def test_an_opening_that_fails_fails_every_commit_with_its_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a file, not a folder", encoding="utf-8")
    opening = OpeningStore.start(f"sqlite:///{tmp_path / 'file' / 'aggregator.db'}")
    assert opening is not None
    try:
        assert opening.source_states() == {}  # known before the opening ended
        with pytest.raises(StoreError, match="cannot open database"):
            opening.commit_polls([(update("alpha"), [make_article(source_id="alpha")], None)])
        with pytest.raises(StoreError):
            opening.commit_poll(update("alpha"))
    finally:
        opening.close()
    assert isinstance(opening.failure, StoreError)
    assert (tmp_path / "file").read_text(encoding="utf-8") == "a file, not a folder"
