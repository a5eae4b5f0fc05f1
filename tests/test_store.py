"""Tests for aggregator.store against real databases.

Every test using the ``store`` fixture runs twice: on a SQLite file in tmp_path and
on the PostgreSQL server at $AGGREGATOR_TEST_PG_URL (default
postgresql+psycopg://postgres@127.0.0.1:5432/test), each PostgreSQL test in its own
freshly created schema (search_path set per connection) so parallel runs never
collide.  The PostgreSQL half is skipped when the server is not reachable.

These tests must not touch the network beyond that server, and must not sleep.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from builders import T0, database_rows, make_article
from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from aggregator.errors import LeaseLost, StoreError
from aggregator.records import (
    AppliedConfig,
    Article,
    ArticleStamp,
    ConfigVersion,
    Lease,
    PollOutcome,
    Source,
    SourceState,
    SourceUpdate,
    StoreCounts,
    Validators,
)
from aggregator.store import HEAD_REVISION, MIGRATIONS_DIR, Store, make_engine
from aggregator.store.models import Base
from aggregator.stories import fingerprint, plain_text, title_digest

PG_URL = os.environ.get("AGGREGATOR_TEST_PG_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REPO = Path(__file__).resolve().parents[1]

V1 = Validators(etag='"v1"', last_modified="Wed, 01 May 2024 12:00:00 GMT")


def success(source_id: str = "src", *, polled_at: datetime = T0, validators: Validators = V1,
            body_hash: str | None = "body-1", **fields: object) -> SourceState:
    return SourceState(source_id=source_id, url=f"https://example.com/{source_id}.xml",
                       etag=validators.etag, last_modified=validators.last_modified,
                       body_hash=body_hash, last_poll_at=polled_at, last_success_at=polled_at,
                       **fields)  # type: ignore[arg-type]


def save(store: Store, articles: list[Article], *, source_id: str = "src",
         polled_at: datetime = T0, validators: Validators = V1,
         body_hash: str | None = "body-1") -> StoreCounts:
    """Commit a parsed document's articles with a successful poll's state."""
    state = success(source_id, polled_at=polled_at, validators=validators, body_hash=body_hash)
    return store.commit_poll(SourceUpdate(state=state, result=None), articles)


def fail(store: Store, source_id: str, error: str, *, errors: int = 1,
         polled_at: datetime = T0) -> None:
    """Commit a failed poll (no articles)."""
    state = SourceState(source_id=source_id, url=f"https://{source_id}.example/feed",
                        last_poll_at=polled_at, last_result="error", last_error=error,
                        error_count=errors)
    store.commit_poll(SourceUpdate(state=state, result=PollOutcome.ERROR))


# -- backends ------------------------------------------------------------------


@functools.cache
def _pg_unreachable() -> str | None:
    engine = create_engine(PG_URL, poolclass=NullPool, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # any failure just means "no PostgreSQL here"
        return f"PostgreSQL not reachable at {PG_URL}: {type(exc).__name__}"
    finally:
        engine.dispose()
    return None


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database: a SQLite file (in a missing folder) or a fresh PG schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'store.db'}"
        return
    reason = _pg_unreachable()
    if reason is not None:
        pytest.skip(reason)
    schema = f"test_store_{uuid.uuid4().hex}"
    admin = create_engine(PG_URL, poolclass=NullPool)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    with Store.open(database_url) as opened:
        yield opened


# -- opening and migrations ------------------------------------------------------


def test_open_creates_folder_and_sets_wal(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "store.db"
    with Store.open(f"sqlite:///{path}") as opened:
        assert opened.count_articles() == 0
    assert path.is_file()
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        connection.close()


def migration_head() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def test_head_revision_constant_is_alembics_head() -> None:
    assert migration_head() == HEAD_REVISION


def test_open_twice_keeps_data_and_one_version(database_url: str) -> None:
    with Store.open(database_url) as first:
        save(first, [make_article("k1")])
    with Store.open(database_url) as second:  # upgrade head again: a no-op
        assert second.count_articles() == 1
        assert [a.key for a in second.iter_articles()] == ["k1"]
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    finally:
        engine.dispose()
    assert [v[0] for v in versions] == [migration_head()]


def migrate_with_alembic(url: str, revision: str = "head") -> None:
    """Build the schema by replaying the migrations, as an upgrade of an old database does."""
    engine = make_engine(url)  # creates a SQLite file's folder
    try:
        with engine.begin() as connection:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS_DIR))
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        engine.dispose()


def schema_of(url: str) -> dict[str, object]:
    """Every table's columns, keys, constraints and indexes, with their names."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            found = inspect(connection)
            return {
                table: {
                    "columns": [(c["name"], str(c["type"]), c["nullable"])
                                for c in found.get_columns(table)],
                    "primary key": found.get_pk_constraint(table),
                    "foreign keys": sorted((f["name"], tuple(f["constrained_columns"]),
                                            f["referred_table"]) for f in
                                           found.get_foreign_keys(table)),
                    "unique": sorted((u["name"], tuple(u["column_names"]))
                                     for u in found.get_unique_constraints(table)),
                    "indexes": sorted((i["name"], tuple(i["column_names"]), i["unique"])
                                      for i in found.get_indexes(table)),
                }
                for table in sorted(found.get_table_names())
            }
    finally:
        engine.dispose()


def test_migrations_build_what_the_models_declare(database_url: str) -> None:
    migrate_with_alembic(database_url)
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_a_new_database_gets_the_schema_the_migrations_build(database_url: str) -> None:
    migrate_with_alembic(database_url)
    migrated = schema_of(database_url)
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            Base.metadata.drop_all(connection)
            connection.execute(text("DROP TABLE alembic_version"))
    finally:
        engine.dispose()
    with Store.open(database_url) as store:  # created from the models, stamped at head
        assert store.count_articles() == 0
    assert schema_of(database_url) == migrated
    migrate_with_alembic(database_url)  # already at head: nothing to do, nothing fails
    assert schema_of(database_url) == migrated


