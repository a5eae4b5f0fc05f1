"""The sources table's membership and leases: which sources are pollable, who polls them.

Why: every poller works from the sources table — a row per source of the applied config,
due at a time, leased to one worker at a time with a fencing token that the commit
checks.  This module owns those writes inside the caller's write transaction: rows for
new sources, a config generation applied by compare-and-set (sources it no longer lists
marked unlisted, listed ones unmarked), and claims of due sources (``FOR UPDATE SKIP
LOCKED`` on PostgreSQL, so concurrent workers never claim one source twice).

It must NOT decide when a source is due (the poll's decision, stored by ``commit``, says
so), must not open, commit or roll back transactions (nor take the schema lock: the
facade does, with the transaction), and must not import the
``facade`` (the ``Store`` facade imports this module, never the other way).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.orm import Session

from aggregator.records import AppliedConfig, Claim, ConfigVersion, Lease, Source
from aggregator.store import rows
from aggregator.store.models import ConfigGenerationRow, SourceRow


def add_missing(session: Session, sources: Iterable[Source], now: datetime) -> int:
    """Insert a row, due ``now``, for each of ``sources`` without one; how many."""
    wanted = {s.id: s for s in sources}
    known: set[str] = set()
    ids = sorted(wanted)
    for start in range(0, len(ids), rows.IN_CHUNK):
        known.update(session.scalars(select(SourceRow.id).where(
            SourceRow.id.in_(ids[start:start + rows.IN_CHUNK]))))
    fresh = [{"id": i, "url": wanted[i].url, "error_count": 0, "redirect_count": 0,
              "lease_token": 0, "next_poll_at": now} for i in ids if i not in known]
    if fresh:
        session.execute(insert(SourceRow), fresh)
    return len(fresh)


def apply_generation(session: Session, version: ConfigVersion, sources: Collection[Source],
                     *, after: int, holder: str, now: datetime) -> AppliedConfig | None:
    """Config generation ``after + 1`` holding ``sources``, or None (nothing written) when
    the newest generation is no longer ``after``; see ``Store.apply_config``."""
    listed = {s.id for s in sources}
    newest = session.scalar(select(func.max(ConfigGenerationRow.generation))) or 0
    if newest != after:
        return None
    add_missing(session, sources, now)
    known = session.execute(select(SourceRow.id, SourceRow.unlisted_since)).all()
    for ids, value in (([i for i, since in known if i not in listed and since is None],
                        now),
                       ([i for i, since in known if i in listed and since is not None],
                        None)):
        for start in range(0, len(ids), rows.IN_CHUNK):
            session.execute(update(SourceRow).where(
                SourceRow.id.in_(ids[start:start + rows.IN_CHUNK]))
                .values(unlisted_since=value))
    row = ConfigGenerationRow(generation=after + 1, digest=version.digest,
                              written_at=version.written_at, applied_at=now,
                              applied_by=holder)
    session.add(row)
    session.flush()
    return AppliedConfig(generation=row.generation, version=version, applied_at=now,
                         applied_by=holder)


def claim(session: Session, holder: str, *, limit: int, until: datetime,
          now: datetime) -> list[Claim]:
    """Lease up to ``limit`` (at least 1) sources due at ``now`` until ``until``, bumping
    each row's fencing token; see ``Store.claim_due``."""
    query = (select(SourceRow)
             .where(or_(SourceRow.next_poll_at.is_(None), SourceRow.next_poll_at <= now),
                    or_(SourceRow.leased_until.is_(None), SourceRow.leased_until < now),
                    SourceRow.disabled_reason.is_(None), SourceRow.unlisted_since.is_(None))
             .order_by(SourceRow.next_poll_at, SourceRow.id).limit(limit)
             .with_for_update(skip_locked=True))
    claimed = list(session.scalars(query))
    expired = {row.id for row in claimed if row.leased_until is not None}
    for row in claimed:
        row.lease_token = (row.lease_token or 0) + 1
        row.leased_until, row.leased_by = until, holder
    return [Claim(lease=Lease(source_id=row.id, token=row.lease_token, until=until,
                              holder=holder), state=rows.state_of(row),
                  taken_over=row.id in expired)
            for row in claimed]
