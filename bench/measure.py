"""Measuring whole processes: wall time, peak RSS and CPU (``/usr/bin/time -v``), the CPU
of a whole process tree (child subreaper + ``RUSAGE_CHILDREN``), process-tree memory from
``/proc``, HTTP load (``wrk``, or a Python keep-alive fallback)."""

from __future__ import annotations

import ctypes
import http.client
import os
import re
import resource
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

GNU_TIME = "/usr/bin/time"
PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
ORPHAN_GRACE = 10.0  # seconds an orphaned descendant gets to exit after the main process


@dataclass
class Timed:
    """One finished process: wall seconds, peak RSS (kB, as GNU time reports it), output.

    ``cpu_s``: user + system seconds of the process and of the children it waited for
    (GNU time).  ``tree_cpu_s`` (``timed(..., tree_cpu=True)`` only): the same for the
    whole process tree, including descendants nobody waited for (multiprocessing's
    forkserver, its workers, the resource tracker), which GNU time misses; ``orphans``
    is how many of those were reaped here, ``stragglers`` how many had not exited in
    ``ORPHAN_GRACE`` seconds (their CPU is then missing from ``tree_cpu_s``).
    """

    command: list[str]
    wall: float
    peak_kb: int | None
    returncode: int
    stdout: str
    stderr: str
    cpu_s: float | None = None
    tree_cpu_s: float | None = None
    orphans: int = 0
    stragglers: int = 0

    @property
    def peak_mb(self) -> float | None:
        return None if self.peak_kb is None else self.peak_kb / 1024


def timed(command: Sequence[str], *, timeout: float = 1800, cwd: str | None = None,
          env: dict[str, str] | None = None, tree_cpu: bool = False) -> Timed:
    """Run ``command`` to completion under ``/usr/bin/time -v`` (when present).

    GNU time's "Maximum resident set size" is the largest RSS of the process or of any
    child it waited for (a maximum, not a sum over the process tree).

    ``tree_cpu``: also measure the CPU of the whole tree.  This process becomes a child
    subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``), so every descendant orphaned when its
    parent exits is re-parented here instead of to init; after the command ends those are
    waited for (``reap_orphans``), and the growth of this process's ``RUSAGE_CHILDREN``
    over the call is the tree's CPU: the kernel adds a child's CPU, and that of everything
    it reaped, when it is reaped.  Exact, unlike sampling ``/proc`` (which misses what a
    process spends after its last sample).  It must not run while another thread of this
    process starts or reaps other processes, whose CPU would be counted too.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".time", delete=False) as report:
        report_path = report.name
    prefix = [GNU_TIME, "-v", "-o", report_path] if os.access(GNU_TIME, os.X_OK) else []
    tracking = tree_cpu and become_subreaper()
    ours = set(children_of(os.getpid())) if tracking else set()
    usage_before = _children_cpu()
    started = time.perf_counter()
    try:
        run = subprocess.run([*prefix, *command], capture_output=True, text=True,
                             timeout=timeout, cwd=cwd, env=env, check=False)
        wall = time.perf_counter() - started
        text = Path(report_path).read_text(encoding="utf-8", errors="replace")
    finally:
        Path(report_path).unlink(missing_ok=True)
    orphans, stragglers = reap_orphans(ours) if tracking else (0, [])
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    user = re.search(r"User time \(seconds\): ([\d.]+)", text)
    system = re.search(r"System time \(seconds\): ([\d.]+)", text)
    return Timed(command=list(command), wall=wall, peak_kb=int(found.group(1)) if found else None,
                 returncode=run.returncode, stdout=run.stdout, stderr=run.stderr,
                 cpu_s=float(user.group(1)) + float(system.group(1)) if user and system
                 else None,
                 tree_cpu_s=_children_cpu() - usage_before if tracking else None,
                 orphans=orphans, stragglers=len(stragglers))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


_subreaper: list[bool] = []


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux); False if refused."""
    if not _subreaper:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            _subreaper.append(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
        except (OSError, AttributeError):
            _subreaper.append(False)
    return _subreaper[0]


def reap_orphans(keep: set[int], grace: float = ORPHAN_GRACE) -> tuple[int, list[int]]:
    """Wait for every child of this process not in ``keep``: descendants of a finished
    command re-parented here (see ``become_subreaper``).  Returns (reaped, still running
    after ``grace`` seconds).  Must not be given a ``keep`` that misses a child another
    part of this process will wait for."""
    reaped = 0
    deadline = time.monotonic() + grace
    while True:
        left = []
        for pid in children_of(os.getpid()):
            if pid in keep:
                continue
            try:
                done, _status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue
            if done:
                reaped += 1
            else:
                left.append(pid)
        if not left or time.monotonic() > deadline:
            return reaped, left
        time.sleep(0.01)


# --------------------------------------------------------------------------- /proc


def _kb_field(path: str, field: str) -> int | None:
    """A ``Name:  123 kB`` line of a /proc file, None when the process is gone."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return None
    found = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) if found else None


def proc_status_kb(pid: int, field: str) -> int | None:
    """``VmRSS`` / ``VmHWM`` ... of ``pid`` in kB, None when the process is gone."""
    return _kb_field(f"/proc/{pid}/status", field)


def pss_kb(pid: int) -> int | None:
    """Proportional set size: shared pages divided among the processes sharing them."""
    return _kb_field(f"/proc/{pid}/smaps_rollup", "Pss")


def _children_map() -> dict[int, list[int]]:
    """parent pid -> its children's pids, for every process in ``/proc`` (zombies too)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def children_of(pid: int) -> list[int]:
    """The direct children of ``pid``, zombies included."""
    return _children_map().get(pid, [])


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, ...)."""
    children = _children_map()
    found: list[int] = []
    queue = [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def command_line(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()


@dataclass
class TreeMemory:
    main_rss_kb: int
    main_hwm_kb: int
    children_rss_kb: int
    children_hwm_kb: int
    children: int
    tree_pss_kb: int

    @property
    def total_rss_kb(self) -> int:
        return self.main_rss_kb + self.children_rss_kb


def tree_memory(pid: int) -> TreeMemory:
    kids = descendants(pid)
    return TreeMemory(
        main_rss_kb=proc_status_kb(pid, "VmRSS") or 0,
        main_hwm_kb=proc_status_kb(pid, "VmHWM") or 0,
        children_rss_kb=sum(proc_status_kb(k, "VmRSS") or 0 for k in kids),
        children_hwm_kb=sum(proc_status_kb(k, "VmHWM") or 0 for k in kids),
        children=len(kids),
        tree_pss_kb=sum(pss_kb(p) or 0 for p in [pid, *kids]),
    )


class TreeSampler:
    """Samples the RSS sum of a process tree in the background; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kb = 0
        self.peak_children = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def start(self) -> TreeSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            memory = tree_memory(self.pid)
            if memory.total_rss_kb > self.peak_kb:
                self.peak_kb = memory.total_rss_kb
                self.peak_children = memory.children


