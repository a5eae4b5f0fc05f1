"""The parse sandbox: worker processes with a time and memory budget per call.

The helpers below run inside worker processes, so they live at module level (they are
pickled by reference).  Nothing here sleeps to synchronize: workers report that they
are busy through a FIFO, and process exits are awaited with pidfds.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import re
import select
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from builders import make_source, rss_items

from aggregator.errors import AggregatorError, ConfigError, FetchError, ParseError
from aggregator.ingest.parse import parse
from aggregator.ingest.sandbox import (
    Budget,
    BudgetExceeded,
    FunctionRef,
    PoolClosed,
    SandboxError,
    WorkerPool,
    call_inline,
)
from aggregator.records import FetchResult, ParsedFeed

SOURCE = make_source()
GENEROUS = 10.0  # seconds: a correctness bound on "does not hang", not a performance target


def fetched(content: bytes) -> FetchResult:
    return FetchResult(source_id="portal", url=SOURCE.url, status=200, content=content,
                       headers={"Content-Type": "text/xml"})


SMALL_FEED = fetched(rss_items(
    "<item><title>第一条</title><link>/news/1.html</link><guid>id-1</guid>"
    "<author>ed@portal.test (编辑部)</author><pubDate>Fri, 21 May 2021 07:25:00 GMT</pubDate>"
    "<description><![CDATA[<p>Body <img src='/img/1.jpg'></p>]]></description></item>"
    "<item><title>第二条</title><link>http://portal.test/news/2.html</link></item>"
).encode())


# --- helpers that run in the workers --------------------------------------------------


def worker_pid() -> int:
    return os.getpid()


def echo(value: object) -> tuple[int, object]:
    return os.getpid(), value


def spin_forever() -> None:
    while True:
        pass


def spin_holding_the_gil() -> None:
    re.match(r"(a+)+$", "a" * 64 + "b")  # exponential backtracking inside one C call


def announce_then(fifo: str, hold_gil: bool) -> None:
    """Tell the test this worker is busy, then never return.

    ``hold_gil``: spin inside one C call, else block without using any CPU.
    """
    with open(fifo, "wb") as f:
        f.write(b"x")
    if hold_gil:
        spin_holding_the_gil()
    threading.Event().wait()


def allocate(size: int) -> int:
    return len(bytearray(size))


def allocate_wrapped(size: int) -> int:
    """Like parse(): every Exception, MemoryError included, becomes a ParseError."""
    try:
        return len(bytearray(size))
    except Exception as exc:
        raise ParseError(f"parser failed: {type(exc).__name__}", source_id="portal") from exc


def die(signum: int) -> None:
    os.kill(os.getpid(), signum)


def segfault() -> None:
    ctypes.string_at(0)


def raise_error(kind: str) -> None:
    if kind == "parse":
        raise ParseError("not a feed: an HTML page", source_id="portal")
    if kind == "fetch":
        raise FetchError("HTTP 503", source_id="portal", status=503, retry_after=120.0)
    if kind == "config":
        raise ConfigError("bad interval", path="a.yaml", source_id="portal", field="interval")
    if kind == "strict":
        raise StrictError("needs its code", code=7)
    if kind == "unpicklable":
        raise UnpicklableError("holds a lock")
    raise ValueError(f"plain {kind}")


class StrictError(AggregatorError):
    """A subclass whose __init__ cannot be replayed from ``args`` (required keyword)."""

    def __init__(self, message: str, *, code: int) -> None:
        self.code = code
        super().__init__(message)


class UnpicklableError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def open_fds() -> list[str]:
    """What this worker's file descriptors point at."""
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return targets


