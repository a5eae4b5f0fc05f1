"""A ``Store`` that opens on a thread while a poll starts fetching.

Why: importing SQLAlchemy and opening the engine is about a third of a second of
``aggregator poll``'s start, during which nothing is fetched and the parse workers wait.
A poll needs the store twice: the sources' states before its first request, and a commit
after its first document.  An SQLite file at ``HEAD_REVISION`` answers the first through
``quick.QuickReads`` (``sqlite3`` alone), and a file that does not exist yet has no state
at all; meanwhile the ``Store`` opens (creating the file) on a thread, and the first
commit waits for it.  Any other database — a server's, an older schema the ``Store``
migrates, a URL with options — gets None from ``OpeningStore.start``: its states are read
through the ``Store``, opened first, as before.

This module must NOT import SQLAlchemy where it is imported (the thread does), answer
states for a database it did not find current or absent, or lose the opening's error:
every call that needs the ``Store`` after a failed opening raises that ``StoreError``,
and ``failure`` holds it for the caller to report.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from aggregator.errors import AggregatorError, StoreError
from aggregator.records import Article, Lease, SourceState, SourceUpdate, StoreCounts
from aggregator.store.quick import QuickReads, sqlite_path

if TYPE_CHECKING:
    from aggregator.store.facade import Store

__all__ = ["OpeningStore"]


class OpeningStore:
    """The poll's side of a store being opened: the states read before, the rest once
    it is open.  Use ``OpeningStore.start``; ``close`` it."""

    def __init__(self, database_url: str, states: Mapping[str, SourceState], *,
                 connections: int | None) -> None:
        self._states = dict(states)
        self._store: Store | None = None
        self.failure: StoreError | None = None
        self._thread = threading.Thread(target=self._open, args=(database_url, connections),
                                        name="store-open", daemon=True)
        self._thread.start()

    @classmethod
    def start(cls, database_url: str, *, connections: int | None = None
              ) -> OpeningStore | None:
        """Open ``database_url``'s store on a thread, its states read now; None when only
        the ``Store`` itself can read them (see the module docstring)."""
        quick = QuickReads.open(database_url)
        if quick is not None:
            with quick:
                states = quick.source_states()
        else:
            path = sqlite_path(database_url)
            if path is None or path.exists():  # not SQLite, or not at HEAD: the Store reads
                return None
            states = {}  # no file, no state: the Store creates it
        return cls(database_url, states, connections=connections)

    def source_states(self, source_ids: Iterable[str] | None = None) -> dict[str, SourceState]:
        """As ``Store.source_states``, as they were when the opening started."""
        if source_ids is None:
            return dict(self._states)
        return {i: self._states[i] for i in set(source_ids) if i in self._states}

    def known_keys(self, source_id: str, hashes: Mapping[str, str]) -> set[str]:
        return self.store().known_keys(source_id, hashes)

    def commit_poll(self, update: SourceUpdate, articles: Sequence[Article] | None = None,
                    lease: Lease | None = None) -> StoreCounts:
        return self.store().commit_poll(update, articles, lease)

    def commit_polls(self, items: Sequence[tuple[SourceUpdate, Sequence[Article] | None,
                                                 Lease | None]]
                     ) -> list[StoreCounts | AggregatorError]:
        return self.store().commit_polls(items)

    def store(self) -> Store:
        """The opened store, once it is (waits); its opening's ``StoreError`` otherwise."""
        self._thread.join()
        if self._store is None:
            assert self.failure is not None
            raise self.failure
        return self._store

    def close(self) -> None:
        """Wait for the opening to end, then close the store if it opened."""
        self._thread.join()
        if self._store is not None:
            self._store.close()

    def _open(self, database_url: str, connections: int | None) -> None:
        try:
            from aggregator.store.facade import Store  # SQLAlchemy: here, on this thread

            self._store = Store.open(database_url, connections=connections)
        except StoreError as exc:
            self.failure = exc
        except Exception as exc:  # a bug: still this poll's error, with its cause
            self.failure = StoreError(f"cannot open database: {exc!r}")
            self.failure.__cause__ = exc
