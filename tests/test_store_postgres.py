"""The store on the real PostgreSQL: transactions per poll, and connections the server
closes.  Skipped where no server answers on 127.0.0.1:5432 (``.ci/run`` starts one)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.engine import make_url

from aggregator.ingest.poll import PollOptions, poll_sources
from aggregator.records import (
    FetchOptions,
    FetchResult,
    NormalizeOptions,
    PollOutcome,
    Source,
    Validators,
)
from aggregator.store import Store

NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
OPTIONS = PollOptions(fetch=FetchOptions(), normalize=NormalizeOptions())
FEED = (b'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>P</title>'
        b"<item><title>one</title><link>http://p.test/1</link></item></channel></rss>")


def commits(admin: object, url: str) -> int:
    """``xact_commit`` of the database, once none of its backends is left (a backend
    reports its counts when it exits, at the latest)."""
    name = make_url(url).database
    with admin.connect() as connection:  # type: ignore[attr-defined]
        for _ in range(500):
            left = connection.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = :d"), {"d": name}).scalar()
            if not left:
                break
            connection.execute(text("SELECT pg_sleep(0.01)"))
        connection.execute(text("SELECT pg_stat_clear_snapshot()"))
        return int(connection.execute(text(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = :d"), {"d": name}).scalar())


def not_modified(src: Source, _options: FetchOptions, validators: Validators) -> FetchResult:
    if validators.etag:
        return FetchResult(source_id=src.id, url=src.url, status=304, etag=validators.etag)
    return FetchResult(source_id=src.id, url=src.url, status=200, content=FEED, etag='"1"',
                       headers={"content-type": "application/rss+xml"})


def test_a_poll_of_an_unchanged_source_commits_one_transaction(pg_admin: object,
                                                               pg_database: str) -> None:
    sources = [Source(id=f"s{n}", name="S", url=f"http://p{n}.test/feed", categories=("c",))
               for n in range(8)]
    with Store.open(pg_database) as store:
        first = poll_sources(sources, store, OPTIONS, fetch=not_modified, workers=4)
        assert {r.result for r in first} == {PollOutcome.NEW}
    before = commits(pg_admin, pg_database)
    with Store.open(pg_database) as store:  # what opening a store costs (driver set-up)
        store.source_states([s.id for s in sources])
    opening = commits(pg_admin, pg_database) - before
    before += opening
    rounds = 3
    for _ in range(rounds):
        with Store.open(pg_database) as store:  # as ``aggregator poll`` does, once per run
            # one thread, one connection: each new connection costs its driver set-up
            results = poll_sources(sources, store, OPTIONS, fetch=not_modified, workers=1)
            assert {r.result for r in results} == {PollOutcome.NOT_MODIFIED}
    spent = commits(pg_admin, pg_database) - before - rounds * opening
    # At most one commit per poll (the writer commits several polls per transaction):
    # the state reads are read-only (rolled back), and no ping transaction precedes a
    # checkout.
    assert rounds <= spent <= rounds * len(sources), (spent, opening)
    assert opening <= 5


def test_a_connection_the_server_closed_is_replaced_unseen(pg_admin: object,
                                                           pg_database: str) -> None:
    name = make_url(pg_database).database
    with Store.open(pg_database) as store:
        assert store.source_states() == {}  # one pooled connection now
        with pg_admin.connect() as connection:  # type: ignore[attr-defined]
            killed = connection.execute(text(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) "
                "FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"),
                {"d": name}).scalar()
        assert killed >= 1
        # the next calls take a fresh connection instead of failing on the dead one
        assert store.source_states() == {}
        [result] = poll_sources([Source(id="s", name="S", url="http://p.test/feed",
                                        categories=("c",))], store, OPTIONS, fetch=not_modified)
        assert result.result is PollOutcome.NEW


def test_concurrent_workers_never_claim_a_source_twice(pg_database: str) -> None:
    import threading
    from datetime import timedelta

    sources = [Source(id=f"s{n:04d}", name="S", url=f"http://p{n}.test/", categories=("c",))
               for n in range(600)]
    claimed: list[list[str]] = [[] for _ in range(4)]
    with Store.open(pg_database, connections=4) as store:
        store.add_sources(sources, now=NOW)
        start = threading.Barrier(4)

        def worker(number: int) -> None:
            start.wait()
            while batch := store.claim_due(f"w{number}", limit=20,
                                           lease_for=timedelta(minutes=5), now=NOW):
                claimed[number].extend(c.lease.source_id for c in batch)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    every = [source_id for batch in claimed for source_id in batch]
    assert sorted(every) == [s.id for s in sources]  # each exactly once
    assert sum(1 for batch in claimed if batch) >= 2  # the workers really competed


def test_workers_starting_together_add_the_same_sources_once(pg_database: str) -> None:
    import threading

    sources = [Source(id=f"s{n:03d}", name="S", url=f"http://p{n}.test/", categories=("c",))
               for n in range(200)]
    failures: list[BaseException] = []
    added: list[int] = []
    with Store.open(pg_database, connections=4) as store:
        start = threading.Barrier(4)

        def worker() -> None:
            try:
                start.wait()
                added.append(store.add_sources(sources, now=NOW))
            except BaseException as exc:  # reported below
                failures.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert failures == []
        assert sorted(added) == [0, 0, 0, 200]
        assert len(store.source_states()) == 200


def test_exclusive_names_are_held_by_one_process_at_a_time(pg_database: str) -> None:
    with Store.open(pg_database) as first, Store.open(pg_database) as second:
        with first.exclusive(["build:a", "maintenance"]) as held:
            assert held == {"build:a", "maintenance"}
            with second.exclusive(["build:a", "build:b"]) as other:
                assert other == {"build:b"}  # a busy name is left out, not waited for
        with second.exclusive(["build:a"]) as again:
            assert again == {"build:a"}  # released at the end of the block


def test_two_workers_committing_one_story_at_once_make_one_story(pg_database: str) -> None:
    """Each round, two sources' polls commit the same story at the same moment (from two
    threads, each with its own connection): the advisory lock on the story's keys queues
    the second, which then finds the first's article — never two stories."""
    from builders import T0, make_article

    from aggregator.records import SourceState, SourceUpdate

    rounds = 15
    with Store.open(pg_database, connections=4) as store:
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def commit(source_id: str, number: int) -> None:
            article = make_article(f"{source_id}-{number}", source_id=source_id,
                                   link=f"https://news.test/{number}.html?from={source_id}",
                                   title=f"同一条新闻 {number}", first_seen=T0)
            state = SourceState(source_id=source_id, url=f"https://{source_id}.test/feed")
            try:
                barrier.wait(timeout=30)
                store.commit_poll(SourceUpdate(state=state, result=None), [article])
            except BaseException as exc:  # reported below, in the test's thread
                errors.append(exc)

        for number in range(rounds):
            threads = [threading.Thread(target=commit, args=(s, number)) for s in ("a", "b")]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
            assert not errors, errors
        articles = list(store.iter_articles())
        members = store.story_members(articles)
    assert len(articles) == 2 * rounds
    assert all(len(found) == 2 for found in members.values()), members
    assert len({found[0].key for found in members.values()}) == rounds


def test_a_new_source_locks_all_its_story_keys_in_one_statement(pg_database: str) -> None:
    """The advisory locks on a commit's story keys (a link and a title per new article)
    are one round trip, not one per key, and they still serialize one story's commits
    (the test above)."""
    from builders import make_article
    from sqlalchemy import Engine, event

    from aggregator.records import SourceState, SourceUpdate

    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    articles = [make_article(f"k{i}", source_id="s", link=f"https://news.test/{i}.html",
                             title=f"标题 {i}") for i in range(20)]
    with Store.open(pg_database) as store:
        event.listen(Engine, "before_cursor_execute", record)
        try:
            store.commit_poll(SourceUpdate(state=SourceState(source_id="s",
                                                             url="https://s.test/feed"),
                                           result=None), articles)
        finally:
            event.remove(Engine, "before_cursor_execute", record)
        assert store.count_articles("s") == 20
    locks = [s for s in statements if "pg_advisory_xact_lock" in s]
    assert len(locks) == 1, len(locks)
