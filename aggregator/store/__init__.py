"""The article database: the only place in the project that speaks SQL.

Why: every other stage works with plain records (``aggregator.records``); this
package turns them into rows and back, owns the schema and its Alembic migrations, and
makes SQLite safe for the poller's concurrent writers.  ``Store`` (``facade``, handed
out from here) is the whole public face: it opens every transaction and turns database
errors into ``StoreError``; the modules below do the work inside a transaction it
opened, and never import it:

* ``models``: the schema (``migrations``: its Alembic history); ``engine``: engines,
  SQLite's connection rules, opening and upgrading databases; ``rows``: rows <-> records;
* ``commit``: one poll's (or a batch's) writes; ``story_match``: the story each new
  article joins;
* ``claims``: the sources table's rows, config generations and leases; ``retention``:
  pruning, tombstones, forgetting removed sources; ``reads``: the article reads by
  identity and story; ``locks``: locks across the processes sharing a database.
* ``quick``: the short commands' reads (``status``, a poll with nothing to fetch) of an
  up-to-date SQLite file through Python's own ``sqlite3``, without SQLAlchemy — the same
  SQL and decoding ``Store.statuses`` and ``Store.applied_config`` use
  (``status_sql``); this ``__init__`` imports no SQLAlchemy either, so importing the
  package is cheap and ``Store`` comes lazily.

Guarantees:

* ``commit_poll`` stores one poll — the source's whole next state, as the poll
  decided it, and all its articles — in ONE transaction; on any database error
  nothing of it remains and a ``StoreError`` naming the source is raised.  A poll
  reads the source's state once (``source_state`` / ``source_states``) and writes
  once.  ``commit_polls`` writes several polls in one transaction, each exactly as
  ``commit_poll`` would (the rows locked by one SELECT, the parsed documents'
  tombstones read by one, every state written by one executemany), and
  retries a failed batch one by one so that one bad poll fails alone.
* Each new article gets its story at commit: the story of another source's stored
  article that ``stories.same_story`` matches on the keys the article derived (candidates
  found by the indexed link and title keys; titles only within ``STORY_WINDOW``), else a
  story of its own (its own id); on PostgreSQL the keys are advisory-locked for the
  transaction so concurrent commits of one story cannot make two.  ``story_members``
  reads a story's articles back; a story's id never changes once assigned.
* Articles retention removed are remembered as tombstones while the portal still
  lists them, so a re-poll does not bring them back.
* Datetimes go in and come out timezone-aware UTC on every backend; naive
  datetimes are refused.
* On SQLite every connection runs in WAL mode with a 30 s busy timeout, and
  write transactions start with ``BEGIN IMMEDIATE``, so concurrent writers queue
  on the lock instead of failing with "database is locked".

This package must NOT hand out ORM rows, sessions or SQLAlchemy exceptions, must
not use SQL that only one backend understands (the SQLite PRAGMAs and BEGIN
variants live in SQLite-only connection hooks), and must not decide anything
about feeds, articles' content or polling policy: it stores what it is given.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from aggregator.store.revision import HEAD_REVISION

if TYPE_CHECKING:  # imported lazily below: these modules import SQLAlchemy
    from aggregator.store.engine import MIGRATIONS_DIR, make_engine
    from aggregator.store.facade import Store
    from aggregator.store.story_match import STORY_WINDOW

__all__ = ["HEAD_REVISION", "MIGRATIONS_DIR", "STORY_WINDOW", "Store", "make_engine"]

# name -> the module that defines it: imported on first use, so that importing the
# package (or ``quick``) costs no SQLAlchemy import.
_LAZY = {
    "Store": "aggregator.store.facade",
    "make_engine": "aggregator.store.engine",
    "MIGRATIONS_DIR": "aggregator.store.engine",
    "STORY_WINDOW": "aggregator.store.story_match",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
