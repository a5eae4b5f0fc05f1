"""Steady state and recovery of ``aggregator run --role worker`` processes on PostgreSQL.

    .venv/bin/python bench/steady.py [--rates 50k,75k,100k,125k] [--workers 3] [--interval 2m]
                                     [--cycles 2] [--pad N] [--start spread|burst]
                                     [--recovery-at 50k | --no-recovery] [--keep-going]
                                     [--profile --keep] [--out bench/results/steady-<time>.json]
    .venv/bin/python bench/steady.py --quick          # 1-2 minute smoke run

1. **Steady state.**  A rate is given as "sources at a 30-minute interval" (100k = 55.6
   polls/s).  It is run as the same poll rate at a shorter ``--interval``: N sources at
   interval I poll as often as N x (30 min / I) sources at 30 min, so 100k at 2 min is
   6,667 sources.  The farm (``farm.py``, small feeds, every source answering 304) serves
   them on loopback; a deterministic 10% of polls see a changed feed (each source's
   version advances every 10.5 intervals — 10 x the mean gap between its polls, jitter
   included — staggered by source index, from the request time).  The schedule starts
   spread evenly over one interval (``--start burst``: all due at once); the first cycle
   (cold polls) is reported apart; the measured window opens once every source has had
   its first poll (and at least 1.1 intervals after the start) and lasts ``--cycles``
   intervals.
   Claim lateness: the ``aggregator_claim_lateness_seconds`` histograms of every worker's
   ``/metrics``, scraped at the window's start and end (p99 from the bucket deltas), checked
   against exact figures from a trigger the benchmark adds to its own database (one row per
   claim: the due time it replaced) and against the farm's request times.  Also polls/s,
   CPU (workers, farm, PostgreSQL, the machine), load average and duplicate fetches (a
   source fetched twice within less than its interval).  Rates run in increasing order,
   until one misses p99 < 60 s.

2. **Recovery.**  At the end of the first rate's run (``--recovery-at``), one worker is
   killed (SIGKILL, at a moment it holds leases); seconds until every source it held is
   polled and committed by the others, with the parts: lease left, claim delay, poll.

``--pad N`` adds idle sources (configured, in the table, never due during the run) so that
the config and the ``sources`` table have the 30-minute size while the rate is scaled.
Every point uses a fresh ``bench_steady_<random>`` database, dropped afterwards.  Not part
of the test suite.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import multiprocessing
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psycopg
from farm import CATEGORIES, Farm, FarmServer
from measure import descendants

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
THIRTY_MINUTES = 1800.0
TARGET_P99 = 60.0  # seconds of claim lateness
JITTER = 0.1  # PollRules.jitter: next poll pushed back by up to 10% of the interval
MEAN_GAP = 1 + JITTER / 2  # mean gap between two polls of a source, in intervals
GOLDEN = 0.6180339887498949  # staggers the sources' change times evenly
LATENESS = "aggregator_claim_lateness_seconds"
TICKS = os.sysconf("SC_CLK_TCK")
Requests = list[tuple[float, int, int]]  # (unix time, source index, status) seen by the farm


def aggregator_command() -> str:
    for candidate in (Path(sys.executable).with_name("aggregator"),
                      ROOT / ".venv" / "bin" / "aggregator"):
        if candidate.exists():
            return str(candidate)
    sys.exit("cannot find the `aggregator` command; run with the project's .venv/bin/python")


AGG = aggregator_command()


# --------------------------------------------------------------------------- parameters


def seconds(text: str) -> float:
    """``90s``, ``2m``, ``1h`` or plain seconds."""
    found = re.fullmatch(r"([\d.]+)\s*([smh]?)", text.strip())
    if not found:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r}")
    return float(found.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[found.group(2)]


def rates(text: str) -> list[int]:
    """``100k,200k,1.5m``: sources at a 30-minute interval."""
    out = []
    for part in text.split(","):
        found = re.fullmatch(r"([\d.]+)([km]?)", part.strip().lower())
        if not found:
            raise argparse.ArgumentTypeError(f"not a rate: {part!r}")
        out.append(round(float(found.group(1)) * {"": 1, "k": 1e3, "m": 1e6}[found.group(2)]))
    return sorted(out)


@dataclass(frozen=True)
class Point:
    """One rate to run: ``equivalent`` sources at 30 min = ``sources`` at ``interval``."""

    equivalent: int
    sources: int
    interval: float
    pad: int

    @property
    def polls_per_s(self) -> float:
        return self.sources / (self.interval * MEAN_GAP)

    @property
    def nominal_per_s(self) -> float:
        """The rate the issue counts: sources / interval (jitter not included)."""
        return self.sources / self.interval


def point_for(equivalent: int, interval: float, pad_to: int) -> Point:
    sources = max(1, round(equivalent * interval / THIRTY_MINUTES))
    return Point(equivalent=equivalent, sources=sources, interval=interval,
                 pad=max(0, pad_to - sources))


# --------------------------------------------------------------------------- the farm


def _farm_main(pipe: Connection, sources: int, entries: int, entry_bytes: tuple[int, int],
               period: float, seed: int) -> None:
    """The farm process: serve, record every feed request, answer the parent's commands."""
    started = time.time()
    offsets = [(i * GOLDEN) % 1.0 * period for i in range(sources)]
    seen: Requests = []

    def version_at(index: int) -> int:
        return int((time.time() - started + offsets[index]) // period)

    def on_request(index: int, status: int) -> None:
        seen.append((time.time(), index, status))  # list.append is atomic

    farm = Farm(sources, entries, seed=seed, entry_bytes=entry_bytes, all_validators=True,
                version_at=version_at)
    with FarmServer(farm, port=0, on_request=on_request) as server:
        pipe.send([server.url(i) for i in range(sources)])
        while (command := pipe.recv()) != "stop":
            if command == "requests":
                pipe.send(list(seen))
        pipe.send(server.take_stats())


class FarmProcess:
    """``farm.FarmServer`` in a process of its own (its CPU time is then its own)."""

    def __init__(self, sources: int, entries: int, entry_bytes: tuple[int, int],
                 period: float, seed: int) -> None:
        context = multiprocessing.get_context("fork")
        self._pipe, child = context.Pipe()
        self.process = context.Process(target=_farm_main, name="farm", daemon=True,
                                       args=(child, sources, entries, entry_bytes, period, seed))
        self.process.start()
        self.urls: list[str] = self._pipe.recv()

    @property
    def pid(self) -> int:
        return int(self.process.pid or 0)

    def requests(self) -> Requests:
        self._pipe.send("requests")
        return self._pipe.recv()

    def stop(self) -> dict[str, int]:
        self._pipe.send("stop")
        stats = self._pipe.recv()
        self.process.join(10)
        return stats


# --------------------------------------------------------------------------- the database

CLAIM_LOG = """
CREATE TABLE bench_claims (id text, token integer, holder text, due timestamp,
                           claimed_at timestamp);
CREATE FUNCTION bench_log_claim() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bench_claims VALUES (NEW.id, NEW.lease_token, NEW.leased_by,
                                     OLD.next_poll_at, clock_timestamp() AT TIME ZONE 'UTC');
    RETURN NEW;
END $$;
CREATE TRIGGER bench_claims AFTER UPDATE OF lease_token ON sources FOR EACH ROW
    WHEN (NEW.lease_token IS DISTINCT FROM OLD.lease_token) EXECUTE FUNCTION bench_log_claim();
"""


@dataclass
class Database:
    admin: str  # libpq conninfo of the maintenance database
    name: str

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.name}"

    @property
    def conninfo(self) -> str:
        return re.sub(r"dbname=\S+", f"dbname={self.name}", self.admin)

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.conninfo, autocommit=True)


