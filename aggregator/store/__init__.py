"""The article database: the only place in the project that speaks SQL.

Why: every other stage works with plain records (``aggregator.records``); this
package turns them into rows and back, owns the schema and its Alembic
migrations, and makes SQLite safe for the poller's concurrent writers.

Guarantees:

* ``save_articles`` stores one poll — the source's state and all its articles —
  in ONE transaction; on any database error nothing of it remains and a
  ``StoreError`` naming the source is raised.
* Datetimes go in and come out timezone-aware UTC on every backend; naive
  datetimes are refused.
* On SQLite every connection runs in WAL mode with a 30 s busy timeout, and
  write transactions start with ``BEGIN IMMEDIATE`` (SQLAlchemy's pysqlite
  recipe: the driver's own BEGIN handling is disabled and the "begin" event
  emits ours), so concurrent writers queue on the lock instead of failing with
  "database is locked" when a read snapshot tries to become a write.

This package must NOT hand out ORM rows, sessions or SQLAlchemy exceptions, must
not use SQL that only one backend understands (the SQLite PRAGMAs and BEGIN
variants live in SQLite-only connection hooks), and must not decide anything
about feeds, articles' content or polling policy: it stores what it is given.
"""

from __future__ import annotations

import functools
import multiprocessing
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import (
    Column,
    Engine,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.pool import StaticPool

from aggregator.errors import StoreError
from aggregator.records import Article, SourceStatus, StoreCounts, Validators
from aggregator.store.models import ArticleRow, Base, CategoryRow, SourceRow

__all__ = ["Store"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# The newest migration; a test checks it is Alembic's head.  Bump it with every new revision.
HEAD_REVISION = "0002"
MIGRATION_TIMEOUT = 600.0  # seconds a migration in a child process may take

_IN_CHUNK = 500  # keys per IN (...) list when loading a batch's existing rows
_ITER_CHUNK = 500  # articles per read transaction in iter_articles
_BEGIN_OPTION = "aggregator_sqlite_begin"  # execution option read by the SQLite "begin" hook
_WRITE = {_BEGIN_OPTION: "IMMEDIATE"}
_ARTICLES = ArticleRow.__table__
_CATEGORIES = CategoryRow.__table__
_UNCHANGED_RESULTS = ("not-modified", "unchanged")


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

    @classmethod
    def open(cls, database_url: str, *, migrate_in_child: bool = False) -> Store:
        """Connect, create a SQLite file's folder, and migrate the schema to the latest version.

        ``migrate_in_child``: a needed migration runs in a short-lived child process, so
        that a long-running process (the daemon) never keeps Alembic and its templates
        (about 10 MB) in memory.  An in-memory database is always migrated here.
        """
        try:
            url = make_url(database_url)
        except (SQLAlchemyError, ValueError) as exc:
            raise StoreError(f"invalid database URL {database_url!r}: {exc}") from exc
        display = url.render_as_string(hide_password=True)
        engine: Engine | None = None
        try:
            engine = make_engine(url)
            revision = _current_revision(engine)
            if revision is None and _create_fresh(engine):
                revision = HEAD_REVISION
            if revision != HEAD_REVISION:
                if migrate_in_child and not _in_memory(url):
                    _upgrade_in_child(url.render_as_string(hide_password=False))
                else:
                    _upgrade(engine)
        except (SQLAlchemyError, OSError, ImportError, ValueError, RuntimeError) as exc:
            if engine is not None:
                engine.dispose()
            raise StoreError(f"cannot open database {display}: {_describe(exc)}") from exc
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

    def source_status(self, source_id: str) -> SourceStatus | None:
        """What is remembered about one source, or None if it was never polled."""
        with self._read(source_id) as session:
            row = session.execute(_one_status_query(), {"source_id": source_id}).first()
            return None if row is None else _status(row[0], row[1])

    def statuses(self) -> list[SourceStatus]:
        """Every polled source, by id, with its number of stored articles."""
        with self._read() as session:
            rows = session.execute(_status_query().order_by(SourceRow.id)).all()
            return [_status(source, count) for source, count in rows]

    def record_unchanged(self, source_id: str, url: str, *, result: str, polled_at: datetime,
                         validators: Validators | None = None) -> None:
        """Record a successful poll that stored nothing ("not-modified" or "unchanged").

        A success: the error count resets and ``last_success_at`` moves on.  Given
        validators replace the stored ones; after a 304 ("not-modified") a
        validator the response left out keeps its stored value, as HTTP caching
        prescribes.  ``None`` keeps both.  The body hash is kept.
        """
        if result not in _UNCHANGED_RESULTS:
            raise ValueError(f"result must be one of {_UNCHANGED_RESULTS}, not {result!r}")
        with self._write(source_id, "record the poll") as session:
            source = _lock_source(session, source_id, url)
            merge = result == "not-modified" and source.url == url
            source.url = url
            if validators is not None:
                if not merge or validators.etag is not None:
                    source.etag = validators.etag
                if not merge or validators.last_modified is not None:
                    source.last_modified = validators.last_modified
            _succeeded(source, result, polled_at)

    def record_error(self, source_id: str, url: str, error: str, *, polled_at: datetime) -> None:
        """Record a failed poll: one more error; articles, validators and body hash stay.

        ``url`` is only used when the source has no row yet: an existing row keeps
        the URL its validators belong to until a successful poll replaces both.
        """
        with self._write(source_id, "record the error") as session:
            source = _lock_source(session, source_id, url)
            source.last_poll_at = polled_at
            source.last_result = "error"
            source.last_error = error
            # An SQL expression, so that concurrent errors never lose an increment.
            source.error_count = SourceRow.error_count + 1  # type: ignore[assignment]

    def schedule_next(self, source_id: str, url: str, next_poll_at: datetime) -> None:
        """Remember when the source is due, so a restarted daemon keeps its backoff."""
        with self._write(source_id, "schedule the next poll") as session:
            _lock_source(session, source_id, url).next_poll_at = next_poll_at

    def note_redirect(self, source_id: str, url: str, target: str | None) -> int:
        """Track a permanent redirect seen on this poll (None: none seen).

        Returns how many consecutive polls have now confirmed ``target`` (0 for None).
        """
        with self._write(source_id, "record the redirect") as session:
            source = _lock_source(session, source_id, url)
            if target is None:
                source.redirect_target, source.redirect_count = None, 0
            elif source.redirect_target == target:
                source.redirect_count = (source.redirect_count or 0) + 1
            else:
                source.redirect_target, source.redirect_count = target, 1
            return source.redirect_count

    def move_source(self, source_id: str, moved_from: str, moved_to: str) -> None:
        """Poll ``moved_to`` from now on, for as long as the config says ``moved_from``."""
        with self._write(source_id, "move the source") as session:
            source = _lock_source(session, source_id, moved_from)
            source.moved_from, source.moved_to = moved_from, moved_to
            source.redirect_target, source.redirect_count = None, 0

    def disable_source(self, source_id: str, url: str, reason: str, *,
                       polled_at: datetime) -> None:
        """Stop polling a source that is gone (410) until its configured URL changes."""
        with self._write(source_id, "disable the source") as session:
            source = _lock_source(session, source_id, url)
            source.url = url
            source.disabled_reason = reason
            source.last_poll_at = polled_at
            source.last_result = "disabled"
            source.last_error = reason
            source.next_poll_at = None

    def prune(self, *, older_than: datetime | None = None,
              keep_per_source: int | None = None) -> int:
        """Delete articles dated before ``older_than`` and beyond the newest
        ``keep_per_source`` of each source; returns how many were deleted."""
        deleted = 0
        with self._write(None, "prune articles") as session:
            doomed: set[int] = set()
            if older_than is not None:
                doomed.update(session.scalars(
                    select(ArticleRow.id).where(ArticleRow.date < older_than)))
            if keep_per_source is not None:
                for source_id in session.scalars(select(SourceRow.id)):
                    doomed.update(session.scalars(
                        select(ArticleRow.id).where(ArticleRow.source_id == source_id)
                        .order_by(ArticleRow.date.desc(), ArticleRow.id.desc())
                        .offset(keep_per_source)))
            ids = sorted(doomed)
            for start in range(0, len(ids), _IN_CHUNK):
                chunk = ids[start:start + _IN_CHUNK]
                session.execute(delete(CategoryRow).where(CategoryRow.article_id.in_(chunk)))
                deleted += session.execute(
                    delete(ArticleRow).where(ArticleRow.id.in_(chunk))).rowcount or 0
        return deleted

    # -- articles ------------------------------------------------------------

    def save_articles(self, source_id: str, url: str, articles: Sequence[Article], *,
                      validators: Validators, body_hash: str | None,
                      polled_at: datetime) -> StoreCounts:
        """Upsert one poll's articles and the source's new state in one transaction.

        Keyed by (source_id, key); the first of several articles with the same key
        wins.  An article whose ``content_hash`` matches the stored one is left
        alone.  A changed one gets every field replaced except ``first_seen``;
        when its ``date`` is only a first-seen fallback (``date_from_feed`` False)
        the stored ``date`` and ``date_from_feed`` are kept, so a date once read
        from the feed is never lost.
        """
        batch = _first_occurrences(articles)
        for article in batch.values():
            if article.source_id != source_id:
                raise ValueError(f"article {article.key!r} belongs to source "
                                 f"{article.source_id!r}, not {source_id!r}")
        with self._write(source_id, "save articles") as session:
            source = _lock_source(session, source_id, url)
            stored = _stored_hashes(session, source_id, list(batch))
            fresh = [a for key, a in batch.items() if key not in stored]
            changed = {stored[key][0]: a for key, a in batch.items()
                       if key in stored and stored[key][1] != a.content_hash}
            _insert_articles(session, fresh)
            for row in _rows_by_id(session, list(changed)):
                _update_row(row, changed[row.id])
            new, updated = len(fresh), len(changed)
            unchanged = len(batch) - new - updated
            source.url = url
            source.etag = validators.etag
            source.last_modified = validators.last_modified
            source.body_hash = body_hash
            _succeeded(source, "new" if new else "updated" if updated else "unchanged",
                       polled_at)
        return StoreCounts(new=new, updated=updated, unchanged=unchanged)

    def categories(self) -> list[str]:
        """The distinct categories of stored articles, sorted (by Python, not collation)."""
        with self._read() as session:
            return sorted(session.scalars(select(CategoryRow.category).distinct()))

    def latest_articles(self, category: str | None, limit: int) -> list[Article]:
        """The ``limit`` newest articles in ``category`` (None: of all):
        newest ``date`` first, ties by key."""
        if limit <= 0:
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
            return [_article(row) for row in session.scalars(query)]

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
                rows = session.scalars(query).all()
                chunk = [_article(row) for row in rows]
                if rows:
                    last_id = rows[-1].id
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
                session.connection(execution_options=_WRITE)
                yield session
                session.commit()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot {action}: {_describe(exc)}", source_id=source_id) from exc

    @contextmanager
    def _read(self, source_id: str | None = None) -> Iterator[Session]:
        """One read transaction (plain BEGIN on SQLite), always rolled back."""
        try:
            with Session(self._engine) as session:
                yield session
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read: {_describe(exc)}", source_id=source_id) from exc


# -- engine and migrations -----------------------------------------------------


def make_engine(url: str | URL) -> Engine:
    """An engine with the store's connection settings (also used by migrations/env.py)."""
    url = make_url(url)
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    database = url.database or ""
    if _in_memory(url):
        # One shared connection: the schema must outlive the opening thread's
        # connection.  Fine for tests and demos, not for concurrent writers.
        engine = create_engine(url, poolclass=StaticPool,
                               connect_args={"check_same_thread": False})
    else:
        if not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _in_memory(url: URL) -> bool:
    """An SQLite database that lives only as long as its connection."""
    database = url.database or ""
    return url.get_backend_name() == "sqlite" and (
        database in ("", ":memory:") or url.query.get("mode") == "memory")


def _sqlite_connect(dbapi_connection: Any, connection_record: Any) -> None:
    # Take BEGIN away from the sqlite3 driver; _sqlite_begin emits it instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout = 30000")  # first: journal_mode may wait for a lock
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _sqlite_begin(connection: Any) -> None:
    mode = connection.get_execution_options().get(_BEGIN_OPTION)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if mode == "IMMEDIATE" else "BEGIN")


def _current_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError:  # no version table yet: a new database
        return None


# Alembic's own bookkeeping table, as ``alembic stamp`` would create it.
_ALEMBIC_VERSION = Table(
    "alembic_version", MetaData(),
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)


def _create_fresh(engine: Engine) -> bool:
    """Create the latest schema in a database without tables and stamp it with
    ``HEAD_REVISION`` (Alembic's "create_all, then stamp head"); False if it has tables.

    The tables come from the models, which the tests hold equal to what the
    migrations build.  A first run then neither imports Alembic nor replays every
    migration: a fifth of a second of a first poll.
    """
    with engine.connect() as connection:
        connection.execution_options(**_WRITE)
        with connection.begin():  # on SQLite: a write lock against a concurrent creator
            if inspect(connection).get_table_names():
                return False
            Base.metadata.create_all(connection)
            _ALEMBIC_VERSION.create(connection)
            connection.execute(insert(_ALEMBIC_VERSION).values(version_num=HEAD_REVISION))
    return True


_upgrade_lock = threading.Lock()  # alembic's context is module-global: one upgrade at a time


def _upgrade(engine: Engine) -> None:
    """``alembic upgrade head`` on one connection, in one (write) transaction.

    Only for a database behind ``HEAD_REVISION`` (see ``Store.open``): importing and
    configuring Alembic costs a CLI invocation a few hundred milliseconds.
    """
    from alembic import command
    from alembic.config import Config
    from alembic.util.exc import CommandError

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    with _upgrade_lock, engine.connect() as connection:
        connection.execution_options(**_WRITE)
        with connection.begin():
            config.attributes["connection"] = connection
            try:
                command.upgrade(config, "head")
            except CommandError as exc:
                raise RuntimeError(f"migration failed: {exc}") from exc


def _upgrade_in_child(url: str) -> None:
    """``_upgrade`` in a spawned process (a clean interpreter: no threads or connections
    inherited); its error, if any, is raised here."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child_upgrade, args=(url, sender),
                            name="aggregator-migrate", daemon=True)
    child.start()
    sender.close()
    try:
        error = receiver.recv() if receiver.poll(MIGRATION_TIMEOUT) else "timed out"
    except EOFError:
        error = "the migration process died"
    finally:
        receiver.close()
        child.join(5)
        if child.is_alive():
            child.kill()
            child.join()
    if error:
        raise RuntimeError(f"migration failed: {error}")


def _child_upgrade(url: str, sender: Connection) -> None:
    error = ""
    engine = make_engine(url)
    try:
        _upgrade(engine)
    except Exception as exc:  # reported to the parent, which raises it as a StoreError
        error = _describe(exc)
    finally:
        engine.dispose()
    sender.send(error)
    sender.close()


# -- rows <-> records ----------------------------------------------------------


def _first_occurrences(articles: Iterable[Article]) -> dict[str, Article]:
    batch: dict[str, Article] = {}
    for article in articles:
        batch.setdefault(article.key, article)
    return batch


def _stored_hashes(session: Session, source_id: str,
                   keys: list[str]) -> dict[str, tuple[int, str]]:
    """key → (id, content_hash) of the batch's already stored articles (no content loaded)."""
    stored: dict[str, tuple[int, str]] = {}
    for start in range(0, len(keys), _IN_CHUNK):
        query = select(ArticleRow.key, ArticleRow.id, ArticleRow.content_hash).where(
            ArticleRow.source_id == source_id, ArticleRow.key.in_(keys[start:start + _IN_CHUNK]))
        stored.update((key, (row_id, digest)) for key, row_id, digest in session.execute(query))
    return stored


def _rows_by_id(session: Session, ids: list[int]) -> list[ArticleRow]:
    rows: list[ArticleRow] = []
    for start in range(0, len(ids), _IN_CHUNK):
        query = (select(ArticleRow).where(ArticleRow.id.in_(ids[start:start + _IN_CHUNK]))
                 .options(selectinload(ArticleRow.categories)))
        rows.extend(session.scalars(query))
    return rows


def _insert_articles(session: Session, articles: list[Article]) -> None:
    """Bulk INSERT (executemany, RETURNING the new ids), then their categories."""
    if not articles:
        return
    ids: dict[str, int] = {}
    for start in range(0, len(articles), _IN_CHUNK):
        chunk = articles[start:start + _IN_CHUNK]
        returned = session.execute(
            # RETURNING pairs each id with its key, so the rows may come back in any
            # order: with sort_by_parameter_order SQLite would get one INSERT per row.
            # Core tables, not the ORM classes: the ORM's bulk path costs 2x per row.
            insert(_ARTICLES).returning(_ARTICLES.c.key, _ARTICLES.c.id),
            [_row_values(a) for a in chunk])
        ids.update((key, row_id) for key, row_id in returned)
    categories = [{"article_id": ids[a.key], "position": position, "category": category}
                  for a in articles for position, category in enumerate(a.categories)]
    if categories:
        session.execute(insert(_CATEGORIES), categories)


def _row_values(article: Article) -> dict[str, Any]:
    return {
        "source_id": article.source_id, "key": article.key, "guid": article.guid,
        "link": article.link, "title": article.title, "author": article.author,
        "date": article.date, "date_from_feed": article.date_from_feed,
        "content": article.content, "summary": article.summary, "headimg": article.headimg,
        "thumbnail": article.thumbnail, "comments": article.comments,
        "first_seen": article.first_seen, "updated_at": article.updated_at,
        "content_hash": article.content_hash,
    }


def _lock_source(session: Session, source_id: str, url: str) -> SourceRow:
    """The source's row, locked for this transaction (FOR UPDATE; SQLite's lock is global)."""
    source = session.get(SourceRow, source_id, with_for_update=True)
    if source is None:
        source = SourceRow(id=source_id, url=url, error_count=0)
        session.add(source)
        session.flush()  # the row must exist before articles reference it
    return source


def _succeeded(source: SourceRow, result: str, polled_at: datetime) -> None:
    source.last_poll_at = polled_at
    source.last_success_at = polled_at
    source.last_result = result
    source.last_error = None
    source.error_count = 0
    source.disabled_reason = None


def _update_row(row: ArticleRow, article: Article) -> None:
    if article.date_from_feed:
        row.date = article.date
        row.date_from_feed = True
    # else: a first-seen fallback never replaces the stored date (nor says where it came from)
    _copy_fields(row, article)


def _copy_fields(row: ArticleRow, article: Article) -> None:
    """Everything but identity, first_seen and date (which have their own rules)."""
    row.guid = article.guid
    row.link = article.link
    row.title = article.title
    row.author = article.author
    row.content = article.content
    row.summary = article.summary
    row.headimg = article.headimg
    row.thumbnail = article.thumbnail
    row.comments = article.comments
    row.updated_at = article.updated_at
    row.content_hash = article.content_hash
    current = row.categories
    for position, category in enumerate(article.categories):
        if position < len(current):
            current[position].category = category
        else:
            current.append(CategoryRow(position=position, category=category))
    del current[len(article.categories):]


def _article(row: ArticleRow) -> Article:
    return Article(
        source_id=row.source_id,
        key=row.key,
        guid=row.guid,
        link=row.link,
        title=row.title,
        author=row.author,
        date=row.date,
        date_from_feed=row.date_from_feed,
        categories=tuple(c.category for c in row.categories),
        content=row.content,
        summary=row.summary,
        headimg=row.headimg,
        thumbnail=row.thumbnail,
        comments=row.comments,
        first_seen=row.first_seen,
        updated_at=row.updated_at,
        content_hash=row.content_hash,
    )


@functools.cache
def _one_status_query() -> Any:
    """One source's status: built once (every poll asks), counting only that source's
    articles by index; the grouped count of ``_status_query`` would scan all of them."""
    count = (select(func.count()).where(ArticleRow.source_id == SourceRow.id)
             .scalar_subquery())
    return select(SourceRow, count).where(SourceRow.id == bindparam("source_id"))


def _status_query() -> Any:
    counts = (select(ArticleRow.source_id, func.count().label("n"))
              .group_by(ArticleRow.source_id).subquery())
    return (select(SourceRow, func.coalesce(counts.c.n, 0))
            .outerjoin(counts, counts.c.source_id == SourceRow.id))


def _status(source: SourceRow, article_count: int) -> SourceStatus:
    return SourceStatus(
        source_id=source.id,
        url=source.url,
        etag=source.etag,
        last_modified=source.last_modified,
        body_hash=source.body_hash,
        last_poll_at=source.last_poll_at,
        last_success_at=source.last_success_at,
        last_result=source.last_result,
        last_error=source.last_error,
        error_count=source.error_count,
        article_count=int(article_count),
        next_poll_at=source.next_poll_at,
        disabled_reason=source.disabled_reason,
        redirect_target=source.redirect_target,
        redirect_count=source.redirect_count or 0,
        moved_from=source.moved_from,
        moved_to=source.moved_to,
    )


def _describe(exc: BaseException) -> str:
    """A one-line cause: the driver's message, without SQL text or bound parameters."""
    orig = getattr(exc, "orig", None)  # DBAPIError, or StatementError around e.g. a ValueError
    cause = orig if isinstance(orig, BaseException) else exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else ''}"
