"""Run parsing in worker processes with a time and memory budget per call.

Why: feedparser has a quadratic regex on long ``<author>`` fields (its issue #562:
one 64 KB author costs tens of seconds) and hostile XML can blow up memory.  A thread
cannot be stopped and a ``MemoryError`` can hit any thread of the daemon, so parsing
runs in a small pool of persistent worker processes instead: each call has a wall-clock
budget (the worker is SIGKILLed and replaced when it is exceeded) and each worker an
address-space limit (``RLIMIT_AS``).  A call over budget raises ``BudgetExceeded`` (a
``SandboxError``, which the poll turns into that source's ``ParseError``) and never
hangs or kills the daemon.  Two workers
also parse two feeds truly in parallel.

How: ``WorkerPool.call(fn, *args)`` checks out a free worker (blocking until one is
free; it is thread-safe), sends it ``(fn, args)`` pickled (``fn`` must be a module-level
function such as ``aggregator.ingest.extract.parse_and_normalize``), waits at most
``budget.seconds`` and returns the result or re-raises the worker's exception as the same
type with the same message and attributes.  Workers come from the
``forkserver`` start method with the ``preload`` modules imported: the daemon is
multi-threaded, so plain ``fork`` could copy a lock held by another thread, and it would
hand every worker the parent's database connections and sockets; a forkserver child
inherits none of them and starts in a few milliseconds because feedparser is already
imported in the server.

Workers exit on their own when the daemon dies: EOF on their pipe when idle, a watchdog
thread on the parent's sentinel when busy in Python code, and an ``RLIMIT_CPU`` backstop
when busy in C code that holds the GIL (feedparser's regex does).

This module must NOT know about feeds, sources or the store: it runs any picklable
module-level function.  It must NOT retry a call, swallow an error, or let a worker's
failure reach other calls, and it must not start processes at import time.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import multiprocessing
import os
import pickle
import resource
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["Budget", "BudgetExceeded", "FunctionRef", "PoolClosed", "SandboxError", "WorkerPool",
           "call_inline"]

T = TypeVar("T")

MB = 1024 * 1024
STOP_GRACE = 2.0  # seconds close() lets a worker exit by itself before SIGKILL
CPU_GRACE = 1  # CPU seconds beyond the budget before the kernel's RLIMIT_CPU backstop
_WATCHDOG_STACK = 256 * 1024  # the parent-death watchdog thread needs almost no stack


class SandboxError(Exception):
    """A call did not complete in its worker; ``reason`` says why, in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BudgetExceeded(SandboxError):
    """A call ran out of time or memory, or its worker died; only that call failed."""


class PoolClosed(SandboxError):
    """The pool was closed while the call waited or ran."""


@dataclass(frozen=True)
class Budget:
    """What one call may use: wall-clock seconds and the worker's address space."""

    seconds: float = 10.0
    memory_bytes: int | None = 512 * MB  # None: no RLIMIT_AS


@dataclass(frozen=True)
class FunctionRef:
    """A module-level function by module and name, imported only where it is called.

    Handing one to ``WorkerPool.call`` spares the caller from importing what only the
    workers need (so the daemon's main process never imports the parser); a worker
    imports the module once, if the fork server has not preloaded it already.
    """

    module: str
    name: str

    def __call__(self, *args: Any) -> Any:
        return getattr(importlib.import_module(self.module), self.name)(*args)


