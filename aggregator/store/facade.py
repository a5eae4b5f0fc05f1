"""``Store``: the store's public face — every transaction opens and ends here.

Why a module of its own: the package's ``__init__`` must stay free of SQLAlchemy, so that
the short commands (``status``, a poll with nothing to fetch) can read an up-to-date
SQLite file through ``quick`` without importing it; ``Store`` is handed out from there
lazily.  What ``Store`` guarantees is the package's docstring.

It must NOT leak sessions, ORM rows or SQLAlchemy exceptions (they become records and
``StoreError``), and the modules it delegates to must not import it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType

from sqlalchemy import Engine, bindparam, func, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, selectinload

from aggregator.errors import AggregatorError, LeaseLost, StoreError
from aggregator.records import (
    AppliedConfig,
    Article,
    ArticleStamp,
    Claim,
    ConfigVersion,
    Lease,
    Source,
    SourceState,
    SourceStatus,
    SourceUpdate,
    StoreCounts,
)
from aggregator.store import claims, locks, reads, retention, rows, status_sql
from aggregator.store.commit import Item, checked, commit_batch, commit_in
from aggregator.store.engine import (
    WRITE,
    describe,
    in_memory,
    lock_schema,
    prepare,
)
from aggregator.store.models import (
    ArticleRow,
    CategoryRow,
    SourceRow,
    TombstoneRow,
)

__all__ = ["Store"]

_ITER_CHUNK = 500  # articles per read transaction in iter_articles
_SOME_STATES = text(status_sql.STATES + " WHERE id IN :ids").bindparams(
    bindparam("ids", expanding=True))


class Store:
    """Articles and per-source polling state in a SQLAlchemy database.

    Open with ``Store.open(url)``; one instance is safe to share between threads
    (each call uses its own session and pooled connection).
    """

    def __init__(self, engine: Engine, *, display_url: str) -> None:
        """Wrap an engine that ``open`` prepared; use ``Store.open`` instead."""
        self._engine = engine
        self._display_url = display_url

    # -- lifecycle -----------------------------------------------------------

    @staticmethod
    def exists(database_url: str) -> bool:
        """Whether there is a database to read without creating one: an SQLite file that
        is there (an in-memory one never is); a server's database is taken to exist (its
        server says otherwise when it is opened)."""
        try:
            url = make_url(database_url)
        except (SQLAlchemyError, ValueError):
            return False
        if url.get_backend_name() != "sqlite":
            return True
        database = url.database or ""
        return (not in_memory(url) and not database.startswith("file:")
                and Path(database).is_file())

    @classmethod
    def open(cls, database_url: str, *, migrate_in_child: bool = False,
             connections: int | None = None) -> Store:
        """Connect, create a SQLite file's folder, and migrate the schema to the latest version.

        ``migrate_in_child``: a needed migration runs in a short-lived child process, so
        that a long-running process (the daemon) never keeps Alembic and its templates
        (about 10 MB) in memory.  An in-memory database is always migrated here.
        ``connections``: how many threads will use the store at once (pool size).
        """
        try:
            url = make_url(database_url)
        except (SQLAlchemyError, ValueError) as exc:
            raise StoreError(f"invalid database URL {database_url!r}: {exc}") from exc
        display = url.render_as_string(hide_password=True)
        try:
            engine = prepare(url, migrate_in_child=migrate_in_child, connections=connections)
        except (SQLAlchemyError, OSError, ImportError, ValueError, RuntimeError) as exc:
            raise StoreError(f"cannot open database {display}: {describe(exc)}") from exc
        return cls(engine, display_url=display)

    def close(self) -> None:
        """Release every pooled connection; the store must not be used afterwards."""
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self._display_url!r})"

    # -- sources -------------------------------------------------------------

    def source_state(self, source_id: str) -> SourceState | None:
        """What a poll needs to remember about one source, or None if it was never polled."""
        with self._read(source_id) as session:
            found = session.execute(_SOME_STATES, {"ids": [source_id]}).first()
            return None if found is None else status_sql.state(found)

    def source_states(self, source_ids: Iterable[str] | None = None) -> dict[str, SourceState]:
        """The remembered state of these sources (None: of all), in one query (per chunk
        of ids): the statement and decoding ``quick.QuickReads.source_states`` runs too."""
        wanted = None if source_ids is None else sorted(set(source_ids))
        with self._read() as session:
            if wanted is None:
                found = session.execute(text(status_sql.STATES)).all()
            else:
                found = [row for start in range(0, len(wanted), rows.IN_CHUNK)
                         for row in session.execute(_SOME_STATES, {
                             "ids": wanted[start:start + rows.IN_CHUNK]})]
        return {row[0]: status_sql.state(row) for row in found}

    def source_status(self, source_id: str) -> SourceStatus | None:
        """One source's state and its number of stored articles, or None if never polled."""
        with self._read(source_id) as session:
            found = session.execute(text(status_sql.ONE_STATUS), {"source_id": source_id}).first()
            return None if found is None else status_sql.status(found)

    def statuses(self) -> list[SourceStatus]:
        """Every polled source, by id, with its number of stored articles (one query)."""
        with self._read() as session:
            found = session.execute(text(status_sql.STATUSES)).all()
            return [status_sql.status(row) for row in found]

    def commit_poll(self, update: SourceUpdate, articles: Sequence[Article] | None = None,
                    lease: Lease | None = None) -> StoreCounts:
        """Write one poll's decision and its articles in one transaction.

        ``update.state`` replaces the source's stored state whole.  ``articles`` is None
        when nothing was parsed (304, same bytes, error); a parsed document's articles
        (possibly none) are upserted by (source_id, key): the first of several with the
        same key wins (the others are counted as collided), an article whose
        ``content_hash`` matches the stored one is left alone, a changed one gets every
        field replaced except ``first_seen`` (and a first-seen fallback date never
        replaces a date read from the feed), and one retention removed stays removed
        (``retired``).  Tombstones of keys the document no longer lists are forgotten.
        The stored ``last_result`` is ``update.result``, or what the articles did.

        With the ``lease`` a claim gave, the commit applies only while the row still
        carries its token, and releases the lease; a worker that lost its lease (paused
        past it while another claimed the source) gets ``LeaseLost`` and writes nothing.
        """
        batch, collided = checked(update, articles)
        with self._write(update.state.source_id, "commit the poll") as session:
            outcome = commit_in(session, update, articles is not None, batch, collided, lease)
            if isinstance(outcome, LeaseLost):
                raise outcome
        return outcome

    def commit_polls(self, items: Sequence[tuple[SourceUpdate, Sequence[Article] | None,
                                                 Lease | None]]
                     ) -> list[StoreCounts | AggregatorError]:
        """Write several polls' decisions (``commit_poll``'s (update, articles, lease)) in
        ONE transaction; per item, in order, what ``commit_poll`` would have returned or
        raised: its ``StoreCounts``, or the ``LeaseLost`` / ``StoreError`` naming its source.

        Each item keeps ``commit_poll``'s semantics exactly (a lost lease writes nothing of
        that item and costs the others nothing).  The batch's rows are locked by one
        SELECT, its parsed documents' tombstones read by one, and its
        states written by one ``executemany``; articles are written poll by poll, in
        order (a new article may join the story of one an earlier poll of the batch
        stored).  When the batch fails in the database, it is rolled back and
        every item is committed alone, so only the bad one fails, with its source id.  An
        article of another source fails its item (a ``StoreError``), not the batch.
        """
        outcomes: list[StoreCounts | AggregatorError | None] = [None] * len(items)
        ready: list[Item] = []
        for index, (poll, articles, lease) in enumerate(items):
            try:
                batch, collided = checked(poll, articles)
            except ValueError as exc:
                outcomes[index] = StoreError(f"cannot commit the poll: {exc}",
                                             source_id=poll.state.source_id)
                continue
            ready.append(Item(index, poll, articles is not None, batch, collided, lease))
        if ready:
            try:
                with self._write(None, "commit the polls") as session:
                    written = commit_batch(session, ready)
            except StoreError:
                if len(ready) == 1:
                    raise
                written = {}
                for item in ready:
                    try:
                        written[item.index] = self.commit_poll(
                            item.update, items[item.index][1], item.lease)
                    except AggregatorError as exc:
                        written[item.index] = exc
            for index, outcome in written.items():
                outcomes[index] = outcome
        assert all(outcome is not None for outcome in outcomes)
        return outcomes  # type: ignore[return-value]

    def known_keys(self, source_id: str, hashes: Mapping[str, str]) -> set[str]:
        """Which of these article keys (key → content hash) need nothing new: stored with
        that same hash, or removed by retention while the portal still lists them.  The
        others are new or changed (a full-text poll fetches their pages).  One read."""
        keys = sorted(hashes)
        if not keys:
            return set()
        with self._read(source_id) as session:
            stored = rows.stored_hashes(session, source_id, keys)
            known = {key for key, (_, digest) in stored.items() if digest == hashes[key]}
            for start in range(0, len(keys), rows.IN_CHUNK):
                known.update(key for key in session.scalars(select(TombstoneRow.key).where(
                    TombstoneRow.source_id == source_id,
                    TombstoneRow.key.in_(keys[start:start + rows.IN_CHUNK])))
                    if key not in stored)
        return known

    def add_sources(self, sources: Iterable[Source], *, now: datetime) -> int:
        """Give every source without a row one, due ``now``, so a claim finds it; returns
        how many were added.  Idempotent: existing rows are left as they are."""
        with self._write(None, "add sources") as session:
            lock_schema(session.connection())  # peers starting together add the same rows
            return claims.add_missing(session, sources, now)

    def applied_config(self) -> AppliedConfig | None:
        """The config whose sources the table holds (the newest applied), or None."""
        with self._read() as session:
            return status_sql.applied_config(
                session.execute(text(status_sql.APPLIED_CONFIG)).first())

    def apply_config(self, version: ConfigVersion, sources: Collection[Source], *,
                     after: int, holder: str, now: datetime) -> AppliedConfig | None:
        """Make the sources table hold these ``sources`` as config generation ``after + 1``,
        in one transaction: rows are added for new sources (due ``now``), sources not
        listed are marked unlisted since ``now`` (no longer claimed; ``forget_removed``
        deletes them after a grace period), listed ones are unmarked.

        Compare-and-set: when the newest generation is no longer ``after`` (a peer applied
        a config meanwhile) nothing is written and None is returned — the caller compares
        its config with the new one and decides again.
        """
        with self._write(None, "apply the config") as session:
            lock_schema(session.connection())  # one config applied at a time
            return claims.apply_generation(session, version, sources, after=after,
                                           holder=holder, now=now)

    def claim_due(self, holder: str, *, limit: int, lease_for: timedelta,
                  now: datetime) -> list[Claim]:
        """Lease up to ``limit`` sources due at ``now`` that nobody holds, earliest first,
        in one short transaction; each claim bumps the row's fencing token.

        On PostgreSQL rows another worker is claiming are skipped (``FOR UPDATE SKIP
        LOCKED``), so concurrent workers never claim one source twice; SQLite's write
        lock serializes claims.  A source never scheduled is due; sources a 410 disabled
        or the config dropped are not.
        """
        if limit <= 0:
            return []
        with self._write(None, "claim due sources") as session:
            return claims.claim(session, holder, limit=limit, until=now + lease_for, now=now)

    def release(self, lease: Lease, *, due_at: datetime) -> None:
        """Give a claimed source back unpolled, due again at ``due_at``, if the lease holds."""
        with self._write(lease.source_id, "release the lease") as session:
            session.execute(update(SourceRow).where(
                SourceRow.id == lease.source_id, SourceRow.lease_token == lease.token)
                .values(leased_until=None, leased_by=None, next_poll_at=due_at))

    def exclusive(self, names: Iterable[str]) -> AbstractContextManager[set[str]]:
        """Which of ``names`` (builds of a category, maintenance) this process is the one
        doing now, across every process on the database.

        PostgreSQL: session advisory locks on one connection held for the block (released
        by PostgreSQL if the process dies); a busy name is left out, never waited for.
        SQLite is one host and one writer: every name.
        """
        return locks.exclusive(self._engine, names)

    def sole_poller(self) -> AbstractContextManager[bool]:
        """Whether this process may poll: always on PostgreSQL (workers share the sources
        through claims); on an SQLite file only if no other polling process holds it —
        SQLite is one host and one writer.  Held for the block (an OS file lock beside
        the database, released by the kernel if the process dies)."""
        return locks.sole_poller(self._engine)

    def prune(self, *, older_than: datetime | None = None, keep_per_source: int | None = None,
              now: datetime | None = None) -> dict[str, int]:
        """Delete articles dated before ``older_than`` and beyond the newest
        ``keep_per_source`` of each source; returns how many went, by source.

        Each deleted article leaves a tombstone (stamped ``now``, else its own date), so
        that the next poll does not add it back while the portal still lists it.
        """
        with self._write(None, "prune articles") as session:
            deleted = retention.prune(session, older_than, keep_per_source, now)
        return deleted

    def count_tombstones(self, source_id: str | None = None) -> int:
        """How many removed articles are remembered (for one source, if given)."""
        query = select(func.count()).select_from(TombstoneRow)
        if source_id is not None:
            query = query.where(TombstoneRow.source_id == source_id)
        with self._read(source_id) as session:
            return int(session.scalar(query) or 0)

    # -- articles ------------------------------------------------------------

    def categories(self) -> list[str]:
        """The distinct categories of stored articles, sorted (by Python, not collation)."""
        with self._read() as session:
            return sorted(session.scalars(select(CategoryRow.category).distinct()))

    def latest_articles(self, category: str | None, limit: int,
                        source_ids: Collection[str] | None = None) -> list[Article]:
        """The ``limit`` newest articles in ``category`` (None: of all) of these sources
        (None: of all): newest ``date`` first, ties by key."""
        if limit <= 0 or (source_ids is not None and not source_ids):
            return []
        query = (select(ArticleRow)
                 .order_by(ArticleRow.date.desc(), ArticleRow.key, ArticleRow.source_id)
                 .limit(limit).options(selectinload(ArticleRow.categories)))
        if category is not None:
            # A join, not EXISTS: SQLite would run a correlated EXISTS through the category
            # index once per article (quadratic: minutes for 20,000 articles).  An article
            # lists a category once (categories are deduplicated in config), so no DISTINCT.
            query = query.join(CategoryRow, CategoryRow.article_id == ArticleRow.id).where(
                CategoryRow.category == category)
        with self._read() as session:
            if source_ids is not None:
                query = query.where(reads.of_sources(session, set(source_ids)))
            return [rows.article(row) for row in session.scalars(query)]

    def story_members(self, articles: Iterable[Article],
                      source_ids: Collection[str] | None = None
                      ) -> dict[tuple[str, str], tuple[Article, ...]]:
        """(source_id, key) of each of ``articles`` → every stored article of its story
        (itself included) of these sources (None: of all), earliest ``first_seen`` first,
        ties by source id and key; one query per chunk of articles.  An article no longer
        stored maps to nothing."""
        wanted: dict[str, list[str]] = {}
        for article in articles:
            wanted.setdefault(article.source_id, []).append(article.key)
        pairs = sorted((s, k) for s, keys in wanted.items() for k in set(keys))
        if not pairs or (source_ids is not None and not source_ids):
            return {}
        with self._read() as session:
            return reads.story_members(session, pairs, source_ids)

    def category_index(self, category: str,
                       source_ids: Collection[str] | None = None) -> list[ArticleStamp]:
        """Every stored article of ``category`` (of these sources; None: of all) as an
        ``ArticleStamp`` — identity, dates and content hash, no content — in one query,
        ordered by (first_seen, source_id, key)."""
        if source_ids is not None and not source_ids:
            return []
        query = (select(ArticleRow.source_id, ArticleRow.key, ArticleRow.first_seen,
                        ArticleRow.updated_at, ArticleRow.date, ArticleRow.content_hash)
                 .join(CategoryRow, CategoryRow.article_id == ArticleRow.id)
                 .where(CategoryRow.category == category)
                 .order_by(ArticleRow.first_seen, ArticleRow.source_id, ArticleRow.key))
        with self._read() as session:
            if source_ids is not None:
                query = query.where(reads.of_sources(session, set(source_ids)))
            return [ArticleStamp(source_id=s, key=k, first_seen=f, updated_at=u, date=d,
                                 content_hash=h)
                    for s, k, f, u, d, h in session.execute(query)]

    def articles_by_identity(self, identities: Iterable[tuple[str, str]]
                             ) -> dict[tuple[str, str], Article]:
        """(source_id, key) → the stored article, for those of ``identities`` still stored;
        one query per chunk of identities."""
        pairs = sorted(set(identities))
        with self._read() as session:
            return reads.articles_by_identity(session, pairs)

    def forget_removed(self, *, now: datetime, grace: timedelta) -> list[str]:
        """Delete — with their articles and tombstones — the sources the applied config has
        not listed for longer than ``grace`` (``apply_config`` marks them); the ids deleted."""
        with self._write(None, "forget removed sources") as session:
            expired = retention.forget_unlisted(session, before=now - grace)
        return expired

    def iter_articles(self, source_id: str | None = None) -> Iterator[Article]:
        """Every stored article (of one source, if given), in insertion order.

        Reads in chunks, each in its own short transaction, so a slow consumer
        never holds a database snapshot open; articles stored meanwhile may or
        may not be included.
        """
        last_id: int | None = None
        while True:
            query = (select(ArticleRow).order_by(ArticleRow.id).limit(_ITER_CHUNK)
                     .options(selectinload(ArticleRow.categories)))
            if source_id is not None:
                query = query.where(ArticleRow.source_id == source_id)
            if last_id is not None:
                query = query.where(ArticleRow.id > last_id)
            with self._read(source_id) as session:
                found = session.scalars(query).all()
                chunk = [rows.article(row) for row in found]
                if found:
                    last_id = found[-1].id
            yield from chunk
            if len(chunk) < _ITER_CHUNK:
                return

    def count_articles(self, source_id: str | None = None) -> int:
        """How many articles are stored (for one source, if given)."""
        query = select(func.count()).select_from(ArticleRow)
        if source_id is not None:
            query = query.where(ArticleRow.source_id == source_id)
        with self._read(source_id) as session:
            return int(session.scalar(query) or 0)

    # -- transactions --------------------------------------------------------

    @contextmanager
    def _write(self, source_id: str | None, action: str) -> Iterator[Session]:
        """One write transaction (BEGIN IMMEDIATE on SQLite); commits or rolls back whole."""
        try:
            with Session(self._engine, autoflush=False) as session:
                session.connection(execution_options=WRITE)
                yield session
                session.commit()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot {action}: {describe(exc)}", source_id=source_id) from exc

    @contextmanager
    def _read(self, source_id: str | None = None) -> Iterator[Session]:
        """One read transaction (plain BEGIN on SQLite), always rolled back."""
        try:
            with Session(self._engine) as session:
                yield session
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read: {describe(exc)}", source_id=source_id) from exc
