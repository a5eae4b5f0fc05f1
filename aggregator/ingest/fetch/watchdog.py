"""The wall-clock watchdog: one fetch's sockets are shut down when its deadline passes.

Why this module exists: per-operation socket timeouts never trip on a server that drips
one byte per second, and a blocking read of a big chunk waits until the chunk fills, so
only something outside the reading thread can enforce a deadline on the whole fetch.  The
connection classes report every socket they open (or reuse) to the running fetch's
``Watchdog``, which keeps a duplicate of each descriptor; when the deadline passes, the
process's one timer thread (``_Timers``: a heap of deadlines, not a thread per fetch)
calls ``shutdown()`` on them, which unblocks any read in progress.

What must not happen: ``close()`` from the timer thread (it does not unblock a read, and
closing a buffered response from another thread would wait on the reader's lock), a
shutdown or close of a descriptor after the fetch finished with it (the number may already
belong to another file), or a fetch that ended after the deadline reported as a success —
``finish()`` says whether the timer had fired, and the caller must then fail the fetch.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time

__all__ = ["Watchdog"]


class Watchdog:
    """Shuts down every socket of one fetch when its deadline passes.

    It holds ``dup()``s of the sockets, so a shutdown reaches the connection whatever
    object (plain or TLS) currently wraps the descriptor; the dups are closed when the
    fetch finishes.  All shutdowns and closes happen under one lock, so a late timer can
    never touch a descriptor after it was closed (and possibly reused).
    """

    def __init__(self, seconds: float) -> None:
        self._lock = threading.Lock()
        self._dups: list[socket.socket] = []
        self._state = "running"  # → "expired" (timer fired) or "finished" (fetch ended)
        self._seconds = max(seconds, 0.0)
        # The socket tracked last: a pooled connection is reported when taken from the
        # pool and again with its response; one dup of it is enough.  (Held, so its
        # identity cannot be reused by another socket while this fetch runs.)
        self._last: socket.socket | None = None

    @property
    def expired(self) -> bool:
        return self._state == "expired"

    def start(self) -> None:
        _TIMERS.schedule(time.monotonic() + self._seconds, self)

    def track(self, sock: socket.socket | None) -> None:
        """Watch ``sock`` too; after expiry it is shut down at once."""
        if sock is None or sock is self._last:
            return
        try:
            fd = sock.fileno()
            if fd < 0:
                return
            dup = socket.fromfd(fd, sock.family, sock.type)
        except OSError:
            return
        with self._lock:
            if self._state == "running":
                self._dups.append(dup)
                self._last = sock
                return
            if self._state == "expired":
                _shutdown(dup)
            dup.close()

    def finish(self) -> bool:
        """Stop watching; True when the deadline had already passed."""
        with self._lock:
            if self._state == "running":
                self._state = "finished"
            for dup in self._dups:
                dup.close()
            self._dups.clear()
            self._last = None
            return self._state == "expired"

    def _expire(self) -> None:
        with self._lock:
            if self._state != "running":
                return
            self._state = "expired"
            for dup in self._dups:
                _shutdown(dup)


class _Timers:
    """One daemon thread that expires watchdogs at their deadlines, earliest first.

    A finished watchdog stays in the heap until its deadline (its ``_expire`` then does
    nothing): cheaper than removing it, and it holds no descriptor by then.  Starting a
    thread per fetch cost more than the rest of a 304.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Watchdog]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def schedule(self, when: float, watchdog: Watchdog) -> None:
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._order), watchdog))
            if self._thread is None or not self._thread.is_alive():  # also after a fork
                self._thread = threading.Thread(target=self._run, name="fetch-deadlines",
                                                daemon=True)
                self._thread.start()
            elif self._heap[0][2] is watchdog:  # a new earliest deadline
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                when = self._heap[0][0]
                wait = when - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                watchdog = heapq.heappop(self._heap)[2]
            watchdog._expire()


_TIMERS = _Timers()


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already gone
        sock.shutdown(socket.SHUT_RDWR)