# --------------------------------------------------------------------------- network


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    parts = urlsplit(url)
    while True:
        try:
            conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=2)
            conn.request("GET", parts.path or "/")
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


@dataclass
class Load:
    requests_per_s: float
    tool: str
    errors: int
    raw: str


def load(url: str, *, seconds: float, connections: int = 16, threads: int = 2,
         headers: dict[str, str] | None = None) -> Load:
    """Requests/s with keep-alive: ``wrk`` when installed, else a Python generator."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return _python_load(url, seconds=seconds, connections=connections, headers=headers)
    command = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s"]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    run = subprocess.run([*command, url], capture_output=True, text=True, check=False,
                         timeout=seconds + 60)
    found = re.search(r"Requests/sec:\s+([\d.]+)", run.stdout)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", run.stdout)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                     run.stdout)
    errors = (int(bad.group(1)) if bad else 0) + (
        sum(int(g) for g in sock.groups()) if sock else 0)
    return Load(requests_per_s=float(found.group(1)) if found else float("nan"),
                tool=f"wrk -t{threads} -c{connections} -d{seconds:g}s", errors=errors,
                raw=run.stdout + run.stderr)


def _python_load(url: str, *, seconds: float, connections: int,
                 headers: dict[str, str] | None) -> Load:
    parts = urlsplit(url)
    done = [0] * connections
    errors = [0] * connections
    deadline = time.monotonic() + seconds

    def worker(slot: int) -> None:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
        while time.monotonic() < deadline:
            try:
                conn.request("GET", parts.path, headers=headers or {})
                response = conn.getresponse()
                response.read()
                if response.status >= 400:
                    errors[slot] += 1
                done[slot] += 1
            except (OSError, http.client.HTTPException):
                errors[slot] += 1
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
        conn.close()

    started = time.monotonic()
    workers = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    elapsed = time.monotonic() - started
    return Load(requests_per_s=sum(done) / elapsed, errors=sum(errors), raw="",
                tool=f"python http.client keep-alive, {connections} threads (wrk not found)")