@contextmanager
def fresh_database(admin: str) -> Iterator[Database]:
    """A new empty database, dropped (with any connection left) afterwards."""
    db = Database(admin=admin, name=f"bench_steady_{uuid.uuid4().hex[:10]}")
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{db.name}"')
    try:
        yield db
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE "{db.name}" WITH (FORCE)')


def seed_database(db: Database, urls: list[str]) -> None:
    """The schema (by the product's own migration), one row per source — none due yet — and
    the benchmark's claim log."""
    from aggregator.records import Source
    from aggregator.store import Store

    sources = [Source(id=source_id(i), name="-", url=url, categories=("-",))
               for i, url in enumerate(urls)]
    far = datetime(2100, 1, 1, tzinfo=UTC)
    with Store.open(db.url) as store:
        store.add_sources(sources, now=far)
    with db.connect() as connection:
        connection.execute(CLAIM_LOG)


def source_id(index: int) -> str:
    return f"s{index:04d}"  # as farm.SourceSpec.id


def schedule(db: Database, point: Point, start: str) -> float:
    """Make the active sources due from now: spread over one interval, or all at once."""
    now = time.time()
    step = point.interval / point.sources if start == "spread" else 0.0
    with db.connect() as connection:
        connection.execute(
            "UPDATE sources SET next_poll_at = to_timestamp(%s + substring(id from 2)::int * %s)"
            " AT TIME ZONE 'UTC' WHERE substring(id from 2)::int < %s",
            (now, step, point.sources))
    return now


def claims_log(db: Database) -> list[tuple[str, int, str, float, float]]:
    """Every claim so far: (source id, token, holder, due, claimed at), times in Unix seconds."""
    with db.connect() as connection:
        return [(r[0], r[1], r[2], float(r[3] or 0), float(r[4])) for r in connection.execute(
            "SELECT id, token, holder, extract(epoch FROM due), extract(epoch FROM claimed_at)"
            " FROM bench_claims ORDER BY claimed_at")]