def test_a_long_running_process_migrates_in_a_child_and_never_imports_alembic(
        database_url: str) -> None:
    migrate_with_alembic(database_url, "0001")  # an old database, to be upgraded
    probe = ("import os, sys\n"
             "from aggregator.store import Store\n"
             "if __name__ == '__main__':\n"
             "    with Store.open(os.environ['URL'], migrate_in_child=True) as store:\n"
             "        print(store.count_articles(), 'alembic' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", probe], env={**os.environ, "URL": database_url},
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "False"]
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT version_num FROM alembic_version")
                                      ).scalar() == HEAD_REVISION
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_a_failed_migration_in_a_child_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
    connection.execute("INSERT INTO alembic_version VALUES ('9999-from-the-future')")
    connection.commit()
    connection.close()
    with pytest.raises(StoreError, match=r"migration failed: .*9999-from-the-future"):
        Store.open(f"sqlite:///{path}", migrate_in_child=True)


def test_alembic_ini_upgrade_and_check(tmp_path: Path) -> None:
    """The developer path (repo alembic.ini, env.py connecting by itself) works too."""
    path = tmp_path / "dev" / "dev.db"
    config = Config(str(REPO / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", f"sqlite:///{path}")
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")
    command.check(config)  # raises if autogenerate would write a new migration
    with Store.open(f"sqlite:///{path}") as opened:
        assert opened.statuses() == []


def test_open_failure_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="cannot open database"):
        Store.open(f"sqlite:///{blocker / 'store.db'}")


def test_in_memory_sqlite_works() -> None:
    with Store.open("sqlite://") as opened:
        assert save(opened, [make_article("k1")]) == StoreCounts(new=1)
        assert opened.count_articles("src") == 1


# -- saving ------------------------------------------------------------------------


def test_new_unchanged_updated_counts(store: Store) -> None:
    assert save(store, [make_article("k1"), make_article("k2")]) == StoreCounts(new=2)
    assert store.source_status("src").last_result == "new"  # type: ignore[union-attr]

    changed = make_article("k2", title="New title", content_hash="hash-k2-v2")
    assert save(store, [make_article("k1"), changed]) == StoreCounts(updated=1, unchanged=1)
    assert store.source_status("src").last_result == "updated"  # type: ignore[union-attr]

    assert save(store, [make_article("k1"), changed, make_article("k3")]) == StoreCounts(
        new=1, unchanged=2)
    assert save(store, [make_article("k1")]) == StoreCounts(unchanged=1)
    assert store.source_status("src").last_result == "unchanged"  # type: ignore[union-attr]
    assert {a.key: a.title for a in store.iter_articles("src")} == {
        "k1": "Title k1", "k2": "New title", "k3": "Title k3"}


def test_same_batch_twice_adds_no_duplicates(store: Store) -> None:
    batch = [make_article(f"k{i}") for i in range(5)]
    save(store, batch)
    assert save(store, batch) == StoreCounts(unchanged=5)
    assert store.count_articles() == 5
    assert store.count_articles("src") == 5
    assert sorted(a.key for a in store.iter_articles()) == [f"k{i}" for i in range(5)]


def test_duplicate_keys_in_one_batch_first_wins(store: Store) -> None:
    first = make_article("dup", title="first")
    second = make_article("dup", title="second", content_hash="other")
    assert save(store, [first, second]) == StoreCounts(new=1, collided=1)
    assert [a.title for a in store.iter_articles()] == ["first"]


def test_update_keeps_first_seen_and_fallback_date(store: Store) -> None:
    original = make_article("k1", date=T0, first_seen=T0, updated_at=T0)
    save(store, [original])
    later = T0 + timedelta(days=3)
    fallback = make_article("k1", date=later, date_from_feed=False, first_seen=later,
                            updated_at=later, title="Edited", content_hash="v2")
    assert save(store, [fallback], polled_at=later) == StoreCounts(updated=1)
    (stored,) = store.iter_articles()
    assert stored.title == "Edited"
    assert stored.first_seen == T0
    assert stored.date == T0
    assert stored.date_from_feed is True
    assert stored.updated_at == later
    assert stored.content_hash == "v2"

    # A date read from the feed does replace the stored one.
    dated = replace(fallback, date=later, date_from_feed=True, content_hash="v3")
    save(store, [dated], polled_at=later)
    (stored,) = store.iter_articles()
    assert (stored.date, stored.date_from_feed, stored.first_seen) == (later, True, T0)


def test_update_replaces_every_other_field(store: Store) -> None:
    save(store, [make_article("k1")])
    edited = make_article("k1", guid="g2", link="https://example.com/moved", title="T2",
                          author="A2", content="<p>C2</p>", summary="S2",
                          headimg="https://img/h.jpg", thumbnail="https://img/t.jpg",
                          comments=True, updated_at=T0 + timedelta(hours=1),
                          content_hash="v2", first_seen=T0 + timedelta(hours=1))
    save(store, [edited])
    assert list(store.iter_articles()) == [replace(edited, first_seen=T0)]


def test_categories_keep_their_order(store: Store) -> None:
    save(store, [make_article("k1", categories=("tech", "ai", "business"))])
    assert next(store.iter_articles()).categories == ("tech", "ai", "business")
    save(store, [make_article("k1", categories=("ai", "tech"), content_hash="v2")])
    assert next(store.iter_articles()).categories == ("ai", "tech")
    save(store, [make_article("k1", categories=("z", "ai", "tech", "a"), content_hash="v3")])
    assert next(store.iter_articles()).categories == ("z", "ai", "tech", "a")
    assert store.latest_articles("business", 10) == []
    assert store.categories() == ["a", "ai", "tech", "z"]


def test_empty_batch_is_an_unchanged_success(store: Store) -> None:
    fail(store, "src", "boom")
    assert save(store, [], body_hash="empty") == StoreCounts()
    status = store.source_status("src")
    assert status is not None
    assert (status.last_result, status.error_count, status.body_hash) == ("unchanged", 0, "empty")


def test_article_of_another_source_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="other"):
        save(store, [make_article("k1", source_id="other")])
    assert store.source_status("src") is None


def test_batches_larger_than_one_in_list(store: Store) -> None:
    batch = [make_article(f"k{i:04d}") for i in range(1203)]
    assert save(store, batch) == StoreCounts(new=1203)
    assert save(store, batch) == StoreCounts(unchanged=1203)
    keys = [a.key for a in store.iter_articles("src")]  # crosses read-chunk boundaries
    assert keys == [a.key for a in batch]
    assert store.count_articles("src") == 1203


# -- reading -----------------------------------------------------------------------


