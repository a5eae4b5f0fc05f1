"""The status reads as plain SQL, and their rows decoded into records.

Why: ``Store.statuses`` / ``Store.applied_config`` (through SQLAlchemy, any backend) and
``quick`` (Python's ``sqlite3``, no SQLAlchemy: the short commands) must read the same
thing the same way, so the statement and the decoding live here once, in SQL every
backend understands and with no library beyond the standard one.

A stored datetime comes back as the backend hands it: a naive ``datetime`` (PostgreSQL
through SQLAlchemy, as stored: naive UTC) or SQLite's text in the form SQLAlchemy wrote
it (``2026-12-03 13:35:16.292000``); both become aware UTC here, as ``UTCDateTime``
gives them everywhere else.

This module must NOT import SQLAlchemy or a database driver, run statements, or write.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from dataclasses import fields
from datetime import UTC, datetime

from aggregator.records import AppliedConfig, ConfigVersion, SourceState, SourceStatus

# The state columns of ``sources`` (SourceState's fields but the id), in the SELECT's order.
STATE_COLUMNS = tuple(f.name for f in fields(SourceState) if f.name != "source_id")
_HINTS = typing.get_type_hints(SourceState)
_DATETIMES = frozenset(name for name in STATE_COLUMNS
                       if datetime in typing.get_args(_HINTS[name]) or _HINTS[name] is datetime)

# A source row with its number of stored articles: every one by id, or one (a named
# parameter, which SQLAlchemy's ``text`` and ``sqlite3`` both take).
_STATUS_SELECT = (
    "SELECT s.id, " + ", ".join(f"s.{name}" for name in STATE_COLUMNS)
    + ", COALESCE(c.n, 0) FROM sources AS s LEFT OUTER JOIN "
    "(SELECT source_id, count(*) AS n FROM articles GROUP BY source_id) AS c "
    "ON c.source_id = s.id"
)
STATUSES = _STATUS_SELECT + " ORDER BY s.id"
ONE_STATUS = _STATUS_SELECT + " WHERE s.id = :source_id"
# Every source's state, as a poll reads them before its first request.
STATES = "SELECT id, " + ", ".join(STATE_COLUMNS) + " FROM sources"
# The newest applied config generation.
APPLIED_CONFIG = (
    "SELECT generation, digest, written_at, applied_at, applied_by FROM config_generations "
    "ORDER BY generation DESC LIMIT 1"
)


def utc(value: datetime | str | None) -> datetime | None:
    """A stored datetime as aware UTC (see the module docstring for the two forms)."""
    if value is None:
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is not None:  # a backend that hands back aware values
        return moment.astimezone(UTC)
    return moment.replace(tzinfo=UTC)


def status(row: Sequence[typing.Any]) -> SourceStatus:
    """One ``STATUSES`` row as a record."""
    return SourceStatus(source_id=row[0], article_count=int(row[-1]), **_state(row[1:-1]))


def state(row: Sequence[typing.Any]) -> SourceState:
    """One ``STATES`` row as a record."""
    return SourceState(source_id=row[0], **_state(row[1:]))


def _state(columns: Sequence[typing.Any]) -> dict[str, typing.Any]:
    values = dict(zip(STATE_COLUMNS, columns, strict=True))
    for name in _DATETIMES:
        values[name] = utc(values[name])
    return counted(values)


def counted(values: dict[str, typing.Any]) -> dict[str, typing.Any]:
    """State column values with the counters a NULL would leave unset made 0."""
    values["redirect_count"] = values["redirect_count"] or 0
    values["error_count"] = values["error_count"] or 0
    return values


def applied_config(row: Sequence[typing.Any] | None) -> AppliedConfig | None:
    """The ``APPLIED_CONFIG`` row (None: no config applied yet) as a record."""
    if row is None:
        return None
    generation, digest, written_at, applied_at, applied_by = row
    return AppliedConfig(generation=int(generation),
                         version=ConfigVersion(digest=digest, written_at=utc(written_at)),
                         applied_at=utc(applied_at), applied_by=applied_by)