# --------------------------------------------------------------------------- the workers


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log: Path
    holder: str = ""
    metrics_url: str = ""

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.log.read_text(encoding="utf-8", errors="replace"))
            if found:
                return found
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited ({self.process.returncode}): {self.tail()}")
            time.sleep(0.2)
        raise TimeoutError(f"no {pattern!r} in {self.log} after {timeout} s: {self.tail()}")

    def tail(self, lines: int = 5) -> str:
        return " | ".join(self.log.read_text(encoding="utf-8",
                                             errors="replace").splitlines()[-lines:])


def write_config(path: Path, db: Database, urls: list[str], interval: float,
                 args: argparse.Namespace) -> None:
    """A config like ``tests/test_workers.py``'s, with the benchmark's sources."""
    lines = [f"database_url: {db.url}", f"output_dir: {path.parent / 'public'}",
             "allow_private_networks: true", f"parse_workers: {args.parse_workers}",
             f"workers: {args.threads}", f"host_concurrency: {args.host_concurrency}",
             f"build_debounce: {args.build_debounce}s", f"fetch_deadline: {args.fetch_deadline}s",
             f"parse_timeout: {args.parse_timeout}s", "sources:"]
    for i, url in enumerate(urls):
        lines += [f"  - id: {source_id(i)}", f"    name: 门户{i:04d} Portal", f'    url: "{url}"',
                  f"    categories: [{CATEGORIES[i % len(CATEGORIES)]}]",
                  f"    interval: {interval:g}s"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def start_workers(config: Path, count: int, logs: Path) -> list[Worker]:
    workers = []
    for n in range(count):
        log = logs / f"worker{n}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [AGG, "--config", str(config), "run", "--role", "worker", "--port", "0"],
                stdout=subprocess.DEVNULL, stderr=sink, cwd=str(config.parent))
        workers.append(Worker(process=process, log=log))
    for worker in workers:
        worker.metrics_url = worker.wait_for(r"listening on (http://[^\s)]+)", 300).group(1)
        worker.metrics_url = worker.metrics_url.rstrip("/") + "/metrics"
        worker.holder = worker.wait_for(r"worker (\S+) started", 300).group(1)
    return workers


def stop_workers(workers: list[Worker]) -> list[str]:
    """SIGTERM each live worker; the problems seen (exit codes, errors in the logs)."""
    problems = []
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    for n, worker in enumerate(workers):
        try:
            code = worker.process.wait(60)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            code = worker.process.wait()
        if code not in (0, -signal.SIGKILL):
            problems.append(f"worker{n}: exit code {code}")
        errors = [line for line in worker.log.read_text(encoding="utf-8", errors="replace")
                  .splitlines() if re.search(r"level=(ERROR|WARNING|CRITICAL)", line)]
        if errors:
            problems.append(f"worker{n}: {len(errors)} error/warning line(s), first: "
                            f"{errors[0][:300]}")
    return problems


# --------------------------------------------------------------------------- metrics


@dataclass
class Scrape:
    """What one ``/metrics`` scrape of one worker said."""

    at: float
    lateness: dict[float, float]  # cumulative bucket counts by upper bound
    polls: Counter[str]  # by result
    counters: dict[str, float]
    size: int
    seconds: float


METRIC_LINE = re.compile(r"^([a-z_]+)(?:\{([^}]*)\})? ([0-9.eE+-]+|NaN|\+Inf)$")


def scrape(worker: Worker) -> Scrape:
    started = time.monotonic()
    with urllib.request.urlopen(worker.metrics_url, timeout=120) as response:
        text = response.read().decode("utf-8")
    took = time.monotonic() - started
    lateness: dict[float, float] = {}
    polls: Counter[str] = Counter()
    counters: dict[str, float] = {}
    for line in text.splitlines():
        found = METRIC_LINE.match(line)
        if not found:
            continue
        name, labels, value = found.group(1), found.group(2) or "", float(found.group(3))
        if name == f"{LATENESS}_bucket":
            bound = re.search(r'le="([^"]+)"', labels)
            lateness[math.inf if bound.group(1) == "+Inf" else float(bound.group(1))] = value
        elif name == "aggregator_polls_total":
            polls[re.search(r'result="([^"]+)"', labels).group(1)] += value
        elif name.endswith("_total") and not labels:
            counters[name] = value
    return Scrape(at=time.time(), lateness=lateness, polls=polls, counters=counters,
                  size=len(text), seconds=took)


def scrape_all(workers: list[Worker]) -> list[Scrape]:
    return [scrape(w) for w in workers if w.process.poll() is None]


def bucket_delta(before: list[Scrape], after: list[Scrape]) -> dict[float, float]:
    """The lateness buckets of the observations between two scrapes, summed over workers."""
    total: Counter[float] = Counter()
    for old, new in zip(before, after, strict=True):
        for bound, count in new.lateness.items():
            total[bound] += count - old.lateness.get(bound, 0.0)
    return dict(sorted(total.items()))