def test_latest_articles_order_limit_and_category(store: Store) -> None:
    day = timedelta(days=1)
    save(store, [
        make_article("b", date=T0, categories=("news",)),
        make_article("a", date=T0, categories=("news", "tech")),
        make_article("c", date=T0 + day, categories=("tech", "news")),
        make_article("d", date=T0 - day, categories=("news",)),
        make_article("e", date=T0 + 2 * day, categories=("sport",)),
    ])
    save(store, [make_article("a", source_id="other", date=T0 + 5 * day,
                              categories=("news",))], source_id="other")

    news = store.latest_articles("news", 10)
    assert [(a.source_id, a.key) for a in news] == [
        ("other", "a"), ("src", "c"), ("src", "a"), ("src", "b"), ("src", "d")]
    assert news[2].categories == ("news", "tech")
    assert [a.key for a in store.latest_articles("news", 3)] == ["a", "c", "a"]
    assert [a.key for a in store.latest_articles("tech", 10)] == ["c", "a"]
    assert store.latest_articles("news", 0) == []
    assert store.latest_articles("missing", 10) == []
    assert store.categories() == ["news", "sport", "tech"]
    assert store.count_articles() == 6
    assert store.count_articles("other") == 1
    assert [a.key for a in store.iter_articles("other")] == ["a"]


def test_statuses_and_article_counts(store: Store) -> None:
    assert store.statuses() == []
    assert store.source_status("src") is None
    save(store, [make_article("k1"), make_article("k2")])
    save(store, [make_article("k1", source_id="other")], source_id="other",
         validators=Validators(), body_hash=None)
    fail(store, "broken", "HTTP 500")

    statuses = store.statuses()
    assert [(s.source_id, s.article_count) for s in statuses] == [
        ("broken", 0), ("other", 1), ("src", 2)]
    src = statuses[2]
    assert src.url == "https://example.com/src.xml"
    assert src.validators == V1
    assert src.body_hash == "body-1"
    assert (src.last_poll_at, src.last_success_at) == (T0, T0)
    assert (src.last_result, src.last_error, src.error_count) == ("new", None, 0)
    assert store.source_status("src") == src
    other = statuses[1]
    assert (other.etag, other.last_modified, other.body_hash) == (None, None, None)


# -- poll states -------------------------------------------------------------------


def test_a_commit_without_articles_writes_the_state_whole_and_keeps_them(store: Store) -> None:
    save(store, [make_article("k1")])
    later = T0 + timedelta(hours=1)
    state = SourceState(
        source_id="src", url="https://example.com/src.xml", etag='"v2"', last_modified=None,
        body_hash="body-1", last_poll_at=later, last_success_at=T0, last_result="error",
        last_error="HTTP 503", error_count=4, next_poll_at=later + timedelta(hours=16),
        disabled_reason=None, redirect_target="https://new.example/", redirect_count=2,
        moved_from=None, moved_to=None)
    update = SourceUpdate(state=state, result=PollOutcome.ERROR)
    assert store.commit_poll(update) == StoreCounts()
    assert store.source_state("src") == state
    status = store.source_status("src")
    assert status is not None and status.article_count == 1
    assert [a.key for a in store.iter_articles()] == ["k1"]


def test_the_stored_result_is_the_decisions_or_what_the_articles_did(store: Store) -> None:
    store.commit_poll(SourceUpdate(state=success(), result=PollOutcome.NOT_MODIFIED))
    assert store.source_state("src").last_result == "not-modified"  # type: ignore[union-attr]
    save(store, [make_article("k1")])
    assert store.source_state("src").last_result == "new"  # type: ignore[union-attr]


def test_source_states_reads_many_in_one_call(store: Store) -> None:
    for n in range(3):
        fail(store, f"s{n}", "HTTP 500", errors=n + 1)
    states = store.source_states(["s0", "s2", "never-polled"])
    assert sorted(states) == ["s0", "s2"]
    assert states["s2"].error_count == 3 and states["s2"] == store.source_state("s2")
    assert sorted(store.source_states()) == ["s0", "s1", "s2"]
    many = [f"x{n}" for n in range(1203)]  # more ids than one IN list takes
    assert store.source_states(many) == {}


# -- failures ----------------------------------------------------------------------


def test_failing_batch_rolls_back_entirely(store: Store) -> None:
    save(store, [make_article("k1"), make_article("k2")])
    before_status = store.source_status("src")
    before_articles = list(store.iter_articles())

    bad = make_article("bad", content=None)  # NOT NULL violation, past the type checker
    batch = [make_article("k1", title="Changed", content_hash="v2"), make_article("k3"), bad]
    with pytest.raises(StoreError) as caught:
        save(store, batch, polled_at=T0 + timedelta(hours=1), validators=Validators("x"),
             body_hash="body-2")
    assert caught.value.source_id == "src"
    assert "[src]" in str(caught.value)

    assert store.source_status("src") == before_status
    assert list(store.iter_articles()) == before_articles
    assert store.count_articles() == 2

    # The store is still usable after the failure.
    assert save(store, batch[:2]) == StoreCounts(new=1, updated=1)


def test_failing_first_batch_leaves_no_source(store: Store) -> None:
    with pytest.raises(StoreError):
        save(store, [make_article("k1"), make_article("bad", content=None)])
    assert store.source_status("src") is None
    assert store.statuses() == []
    assert store.count_articles() == 0


def test_naive_datetimes_are_refused(store: Store) -> None:
    naive = datetime(2024, 5, 1, 12, 0)  # an Article refuses one itself (test_rules)
    with pytest.raises(StoreError, match="naive"):
        fail(store, "src", "x", polled_at=naive)
    assert store.count_articles() == 0
    assert store.source_status("src") is None


# -- round trips -------------------------------------------------------------------


def test_datetimes_come_back_aware_utc(store: Store) -> None:
    beijing = timezone(timedelta(hours=8))
    local = datetime(2021, 5, 21, 15, 25, 30, 123456, tzinfo=beijing)
    save(store, [make_article("k1", date=local, first_seen=local, updated_at=local)],
         polled_at=local)
    (stored,) = store.iter_articles()
    for value in (stored.date, stored.first_seen, stored.updated_at):
        assert value == local
        assert value.tzinfo is UTC
        assert value.hour == 7
        assert value.microsecond == 123456
    status = store.source_status("src")
    assert status is not None
    assert status.last_poll_at == local
    assert status.last_poll_at.utcoffset() == timedelta(0)  # type: ignore[union-attr]


