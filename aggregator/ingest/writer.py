"""One writer for a run of polls: the polls' decisions, committed several per transaction.

Why: a poll that changed nothing (304, same bytes) writes one small row, and a
transaction per source (BEGIN IMMEDIATE, COMMIT, an fsync of the WAL on SQLite) costs
more than the poll itself.  Like datasette's write thread, the poll threads hand their
``(SourceUpdate, articles, lease)`` to ONE thread, which commits whatever is queued in
one ``commit_polls`` transaction and then tells each poll what became of its commit.
So a warm re-poll costs a share of a transaction per source, and SQLite sees one writer.

Guarantees: a poll learns its outcome (``done``) only after its transaction committed
(or failed); the store retries a failed batch one by one, so one bad item fails alone.
``submit`` blocks while ``max_pending`` polls wait (their articles are in memory).
``close`` commits everything submitted before it returns.

This module must NOT import SQLAlchemy or any store module (the store is a
``BatchStore``), decide anything about a poll, or report a result itself: ``done``
is the caller's.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from aggregator.errors import AggregatorError
from aggregator.records import Article, Lease, SourceUpdate, StoreCounts

Outcome = StoreCounts | AggregatorError
Done = Callable[[Outcome], None]


class BatchStore(Protocol):
    """What the writer needs of the store: many polls' commits in one transaction."""

    def commit_polls(self, items: Sequence[tuple[SourceUpdate, Sequence[Article] | None,
                                                 Lease | None]]
                     ) -> list[StoreCounts | AggregatorError]: ...


@dataclass(frozen=True, slots=True)
class _Pending:
    update: SourceUpdate
    articles: Sequence[Article] | None
    lease: Lease | None
    done: Done


class BatchWriter:
    """A writer thread committing the polls handed to it, as many per transaction as
    are waiting (at most ``max_batch``).  Use as a context manager."""

    def __init__(self, store: BatchStore, *, max_batch: int = 500,
                 max_pending: int = 1000) -> None:
        self._store = store
        self._max_batch = max(1, max_batch)
        self._max_pending = max(1, max_pending)
        self._queue: deque[_Pending] = deque()
        self._changed = threading.Condition()
        self._closing = False
        self._failure: BaseException | None = None
        self.transactions = 0  # how many commit_polls calls (batches) were made
        self._thread = threading.Thread(target=self._run, name="poll-writer", daemon=True)
        self._thread.start()

    def submit(self, update: SourceUpdate, articles: Sequence[Article] | None,
               lease: Lease | None, done: Done) -> None:
        """Queue one poll's commit; ``done`` gets its outcome, on the writer thread,
        once the transaction holding it ended.  Blocks while the queue is full."""
        with self._changed:
            if self._closing:
                raise RuntimeError("the writer is closed")
            while len(self._queue) >= self._max_pending and self._failure is None:
                self._changed.wait()
            if self._failure is not None:
                raise RuntimeError("the writer failed") from self._failure
            self._queue.append(_Pending(update, articles, lease, done))
            self._changed.notify_all()

    def close(self) -> None:
        """Commit what is queued, stop the thread; a bug the writer met is raised here."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._thread.join()
        if self._failure is not None:
            raise self._failure

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._queue and not self._closing:
                    self._changed.wait()
                if not self._queue:
                    return
                count = min(len(self._queue), self._max_batch)
                batch = [self._queue.popleft() for _ in range(count)]
                self._changed.notify_all()
            try:
                self._commit(batch)
            except BaseException as exc:  # a bug: stop taking work, surface it in close()
                with self._changed:
                    self._failure = exc
                    self._queue.clear()
                    self._changed.notify_all()
                return

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            outcomes: list[Outcome] = self._store.commit_polls(
                [(p.update, p.articles, p.lease) for p in batch])
        except AggregatorError as exc:  # a batch of one failed: that poll's outcome
            outcomes = [exc] * len(batch)
        self.transactions += 1
        for pending, outcome in zip(batch, outcomes, strict=True):
            pending.done(outcome)