def bucket_quantile(buckets: dict[float, float], q: float) -> float | None:
    """Prometheus' ``histogram_quantile``: linear within the bucket, 0 as the first lower bound;
    past the last finite bound, that bound."""
    if not buckets or buckets.get(math.inf, 0) <= 0:
        return None
    rank = q * buckets[math.inf]
    lower, below = 0.0, 0.0
    for bound, count in buckets.items():
        if count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = bound, count
    return lower


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def summary(values: list[float]) -> dict[str, Any]:
    return {"count": len(values), "p50": rnd(quantile(values, 0.5)),
            "p99": rnd(quantile(values, 0.99)), "max": rnd(max(values) if values else None)}


def rnd(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


# --------------------------------------------------------------------------- CPU


def cpu_of(pid: int) -> float:
    """utime + stime of one process, seconds (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def tree_cpu(pid: int) -> dict[int, float]:
    return {p: cpu_of(p) for p in (pid, *descendants(pid))}


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine (every process, every agent)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return float(sum(fields) - idle), float(sum(fields))


@dataclass
class CpuSnapshot:
    at: float
    workers: list[dict[int, float]]
    farm: float
    postgres: dict[int, float]
    postgres_all: dict[int, float]
    machine: tuple[float, float]
    bench: float


def postgres_pids(db: Database) -> tuple[list[int], list[int]]:
    """(this database's backends, every PostgreSQL server process)."""
    with db.connect() as connection:
        ours = [r[0] for r in connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()")]
    everyone = [int(e.name) for e in os.scandir("/proc") if e.name.isdigit()
                and _comm(int(e.name)) == "postgres"]
    return ours, everyone


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def cpu_snapshot(workers: list[Worker], farm: FarmProcess, db: Database) -> CpuSnapshot:
    ours, everyone = postgres_pids(db)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return CpuSnapshot(at=time.time(), workers=[tree_cpu(w.process.pid) for w in workers],
                       farm=cpu_of(farm.pid), postgres={p: cpu_of(p) for p in ours},
                       postgres_all={p: cpu_of(p) for p in everyone}, machine=machine_busy(),
                       bench=usage.ru_utime + usage.ru_stime)


def _spent(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def cpu_use(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, Any]:
    """Cores used between two snapshots (CPU seconds per second)."""
    wall = after.at - before.at
    busy = (after.machine[0] - before.machine[0]) / max(after.machine[1] - before.machine[1], 1)
    workers = [_spent(b, a) / wall for b, a in zip(before.workers, after.workers, strict=True)]
    return {"workers_cores": [round(w, 3) for w in workers],
            "workers_total_cores": round(sum(workers), 3),
            "farm_cores": round((after.farm - before.farm) / wall, 3),
            "postgres_backends_cores": round(_spent(before.postgres, after.postgres) / wall, 3),
            "postgres_all_cores": round(_spent(before.postgres_all, after.postgres_all) / wall, 3),
            "bench_cores": round((after.bench - before.bench) / wall, 3),
            "machine_busy_fraction": round(busy, 3), "cpus": os.cpu_count()}


# --------------------------------------------------------------------------- analysis


def farm_figures(requests: Requests, start: float, end: float,
                 interval: float, tolerance: float) -> dict[str, Any]:
    """Polls/s, changed fraction and duplicate fetches (gap < interval - tolerance) of the
    requests in [start, end); gaps are to the source's previous request, at any time."""
    last: dict[int, float] = {}
    gaps: list[float] = []
    duplicates: list[dict[str, Any]] = []
    statuses: Counter[int] = Counter()
    for at, index, status in requests:
        previous = last.get(index)
        last[index] = at
        if not start <= at < end:
            continue
        statuses[status] += 1
        if previous is not None:
            gaps.append(at - previous)
            if at - previous < interval - tolerance:
                duplicates.append({"source": source_id(index), "gap_s": round(at - previous, 3)})
    total = sum(statuses.values())
    return {"requests": total, "polls_per_s": rnd(total / (end - start)),
            "changed_fraction": rnd(statuses[200] / total if total else None, 4),
            "status": dict(statuses), "duplicates": len(duplicates),
            "duplicate_examples": duplicates[:10],
            "min_gap_intervals": rnd(min(gaps) / interval if gaps else None, 4),
            "gap_over_interval": summary([g / interval for g in gaps])}


def claim_figures(claims: list[tuple[str, int, str, float, float]], requests: Requests,
                  start: float, end: float) -> dict[str, Any]:
    """Exact claim lateness (claimed - due) from the trigger's log, for the claims in
    [start, end): the first claim of a source (its cold poll) apart from later ones; and the
    fetch lateness the farm saw (request - due of the claim before it)."""
    first = [c - d for _, token, _, d, c in claims if start <= c < end and token == 1]
    later = [c - d for _, token, _, d, c in claims if start <= c < end and token > 1]
    by_source: dict[str, tuple[list[float], list[float]]] = {}
    for sid, _, _, due, claimed in claims:
        times, dues = by_source.setdefault(sid, ([], []))
        times.append(claimed)
        dues.append(due)
    fetch: list[float] = []
    for at, index, _status in requests:
        if start <= at < end and (found := by_source.get(source_id(index))):
            position = bisect.bisect_right(found[0], at + 0.05) - 1  # clocks: same kernel
            if position >= 0:
                fetch.append(at - found[1][position])
    return {"claims_in_window": len(first) + len(later), "first_claims": summary(first),
            "later_claims": summary(later), "fetch_lateness": summary(fetch)}


# --------------------------------------------------------------------------- one point


@dataclass
class Run:
    """Everything a point needs while it runs."""

    point: Point
    args: argparse.Namespace
    db: Database
    farm: FarmProcess
    work: Path
    workers: list[Worker] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def sleep_until(moment: float) -> None:
    while (left := moment - time.time()) > 0:
        time.sleep(min(left, 1.0))


def first_cycle_done(run: Run, started: float) -> float:
    """When every active source has been polled once, or now if they have; plus 10% of the
    interval (a spread start has waited that long already: then nothing is added)."""
    while True:
        with run.db.connect() as connection:
            left = connection.execute(
                "SELECT count(*) FROM sources WHERE last_poll_at IS NULL "
                "AND substring(id from 2)::int < %s", (run.point.sources,)).fetchone()[0]
        if not left:
            waited = time.time() - started > (1 + JITTER) * run.point.interval
            return time.time() + (0 if waited else JITTER * run.point.interval)
        if time.time() - started > 20 * run.point.interval + 600:
            raise TimeoutError(f"{left} sources never polled")
        time.sleep(1)


def measure_steady(run: Run) -> dict[str, Any]:
    """Schedule the sources, let the first cycle pass, measure ``cycles`` intervals."""
    point, args = run.point, run.args
    load_before = os.getloadavg()
    started = schedule(run.db, point, args.start)
    at_start = scrape_all(run.workers)
    # the window opens once every source had its (cold) first poll: a full interval after
    # the start (spread) or after the burst, plus the largest jitter
    sleep_until(started + (1 + JITTER) * point.interval if args.start == "spread" else started)
    window_start = first_cycle_done(run, started)
    sleep_until(window_start)
    at_window = scrape_all(run.workers)
    cpu_before = cpu_snapshot(run.workers, run.farm, run.db)
    window_end = window_start + args.cycles * point.interval
    spy = start_profile(run, window_end - time.time()) if args.profile else None
    sleep_until(window_end)
    cpu_after = cpu_snapshot(run.workers, run.farm, run.db)
    at_end = scrape_all(run.workers)
    load_after = os.getloadavg()
    requests = run.farm.requests()
    claims = claims_log(run.db)
    buckets = bucket_delta(at_window, at_end)
    first_buckets = bucket_delta(at_start, at_window)
    polls = sum((s.polls for s in at_end), Counter()) - sum((s.polls for s in at_window),
                                                            Counter())
    counters = Counter()
    for old, new in zip(at_window, at_end, strict=True):
        for name, value in new.counters.items():
            counters[name] += value - old.counters.get(name, 0.0)
    p99 = bucket_quantile(buckets, 0.99)
    return {
        "window": {"start": round(window_start - started, 1), "seconds": round(
            window_end - window_start, 1)},
        "load_before": [round(x, 2) for x in load_before],
        "load_at_end": [round(x, 2) for x in load_after],
        "lateness_histogram": {"p50": rnd(bucket_quantile(buckets, 0.5)), "p99": rnd(p99),
                               "observations": buckets.get(math.inf, 0),
                               "within_60s": rnd(buckets.get(60.0, 0) / max(
                                   buckets.get(math.inf, 0), 1), 4),
                               "buckets": {str(k): v for k, v in buckets.items()}},
        "first_cycle_histogram": {"p50": rnd(bucket_quantile(first_buckets, 0.5)),
                                  "p99": rnd(bucket_quantile(first_buckets, 0.99)),
                                  "observations": first_buckets.get(math.inf, 0)},
        "exact": claim_figures(claims, requests, window_start, window_end),
        "first_cycle_exact": claim_figures(claims, requests, started, window_start),
        "farm": farm_figures(requests, window_start, window_end, point.interval, args.tolerance),
        "polls_by_result": dict(polls),
        "counters": dict(counters),
        "cpu": cpu_use(cpu_before, cpu_after),
        "scrape": {"bytes": [s.size for s in at_end], "seconds": [round(s.seconds, 3)
                                                                   for s in at_end]},
        "builds_in_window": count_builds(run.workers, window_start, window_end),
        "profile": finish_profile(spy) if spy else None,
        "met": p99 is not None and p99 < TARGET_P99,
    }


# --------------------------------------------------------------------------- profile

# What a sampled stack of a worker is doing, by the first of these frames it contains.
PROFILE_PARTS = (
    ("build (publish.build)", "publish/__init__.py:"),
    ("/metrics exposition", "generate_latest ("),
    ("claim_due", "claim_due ("),
    ("commit_poll", "commit_poll ("),
    ("parse worker calls", "ingest/sandbox.py:"),
    ("HTTP fetch", "ingest/fetch/"),
    ("decide", "ingest/decide.py:"),
)


@dataclass
class Profile:
    process: subprocess.Popen[bytes]
    path: Path


def start_profile(run: Run, duration: float) -> Profile | None:
    """py-spy (``--profile``) on the first worker for the rest of the window."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        run.problems.append("--profile: py-spy not found")
        return None
    path = run.work / "worker0.pyspy.txt"
    process = subprocess.Popen(
        [spy, "record", "--pid", str(run.workers[0].process.pid), "--duration",
         str(max(1, int(duration))), "--rate", "50", "--format", "raw", "--nonblocking",
         "--output", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return Profile(process=process, path=path)


def finish_profile(profile: Profile) -> dict[str, Any]:
    """Share of the worker's busy samples per part (py-spy raw: ``stack count`` lines)."""
    try:
        profile.process.wait(60)
    except subprocess.TimeoutExpired:
        profile.process.kill()
    parts: Counter[str] = Counter()
    total = 0
    text = profile.path.read_text(encoding="utf-8", errors="replace") if profile.path.exists() \
        else ""
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        part = next((name for name, frame in PROFILE_PARTS if frame in stack), "other")
        parts[part] += int(count)
    return {"samples": total, "shares": {k: round(v / max(total, 1), 3)
                                         for k, v in parts.most_common()},
            "raw": str(profile.path)}


LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def count_builds(workers: list[Worker], start: float, end: float) -> int:
    """"built ..." log lines in [start, end) (local-time log stamps)."""
    count = 0
    for worker in workers:
        for line in worker.log.read_text(encoding="utf-8", errors="replace").splitlines():
            found = LOG_TIME.match(line)
            if found and " built " in line:
                at = time.mktime(time.strptime(found.group(1)[:19], "%Y-%m-%d %H:%M:%S"))
                count += start <= at < end
    return count


# --------------------------------------------------------------------------- recovery


def held_by(db: Database, holder: str) -> dict[str, tuple[int, float]]:
    """The sources ``holder`` leases now: id -> (token, leased until)."""
    with db.connect() as connection:
        return {r[0]: (r[1], float(r[2])) for r in connection.execute(
            "SELECT id, lease_token, extract(epoch FROM leased_until) FROM sources "
            "WHERE leased_by = %s AND leased_until > now() AT TIME ZONE 'UTC'", (holder,))}


def kill_holding(db: Database, victim: Worker, timeout: float) -> tuple[float, dict[str, Any]]:
    """SIGKILL ``victim`` at a moment it holds leases: SIGSTOP it when the table shows some,
    read what it holds (it can commit nothing now), SIGKILL if any; else SIGCONT, retry."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if held_by(db, victim.holder):
            victim.process.send_signal(signal.SIGSTOP)
            killed_at = time.time()
            held = held_by(db, victim.holder)
            if held:
                victim.process.send_signal(signal.SIGKILL)
                victim.process.wait()
                return killed_at, held
            victim.process.send_signal(signal.SIGCONT)
        time.sleep(0.01)
    raise TimeoutError("the victim never held a lease")


def measure_recovery(run: Run) -> dict[str, Any]:
    """Kill one worker; time until each source it held is polled and committed by a peer."""
    victim = run.workers[0]
    children = descendants(victim.process.pid)
    killed_at, held = kill_holding(run.db, victim, timeout=60)
    lease = run.args.fetch_deadline + run.args.parse_timeout + 5
    done: dict[str, float] = {}
    deadline = time.time() + lease + 120
    while len(done) < len(held) and time.time() < deadline:
        with run.db.connect() as connection:
            for sid, token, leased_by, polled in connection.execute(
                    "SELECT id, lease_token, leased_by, extract(epoch FROM last_poll_at) "
                    "FROM sources WHERE id = ANY(%s)", (list(held),)):
                if (sid not in done and token > held[sid][0] and leased_by is None
                        and float(polled or 0) > killed_at):
                    done[sid] = time.time()
        time.sleep(0.1)
    orphans = [p for p in children if alive(p)]
    for pid in orphans:  # the parse workers of the killed worker, if they outlived it
        os.kill(pid, signal.SIGKILL)
    time.sleep(max(0.0, killed_at + lease + 15 - time.time()))  # the survivors' catch-up
    claims = claims_log(run.db)
    return recovery_figures(run, killed_at, held, done, claims, orphans, lease)


def recovery_figures(run: Run, killed_at: float, held: dict[str, tuple[int, float]],
                     done: dict[str, float], claims: list[tuple[str, int, str, float, float]],
                     orphans: list[int], lease: float) -> dict[str, Any]:
    reclaimed = {sid: c for sid, token, _, _, c in claims
                 if sid in held and token == held[sid][0] + 1}
    parts = []
    for sid, (_, until) in sorted(held.items()):
        parts.append({"source": sid, "lease_left_s": rnd(until - killed_at),
                      "claim_after_expiry_s": rnd(reclaimed[sid] - until) if sid in reclaimed
                      else None,
                      "committed_after_claim_s": rnd(done[sid] - reclaimed[sid])
                      if sid in done and sid in reclaimed else None,
                      "recovered_s": rnd(done[sid] - killed_at) if sid in done else None})
    others = [c - d for sid, _, _, d, c in claims if killed_at <= c and sid not in held]
    requests = run.farm.requests()
    refetched = sum(1 for at, index, _ in requests if at >= killed_at
                    and source_id(index) in held)
    recovered = [p["recovered_s"] for p in parts if p["recovered_s"] is not None]
    if len(recovered) < len(held):
        run.problems.append(f"recovery: {len(held) - len(recovered)} held source(s) "
                            "not re-polled in time")
    return {"held": len(held), "lease_s": lease, "idle_wait_s": 1.0,
            "recovered_s": max(recovered) if len(recovered) == len(held) else None,
            "parts": parts, "others_lateness_after_kill": summary(others),
            "held_requests_after_kill": refetched, "orphans_killed": orphans}


# --------------------------------------------------------------------------- the point


def build_cost(config: Path) -> dict[str, Any]:
    """One ``aggregator build`` of every category on the point's database (workers stopped):
    what each worker build of all ten categories costs."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run([AGG, "--config", str(config), "build"], capture_output=True,
                          text=True, timeout=900, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall_s": round(time.monotonic() - started, 2),
            "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
                           2), "exit_code": done.returncode,
            "error": done.stderr.strip().splitlines()[-1][:300] if done.returncode else None}


def run_point(point: Point, args: argparse.Namespace, recover: bool) -> dict[str, Any]:
    total = point.sources + point.pad
    period = MEAN_GAP * point.interval / args.changed
    print(f"\n== {point.equivalent:,} sources at 30 min = {point.sources:,} at "
          f"{point.interval:g} s (+{point.pad:,} idle), {point.polls_per_s:.1f} polls/s; "
          f"load {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
    farm = FarmProcess(total, args.entries, args.entry_bytes, period, args.seed)
    work = Path(tempfile.mkdtemp(prefix="aggregator-steady-"))
    result: dict[str, Any] = {"equivalent": point.equivalent, "sources": point.sources,
                              "pad": point.pad, "interval_s": point.interval,
                              "expected_polls_per_s": round(point.polls_per_s, 2),
                              "nominal_polls_per_s": round(point.nominal_per_s, 2)}
    try:
        with fresh_database(args.admin) as db:
            seed_database(db, farm.urls)
            config = work / "aggregator.yaml"
            write_config(config, db, farm.urls, point.interval, args)
            run = Run(point=point, args=args, db=db, farm=farm, work=work)
            began = time.monotonic()
            try:
                run.workers = start_workers(config, args.workers, work)
                result["startup_s"] = round(time.monotonic() - began, 1)
                result.update(measure_steady(run))
                print(f"   steady: {brief(result)}", file=sys.stderr, flush=True)
                if recover:
                    result["recovery"] = measure_recovery(run)
                    print(f"   recovery: {result['recovery']['recovered_s']} s for "
                          f"{result['recovery']['held']} held source(s)", file=sys.stderr)
            finally:
                run.problems += stop_workers(run.workers)
            if args.build_cost:
                result["build"] = build_cost(config)
            result["problems"] = run.problems
    finally:
        result["farm_stats"] = farm.stop()
        if args.keep:
            print(f"   work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return result


def brief(r: dict[str, Any]) -> str:
    h, f = r["lateness_histogram"], r["farm"]
    return (f"{f['polls_per_s']} polls/s, p99 {h['p99']} s, p50 {h['p50']} s, "
            f"{f['duplicates']} duplicates, changed {f['changed_fraction']}, "
            f"cpu {r['cpu']['machine_busy_fraction']:.0%} of the machine")


# --------------------------------------------------------------------------- report


def table(points: list[dict[str, Any]]) -> str:
    lines = ["| sources at 30 min | sources × interval | polls/s (expected) | p99 / p50 lateness "
             "(histogram) | p99 exact (later / first cycle) | fetch p99 | duplicates | changed "
             "| cores: workers / PG / farm / machine | load before → end | met |",
             "| " + " | ".join(["---"] * 11) + " |"]
    for r in points:
        if "farm" not in r:
            lines.append(f"| {r['equivalent']:,} | {r['sources']:,} × {r['interval_s']:g} s | "
                         "failed | | | | | | | | |")
            continue
        h, e, f, c = r["lateness_histogram"], r["exact"], r["farm"], r["cpu"]
        first = r["first_cycle_exact"]["first_claims"]["p99"]
        pad = f" (+{r['pad']:,} idle)" if r["pad"] else ""
        lines.append(
            f"| {r['equivalent']:,} | {r['sources']:,}{pad} × {r['interval_s']:g} s | "
            f"{f['polls_per_s']} ({r['expected_polls_per_s']}) | {h['p99']} / {h['p50']} s | "
            f"{e['later_claims']['p99']} / {first} s | {e['fetch_lateness']['p99']} s | "
            f"{f['duplicates']} | {f['changed_fraction']:.1%} | "
            f"{c['workers_total_cores']} / {c['postgres_backends_cores']} / {c['farm_cores']} / "
            f"{c['machine_busy_fraction']:.0%} | {r['load_before'][0]} → "
            f"{r['load_at_end'][0]} | {'yes' if r['met'] else '**no**'} |")
    return "\n".join(lines)


def git_commit() -> str | None:
    found = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                           text=True, check=False)
    return found.stdout.strip() or None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=rates, default=rates("50k,75k,100k,125k"),
                        help="sources at a 30-minute interval, increasing (100k,200k)")
    parser.add_argument("--workers", type=int, default=3, help="worker processes")
    parser.add_argument("--interval", type=seconds, default=seconds("2m"))
    parser.add_argument("--cycles", type=float, default=2, help="measured intervals")
    parser.add_argument("--pad", type=int, default=0,
                        help="configured sources in all, the rest idle (0: none)")
    parser.add_argument("--start", choices=("spread", "burst"), default="spread")
    parser.add_argument("--changed", type=float, default=0.1, help="fraction of polls changed")
    parser.add_argument("--entries", type=int, default=10)
    parser.add_argument("--entry-bytes", type=lambda s: tuple(int(x) for x in s.split("-")),
                        default=(600, 1200), help="HTML body bytes of an entry, MIN-MAX")
    parser.add_argument("--threads", type=int, default=8, help="config `workers`")
    parser.add_argument("--parse-workers", type=int, default=1)
    parser.add_argument("--host-concurrency", type=int, default=2)
    parser.add_argument("--build-debounce", type=float, default=2.0, help="seconds")
    parser.add_argument("--fetch-deadline", type=float, default=30.0, help="seconds")
    parser.add_argument("--parse-timeout", type=float, default=20.0, help="seconds")
    parser.add_argument("--tolerance", type=float, default=1.0,
                        help="a gap shorter than interval - this is a duplicate fetch")
    parser.add_argument("--no-recovery", dest="recovery", action="store_false")
    parser.add_argument("--recovery-at", type=lambda s: rates(s)[0], default=None,
                        help="the rate whose run ends with the kill (default: the first)")
    parser.add_argument("--keep-going", action="store_true",
                        help="run every rate, even after one missed the target")
    parser.add_argument("--no-build-cost", dest="build_cost", action="store_false")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--admin", default="host=127.0.0.1 port=5432 user=postgres "
                                           "dbname=postgres")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the work directories")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy the first worker during the window (needs --keep to "
                             "read the raw stacks afterwards)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 20k at 20 s, 2 workers, 1.5 cycles, 12 s leases")
    args = parser.parse_args()
    if args.quick:
        args.rates, args.interval, args.workers, args.cycles = [20_000], 20.0, 2, 1.5
        args.fetch_deadline, args.parse_timeout = 4.0, 3.0
    return args