def test_cjk_and_long_text_round_trip(store: Store) -> None:
    content = "<p>" + "中文内容，日本語のテキスト、한국어 텍스트。" * 20000 + "</p>"
    article = make_article(
        "https://例子.中国/文章/1", title="维科网：激光雷达的新进展 🚗", author="记者 张三",
        categories=("科技", "汽车"), content=content, summary="激光雷达" * 100,
        headimg="https://图片.example/头图.jpg")
    save(store, [article])
    assert list(store.iter_articles()) == [article]
    assert store.latest_articles("科技", 5) == [article]
    assert store.categories() == ["汽车", "科技"] == sorted(["科技", "汽车"])
    assert save(store, [article]) == StoreCounts(unchanged=1)


# -- concurrency -------------------------------------------------------------------


def test_concurrent_writers(store: Store) -> None:
    threads_n, calls, per_call = 8, 30, 5
    barrier = threading.Barrier(threads_n + 1)
    failures: list[BaseException] = []
    results: list[StoreCounts] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        source_id = f"src{n}"
        try:
            barrier.wait()
            for call in range(calls):
                batch = [make_article(f"k{call}-{i}", source_id=source_id)
                         for i in range(per_call)]
                # Overlap with the previous call's batch: those keys are unchanged now.
                if call:
                    batch.append(make_article(f"k{call - 1}-0", source_id=source_id))
                counts = save(store, batch, source_id=source_id)
                fail(store, f"failing{n}", f"e{call}", errors=call + 1)
                with lock:
                    results.append(counts)
        except BaseException as exc:  # reported below, with the thread's failure
            with lock:
                failures.append(exc)

    def reader() -> None:
        try:
            barrier.wait()
            for _ in range(calls):
                store.latest_articles("news", 20)
                store.statuses()
        except BaseException as exc:
            with lock:
                failures.append(exc)

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads_n)]
    workers.append(threading.Thread(target=reader))
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert failures == []
    assert len(results) == threads_n * calls
    assert all(c.new == per_call and c.updated == 0 for c in results)
    assert sum(c.unchanged for c in results) == threads_n * (calls - 1)
    assert store.count_articles() == threads_n * calls * per_call
    for n in range(threads_n):
        assert store.count_articles(f"src{n}") == calls * per_call
    failing = store.source_states(f"failing{n}" for n in range(threads_n))
    assert {s.error_count for s in failing.values()} == {calls}


# -- daemon state (migration 0002) and tombstones (0003) --------------------------------


def test_next_poll_and_a_move_survive_reopen(store: Store, database_url: str) -> None:
    state = replace(success(), next_poll_at=T0 + timedelta(hours=2),
                    moved_from="http://old.test/feed", moved_to="http://new.test/feed",
                    disabled_reason="HTTP 410 Gone")
    store.commit_poll(SourceUpdate(state=state, result=PollOutcome.DISABLED))
    with Store.open(database_url) as reopened:
        assert reopened.source_state("src") == replace(state, last_result="disabled")


def test_prune_by_age_and_by_count(store: Store) -> None:
    articles = [make_article(f"k{i}", date=T0 - timedelta(days=i)) for i in range(10)]
    save(store, articles)
    assert store.prune(older_than=T0 - timedelta(days=6, hours=12)) == {"src": 3}  # k7-k9
    assert store.prune(keep_per_source=4) == {"src": 3}  # k4, k5, k6
    remaining = sorted(a.key for a in store.iter_articles())
    assert remaining == ["k0", "k1", "k2", "k3"]
    assert store.latest_articles(None, 2)[0].key == "k0"
    assert store.prune(older_than=T0 - timedelta(days=30), keep_per_source=10) == {}
    assert store.count_tombstones("src") == 6


def test_what_retention_removed_stays_removed_while_the_portal_lists_it(store: Store) -> None:
    articles = [make_article(f"k{i}", date=T0 - timedelta(days=i)) for i in range(5)]
    save(store, articles)
    assert store.prune(keep_per_source=2) == {"src": 3}
    # the portal still lists all five: nothing comes back as new
    assert save(store, articles) == StoreCounts(unchanged=2, retired=3)
    assert sorted(a.key for a in store.iter_articles()) == ["k0", "k1"]
    # k4 leaves the portal's feed: its tombstone is forgotten...
    assert save(store, articles[:4]) == StoreCounts(unchanged=2, retired=2)
    assert store.count_tombstones("src") == 2
    # ...so if it is ever listed again, it is a new article
    assert save(store, articles) == StoreCounts(new=1, unchanged=2, retired=2)
    assert store.count_tombstones() == 2


def test_a_commit_without_articles_keeps_tombstones(store: Store) -> None:
    save(store, [make_article("k0"), make_article("k1", date=T0 - timedelta(days=1))])
    store.prune(keep_per_source=1)
    store.commit_poll(SourceUpdate(state=success(), result=PollOutcome.NOT_MODIFIED))
    assert store.count_tombstones("src") == 1


def test_upgrade_from_the_first_revision_keeps_data(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    url = f"sqlite:///{tmp_path / 'old.db'}"
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url)
    command.upgrade(config, "0001")
    import sqlite3

    with sqlite3.connect(tmp_path / "old.db") as db:
        db.execute("INSERT INTO sources (id, url, error_count) VALUES ('old', 'http://o.test/', 2)")
    with Store.open(url) as store:
        status = store.source_status("old")
    assert status is not None and status.error_count == 2 and status.redirect_count == 0
    with sqlite3.connect(tmp_path / "old.db") as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchone()[0] == HEAD_REVISION


def test_latest_articles_of_some_sources_only(store: Store) -> None:
    save(store, [make_article("k1", date=T0)])
    save(store, [make_article("k2", source_id="other", date=T0 + timedelta(days=1))],
         source_id="other")
    assert [a.key for a in store.latest_articles("news", 10, {"src"})] == ["k1"]
    assert [a.key for a in store.latest_articles(None, 10, {"other"})] == ["k2"]
    assert store.latest_articles(None, 10, set()) == []
    assert len(store.latest_articles(None, 10)) == 2


