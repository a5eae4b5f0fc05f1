"""Rows <-> records: the only code that maps ORM rows to ``aggregator.records`` and back.

Helpers for ``Store``'s transactions: they take an open session and never commit,
so the caller decides what one transaction holds.  Nothing here decides polling
policy or article content; it copies what it is given.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import fields
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session, selectinload

from aggregator.records import (
    Article,
    SourceState,
)
from aggregator.store import driver, status_sql
from aggregator.store.models import (
    ArticleRow,
    CategoryRow,
    SourceRow,
    TombstoneRow,
)

IN_CHUNK = 500  # keys per IN (...) list when loading a batch's existing rows
_ARTICLES = ArticleRow.__table__
_CATEGORIES = CategoryRow.__table__
_SOURCES = SourceRow.__table__
# An Article's fields stored in the articles table (categories have a table of their own),
# and those a changed article replaces (not its identity, first_seen or date).
ARTICLE_COLUMNS = tuple(f.name for f in fields(Article) if f.init and f.name != "categories")
_REPLACED_COLUMNS = tuple(name for name in ARTICLE_COLUMNS if name not in (
    "source_id", "key", "first_seen", "date", "date_from_feed"))
# The story keys an Article derives (properties, not fields): written with the article,
# replaced when it changes; its story_id is assigned once, when it is first stored.
STORY_KEYS = ("story_link", "story_title")
# The third key, ``story_print``, is derived only when a story match needs it (an article of
# another source with the same title): NULL until then (and again after the content
# changed), then the fingerprint, or NO_PRINT when the text is too short to have one.
NO_PRINT = ""
# The state columns a poll writes whole (SourceState's fields but the id).
STATE_FIELDS = status_sql.STATE_COLUMNS
# A new article's row and its categories' rows, as the driver inserts them.
_INSERTED_COLUMNS = (*ARTICLE_COLUMNS, *STORY_KEYS, "story_id", "story_print")
_INSERT_ARTICLE = insert(_ARTICLES)
_CATEGORY_COLUMNS = ("article_id", "position", "category")
_INSERT_CATEGORY = insert(_CATEGORIES)
# Some of one source's articles by key (a chunk of keys, expanded at execution: the
# statements are built once, not per poll): their stored hashes, their ids.
_BY_KEYS = (_ARTICLES.c.source_id == bindparam("source_id"),
            _ARTICLES.c.key.in_(bindparam("keys", expanding=True)))
_STORED_HASHES = select(_ARTICLES.c.key, _ARTICLES.c.id, _ARTICLES.c.content_hash).where(*_BY_KEYS)
_IDS = select(_ARTICLES.c.key, _ARTICLES.c.id).where(*_BY_KEYS)


def first_occurrences(articles: Iterable[Article]) -> tuple[dict[str, Article], int]:
    """The batch by key, the first of several articles with one key winning, and how many
    were left out that way."""
    batch: dict[str, Article] = {}
    collided = 0
    for article in articles:
        if article.key in batch:
            collided += 1
        else:
            batch[article.key] = article
    return batch, collided


def stored_hashes(session: Session, source_id: str,
                   keys: list[str]) -> dict[str, tuple[int, str]]:
    """key → (id, content_hash) of the batch's already stored articles (no content loaded).

    One source per call: each query is a search of the (source_id, key) index, where
    SQLite answers a row-value ``(source_id, key) IN (VALUES ...)`` over several sources
    with a scan of the whole index.
    """
    return {key: (row_id, digest)
            for key, row_id, digest in _keyed(session, _STORED_HASHES, source_id, keys)}


def _keyed(session: Session, statement: Any, source_id: str, keys: list[str]
           ) -> Iterator[Any]:
    """The rows of a statement over some of one source's articles, chunk of keys by chunk."""
    for start in range(0, len(keys), IN_CHUNK):
        yield from session.execute(statement, {"source_id": source_id,
                                               "keys": keys[start:start + IN_CHUNK]})


def tombstones(session: Session, source_ids: list[str]) -> dict[str, set[str]]:
    """source id → the keys of its tombstones, for these sources (one query per chunk)."""
    found: dict[str, set[str]] = {}
    for start in range(0, len(source_ids), IN_CHUNK):
        query = select(TombstoneRow.source_id, TombstoneRow.key).where(
            TombstoneRow.source_id.in_(source_ids[start:start + IN_CHUNK]))
        for source_id, key in session.execute(query):
            found.setdefault(source_id, set()).add(key)
    return found


def rows_by_id(session: Session, ids: list[int]) -> list[ArticleRow]:
    rows: list[ArticleRow] = []
    for start in range(0, len(ids), IN_CHUNK):
        query = (select(ArticleRow).where(ArticleRow.id.in_(ids[start:start + IN_CHUNK]))
                 .options(selectinload(ArticleRow.categories)))
        rows.extend(session.scalars(query))
    return rows


