"""The commit path: one poll's (or a batch of polls') writes inside a write transaction.

Why: ``Store.commit_poll`` and ``Store.commit_polls`` promise that a poll — the source's
whole next state and all its articles — is written at once or not at all, that a lost
lease writes nothing, and that a batch shares its statements (one lock, one read of the
tombstones, one executemany of the states).  This module owns the work done inside that
transaction: checking a poll's articles, locking the sources' rows (fenced by their
leases) and adding the missing ones, upserting articles by (source_id, key)
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

from sqlalchemy import delete
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
    return _commit_distinct(session, [Item(0, update, parsed, batch, collided, lease)])[0]


def commit_batch(session: Session, items: Sequence[Item]
                  ) -> dict[int, StoreCounts | AggregatorError]:
    """``commit_polls``'s items inside one write transaction, each as ``commit_poll``
    would write it.  Polls of distinct sources are written together; when one source is
    polled twice, each poll is written after the one before (it must see its articles)."""
    ids = [item.update.state.source_id for item in items]
    if len(set(ids)) == len(ids):
        return _commit_distinct(session, items)
    outcomes: dict[int, StoreCounts | AggregatorError] = {}
    for item in items:
        outcomes.update(_commit_distinct(session, [item]))
    return outcomes


def _commit_distinct(session: Session, items: Sequence[Item]
                     ) -> dict[int, StoreCounts | LeaseLost]:
    """Polls of distinct sources: a row added for each source polled without a lease
    that has none; every row locked in id order by one SELECT (a fenced poll whose row
    no longer carries its token is a lost lease and writes nothing); the tombstones of
    every parsed document read at once, their stored keys by one indexed search each; the
    articles written poll by poll, in order (a new article may join a story an earlier
    poll of the batch just stored); every state written, and leases released, by
    executemany."""
    tokens = rows.lock_states(session, [item.update.state.source_id for item in items])
    missing = [item.update.state for item in items
               if item.lease is None and item.update.state.source_id not in tokens]
    rows.add_sources(session, missing)  # locked too: this transaction inserted them
    tokens.update((state.source_id, 0) for state in missing)
    outcomes: dict[int, StoreCounts | LeaseLost] = {}
    live: list[Item] = []
    for item in items:
        source_id, lease = item.update.state.source_id, item.lease
        if source_id not in tokens or (lease is not None and tokens[source_id] != lease.token):
            outcomes[item.index] = _lease_lost(source_id, lease)
        else:
            live.append(item)
    stones = rows.tombstones(session, [item.update.state.source_id
                                       for item in live if item.parsed])
    states: list[tuple[SourceState, str, bool]] = []
    for item in live:
        source_id = item.update.state.source_id
        counts = StoreCounts()
        if item.parsed:
            counts = _upsert(session, source_id, item.batch, item.collided,
                             stones.get(source_id, set()))
        result = (item.update.result or PollOutcome.of_counts(counts)).value
        states.append((item.update.state, result, item.lease is not None))
        outcomes[item.index] = counts
    rows.write_states(session, states)
    return outcomes


def _upsert(session: Session, source_id: str, batch: dict[str, Article], collided: int,
            stones: set[str]) -> StoreCounts:
    """Insert, update or leave alone one parsed document's articles (``stones``: the
    source's tombstones); see ``commit_poll``."""
    stored = rows.stored_hashes(session, source_id, list(batch))
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