def test_category_index_lists_identities_and_dates_of_a_category(store: Store) -> None:
    early, late = T0, T0 + timedelta(hours=2)
    save(store, [make_article("b", first_seen=early, updated_at=late, date=T0 - timedelta(days=9)),
                 make_article("a", first_seen=late, updated_at=late),
                 make_article("c", first_seen=early, categories=("sport",))])
    save(store, [make_article("z", source_id="other", first_seen=early, updated_at=early)],
         source_id="other")

    assert store.category_index("news") == [
        ArticleStamp(source_id="other", key="z", first_seen=early, updated_at=early, date=T0,
                     content_hash="hash-z"),
        ArticleStamp(source_id="src", key="b", first_seen=early, updated_at=late,
                     date=T0 - timedelta(days=9), content_hash="hash-b"),
        ArticleStamp(source_id="src", key="a", first_seen=late, updated_at=late, date=T0,
                     content_hash="hash-a")]  # by first_seen, then source id and key
    assert [s.key for s in store.category_index("news", {"src"})] == ["b", "a"]
    assert [s.key for s in store.category_index("news", {"src", *(f"s{n}" for n in range(
        2000))})] == ["b", "a"]  # a config of many sources
    assert store.category_index("news", set()) == []
    assert [s.key for s in store.category_index("sport")] == ["c"]
    assert all(s.first_seen.tzinfo is UTC for s in store.category_index("news"))


def test_articles_by_identity_loads_only_those_still_stored(store: Store) -> None:
    stored = [make_article(f"k{n:04d}") for n in range(1200)]  # more than one IN list
    save(store, stored)
    save(store, [make_article("k0001", source_id="other", title="别的")], source_id="other")

    wanted = [("src", f"k{n:04d}") for n in range(0, 1200, 2)] + [("other", "k0001"),
                                                                  ("src", "gone")]
    found = store.articles_by_identity(wanted)

    assert set(found) == set(wanted) - {("src", "gone")}
    assert found[("src", "k0002")] == stored[2]
    assert found[("other", "k0001")].title == "别的"
    assert store.articles_by_identity([]) == {}


def version(digest: str, written: datetime = T0) -> ConfigVersion:
    return ConfigVersion(digest=digest, written_at=written)


def apply(store: Store, ids: Sequence[str], *, now: datetime = T0) -> AppliedConfig | None:
    """Apply a config listing ``ids`` on top of the newest generation."""
    newest = store.applied_config()
    return store.apply_config(version(",".join(ids), now), configured(*ids),
                              after=newest.generation if newest else 0, holder="w1", now=now)


def test_latest_articles_of_a_config_of_more_sources_than_bind_parameters(store: Store) -> None:
    """70,000 configured sources: more than PostgreSQL's 65,535 parameters per query."""
    save(store, [make_article("k1", date=T0)])
    save(store, [make_article("k2", source_id="other", date=T0 + timedelta(days=1))],
         source_id="other")
    configured = {"src", *(f"s{n:05d}" for n in range(70_000))}
    assert [a.key for a in store.latest_articles("news", 10, configured)] == ["k1"]
    assert [a.key for a in store.latest_articles(None, 10, configured | {"other"})] == [
        "k2", "k1"]
    [listed] = store.latest_articles("news", 10, configured)
    assert [a.key for a in store.story_members([listed], configured)[("src", "k1")]] == ["k1"]


def test_a_source_the_config_dropped_is_forgotten_after_the_grace_period(store: Store) -> None:
    save(store, [make_article("k1")])
    save(store, [make_article("k1", source_id="gone")], source_id="gone")
    grace = timedelta(days=30)
    apply(store, ["src"])  # gone is noted as unlisted, and kept
    assert store.forget_removed(now=T0, grace=grace) == []
    assert store.count_articles("gone") == 1
    assert store.forget_removed(now=T0 + timedelta(days=29), grace=grace) == []
    # listed again within the grace period: the clock starts over when it is dropped again
    apply(store, ["src", "gone"], now=T0 + timedelta(days=29))
    apply(store, ["src"], now=T0 + timedelta(days=40))
    assert store.forget_removed(now=T0 + timedelta(days=69), grace=grace) == []
    assert store.forget_removed(now=T0 + timedelta(days=71), grace=grace) == ["gone"]
    assert store.count_articles("gone") == 0 and store.source_state("gone") is None
    assert store.count_articles("src") == 1 and store.source_state("src") is not None


def test_configs_are_applied_as_numbered_generations_compare_and_set(store: Store) -> None:
    assert store.applied_config() is None
    first = store.apply_config(version("v1"), configured("a", "b"), after=0, holder="w1",
                               now=T0)
    assert first == AppliedConfig(generation=1, version=version("v1"), applied_at=T0,
                                  applied_by="w1")
    assert store.applied_config() == first
    # a peer that compared with the empty table too lost the race: nothing is written
    assert store.apply_config(version("v0"), configured("z"), after=0, holder="w2",
                              now=T0) is None
    assert store.source_state("z") is None and store.applied_config() == first
    later = T0 + timedelta(minutes=5)
    second = store.apply_config(version("v2", later), configured("b", "c"), after=1,
                                holder="w2", now=later)
    assert second is not None and (second.generation, second.applied_by) == (2, "w2")
    # a added at v1 is no longer listed: never claimed; b stays, c is new and due
    due = store.claim_due("w", limit=10, lease_for=timedelta(minutes=1), now=later)
    assert [c.lease.source_id for c in due] == ["b", "c"]


# -- sources as a queue: claims, leases, fencing -----------------------------------------


def configured(*ids: str) -> list[Source]:
    return [Source(id=i, name=i, url=f"https://{i}.example/feed", categories=("news",))
            for i in ids]


def test_added_sources_are_due_and_claims_lease_them(store: Store) -> None:
    assert store.add_sources(configured("a", "b", "c"), now=T0) == 3
    assert store.add_sources(configured("a", "b", "c", "d"), now=T0) == 1  # idempotent
    lease = timedelta(minutes=2)
    first = store.claim_due("w1", limit=2, lease_for=lease, now=T0)
    assert [c.lease.source_id for c in first] == ["a", "b"]
    assert {(c.lease.token, c.lease.holder, c.lease.until) for c in first} == {
        (1, "w1", T0 + lease)}
    assert first[0].state == store.source_state("a")
    second = store.claim_due("w2", limit=10, lease_for=lease, now=T0)
    assert [c.lease.source_id for c in second] == ["c", "d"]  # a and b are leased
    assert store.claim_due("w2", limit=10, lease_for=lease, now=T0 + timedelta(minutes=1)) == []
    # w1 died: its leases expire and another worker takes the sources, with a new token
    taken = store.claim_due("w2", limit=1, lease_for=lease, now=T0 + timedelta(minutes=3))
    assert [(c.lease.source_id, c.lease.token, c.taken_over) for c in taken] == [("a", 2, True)]
    assert not any(c.taken_over for c in first + second)


