"""Retention: deleting stored articles and removed sources, and the tombstones it leaves.

Why: a database of every article ever polled grows without end, and a source the
config dropped must not keep its articles forever; but an article deleted while the
portal still lists it would be added back by the next poll.  This module owns those
deletions inside the caller's write transaction: ``prune`` deletes articles by age and by
a per-source count and leaves a tombstone for each (which ``commit`` reads and forgets),
``forget_unlisted`` deletes the sources unlisted long enough with all they own.

It must NOT decide what to keep (the caller passes the cut-offs from the config), must
not open, commit or roll back transactions, and must not import the
``facade`` (the ``Store`` facade imports this module, never the other way).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from aggregator.store import rows
from aggregator.store.models import ArticleRow, CategoryRow, SourceRow, TombstoneRow


def prune(session: Session, older_than: datetime | None, keep_per_source: int | None,
          now: datetime | None) -> dict[str, int]:
    """Delete articles dated before ``older_than`` and beyond the newest ``keep_per_source``
    of each source, each leaving a tombstone stamped ``now`` (else its own date); how many
    went, by source, sorted.  See ``Store.prune``."""
    deleted: dict[str, int] = {}
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
    for start in range(0, len(ids), rows.IN_CHUNK):
        chunk = ids[start:start + rows.IN_CHUNK]
        gone = session.execute(select(ArticleRow.source_id, ArticleRow.key,
                                      ArticleRow.date).where(ArticleRow.id.in_(chunk)))
        stones = [{"source_id": s, "key": k, "removed_at": now or d} for s, k, d in gone]
        for stone in stones:
            deleted[stone["source_id"]] = deleted.get(stone["source_id"], 0) + 1
        session.execute(delete(TombstoneRow).where(
            TombstoneRow.source_id.in_({s["source_id"] for s in stones}),
            TombstoneRow.key.in_({s["key"] for s in stones})))
        if stones:
            session.execute(insert(TombstoneRow), stones)
        session.execute(delete(CategoryRow).where(CategoryRow.article_id.in_(chunk)))
        session.execute(delete(ArticleRow).where(ArticleRow.id.in_(chunk)))
    return dict(sorted(deleted.items()))


def forget_unlisted(session: Session, *, before: datetime) -> list[str]:
    """Delete the sources unlisted since earlier than ``before`` with their articles, categories
    and tombstones; the ids deleted, sorted.  See ``Store.forget_removed``."""
    expired = sorted(session.scalars(select(SourceRow.id).where(
        SourceRow.unlisted_since < before)))
    for start in range(0, len(expired), rows.IN_CHUNK):
        chunk = expired[start:start + rows.IN_CHUNK]
        article_ids = select(ArticleRow.id).where(ArticleRow.source_id.in_(chunk))
        session.execute(delete(CategoryRow).where(CategoryRow.article_id.in_(article_ids)))
        session.execute(delete(ArticleRow).where(ArticleRow.source_id.in_(chunk)))
        session.execute(delete(TombstoneRow).where(TombstoneRow.source_id.in_(chunk)))
        session.execute(delete(SourceRow).where(SourceRow.id.in_(chunk)))
    return expired
