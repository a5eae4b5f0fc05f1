"""Article reads that need more than one plain query: story members, articles by
identity, and the filter on a config's sources.

Why: publishing reads articles by (source_id, key) and by story, for configs of up to
100,000 sources; a query must stay within the drivers' parameter limits (65,535 on
PostgreSQL) and cost one query per chunk, never one per article.  This module owns those
queries, inside the caller's read transaction.

It must NOT write, must not open or end transactions, must not hand out ORM rows (it
returns ``aggregator.records`` articles), and must not import the
``facade`` (the ``Store`` facade imports this module, never the other way).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import and_, or_, select, true
from sqlalchemy.orm import Session, aliased, selectinload

from aggregator.records import Article
from aggregator.store import rows
from aggregator.store.models import ArticleRow, SourceRow

_FEW_IDS = 1000  # above: filter articles by the sources not wanted (``of_sources``)


def of_sources(session: Session, wanted: set[str], column: Any = ArticleRow.source_id) -> Any:
    """``column`` (an article's source id) among ``wanted``, as a short list of parameters:
    the ids themselves, or — for a config of many sources — the (few) stored sources NOT
    wanted.  A drivers' limit (65,535 parameters on PostgreSQL) must not fail the build of
    a 100,000-source config, and 100,000 parameters per category cost more than the query."""
    if len(wanted) <= _FEW_IDS:
        return column.in_(sorted(wanted))
    unwanted = set(session.scalars(select(SourceRow.id))) - wanted
    return column.not_in(sorted(unwanted)) if unwanted else true()


def story_members(session: Session, pairs: Sequence[tuple[str, str]],
                  source_ids: Collection[str] | None
                  ) -> dict[tuple[str, str], tuple[Article, ...]]:
    """(source_id, key) of each of ``pairs`` (sorted, distinct) → its story's stored
    articles of ``source_ids`` (None: of all), earliest first; see ``Store.story_members``."""
    listed, member = aliased(ArticleRow), aliased(ArticleRow)
    found: dict[tuple[str, str], list[Article]] = {}
    for start in range(0, len(pairs), rows.IN_CHUNK):
        grouped = _by_source(pairs[start:start + rows.IN_CHUNK])
        query = (select(listed.source_id, listed.key, member)
                 .join(member, member.story_id == listed.story_id)
                 .where(or_(*(and_(listed.source_id == s, listed.key.in_(keys))
                              for s, keys in grouped.items())))
                 .options(selectinload(member.categories)))
        if source_ids is not None:
            query = query.where(of_sources(session, set(source_ids), member.source_id))
        for source_id, key, row in session.execute(query):
            found.setdefault((source_id, key), []).append(rows.article(row))
    return {identity: tuple(sorted(members, key=lambda a: (a.first_seen, a.source_id,
                                                            a.key)))
            for identity, members in found.items()}


def articles_by_identity(session: Session, pairs: Sequence[tuple[str, str]]
                         ) -> dict[tuple[str, str], Article]:
    """(source_id, key) → the stored article, for those of ``pairs`` (sorted, distinct)
    still stored; see ``Store.articles_by_identity``."""
    found: dict[tuple[str, str], Article] = {}
    for start in range(0, len(pairs), rows.IN_CHUNK):
        grouped = _by_source(pairs[start:start + rows.IN_CHUNK])
        query = (select(ArticleRow)
                 .where(or_(*(and_(ArticleRow.source_id == s, ArticleRow.key.in_(keys))
                              for s, keys in grouped.items())))
                 .options(selectinload(ArticleRow.categories)))
        for row in session.scalars(query):
            found[(row.source_id, row.key)] = rows.article(row)
    return found


def _by_source(pairs: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    """source_id → its keys among ``pairs``, in their order."""
    grouped: dict[str, list[str]] = {}
    for source_id, key in pairs:
        grouped.setdefault(source_id, []).append(key)
    return grouped