def test_a_commit_under_a_lost_lease_is_refused_and_writes_nothing(store: Store) -> None:
    store.add_sources(configured("src"), now=T0)
    lease = timedelta(minutes=2)
    [paused] = store.claim_due("w1", limit=1, lease_for=lease, now=T0)
    [current] = store.claim_due("w2", limit=1, lease_for=lease, now=T0 + timedelta(minutes=5))
    late = SourceUpdate(state=success(next_poll_at=T0 + timedelta(hours=1)), result=None)
    with pytest.raises(LeaseLost) as caught:
        store.commit_poll(late, [make_article("k1")], paused.lease)
    assert caught.value.source_id == "src"
    assert store.count_articles() == 0 and store.source_state("src") == current.state
    # the current holder commits, and the lease is released: due again at its next poll
    assert store.commit_poll(late, [make_article("k1")], current.lease) == StoreCounts(new=1)
    assert store.claim_due("w3", limit=1, lease_for=lease, now=T0 + timedelta(minutes=6)) == []
    [again] = store.claim_due("w3", limit=1, lease_for=lease, now=T0 + timedelta(hours=1))
    assert again.lease.token == 3


def test_disabled_and_dropped_sources_are_never_due(store: Store) -> None:
    store.add_sources(configured("gone", "dropped", "ok"), now=T0)
    gone = SourceState(source_id="gone", url="https://gone.example/feed",
                       disabled_reason="HTTP 410 Gone", next_poll_at=T0)
    store.commit_poll(SourceUpdate(state=gone, result=PollOutcome.DISABLED))
    apply(store, ["gone", "ok"])
    due = store.claim_due("w", limit=10, lease_for=timedelta(minutes=1), now=T0)
    assert [c.lease.source_id for c in due] == ["ok"]


def test_known_keys_are_the_unchanged_and_the_removed_ones(store: Store) -> None:
    save(store, [make_article("same"), make_article("edited"),
                 make_article("removed", date=T0 - timedelta(days=9))])
    store.prune(keep_per_source=2)
    save(store, [make_article("same", source_id="other")], source_id="other")

    asked = {"same": "hash-same", "edited": "hash-edited-2", "removed": "hash-removed",
             "fresh": "hash-fresh"}

    assert store.known_keys("src", asked) == {"same", "removed"}
    assert store.known_keys("other", {"edited": "hash-edited"}) == set()
    assert store.known_keys("src", {}) == set()

# -- stories -------------------------------------------------------------------------

STORY_TEXT = ("<p>新华社北京5月21日电 国务院总理今天主持召开国务院常务会议，部署进一步推动工业"
              "互联网发展，促进制造业数字化转型。会议指出，工业互联网是新一代信息技术与制造业"
              "深度融合的产物，要加快网络、平台和安全体系建设。</p>")


def story_article(source_id: str, key: str, **fields: object) -> Article:
    values: dict[str, object] = {"source_id": source_id, "link": f"https://{source_id}.test/{key}",
                                 "title": "国务院部署推动工业互联网发展", "content": STORY_TEXT,
                                 "categories": (f"{source_id}-news",)}
    values.update(fields)
    return make_article(key, **values)  # type: ignore[arg-type]


def members_of(store: Store, article: Article) -> list[tuple[str, str]]:
    found = store.story_members([article])
    return [(a.source_id, a.key) for a in found[(article.source_id, article.key)]]


def test_one_link_is_one_story_across_sources(store: Store) -> None:
    first = story_article("a", "1", link="http://news.test/1.html?utm_source=rss",
                          title="甲", content="<p>甲</p>")
    second = story_article("b", "9", link="https://NEWS.test/1.html?spm=x#c",
                           title="乙", content="<p>乙</p>", first_seen=T0 + timedelta(hours=1))
    assert save(store, [first], source_id="a").story_categories == ()
    # the commit says which categories now show more (the story's, "a"'s included)
    assert save(store, [second], source_id="b") == StoreCounts(
        new=1, story_categories=("a-news", "b-news"))
    assert members_of(store, second) == members_of(store, first) == [("a", "1"), ("b", "9")]
    # the members come back whole: categories included
    [(_, b)] = [(m.source_id, m) for m in store.story_members([first])[("a", "1")][1:]]
    assert b.categories == ("b-news",) and b.title == "乙"


def test_a_near_identical_title_and_text_is_one_story(store: Store) -> None:
    save(store, [story_article("a", "1")], source_id="a")
    noisy = story_article("b", "7", title="【独家】国务院：部署推动“工业互联网”发展",
                          content=STORY_TEXT.replace("</p>", "另据报道，配套措施将出台。</p>"),
                          date=T0 + timedelta(days=2), first_seen=T0 + timedelta(days=2))
    save(store, [noisy], source_id="b")
    assert members_of(store, noisy) == [("a", "1"), ("b", "7")]


@pytest.mark.parametrize("other", [
    {"title": "国务院部署推动消费互联网发展"},  # another title
    {"content": "<p>" + "另一篇完全不同的报道，讲述本市暴雨预警和交通管制的情况。" * 3 + "</p>"},
    {"date": T0 + timedelta(days=4)},  # the same title and text, days later: a new report
], ids=["title", "text", "window"])
def test_different_stories_stay_apart(store: Store, other: dict[str, object]) -> None:
    save(store, [story_article("a", "1")], source_id="a")
    apart = story_article("b", "2", **other)
    save(store, [apart], source_id="b")
    assert members_of(store, apart) == [("b", "2")]


def test_articles_of_one_source_are_never_merged(store: Store) -> None:
    save(store, [story_article("a", "1"), story_article("a", "2", link="https://a.test/1")],
         source_id="a")
    assert members_of(store, story_article("a", "2")) == [("a", "2")]


def test_story_members_are_filtered_by_source_and_survive_the_representative(
        store: Store) -> None:
    save(store, [story_article("a", "1", link="https://news.test/1.html")], source_id="a")
    later = T0 + timedelta(hours=1)
    b = story_article("b", "2", link="https://news.test/1.html", first_seen=later,
                      date=later, updated_at=later)
    save(store, [b], source_id="b")
    assert store.story_members([b], source_ids={"b"}) == {("b", "2"): (b,)}
    assert store.story_members([b], source_ids=set()) == {}
    # retention removes the representative: the story keeps its other member, and a
    # third portal reporting it later still joins it
    assert store.prune(older_than=T0 + timedelta(minutes=1), now=later) == {"a": 1}
    c = story_article("c", "3", link="https://news.test/1.html?from=timeline",
                      first_seen=later + timedelta(hours=1))
    save(store, [c], source_id="c")
    assert members_of(store, c) == [("b", "2"), ("c", "3")]


