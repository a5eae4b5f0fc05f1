"""The commit path: one poll's (or a batch of polls') writes inside a write transaction.

Why: ``Store.commit_poll`` and ``Store.commit_polls`` promise that a poll — the source's
whole next state and all its articles — is written at once or not at all, that a lost
lease writes nothing, and that a batch of polls that parsed nothing is one executemany.
This module owns the work done inside that transaction: checking a poll's articles,
locking the source's row (fenced by its lease), upserting articles by (source_id, key)
with their tombstones, assigning new articles their stories (``story_match``), and
writing the state.

It must NOT open, commit or roll back transactions (the ``Store`` facade does, and turns
database errors into ``StoreError``), must not decide polling policy or article content
(it stores what the poll decided), and must not import the
``facade`` (the facade imports this module, never the other way).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from aggregator.errors import AggregatorError, LeaseLost
from aggregator.records import Article, Lease, PollOutcome, SourceState, SourceUpdate, StoreCounts
from aggregator.store import rows
from aggregator.store.models import TombstoneRow
from aggregator.store.story_match import categories_of, stories_of


@dataclass(frozen=True, slots=True)
class Item:
    """One poll of a ``commit_polls`` batch, checked: its place, the decision, whether
    something was parsed, its articles by key (and how many collided), its lease."""

    index: int
    update: SourceUpdate
    parsed: bool
    batch: dict[str, Article]
    collided: int
    lease: Lease | None


def checked(update: SourceUpdate, articles: Sequence[Article] | None
             ) -> tuple[dict[str, Article], int]:
    """The articles by key, the first of a key winning, and how many collided; a
    ``ValueError`` for an article of another source."""
    if articles is None:
        return {}, 0
    source_id = update.state.source_id
    batch, collided = rows.first_occurrences(articles)
    for article in batch.values():
        if article.source_id != source_id:
            raise ValueError(f"article {article.key!r} belongs to source "
                             f"{article.source_id!r}, not {source_id!r}")
    return batch, collided


def _lease_lost(source_id: str, lease: Lease | None) -> LeaseLost:
    return LeaseLost(f"lease {lease.token if lease else '?'} was taken over; "
                     "this poll's results are dropped", source_id=source_id)


def commit_in(session: Session, update: SourceUpdate, parsed: bool,
               batch: dict[str, Article], collided: int,
               lease: Lease | None) -> StoreCounts | LeaseLost:
    """One poll inside an open write transaction (see ``commit_poll``); a lost lease
    writes nothing and is returned."""
    state = update.state
    row = rows.lock_source(session, state.source_id, state.url or "", lease)
    if row is None:
        return _lease_lost(state.source_id, lease)
    counts = StoreCounts()
    if parsed:
        counts = _upsert(session, state.source_id, batch, collided)
    rows.apply_state(row, state)
    row.last_result = (update.result or PollOutcome.of_counts(counts)).value
    return counts


def commit_batch(session: Session, items: Sequence[Item]
                  ) -> dict[int, StoreCounts | AggregatorError]:
    """``commit_polls``'s items inside one write transaction: the polls that parsed
    nothing of sources with a row as UPDATEs by executemany, the others one by one in
    their order.  Several polls of one source are all taken one by one, in order."""
    ids = [item.update.state.source_id for item in items]
    quick = [item for item in items if not item.parsed] if len(set(ids)) == len(ids) else []
    tokens = rows.lock_states(session, [item.update.state.source_id for item in quick])
    outcomes: dict[int, StoreCounts | AggregatorError] = {}
    states: list[tuple[SourceState, str, bool]] = []
    for item in quick:
        state, lease = item.update.state, item.lease
        if state.source_id not in tokens and lease is None:
            continue  # a source without a row yet: it gets one one by one
        if state.source_id not in tokens or (lease is not None
                                             and tokens[state.source_id] != lease.token):
            outcomes[item.index] = _lease_lost(state.source_id, lease)
            continue
        result = (item.update.result or PollOutcome.of_counts(StoreCounts())).value
        states.append((state, result, lease is not None))
        outcomes[item.index] = StoreCounts()
    rows.write_states(session, states)
    for item in items:
        if item.index not in outcomes:
            outcomes[item.index] = commit_in(session, item.update, item.parsed, item.batch,
                                              item.collided, item.lease)
    return outcomes


def _upsert(session: Session, source_id: str, batch: dict[str, Article],
            collided: int) -> StoreCounts:
    """Insert, update or leave alone one parsed document's articles; see ``commit_poll``."""
    stored = rows.stored_hashes(session, source_id, list(batch))
    stones = set(session.scalars(select(TombstoneRow.key)
                                 .where(TombstoneRow.source_id == source_id)))
    forgotten = stones - batch.keys()
    for start in range(0, len(forgotten), rows.IN_CHUNK):
        keys = sorted(forgotten)[start:start + rows.IN_CHUNK]
        session.execute(delete(TombstoneRow).where(TombstoneRow.source_id == source_id,
                                                   TombstoneRow.key.in_(keys)))
    fresh = [a for key, a in batch.items() if key not in stored and key not in stones]
    changed = {stored[key][0]: a for key, a in batch.items()
               if key in stored and stored[key][1] != a.content_hash}
    joined, prints = stories_of(session, source_id, fresh)
    rows.insert_articles(session, fresh, joined, prints)
    for row in rows.rows_by_id(session, list(changed)):
        rows.update_row(row, changed[row.id])
    retired = sum(1 for key in batch if key in stones and key not in stored)
    unchanged = len(batch) - len(fresh) - len(changed) - retired
    return StoreCounts(new=len(fresh), updated=len(changed), unchanged=unchanged,
                       retired=retired, collided=collided,
                       story_categories=categories_of(session, set(joined.values())))
