"""Hot statements compiled once per dialect and run as the driver's executemany.

Why: a cold poll writes thousands of article rows, and SQLAlchemy's per-execution work
(compiling a cache key, building every row's parameters, one bind processor call per
value through its generic machinery) cost more CPU than SQLite spent storing them.  A
``Prepared`` statement is still built by SQLAlchemy — the SQL text, the placeholders of
the dialect's paramstyle (and the casts psycopg needs) and each parameter's bind
processor (``UTCDateTime``'s aware → naive UTC included) are its own — but once, and its
executions hand the rows straight to the DBAPI cursor.

Only for statements without results (no RETURNING: a driver's executemany returns no
rows); nothing here commits, and the values it is given are bound exactly as
SQLAlchemy would bind them, so what is stored does not depend on the path.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.sql import ClauseElement


@dataclass(frozen=True, slots=True)
class Prepared:
    """One statement's SQL for one dialect, its parameters in the order the SQL wants
    them, and each one's bind processor (None: passed as it is)."""

    sql: str
    names: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]
    positional: bool

    def parameters(self, row: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        """``row`` (name → Python value) as the driver takes it."""
        values = [value if process is None else process(value)
                  for value, process in zip((row[name] for name in self.names),
                                            self.processors, strict=True)]
        return tuple(values) if self.positional else dict(zip(self.names, values, strict=True))


@functools.lru_cache(maxsize=32)  # a few statements, one dialect per engine opened
def prepared(statement: ClauseElement, dialect: Dialect,
             columns: tuple[str, ...] | None = None) -> Prepared:
    """``statement`` compiled for ``dialect``, for an INSERT with these ``columns`` given
    (named as the columns): once per (statement, dialect, columns), so the statement
    must be a module-level constant (it is the cache key)."""
    compiled = statement.compile(dialect=dialect,
                                 column_keys=list(columns) if columns else None)
    names = tuple(compiled.positiontup or ()) if compiled.positional else tuple(compiled.binds)
    processors = tuple(compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
                       for name in names)
    return Prepared(str(compiled), names, processors, compiled.positional)


def execute_many(session: Session, statement: ClauseElement,
                 rows: Sequence[Mapping[str, Any]],
                 columns: tuple[str, ...] | None = None) -> None:
    """Run ``statement`` once per row of ``rows`` in the session's transaction (one
    executemany of the driver); ``columns``: an INSERT's columns, each row's keys."""
    if not rows:
        return
    connection = session.connection()
    ready = prepared(statement, connection.dialect, columns)
    connection.exec_driver_sql(ready.sql, [ready.parameters(row) for row in rows])