def test_a_changed_article_keeps_its_story_and_new_keys(store: Store) -> None:
    save(store, [story_article("a", "1")], source_id="a")
    b = story_article("b", "2")
    save(store, [b], source_id="b")
    edited = replace(b, title="改过的标题", content_hash="changed")
    assert save(store, [edited], source_id="b", body_hash="body-2").updated == 1
    assert members_of(store, edited) == [("a", "1"), ("b", "2")]
    # the stored keys follow the edit: a fourth article with the new title finds it
    d = story_article("d", "4", title="改过的标题", link="https://d.test/4")
    save(store, [d], source_id="d")
    assert members_of(store, d) == [("a", "1"), ("b", "2"), ("d", "4")]


def test_upgraded_articles_are_stories_of_their_own(database_url: str) -> None:
    migrate_with_alembic(database_url, "0005")
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO sources (id, url, error_count, redirect_count,"
                                    " lease_token) VALUES ('old', 'https://old.test/', 0, 0, 0)"))
            connection.execute(text(
                "INSERT INTO articles (source_id, key, link, title, author, date, "
                "date_from_feed, content, summary, comments, first_seen, updated_at, "
                "content_hash) VALUES ('old', 'k', 'https://news.test/1.html', 't', 'a', "
                ":t, true, '', '', false, :t, :t, 'h')"), {"t": T0.replace(tzinfo=None)})
    finally:
        engine.dispose()
    with Store.open(database_url) as store:  # upgrades to 0006
        new = story_article("new", "n", link="https://news.test/1.html")
        save(store, [new], source_id="new")
        [old] = list(store.iter_articles("old"))
        assert members_of(store, old) == [("old", "k")]  # no keys: never merged
        assert members_of(store, new) == [("new", "n")]


def test_the_upgrade_to_0007_drops_old_fingerprints_and_a_match_derives_them_again(
        database_url: str) -> None:
    migrate_with_alembic(database_url, "0006")
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO sources (id, url, error_count, "
                                    "redirect_count, lease_token) VALUES "
                                    "('a', 'https://a.test/', 0, 0, 0)"))
            connection.execute(text(
                "INSERT INTO articles (source_id, key, link, title, author, date, "
                "date_from_feed, content, summary, comments, first_seen, updated_at, "
                "content_hash, story_title, story_print, story_id) VALUES ('a', '1', "
                "'https://a.test/1', 't', 'a', :date, true, :content, '', false, :date, "
                ":date, 'h', :title, '98c81b11383b5a3a', 1)"),  # the old function's value
                {"date": T0.replace(tzinfo=None), "content": STORY_TEXT,
                 "title": title_digest("国务院部署推动工业互联网发展")})
    finally:
        engine.dispose()
    with Store.open(database_url) as store:  # upgrades to 0007
        assert database_rows(database_url, "SELECT story_print FROM articles") == [(None,)]
        copy = story_article("b", "2", first_seen=T0 + timedelta(hours=1))
        save(store, [copy], source_id="b")
        [old] = list(store.iter_articles("a"))
        assert members_of(store, old) == [("a", "1"), ("b", "2")]
    prints = dict(database_rows(database_url, "SELECT key, story_print FROM articles"))
    assert prints == {"1": fingerprint(plain_text(STORY_TEXT)), "2": copy.story_print}


def test_fingerprints_are_derived_only_for_titles_another_source_has(database_url: str) -> None:
    with Store.open(database_url) as store:
        save(store, [story_article("a", "1"), story_article("a", "2", title="别的标题"),
                     story_article("a", "3", title="短", content="<p>短讯</p>")], source_id="a")
        save(store, [story_article("b", "9", content="<p>短讯</p>", title="短")], source_id="b")
    prints = dict(database_rows(database_url,
                                "SELECT source_id || key, story_print FROM articles"))
    # no other source has a1's or a2's title: nothing derived; a3 and b9 met on "短",
    # and neither has text enough for a fingerprint (stored as '', not NULL)
    assert prints == {"a1": None, "a2": None, "a3": "", "b9": ""}


# -- many polls in one transaction (commit_polls) ------------------------------------


@contextlib.contextmanager
def counted_commits() -> Iterator[list[int]]:
    """Counts the transactions committed (by every engine) while open: ``[n]``."""
    count = [0]

    def committed(_connection: object) -> None:
        count[0] += 1

    event.listen(Engine, "commit", committed)
    try:
        yield count
    finally:
        event.remove(Engine, "commit", committed)


def side_article(side: str, key: str, **fields: object) -> Article:
    """An article of source ``{side}-…`` whose story keys are its side's own."""
    return make_article(key, link=f"https://{side}.example/{key}", title=f"{side} {key}",
                        content=f"<p>{side} {key} {uuid.uuid4().hex}</p>", **fields)


def paired_polls(store: Store, side: str) -> list[tuple[SourceUpdate, list[Article] | None,
                                                         Lease | None]]:
    """One side's sources polled once, then every kind of second poll of them: 304, same
    body, error, a first poll that failed, a parsed one, one under a lease."""
    later = T0 + timedelta(hours=1)
    for name in ("304", "same", "error", "parsed"):
        sid = f"{side}-{name}"
        state = replace(success(sid), url=f"https://example.com/{name}.xml",
                        next_poll_at=T0 + timedelta(days=1))
        store.commit_poll(SourceUpdate(state=state, result=None),
                          [side_article(side, "k1", source_id=sid)])
    store.add_sources([Source(id=f"{side}-leased", name="L", url="https://example.com/l.xml",
                              categories=("c",))], now=T0)
    [claim] = store.claim_due("w", limit=1, lease_for=timedelta(minutes=5), now=T0)
    assert claim.lease.source_id == f"{side}-leased"

    def state(name: str, **fields: object) -> SourceState:
        return replace(success(f"{side}-{name}", polled_at=later,
                               validators=Validators('"v2"', None)),
                       url=f"https://example.com/{name}.xml", next_poll_at=later, **fields)

    return [
        (SourceUpdate(state=state("304"), result=PollOutcome.NOT_MODIFIED), None, None),
        (SourceUpdate(state=state("same"), result=None), None, None),
        (SourceUpdate(state=state("error", last_error="HTTP 500", error_count=1),
                      result=PollOutcome.ERROR), None, None),
        (SourceUpdate(state=state("new", last_error="HTTP 404", error_count=1),
                      result=PollOutcome.ERROR), None, None),
        (SourceUpdate(state=state("parsed"), result=None),
         [side_article(side, "k1", source_id=f"{side}-parsed", content_hash="v2"),
          side_article(side, "k2", source_id=f"{side}-parsed")], None),
        (SourceUpdate(state=state("leased"), result=PollOutcome.NOT_MODIFIED), None,
         claim.lease),
    ]