def insert_articles(session: Session, articles: list[Article],
                    stories: dict[str, int] | None = None,
                    prints: dict[str, str] | None = None) -> None:
    """Bulk INSERT (the driver's executemany), their ids read back by key, then their
    categories.

    ``stories``: key → the story an article joins; the others start their own (their
    story id is their own id).  ``prints``: key → the stored ``story_print`` of the
    articles whose fingerprint a match derived (the others' stays NULL).  The articles
    are of one source.
    """
    if not articles:
        return
    joined = stories or {}
    derived = prints or {}
    driver.execute_many(session, _INSERT_ARTICLE, [
        {**row_values(a), "story_id": joined.get(a.key), "story_print": derived.get(a.key)}
        for a in articles], _INSERTED_COLUMNS)
    ids = dict(_keyed(session, _IDS, articles[0].source_id, [a.key for a in articles]))
    founders = [ids[a.key] for a in articles if a.key not in joined]
    for start in range(0, len(founders), IN_CHUNK):
        session.execute(update(_ARTICLES).where(
            _ARTICLES.c.id.in_(founders[start:start + IN_CHUNK]))
            .values(story_id=_ARTICLES.c.id))
    driver.execute_many(session, _INSERT_CATEGORY, [
        {"article_id": ids[a.key], "position": position, "category": category}
        for a in articles for position, category in enumerate(a.categories)],
        _CATEGORY_COLUMNS)


def stored_print(fingerprint: str | None) -> str:
    """``story_print`` as stored once derived."""
    return NO_PRINT if fingerprint is None else fingerprint


def derived_print(stored: str) -> str | None:
    """The fingerprint a derived (non-NULL) ``story_print`` stands for: ``stored_print``
    undone."""
    return None if stored == NO_PRINT else stored


def row_values(article: Article) -> dict[str, Any]:
    return {name: getattr(article, name) for name in (*ARTICLE_COLUMNS, *STORY_KEYS)}


def add_sources(session: Session, states: list[SourceState]) -> None:
    """Rows for these sources, polled for the first time (one executemany); the state
    itself is written with the others (``write_states``)."""
    if states:
        session.execute(insert(_SOURCES), [{"id": state.source_id, "url": state.url or "",
                                             "error_count": 0} for state in states])


def lock_states(session: Session, source_ids: list[str]) -> dict[str, int]:
    """source id → lease token of those of these sources with a row, the rows locked for
    this transaction in id order (FOR UPDATE; SQLite's lock is global)."""
    tokens: dict[str, int] = {}
    ids = sorted(source_ids)
    for start in range(0, len(ids), IN_CHUNK):
        query = (select(_SOURCES.c.id, _SOURCES.c.lease_token)
                 .where(_SOURCES.c.id.in_(ids[start:start + IN_CHUNK]))
                 .order_by(_SOURCES.c.id).with_for_update())
        tokens.update((source_id, token) for source_id, token in session.execute(query))
    return tokens


def write_states(session: Session, states: list[tuple[SourceState, str, bool]]) -> None:
    """Replace these sources' stored states whole (rows that exist, locked), each with its
    ``last_result``, and release the leases of those flagged: one executemany per kind."""
    for released in (False, True):
        values = [{"b_id": state.source_id, "b_last_result": result,
                   **{f"b_{name}": getattr(state, name) for name in STATE_FIELDS
                      if name != "last_result"}}
                  for state, result, lease in states if lease is released]
        if values:
            session.execute(_state_update(released), values)


@functools.cache
def _state_update(release: bool) -> Any:
    """UPDATE of one source's state columns by id (and its lease released): built once."""
    columns: dict[str, Any] = {name: bindparam(f"b_{name}") for name in STATE_FIELDS}
    if release:
        columns.update(leased_until=None, leased_by=None)
    return update(_SOURCES).where(_SOURCES.c.id == bindparam("b_id")).values(columns)


def update_row(row: ArticleRow, article: Article) -> None:
    if article.date_from_feed:
        row.date = article.date
        row.date_from_feed = True
    # else: a first-seen fallback never replaces the stored date (nor says where it came from)
    copy_fields(row, article)


def copy_fields(row: ArticleRow, article: Article) -> None:
    """Everything but identity, first_seen and date (which have their own rules)."""
    for name in (*_REPLACED_COLUMNS, *STORY_KEYS):
        setattr(row, name, getattr(article, name))
    row.story_print = None  # of the old text: derived again when a match needs it
    current = row.categories
    for position, category in enumerate(article.categories):
        if position < len(current):
            current[position].category = category
        else:
            current.append(CategoryRow(position=position, category=category))
    del current[len(article.categories):]


def article(row: ArticleRow) -> Article:
    return Article(categories=tuple(c.category for c in row.categories),
                   **{name: getattr(row, name) for name in ARTICLE_COLUMNS})


def state_of(row: SourceRow) -> SourceState:
    return SourceState(source_id=row.id, **_state_values(row))


def _state_values(row: SourceRow) -> dict[str, Any]:
    return status_sql.counted({name: getattr(row, name) for name in STATE_FIELDS})


