"""Database transactions per poll of an unchanged source, on PostgreSQL.

    .venv/bin/python bench/transactions.py [--sources 20] [--polls 3] [--runs 1]
                                           [--out bench/results/tx-<timestamp>.json]

Counts ``pg_stat_database.xact_commit`` (and ``xact_rollback``) of a fresh database while
whole ``aggregator`` processes poll a loopback portal farm (``bench/farm.py``) whose feeds
do not change, so the figure keeps meaning the same thing whatever the internals become:

- **304**: every portal sends ``ETag`` + ``Last-Modified`` and answers ``304`` to a
  conditional request;
- **unchanged-200**: every portal sends neither validator and re-sends the same bytes
  (``200``), which the aggregator should recognise as unchanged without parsing.

CLI: ``aggregator --config X poll`` once (cold, not counted), then ``--polls`` more times;
transactions per source poll = Δxact_commit ÷ (polls × sources).  The same number of
``poll --source <first>`` runs then separates the fixed cost of a process (store open
and the like) from the marginal cost of one more source (a straight-line fit of the
two).  Daemon: ``aggregator --config X run --port 0`` with ``interval`` =
``--daemon-interval``; after its first round (cold polls and builds) the database is left
quiet until every backend's pending statistics must have been flushed, the counters are
read, the farm's request count is noted, ``--polls`` more rounds are let through, the
daemon is stopped with SIGTERM and, once it and all its backends are gone, the counters
are read again: Δxact_commit ÷ (feed requests the farm answered in the window).

Counters are read from a connection to another database (``postgres``), so the measuring
connection adds nothing to the bench database's counters (an idle control read checks
it).  Each measurement uses its own ``bench_tx_<random>`` database, dropped afterwards.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from farm import Farm, FarmServer
from run import aggregator_command

BENCH = Path(__file__).resolve().parent
AGG = aggregator_command()
VARIANTS = ("304", "unchanged-200")
# PostgreSQL (15+) flushes a backend's pending statistics at most once a second while
# busy, at the latest 10 s after it went idle (PGSTAT_IDLE_INTERVAL), and at exit.
PGSTAT_IDLE_FLUSH_S = 10.0
_RESULT_LINE = re.compile(r"^(\S+)\s+(new|updated|unchanged|not-modified|error)\b")
_LOG_RESULT = re.compile(r"\bsource=(\S+) result=(\S+)")


# --------------------------------------------------------------------------- PostgreSQL


@dataclass(frozen=True)
class Counters:
    commit: int
    rollback: int
    sessions: int = 0  # backends started (each one's start-up is a transaction too)

    def __sub__(self, other: Counters) -> Counters:
        return Counters(self.commit - other.commit, self.rollback - other.rollback,
                        self.sessions - other.sessions)


class Postgres:
    """The measuring connection: autocommit, to a database other than the measured one."""

    def __init__(self, host: str, port: int, user: str, maintenance_db: str) -> None:
        self.host, self.port, self.user = host, port, user
        self.conn = psycopg.connect(host=host, port=port, user=user, dbname=maintenance_db,
                                    autocommit=True)
        self.maintenance_db = maintenance_db

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{dbname}"

    def one(self, sql: str, *params: Any) -> tuple[Any, ...]:
        row = self.conn.execute(sql, params).fetchone()
        assert row is not None
        return tuple(row)

    def create(self) -> str:
        name = f"bench_tx_{secrets.token_hex(4)}"
        self.conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop(self, name: str) -> None:
        self.conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def counters(self, dbname: str) -> Counters:
        """The database's counters as of now, with a fresh statistics snapshot."""
        self.conn.execute("SELECT pg_stat_clear_snapshot()")
        row = self.conn.execute(
            "SELECT xact_commit, xact_rollback, sessions FROM pg_stat_database "
            "WHERE datname = %s", (dbname,)).fetchone()
        return Counters(0, 0) if row is None else Counters(*(int(v) for v in row))

    def activity(self, dbname: str) -> tuple[int, int, float | None]:
        """(backends, backends not idle, seconds since the last state change) of ``dbname``."""
        self.conn.execute("SELECT pg_stat_clear_snapshot()")
        backends, busy, idle_for = self.one(
            "SELECT count(*), count(*) FILTER (WHERE state IS DISTINCT FROM 'idle'), "
            "extract(epoch FROM clock_timestamp() - max(state_change)) "
            "FROM pg_stat_activity WHERE datname = %s", dbname)
        return int(backends), int(busy), None if idle_for is None else float(idle_for)

    def wait_no_backends(self, dbname: str, timeout: float = 60) -> None:
        """Until no backend of ``dbname`` is left: each flushed its statistics on exit."""
        deadline = time.monotonic() + timeout
        while self.activity(dbname)[0]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"backends of {dbname} still connected after {timeout:.0f} s")
            time.sleep(0.05)

    def settings(self) -> dict[str, str]:
        names = ("server_version", "autovacuum", "stats_fetch_consistency", "track_counts")
        return {n: str(self.one(f"SHOW {n}")[0]) for n in names}

    def close(self) -> None:
        self.conn.close()