def main() -> None:
    args = parse_args()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or BENCH / "results" / f"steady-{stamp}.json"
    started = time.monotonic()
    points: list[dict[str, Any]] = []
    recovery_at = args.recovery_at or args.rates[0]
    for n, equivalent in enumerate(args.rates):
        point = point_for(equivalent, args.interval, args.pad)
        last = n == len(args.rates) - 1
        try:
            result = run_point(point, args, recover=args.recovery and equivalent == recovery_at)
        except (RuntimeError, TimeoutError, OSError, psycopg.Error) as exc:
            result = {"equivalent": equivalent, "sources": point.sources, "pad": point.pad,
                      "interval_s": point.interval, "met": False, "error": str(exc)[:500]}
            print(f"   failed: {exc}", file=sys.stderr)
        points.append(result)
        if not result["met"] and not args.keep_going and not last:
            print("   missed the target: stopping (--keep-going runs every rate)",
                  file=sys.stderr)
            break
    met = [p["equivalent"] for p in points if p.get("met")]
    document = {
        "schema": 1, "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(), "duration_s": round(time.monotonic() - started, 1),
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "environment": {"python": platform.python_version(), "platform": platform.platform(),
                        "cpus": os.cpu_count(), "host": socket.gethostname(),
                        "postgres": postgres_version(args.admin)},
        "largest_met": max(met) if met else None,
        "points": points,
        "problems": [f"{p['equivalent']}: {text}" for p in points
                     for text in p.get("problems", [])],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print()
    print(table(points))
    for p in points:
        if p.get("recovery"):
            r = p["recovery"]
            print(f"\nrecovery ({p['equivalent']:,}): {r['recovered_s']} s for {r['held']} "
                  f"held source(s); lease {r['lease_s']} s")
    if document["problems"]:
        print("\nproblems seen:")
        for text in document["problems"]:
            print(f"- {text}")
    print(f"\nlargest rate meeting p99 < {TARGET_P99:g} s: {document['largest_met']}")
    print(f"JSON: {out}  ({document['duration_s']:.0f} s)")


def postgres_version(admin: str) -> str:
    with psycopg.connect(admin) as connection:
        return str(connection.execute("SHOW server_version").fetchone()[0])


if __name__ == "__main__":
    main()