def slow_feed(authors: int, size: int) -> FetchResult:
    """feedparser issue #562: its author regex is quadratic in the field's length (when
    there is an "@" for it to try; the fast path reads authors with the same regex)."""
    author = "a" * (size // 2) + "@" + "b" * (size // 2)
    items = "".join(f"<item><title>t{i}</title><author>{author}</author></item>"
                    for i in range(authors))
    return fetched(rss_items(items).encode())


# --- the test side ----------------------------------------------------------------------


@pytest.fixture
def pool() -> Iterator[WorkerPool]:
    with WorkerPool(workers=2, budget=Budget(seconds=GENEROUS)) as p:
        yield p


def timed(fn: Callable[..., object], *args: object,
          **kwargs: object) -> tuple[BaseException | None, float]:
    """The exception ``fn`` raised (or None) and how long it took."""
    started = time.monotonic()
    try:
        fn(*args, **kwargs)
    except BaseException as exc:
        return exc, time.monotonic() - started
    return None, time.monotonic() - started


def wait_for_exit(pid: int, timeout: float) -> bool:
    """True when process ``pid`` (not necessarily our child) is gone within ``timeout``."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        return bool(readable)
    finally:
        os.close(fd)


def children_of(pid: int) -> list[tuple[int, str]]:
    """(pid, state) of every process whose parent is ``pid`` (zombies included)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append((int(entry), fields[0]))
    return found


def test_a_parsed_feed_comes_back_equal_to_an_in_process_parse(pool: WorkerPool) -> None:
    result = pool.call(parse, SMALL_FEED, SOURCE)
    assert isinstance(result, ParsedFeed)
    assert result == parse(SMALL_FEED, SOURCE)
    assert [e.title for e in result.entries] == ["第一条", "第二条"]
    assert result.entries[0].link == "http://portal.test/news/1.html"
    assert result.entries[0].author == "编辑部"


def test_the_call_really_runs_in_another_process(pool: WorkerPool) -> None:
    pid, value = pool.call(echo, {"k": (1, "二")})
    assert value == {"k": (1, "二")}
    assert pid != os.getpid()
    assert pid in pool.pids()


def test_a_parse_error_arrives_with_its_type_message_and_source_id(pool: WorkerPool) -> None:
    with pytest.raises(ParseError) as caught:
        pool.call(parse, fetched(b"  "), SOURCE)
    assert type(caught.value) is ParseError
    assert str(caught.value) == "[portal] empty response body"
    assert caught.value.reason == "empty response body"
    assert caught.value.source_id == "portal"
    assert "empty response body" in str(caught.value.__cause__)  # the worker's traceback


@pytest.mark.parametrize(("kind", "expected"), [
    ("parse", ParseError("not a feed: an HTML page", source_id="portal")),
    ("fetch", FetchError("HTTP 503", source_id="portal", status=503, retry_after=120.0)),
    ("config", ConfigError("bad interval", path="a.yaml", source_id="portal", field="interval")),
    ("strict", StrictError("needs its code", code=7)),
    ("plain", ValueError("plain plain")),
])
def test_exceptions_keep_type_message_and_attributes(pool: WorkerPool, kind: str,
                                                     expected: Exception) -> None:
    with pytest.raises(type(expected)) as caught:
        pool.call(raise_error, kind)
    assert type(caught.value) is type(expected)
    assert str(caught.value) == str(expected)
    assert caught.value.args == expected.args
    assert vars(caught.value) == vars(expected)


def test_an_unpicklable_exception_still_arrives_as_an_error(pool: WorkerPool) -> None:
    with pytest.raises(RuntimeError, match=r"UnpicklableError: holds a lock"):
        pool.call(raise_error, "unpicklable")
    assert pool.call(echo, 1)[1] == 1


def test_an_unpicklable_function_fails_here_and_costs_no_worker(pool: WorkerPool) -> None:
    pid = pool.call(worker_pid)
    with pytest.raises((AttributeError, TypeError, ValueError)):
        pool.call(lambda: 1)
    assert pool.call(worker_pid) == pid


def test_an_endless_call_is_stopped_at_its_budget_and_the_pool_recovers() -> None:
    with WorkerPool(workers=1, budget=Budget(seconds=1)) as pool:
        first = pool.call(worker_pid)
        exc, took = timed(pool.call, spin_forever)
        assert isinstance(exc, BudgetExceeded)
        assert isinstance(exc, SandboxError) and not isinstance(exc, ParseError)
        assert exc.reason == "parse took longer than 1s"
        assert 1.0 <= took < GENEROUS
        assert wait_for_exit(first, GENEROUS), "the timed-out worker was not killed"
        exc, took = timed(pool.call, spin_holding_the_gil)
        assert isinstance(exc, BudgetExceeded) and took < GENEROUS
        second = pool.call(worker_pid)
        assert second != first
        assert pool.call(parse, SMALL_FEED, SOURCE) == parse(SMALL_FEED, SOURCE)


@pytest.mark.parametrize("fn", [allocate, allocate_wrapped])
def test_a_call_over_the_memory_budget_fails_alone(fn: Callable[[int], int]) -> None:
    budget = Budget(seconds=GENEROUS, memory_bytes=200 * 1024 * 1024)
    with WorkerPool(workers=1, budget=budget) as pool:
        assert pool.call(allocate, 20 * 1024 * 1024) == 20 * 1024 * 1024  # within budget
        with pytest.raises(BudgetExceeded) as caught:
            pool.call(fn, 1024 * 1024 * 1024)
        assert caught.value.reason == "parse needed more than 200 MB"
        assert pool.call(parse, SMALL_FEED, SOURCE) == parse(SMALL_FEED, SOURCE)


@pytest.mark.parametrize(("fn", "args", "reason"), [
    (die, (signal.SIGKILL,), "parse worker died (signal 9)"),
    (segfault, (), "parse worker died (signal 11)"),
    (os._exit, (3,), "parse worker died (exit code 3)"),
    (die, (signal.SIGXCPU,), f"parse took longer than {GENEROUS:g}s"),  # RLIMIT_CPU backstop
])
def test_a_worker_that_dies_is_reported_and_replaced(pool: WorkerPool,
                                                     fn: Callable[..., object],
                                                     args: tuple[object, ...],
                                                     reason: str) -> None:
    with pytest.raises(BudgetExceeded) as caught:
        pool.call(fn, *args)
    assert caught.value.reason == reason
    assert pool.call(echo, "after")[1] == "after"


def test_four_threads_share_two_workers_and_each_gets_its_own_result(pool: WorkerPool) -> None:
    feeds = {f"s{i}": fetched(rss_items(f"<item><title>feed {i}</title></item>").encode())
             for i in range(4)}
    results: dict[str, list[tuple[str, str | None]]] = {sid: [] for sid in feeds}

    def run(source_id: str) -> None:
        source = make_source(SOURCE.url, source_id, name=source_id)
        for _ in range(5):
            parsed = pool.call(parse, feeds[source_id], source)
            results[source_id].append((parsed.source_id, parsed.entries[0].title))

    threads = [threading.Thread(target=run, args=(sid,)) for sid in feeds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(GENEROUS)
    assert not any(thread.is_alive() for thread in threads)
    assert results == {f"s{i}": [(f"s{i}", f"feed {i}")] * 5 for i in range(4)}
    assert 1 <= len(pool.pids()) <= 2


def test_feedparser_issue_562_is_cut_off_and_other_calls_go_on() -> None:
    # In-process, one 8 KB email-looking author costs ~2 s on either parse path and the
    # cost is quadratic: twenty 64 KB authors would take many minutes.
    hostile = slow_feed(authors=20, size=64 * 1024)
    with WorkerPool(workers=2, budget=Budget(seconds=2)) as pool:
        pool.start()
        others: list[str | None] = []
        done = threading.Event()

        def meanwhile() -> None:
            while not done.is_set():
                others.append(pool.call(parse, SMALL_FEED, SOURCE).entries[0].title)

        neighbour = threading.Thread(target=meanwhile)
        neighbour.start()
        try:
            exc, took = timed(pool.call, parse, hostile, SOURCE)
        finally:
            done.set()
            neighbour.join(GENEROUS)
        assert isinstance(exc, BudgetExceeded), exc
        assert exc.reason == "parse took longer than 2s"
        assert 2.0 <= took < GENEROUS
        assert not neighbour.is_alive()
        assert len(others) > 1 and set(others) == {"第一条"}  # the other worker kept going


def test_workers_do_not_inherit_the_parents_sockets_or_files(tmp_path: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    database = open(tmp_path / "store.db", "wb")  # noqa: SIM115 - kept open on purpose
    try:
        inode = os.fstat(listener.fileno()).st_ino
        with WorkerPool(workers=1) as pool:
            targets = pool.call(open_fds)
        assert f"socket:[{inode}]" not in targets
        assert str(tmp_path / "store.db") not in targets
        assert any(t.startswith("socket:[") for t in targets)  # its own pipe, at least
    finally:
        listener.close()
        database.close()


def test_close_leaves_no_child_processes() -> None:
    pool = WorkerPool(workers=2, budget=Budget(seconds=GENEROUS))
    pool.start()
    pids = pool.pids()
    assert len(pids) == 2
    assert len(multiprocessing.active_children()) >= 2
    pool.close()
    assert multiprocessing.active_children() == []
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"worker {pid} is left (zombie or alive)"
    # The shared fork server stays (it is reused); no worker may be left under it.
    servers = [pid for pid, _ in children_of(os.getpid())
               if b"multiprocessing.forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert servers
    for server in servers:
        assert children_of(server) == []
    with pytest.raises(RuntimeError):
        pool.call(worker_pid)
    pool.close()  # idempotent


@pytest.mark.parametrize("call_first", [True, False])
def test_workers_started_in_the_background_serve_calls_and_close_reaps_them(
        call_first: bool) -> None:
    pool = WorkerPool(workers=2, budget=Budget(seconds=GENEROUS))
    pool.start_soon()
    if call_first:
        assert pool.call(worker_pid) != os.getpid()
    pool.close()  # also right after start_soon: the workers starting then are stopped
    servers = [pid for pid, _ in children_of(os.getpid())
               if b"multiprocessing.forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    for server in servers:
        assert children_of(server) == []
    with pytest.raises(RuntimeError):
        pool.call(worker_pid)


def test_a_function_named_by_module_runs_in_a_worker(pool: WorkerPool) -> None:
    here = FunctionRef("os", "getpid")
    assert here() == os.getpid()
    assert pool.call(here) != os.getpid()


def test_close_kills_a_call_that_does_not_finish_in_two_seconds(tmp_path: Path) -> None:
    fifo = tmp_path / "busy"
    os.mkfifo(fifo)
    busy = os.open(fifo, os.O_RDWR)
    pool = WorkerPool(workers=1, budget=Budget(seconds=60))
    outcome: list[BaseException | None] = []
    caller = threading.Thread(
        target=lambda: outcome.append(timed(pool.call, announce_then, str(fifo), False)[0]))
    caller.start()
    try:
        assert os.read(busy, 1) == b"x"  # the worker is inside the call now
    finally:
        os.close(busy)
    pid = pool.pids()[0]
    started = time.monotonic()
    pool.close()
    took = time.monotonic() - started
    caller.join(GENEROUS)
    assert not caller.is_alive()
    assert 2.0 <= took < GENEROUS
    assert len(outcome) == 1 and type(outcome[0]) is PoolClosed
    assert "pool closed" in str(outcome[0])
    assert not Path(f"/proc/{pid}").exists()


PARENT_DIES = textwrap.dedent("""
    import os, signal, sys, threading
    sys.path.insert(0, {tests!r})
    import test_sandbox as t
    from aggregator.ingest.sandbox import Budget, WorkerPool

    pool = WorkerPool(workers=2, budget=Budget(seconds=2))
    pool.start()
    with open({pids!r}, "w") as f:
        print(*pool.pids(), file=f)
    for hold_gil in (False, True):
        threading.Thread(target=pool.call, args=(t.announce_then, {fifo!r}, hold_gil),
                         daemon=True).start()
    fifo = os.open({fifo!r}, os.O_RDWR)
    assert os.read(fifo, 1) and os.read(fifo, 1)  # both workers are busy now
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_workers_exit_when_the_daemon_is_killed(tmp_path: Path) -> None:
    """Blocked (only the watchdog thread can end it) or spinning in C with the GIL held
    (only the RLIMIT_CPU backstop can)."""
    fifo, pid_file = tmp_path / "busy", tmp_path / "pids"
    os.mkfifo(fifo)
    script = PARENT_DIES.format(tests=str(Path(__file__).parent), fifo=str(fifo),
                                pids=str(pid_file))
    # Output to DEVNULL: a surviving worker must not keep a pipe of ours open.
    daemon = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parents[1],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    assert daemon.wait(60) == -signal.SIGKILL
    pids = [int(p) for p in pid_file.read_text().split()]
    assert len(pids) == 2
    try:
        for pid in pids:
            assert wait_for_exit(pid, 15.0), f"worker {pid} outlived its parent"
    finally:
        for pid in pids:  # only reached with live workers when the test already failed
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_inline_mode_runs_in_this_process_without_a_budget() -> None:
    assert call_inline(worker_pid) == os.getpid()
    assert call_inline(parse, SMALL_FEED, SOURCE) == parse(SMALL_FEED, SOURCE)
    with WorkerPool(workers=0) as pool:
        assert pool.call(worker_pid) == os.getpid()
        assert pool.call(lambda: "no pickling needed") == "no pickling needed"
        with pytest.raises(ParseError, match="empty response body"):
            pool.call(parse, fetched(b""), SOURCE)
        assert pool.pids() == []
    assert multiprocessing.active_children() == []


def test_budget_defaults() -> None:
    assert Budget() == Budget(seconds=10.0, memory_bytes=512 * 1024 * 1024)
    with pytest.raises(ValueError):
        WorkerPool(workers=-1)