# --------------------------------------------------------------------------- farm


class Hits:
    """Feed requests the farm answered, accumulated from ``FarmServer.take_stats``."""

    def __init__(self, server: FarmServer) -> None:
        self.server = server
        self.total: Counter[str] = Counter()
        self._lock = threading.Lock()

    def read(self) -> Counter[str]:
        with self._lock:
            self.total.update(self.server.take_stats())
            return Counter(self.total)


def current_commit() -> str | None:
    """HEAD of the checkout this script is in (a worktree's .git is a file, so ask git)."""
    try:
        run = subprocess.run(["git", "-C", str(BENCH), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=False)
    except OSError:
        return None
    return run.stdout.strip() or None


def make_farm(variant: str, sources: int, entries: int, seed: int) -> Farm:
    farm = Farm(sources, entries, seed=seed)
    validators = variant == "304"
    # FarmServer builds its path → spec table from farm.specs when it is created
    farm.specs = [replace(spec, validators=validators) for spec in farm.specs]
    return farm


def write_config(path: Path, *, database_url: str, output_dir: Path, server: FarmServer,
                 interval: str, extra: dict[str, str] | None = None,
                 only: int | None = None) -> None:
    q = json.dumps  # JSON scalars are valid YAML
    farm = server.farm
    lines = [
        f"database_url: {q(database_url)}",
        f"output_dir: {q(str(output_dir))}",
        'site_url: "http://feeds.bench.example/"',
        "site_title: Bench",
        "allow_private_networks: true",
    ]
    lines += [f"{key}: {q(value)}" for key, value in (extra or {}).items()]
    specs = farm.specs if only is None else farm.specs[:only]
    lines.append("sources:")
    for spec in specs:
        lines += [f"  - id: {spec.id}", f"    name: {q(spec.name, ensure_ascii=False)}",
                  f"    url: {q(server.url(spec.index))}",
                  f"    categories: [{q(spec.category, ensure_ascii=False)}]",
                  f"    interval: {q(interval)}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- measurements


@dataclass
class Measurement:
    mode: str  # "cli" or "daemon"
    variant: str
    polls: int = 0
    delta: Counters = Counters(0, 0)
    results: Counter[str] = field(default_factory=Counter)
    extra: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def per_poll(self) -> float | None:
        return self.delta.commit / self.polls if self.polls else None

    @property
    def rollback_per_poll(self) -> float | None:
        return self.delta.rollback / self.polls if self.polls else None

    def as_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "variant": self.variant, "polls": self.polls,
                "xact_commit": self.delta.commit, "xact_rollback": self.delta.rollback,
                "sessions": self.delta.sessions,
                "commit_per_poll": self.per_poll, "rollback_per_poll": self.rollback_per_poll,
                "results": dict(self.results), **self.extra, "problems": self.problems}


def _expected(variant: str) -> str:
    return "not-modified" if variant == "304" else "unchanged"


def _cli_poll(config: Path, m: Measurement, *args: str, count: bool = True) -> None:
    run = subprocess.run([AGG, "--config", str(config), "poll", *args], capture_output=True,
                         text=True, timeout=600, check=False)
    if run.returncode != 0:
        tail = " | ".join(run.stderr.strip().splitlines()[-3:]) or "no output"
        m.problems.append(f"poll {' '.join(args)} exited {run.returncode}: {tail}")
    for line in run.stderr.splitlines():
        if re.search(r"Traceback|ERROR|CRITICAL|Exception|warning", line):
            m.problems.append(f"poll stderr: {line[:200]}")
    if not count:
        return
    for line in run.stdout.splitlines():
        found = _RESULT_LINE.match(line)
        if found:
            result = found.group(2)
            if result == _expected(m.variant) and "(nothing to parse)" not in line:
                result += " (parsed)"
            m.results[result] += 1


def measure_cli(pg: Postgres, variant: str, args: argparse.Namespace,
                work: Path) -> Measurement:
    m = Measurement("cli", variant)
    farm = make_farm(variant, args.sources, args.entries, args.seed)
    db = pg.create()
    try:
        with FarmServer(farm, port=0) as server:
            hits = Hits(server)
            config = work / f"cli-{variant}.yaml"
            one = work / f"cli-{variant}-one.yaml"
            common = dict(database_url=pg.url(db), output_dir=work / f"public-cli-{variant}",
                          server=server, interval="30m")
            write_config(config, **common)
            write_config(one, **common, only=1)  # same database, the first source only
            _cli_poll(config, m, count=False)  # cold: creates the schema, stores everything
            pg.wait_no_backends(db)
            before, hits_before = pg.counters(db), hits.read()["requests"]
            idle_control = pg.counters(db) - before  # nothing runs: must be 0
            for _ in range(args.polls):
                _cli_poll(config, m)
            pg.wait_no_backends(db)
            after, hits_after = pg.counters(db), hits.read()["requests"]
            for _ in range(args.polls):
                _cli_poll(one, m, "--source", farm.specs[0].id, count=False)
            pg.wait_no_backends(db)
            single = pg.counters(db) - after
        m.polls = args.polls * args.sources
        m.delta = after - before
        if hits_after - hits_before != m.polls:
            m.problems.append(f"farm answered {hits_after - hits_before} feed requests for "
                              f"{m.polls} polls")
        # a straight line through (1 source, single) and (N sources, delta), per process
        per_process_n = m.delta.commit / args.polls
        per_process_1 = single.commit / args.polls
        marginal = ((per_process_n - per_process_1) / (args.sources - 1)
                    if args.sources > 1 else None)
        rollback_n, rollback_1 = m.delta.rollback / args.polls, single.rollback / args.polls
        marginal_rollback = ((rollback_n - rollback_1) / (args.sources - 1)
                             if args.sources > 1 else None)
        m.extra.update(
            processes=args.polls, idle_control_commit=idle_control.commit,
            commit_per_process=per_process_n,
            single_source_commit_per_process=per_process_1,
            single_source_rollback_per_process=single.rollback / args.polls,
            marginal_commit_per_source=marginal,
            fixed_commit_per_process=None if marginal is None else per_process_1 - marginal,
            marginal_rollback_per_source=marginal_rollback,
            fixed_rollback_per_process=(None if marginal_rollback is None
                                        else rollback_1 - marginal_rollback))
        if idle_control.commit or idle_control.rollback:
            m.problems.append(f"idle control moved the counters: {idle_control}")
        wrong = {k: v for k, v in m.results.items() if k != _expected(variant)}
        if wrong:
            m.problems.append(f"warm polls were not all {_expected(variant)}: {dict(m.results)}")
    finally:
        pg.drop(db)
    return m


class DaemonLog:
    """Follows the daemon's stderr; remembers when each line arrived."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._follow, args=(proc,), daemon=True)
        self._thread.start()

    def _follow(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            with self._lock:
                self.lines.append((time.monotonic(), line.rstrip()))

    def since(self, moment: float, until: float = float("inf")) -> list[str]:
        with self._lock:
            return [text for at, text in self.lines if moment <= at < until]

    def join(self) -> None:
        self._thread.join(timeout=5)


def _wait(condition: Any, timeout: float, what: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.25)


def _quiet_point(pg: Postgres, db: str, hits: Hits, quiet: float, timeout: float,
                 proc: subprocess.Popen[str]) -> tuple[int, Counters]:
    """Wait until nothing has touched ``db`` for longer than a backend may keep statistics
    unflushed and no feed request came in meanwhile; then (feed requests, counters)."""
    found: list[tuple[int, Counters]] = []

    def quiet_now() -> bool:
        h0 = hits.read()["requests"]
        backends, busy, idle_for = pg.activity(db)
        if busy or (backends and (idle_for or 0) < quiet):
            return False
        counters = pg.counters(db)
        # nothing started meanwhile (a transaction would have moved state_change)
        again = pg.activity(db)
        if hits.read()["requests"] != h0 or again[1] or again[0] != backends or (
                backends and (again[2] or 0) < quiet):
            return False
        found.append((h0, counters))
        return True

    _wait(quiet_now, timeout, "a quiet database", proc)
    return found[-1]


def measure_daemon(pg: Postgres, variant: str, args: argparse.Namespace,
                   work: Path) -> Measurement:
    m = Measurement("daemon", variant)
    farm = make_farm(variant, args.sources, args.entries, args.seed)
    n = args.sources
    interval = args.daemon_interval
    quiet = PGSTAT_IDLE_FLUSH_S + 1
    db = pg.create()
    try:
        with FarmServer(farm, port=0) as server:
            hits = Hits(server)
            config = work / f"daemon-{variant}.yaml"
            write_config(config, database_url=pg.url(db), server=server,
                         output_dir=work / f"public-daemon-{variant}", interval=f"{interval:g}s",
                         extra={"start_jitter": "0"})
            started = time.monotonic()
            proc = subprocess.Popen([AGG, "--config", str(config), "run", "--port", "0"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    text=True, encoding="utf-8", errors="replace")
            log = DaemonLog(proc)
            try:
                _wait(lambda: hits.read()["requests"] >= n, 120, "the first round", proc)
                h0, s0 = _quiet_point(pg, db, hits, quiet, 4 * interval + 60, proc)
                t0 = time.monotonic()
                target = h0 + args.polls * n
                _wait(lambda: hits.read()["requests"] >= target,
                      args.polls * interval + 120, f"{args.polls} more round(s)", proc)
                # quiet again (before the next round, if the interval leaves room): the
                # window ends here, and the shutdown is counted on its own
                h_end, s_end = _quiet_point(pg, db, hits, quiet, 4 * interval + 60, proc)
                t_end = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                try:
                    m.extra["exit_code"] = proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    m.extra["exit_code"] = proc.wait()
                    m.problems.append("daemon did not exit within 60 s of SIGTERM (killed)")
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                log.join()
            pg.wait_no_backends(db)
            s1, h1 = pg.counters(db), hits.read()["requests"]
        m.polls = h_end - h0
        m.delta = s_end - s0
        shutdown = s1 - s_end
        if h1 != h_end:
            m.problems.append(f"{h1 - h_end} feed request(s) after the window, before the exit")
        if m.polls != args.polls * n:
            m.problems.append(f"window held {m.polls} feed requests, expected {args.polls * n}")
        if m.extra["exit_code"] != 0:
            m.problems.append(f"daemon exit code {m.extra['exit_code']} after SIGTERM")
        in_window = log.since(t0, t_end)
        for line in in_window:
            found = _LOG_RESULT.search(line)
            if found:
                m.results[found.group(2)] += 1
        builds = [line for line in in_window if re.search(r"\bbuilt\b", line)]
        retention = [line for line in in_window if "retention" in line]
        all_lines = log.since(0)
        m.extra.update(
            interval_s=interval, quiet_s=quiet,
            startup_commit=s0.commit, startup_rollback=s0.rollback,
            startup_polls=h0, startup_builds=sum(1 for line in log.since(0, t0)
                                                 if re.search(r"\bbuilt\b", line)),
            shutdown_commit=shutdown.commit, shutdown_rollback=shutdown.rollback,
            window_s=round(t_end - t0, 1), quiet_point_after_s=round(t0 - started, 1),
            builds_in_window=len(builds), retention_in_window=len(retention),
            log_tail=[line for line in all_lines[-3:]])
        if builds or retention:
            m.problems.append(f"the window holds {len(builds)} build(s) and {len(retention)} "
                              f"retention line(s): the figure includes them")
        if sum(m.results.values()) != m.polls:
            m.problems.append(f"{sum(m.results.values())} result= log lines for {m.polls} "
                              f"requests")
        wrong = {k: v for k, v in m.results.items() if k != _expected(variant)}
        if wrong:
            m.problems.append(f"window polls were not all {_expected(variant)}: "
                              f"{dict(m.results)}")
        for line in all_lines:
            if re.search(r"Traceback|level=ERROR|level=CRITICAL|Exception", line):
                m.problems.append(f"daemon log: {line[:200]}")
    finally:
        pg.drop(db)
    return m


# --------------------------------------------------------------------------- output


def _fmt(values: list[float | None], digits: int = 2) -> str:
    clean = [v for v in values if v is not None]
    if not clean:
        return "—"
    mid = statistics.median(clean)
    text = f"{mid:.{digits}f}"
    if len(clean) > 1:
        text += f" ({min(clean):.{digits}f}–{max(clean):.{digits}f})"
    return text


def table(runs: list[list[Measurement]]) -> str:
    header = ("poll", "xact_commit / poll", "xact_rollback / poll", "xact_commit",
              "xact_rollback", "sessions", "polls", "notes")
    rows = [header]
    for index, first in enumerate(runs[0]):
        same = [run[index] for run in runs]
        if first.mode == "cli":
            note = (f"per process {_fmt([m.extra['commit_per_process'] for m in same], 1)}; "
                    f"fit: fixed {_fmt([m.extra['fixed_commit_per_process'] for m in same], 1)}"
                    f" + {_fmt([m.extra['marginal_commit_per_source'] for m in same])} per "
                    f"source")
        else:
            note = (f"{_fmt([m.extra['builds_in_window'] for m in same], 0)} build(s) in "
                    f"window; outside it: start + first round "
                    f"{_fmt([m.extra['startup_commit'] for m in same], 0)}, shutdown "
                    f"{_fmt([m.extra['shutdown_commit'] for m in same], 0)} commits")
        rows.append((
            f"{'CLI' if first.mode == 'cli' else 'daemon'} {first.variant}",
            _fmt([m.per_poll for m in same]),
            _fmt([m.rollback_per_poll for m in same]),
            _fmt([m.delta.commit for m in same], 0),
            _fmt([m.delta.rollback for m in same], 0),
            _fmt([m.delta.sessions for m in same], 0),
            _fmt([m.polls for m in same], 0),
            note,
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
             for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=20, help="feeds served (default 20)")
    parser.add_argument("--polls", type=int, default=3,
                        help="warm CLI runs, and daemon rounds in the window (default 3)")
    parser.add_argument("--entries", type=int, default=10, help="entries per feed (10)")
    parser.add_argument("--runs", type=int, default=1,
                        help="repeat everything; the table shows median (min–max)")
    parser.add_argument("--daemon-interval", type=float, default=15,
                        help="sources' interval in the daemon, seconds (15; it must leave "
                             f"more than {PGSTAT_IDLE_FLUSH_S + 1:g} s of quiet after a round)")
    parser.add_argument("--skip-cli", action="store_true")
    parser.add_argument("--skip-daemon", action="store_true")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated subset of {','.join(VARIANTS)}")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--pg-maintenance-db", default="postgres",
                        help="where the measuring connection connects (not measured)")
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    if unknown := set(variants) - set(VARIANTS):
        parser.error(f"unknown variant(s): {', '.join(sorted(unknown))}")
    if args.sources < 1 or args.polls < 1:
        parser.error("--sources and --polls must be at least 1")

    pg = Postgres(args.pg_host, args.pg_port, args.pg_user, args.pg_maintenance_db)
    environment = {"postgres": pg.settings(), "python": platform.python_version(),
                   "machine": platform.machine(), "commit": current_commit()}
    started = time.monotonic()
    runs: list[list[Measurement]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-tx-") as tmp:
            for number in range(1, args.runs + 1):
                run: list[Measurement] = []
                plan = ([("cli", v) for v in variants] * (not args.skip_cli)
                        + [("daemon", v) for v in variants] * (not args.skip_daemon))
                for mode, variant in plan:
                    print(f"run {number}/{args.runs}: {mode} {variant} ...", file=sys.stderr,
                          flush=True)
                    work = Path(tmp) / f"run{number}-{mode}-{variant}"
                    work.mkdir()
                    measure = measure_cli if mode == "cli" else measure_daemon
                    m = measure(pg, variant, args, work)
                    print(f"  {m.delta.commit} commits, {m.delta.rollback} rollbacks, "
                          f"{m.polls} polls → {m.per_poll or float('nan'):.2f} per poll",
                          file=sys.stderr, flush=True)
                    run.append(m)
                runs.append(run)
    finally:
        pg.close()
    if not runs or not runs[0]:
        sys.exit("nothing measured")

    pg_version = environment["postgres"]["server_version"]
    print(f"\nPostgreSQL {pg_version}: transactions per poll of an unchanged source, "
          f"{args.sources} sources, {args.polls} poll(s) each"
          + (f", median (min–max) of {args.runs} runs" if args.runs > 1 else "") + "\n")
    print(table(runs))
    problems = [f"{m.mode} {m.variant}: {p}" for run in runs for m in run for p in m.problems]
    if problems:
        print("\nproblems seen:")
        for problem in dict.fromkeys(problems):
            print(f"- {problem}")
    if args.out:
        document = {
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "environment": environment,
            "runs": [[m.as_json() for m in run] for run in runs],
            "problems": problems,
            "duration_s": round(time.monotonic() - started, 1),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n",
                            encoding="utf-8")
        print(f"\nJSON: {args.out}")


if __name__ == "__main__":
    main()