def test_a_batch_of_polls_is_one_transaction_and_writes_what_commit_poll_writes(
        store: Store) -> None:
    one_by_one = paired_polls(store, "a")
    batched = paired_polls(store, "b")
    with counted_commits() as alone:
        expected = [store.commit_poll(*item) for item in one_by_one]
    with counted_commits() as together:
        outcomes = store.commit_polls(batched)
    assert (alone[0], together[0]) == (len(one_by_one), 1)
    assert outcomes == expected
    assert expected[4] == StoreCounts(new=1, updated=1)
    for (first, _, _), (second, _, _) in zip(one_by_one, batched, strict=True):
        a, b = first.state.source_id, second.state.source_id
        assert replace(store.source_state(a), source_id="") == replace(  # type: ignore[arg-type]
            store.source_state(b), source_id="")  # type: ignore[arg-type]
        assert store.count_articles(a) == store.count_articles(b)
    # the leases were released on both sides: neither source is claimed again before it is due
    assert store.claim_due("w2", limit=10, lease_for=timedelta(minutes=5),
                           now=T0 + timedelta(minutes=30)) == []


def test_unchanged_polls_of_many_sources_share_transactions(store: Store) -> None:
    ids = [f"s{i:03d}" for i in range(120)]
    for sid in ids:
        fail(store, sid, "first")
    polls = [(SourceUpdate(state=success(sid, next_poll_at=T0 + timedelta(hours=2)),
                           result=PollOutcome.NOT_MODIFIED), None, None) for sid in ids]
    with counted_commits() as committed:
        assert store.commit_polls(polls) == [StoreCounts()] * len(ids)
    assert committed[0] == 1
    states = store.source_states(ids)
    assert {(s.error_count, s.last_result, s.next_poll_at) for s in states.values()} == {
        (0, "not-modified", T0 + timedelta(hours=2))}


def test_a_failing_item_fails_alone_and_the_others_commit(store: Store) -> None:
    store.add_sources(configured("leased"), now=T0)
    [paused] = store.claim_due("w1", limit=1, lease_for=timedelta(minutes=2), now=T0)
    store.claim_due("w2", limit=1, lease_for=timedelta(minutes=2), now=T0 + timedelta(minutes=5))
    polls: list[tuple[SourceUpdate, list[Article] | None, Lease | None]] = [
        (SourceUpdate(state=success("ok1"), result=PollOutcome.NOT_MODIFIED), None, None),
        (SourceUpdate(state=success("leased"), result=None), [make_article(
            "k1", source_id="leased")], paused.lease),
        (SourceUpdate(state=success("refused"), result=None),
         [make_article("bad", source_id="refused", content=None)], None),  # NOT NULL
        (SourceUpdate(state=success("stranger"), result=None), [make_article("k1")], None),
        (SourceUpdate(state=success("ok2"), result=None),
         [make_article("k1", source_id="ok2")], None),
    ]
    outcomes = store.commit_polls(polls)
    assert outcomes[0] == StoreCounts() and outcomes[4] == StoreCounts(new=1)
    assert isinstance(outcomes[1], LeaseLost) and outcomes[1].source_id == "leased"
    assert isinstance(outcomes[2], StoreError) and outcomes[2].source_id == "refused"
    assert isinstance(outcomes[3], StoreError) and outcomes[3].source_id == "stranger"
    assert "belongs to source 'src'" in outcomes[3].reason
    assert store.source_state("ok1") == replace(success("ok1"), last_result="not-modified")
    assert store.count_articles("ok2") == 1 and store.count_articles() == 1
    assert store.source_state("refused") is None and store.source_state("stranger") is None
    assert store.source_state("leased").last_poll_at is None  # type: ignore[union-attr]


def test_a_new_article_joins_the_story_an_earlier_poll_of_the_batch_stored(
        store: Store) -> None:
    first = story_article("a", "1", link="http://news.test/1.html", title="甲")
    second = story_article("b", "9", link="https://news.test/1.html", title="乙",
                           first_seen=T0 + timedelta(hours=1))
    outcomes = store.commit_polls([
        (SourceUpdate(state=success("a"), result=None), [first], None),
        (SourceUpdate(state=success("b"), result=None), [second], None)])
    assert outcomes == [StoreCounts(new=1),
                        StoreCounts(new=1, story_categories=("a-news", "b-news"))]
    assert members_of(store, second) == [("a", "1"), ("b", "9")]


def test_a_batch_of_parsed_polls_shares_its_statements(store: Store) -> None:
    ids = [f"n{i:02d}" for i in range(12)]
    store.commit_poll(SourceUpdate(state=success(ids[0]), result=None),
                      [make_article("old", source_id=ids[0])])
    polls = [(SourceUpdate(state=success(sid), result=None),
              [make_article(f"k{n}", source_id=sid, link=f"https://{sid}.test/{n}",
                            title=f"{sid} {n}") for n in range(3)], None) for sid in ids]
    statements: list[tuple[str, bool]] = []

    def record(_conn: object, _cursor: object, statement: str, _params: object,
               _context: object, many: bool) -> None:
        statements.append((" ".join(statement.split()), many))

    event.listen(Engine, "before_cursor_execute", record)
    try:
        outcomes = store.commit_polls(polls)
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    assert outcomes == [StoreCounts(new=3)] * len(ids)
    reads = [s for s, _ in statements if "content_hash FROM articles WHERE" in s]
    stones = [s for s, _ in statements if "FROM tombstones" in s]
    rows_added = [s for s, _ in statements if s.startswith("INSERT INTO sources")]
    states = [s for s, many in statements if s.startswith("UPDATE sources") and many]
    # the stored keys: one indexed search per source; the rest once for the whole batch
    assert (len(reads), len(stones), len(rows_added), len(states)) == (
        len(ids), 1, 1, 1), statements
    assert store.count_articles() == 1 + 3 * len(ids)
    assert store.source_state(ids[-1]) == replace(success(ids[-1]), last_result="new")