def call_inline(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` in this process, with no isolation and no budget (tests and tools)."""
    return fn(*args, **kwargs)


# --- the parent's side ------------------------------------------------------------------


class _RemoteTraceback(Exception):
    """Carries the worker's formatted traceback; set as ``__cause__`` of re-raised errors."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class _WorkerGone(Exception):
    """Internal: the worker died or its pipe broke during a call."""


class _Worker:
    """One worker process and the parent's end of its pipe; used by one thread at a time."""

    def __init__(self, ctx: Any, budget: Budget) -> None:
        self.conn, child_conn = ctx.Pipe(duplex=True)
        self.process = ctx.Process(
            target=_worker_main,
            args=(child_conn, budget.memory_bytes, budget.seconds),
            name="aggregator-parse-worker",
            daemon=True,  # multiprocessing's atexit hook ends it if close() is never called
        )
        self.exitcode: int | None = None
        self.reaped = False
        try:
            self.process.start()
        except BaseException:
            self.conn.close()
            raise
        finally:
            child_conn.close()  # only the worker holds it now, so its death means EOF here
        self.pid: int = self.process.pid

    def request(self, payload: bytes, seconds: float) -> bytes | None:
        """Send one pickled task; the pickled reply, or None when ``seconds`` ran out.

        Raises ``_WorkerGone`` when the worker dies or its pipe breaks.
        """
        try:
            self.conn.send_bytes(payload)
            if not self.conn.poll(seconds):
                return None
            return self.conn.recv_bytes()
        except (EOFError, OSError) as exc:
            raise _WorkerGone from exc

    def alive(self) -> bool:
        return not self.reaped and self.process.is_alive()

    def stop(self) -> None:
        """Ask an idle worker to exit (it also would on EOF)."""
        with contextlib.suppress(OSError, ValueError):
            self.conn.send_bytes(b"")

    def kill(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.process.kill()

    def reap(self, timeout: float | None = None) -> int | None:
        """Wait for the process to end (SIGKILL after ``timeout``); its exit code.  Idempotent."""
        if not self.reaped:
            self.process.join(timeout)
            if self.process.exitcode is None:
                self.kill()
                self.process.join()
            self.exitcode = self.process.exitcode
            self.reaped = True
            self.conn.close()
            self.process.close()
        return self.exitcode


def _death_reason(code: int | None) -> str:
    if code is not None and code < 0:
        return f"parse worker died (signal {-code})"
    if code is not None:
        return f"parse worker died (exit code {code})"
    return "parse worker died"


def _context(preload: tuple[str, ...]) -> Any:
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        # Only takes effect if this process has not started its fork server yet.
        ctx.set_forkserver_preload(list(preload))
        return ctx
    return multiprocessing.get_context("spawn")


class WorkerPool:
    """A pool of ``workers`` persistent processes that run calls under a ``Budget``.

    ``workers=0`` runs every call in this process, without isolation or budget.
    ``preload``: modules the fork server imports once for every worker (the first
    pool of a process decides them).
    Workers start when a call needs one and no started worker is free (or all at once
    with ``start()``); a worker that is killed or dies is replaced the same way.
    """

    def __init__(self, workers: int = 2, budget: Budget = Budget(),
                 preload: tuple[str, ...] = ()) -> None:
        if workers < 0:
            raise ValueError("workers must be >= 0")
        if budget.seconds <= 0:
            raise ValueError("budget.seconds must be > 0")
        self.workers = workers
        self.budget = budget
        self.preload = preload
        self._ctx = _context(preload) if workers else None
        self._cond = threading.Condition()
        # Free slots: started workers at the end (taken first), None = not started, in front.
        self._idle: list[_Worker | None] = [None] * workers
        self._busy: set[_Worker] = set()
        self._checked_out = 0  # slots taken by calls or start(), with or without a process
        self._closed = False

    # -- public API --

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker; its result, or its exception re-raised here.

        Raises ``BudgetExceeded`` when the call takes longer than
        ``budget.seconds``, needs more than ``budget.memory_bytes`` or its worker dies.
        A ``fn`` or argument that does not pickle raises here, before any worker is used.
        """
        if not self.workers:
            if self._closed:
                raise RuntimeError("WorkerPool is closed")
            return fn(*args)
        payload = pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL)
        worker = self._checkout()
        reusable = False
        try:
            try:
                raw = worker.request(payload, self.budget.seconds)
            except _WorkerGone:
                code = worker.reap(STOP_GRACE)
                reason = _death_reason(code)
                if code == -signal.SIGXCPU:  # the RLIMIT_CPU backstop beat our own timer
                    reason = self._time_reason()
                if self._closed:
                    raise PoolClosed("parse cancelled: worker pool closed") from None
                raise BudgetExceeded(reason) from None
            if raw is None:
                worker.kill()
                worker.reap()
                raise BudgetExceeded(self._time_reason())
            reusable = True  # the whole reply is read: the worker waits for its next task
            reply = pickle.loads(raw)
            if reply[0] == "memory":
                reusable = False
                worker.reap(STOP_GRACE)  # it exits after a MemoryError: its heap is suspect
                raise BudgetExceeded(self._memory_reason()) from (
                    _RemoteTraceback(reply[1]))
            if reply[0] == "ok":
                return reply[1]
            raise _rebuild_exception(reply)
        except BaseException:
            if not reusable and not worker.reaped:
                worker.kill()  # interrupted mid-call: a late reply must never reach a caller
                worker.reap()
            raise
        finally:
            self._checkin(worker, reusable)

    def start(self) -> None:
        """Start every worker now rather than when calls need them."""
        with self._cond:
            if self._closed:
                raise RuntimeError("WorkerPool is closed")
            empty = self._idle.count(None)
            self._idle = [w for w in self._idle if w is not None]
            self._checked_out += empty
        for started in range(empty):
            try:
                worker = self._spawn()
            except BaseException:
                self._release_empty(empty - started)
                raise
            self._checkin(worker, True)

    def start_soon(self) -> None:
        """``start()`` on a background thread: the fork server imports the preloaded
        modules while this process goes on.  Calls wait for those workers as usual; if
        starting fails here, the first call that needs a worker tries again and raises."""
        threading.Thread(target=self._start_quietly, name="parse-pool-start",
                         daemon=True).start()

    def _start_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self.start()

    def pids(self) -> list[int]:
        """Process ids of the started workers (diagnostics and tests)."""
        with self._cond:
            workers = [w for w in (*self._idle, *self._busy) if w is not None]
        return sorted(w.pid for w in workers if not w.reaped)

    def close(self) -> None:
        """Stop every worker: idle ones at once, busy ones after their call or 2 s; idempotent.

        Calls still running after the grace period are cancelled (they raise ``PoolClosed``);
        calls made after ``close`` raise ``RuntimeError``.
        """
        with self._cond:
            if self._closed:
                return
            self._closed = True
            idle = [w for w in self._idle if w is not None]
            self._idle.clear()
            self._cond.notify_all()  # callers waiting for a worker give up
        deadline = time.monotonic() + STOP_GRACE
        _stop_all(idle, deadline)
        with self._cond:
            self._cond.wait_for(lambda: not self._checked_out,
                                max(0.0, deadline - time.monotonic()))
            for worker in self._busy:
                worker.kill()  # its caller sees EOF, reaps it and checks it in
            self._cond.wait_for(lambda: not self._checked_out, 2 * STOP_GRACE)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- internals --

    def _time_reason(self) -> str:
        return f"parse took longer than {self.budget.seconds:g}s"

    def _memory_reason(self) -> str:
        if self.budget.memory_bytes is None:
            return "parse ran out of memory"
        return f"parse needed more than {self.budget.memory_bytes // MB} MB"

    def _spawn(self) -> _Worker:
        return _Worker(self._ctx, self.budget)

    def _checkout(self) -> _Worker:
        with self._cond:
            self._cond.wait_for(lambda: self._idle or self._closed)
            if self._closed:
                raise RuntimeError("WorkerPool is closed")
            worker = self._idle.pop()
            self._checked_out += 1
        if worker is None or not worker.alive():
            if worker is not None:
                worker.reap(0)  # died while idle (e.g. killed from outside)
            try:
                worker = self._spawn()
            except BaseException:
                self._release_empty(1)
                raise
        with self._cond:
            self._busy.add(worker)
            closed = self._closed
        if closed:  # close() ran while this worker was starting
            self._checkin(worker, True)
            raise RuntimeError("WorkerPool is closed")
        return worker

    def _checkin(self, worker: _Worker, reusable: bool) -> None:
        """Give a slot back: its worker when ``reusable``, else an empty slot."""
        reusable = reusable and not worker.reaped
        with self._cond:
            self._busy.discard(worker)
            closed = self._closed
            if not closed:
                if reusable:
                    self._idle.append(worker)
                else:
                    self._idle.insert(0, None)
        if closed and reusable:
            _stop_all([worker])
        with self._cond:
            self._checked_out -= 1
            self._cond.notify_all()

    def _release_empty(self, count: int) -> None:
        with self._cond:
            self._checked_out -= count
            if not self._closed:
                self._idle[:0] = [None] * count
            self._cond.notify_all()


def _stop_all(workers: list[_Worker], deadline: float | None = None) -> None:
    """Ask workers to exit, then kill those still alive at ``deadline`` (default: in 2 s)."""
    if deadline is None:
        deadline = time.monotonic() + STOP_GRACE
    for worker in workers:
        worker.stop()
    for worker in workers:
        worker.reap(max(0.0, deadline - time.monotonic()))


def _rebuild_exception(reply: tuple[Any, ...]) -> BaseException:
    """The worker's exception from a ("raise", …) or ("state", …) or ("opaque", …) reply."""
    kind, tb_text = reply[0], reply[-1]
    if kind == "raise":
        exc: BaseException = reply[1]
    elif kind == "state":
        cls, args, state = reply[1:4]
        exc = cls.__new__(cls, *args)  # its __init__ signature cannot be replayed
        exc.args = args
        exc.__dict__.update(state)
    else:
        exc = RuntimeError(f"{reply[1]}: {reply[2]}")
    exc.__cause__ = _RemoteTraceback(tb_text)
    return exc


# --- the worker's side ------------------------------------------------------------------


def _worker_main(conn: Connection, memory_bytes: int | None, seconds: float) -> None:
    """Serve tasks one at a time until told to stop, EOF, or the parent's death."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the daemon, not its workers
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _start_watchdog()
    _set_limits(memory_bytes)
    while True:
        try:
            payload = conn.recv_bytes()
        except (EOFError, OSError):
            return
        except MemoryError:  # the task itself is larger than the budget
            with contextlib.suppress(OSError):
                conn.send_bytes(_dumps(("memory", "MemoryError receiving the task"))[0])
            return
        if not payload:
            return
        reply, out_of_memory = _run(payload, seconds)
        try:
            conn.send_bytes(reply)
        except (EOFError, OSError):
            return
        if out_of_memory:
            return  # a MemoryError may leave C libraries half-done: start afresh


def _run(payload: bytes, seconds: float) -> tuple[bytes, bool]:
    """One task: its pickled reply and whether it ran out of memory."""
    _cpu_backstop(seconds)
    try:
        fn, args = pickle.loads(payload)
        return _dumps(("ok", fn(*args)))
    except BaseException as exc:  # everything goes back to the caller
        try:
            tb_text = "".join(traceback.format_exception(exc))
        except MemoryError:
            tb_text = f"{type(exc).__name__} (no traceback: out of memory)"
        if _caused_by_memory(exc):
            return _dumps(("memory", tb_text))
        return _dumps(_exception_reply(exc, tb_text))


def _dumps(reply: tuple[Any, ...]) -> tuple[bytes, bool]:
    """Pickle a reply; an unpicklable result becomes the pickling error instead."""
    try:
        return pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL), reply[0] == "memory"
    except MemoryError:
        return pickle.dumps(("memory", "MemoryError while pickling the reply")), True
    except Exception as exc:
        if reply[0] != "ok":
            raise
        return _dumps(_exception_reply(exc, "".join(traceback.format_exception(exc))))


def _exception_reply(exc: BaseException, tb_text: str) -> tuple[Any, ...]:
    """Pick the most faithful form of ``exc`` that survives a pickle round trip."""
    with contextlib.suppress(Exception):
        copy = pickle.loads(pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL))
        if type(copy) is type(exc) and str(copy) == str(exc) and _same_state(copy, exc):
            return ("raise", exc, tb_text)
    with contextlib.suppress(Exception):
        state = dict(getattr(exc, "__dict__", {}))
        reply = ("state", type(exc), tuple(exc.args), state, tb_text)
        pickle.loads(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
        return reply
    return ("opaque", f"{type(exc).__module__}.{type(exc).__qualname__}", str(exc), tb_text)


def _same_state(a: BaseException, b: BaseException) -> bool:
    try:
        return bool(getattr(a, "__dict__", {}) == getattr(b, "__dict__", {}))
    except Exception:
        return False


def _caused_by_memory(exc: BaseException) -> bool:
    """A MemoryError, or an error that wraps one (parse() wraps every Exception)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, MemoryError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _set_limits(memory_bytes: int | None) -> None:
    """No core files (the RLIMIT_CPU backstop must not leave any); the address-space cap."""
    _, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    if memory_bytes is not None:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = memory_bytes if hard == resource.RLIM_INFINITY else min(memory_bytes, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _cpu_backstop(seconds: float) -> None:
    """Let the kernel kill this worker if a task outlives a dead parent by CPU seconds.

    The parent kills it after ``seconds`` of wall time first; this only matters when the
    parent is gone and the task holds the GIL, so that the watchdog thread cannot run.
    """
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu = used.ru_utime + used.ru_stime
    with contextlib.suppress(ValueError, OSError):
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        soft = math.ceil(cpu + seconds) + CPU_GRACE
        if hard == resource.RLIM_INFINITY or soft <= hard:
            resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _start_watchdog() -> None:
    """Exit as soon as the parent dies, even in the middle of a task."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(70)

    previous = threading.stack_size(_WATCHDOG_STACK)
    try:
        threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()
    finally:
        threading.stack_size(previous)

