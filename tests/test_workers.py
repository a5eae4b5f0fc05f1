"""Several ``aggregator run --role worker`` processes share one PostgreSQL database, and a
``--role web`` serves what they build.  Real processes, real PostgreSQL, a loopback portal
that records every request; the soak (3 workers, 300 sources, 20 s interval) takes about
a minute."""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import feedparser
import pytest
import requests
from builders import LogWatcher, LoopbackPortal, database_rows

SOURCES = 30
INTERVAL = 4.0  # seconds


def source_ids(count: int) -> list[str]:
    """The ids (and portal paths) of ``count`` sources: ``s00``…, as wide as the count needs."""
    width = len(str(count - 1))
    return [f"s{n:0{width}d}" for n in range(count)]


def write_config(tmp_path: Path, database: str, portal: LoopbackPortal, *,
                 sources: int = SOURCES, interval: float = INTERVAL, threads: int = 4,
                 host_concurrency: int = 4) -> Path:
    """``sources`` feeds of ``portal`` (ids from ``source_ids``), each in category ``全部``
    and one of three ``分组N``, polled every ``interval`` seconds; each process polls on
    ``threads`` threads (the config's ``workers``), at most ``host_concurrency`` at a time
    on the portal, and parses in its own process (``parse_workers: 0``).  Leases last
    fetch_deadline + parse_timeout + 5 s margin = 10 s here."""
    port = portal.server_address[1]
    lines = [f"database_url: {database}", f"output_dir: {tmp_path / 'public'}",
             "allow_private_networks: true", "build_debounce: 0.5s", "parse_workers: 0",
             f"workers: {threads}", f"host_concurrency: {host_concurrency}",
             "fetch_deadline: 3s", "parse_timeout: 2s", "sources:"]
    for n, source_id in enumerate(source_ids(sources)):
        lines += [f"  - id: {source_id}", f"    name: 源{n}",
                  f'    url: "http://127.0.0.1:{port}/{source_id}.xml"',
                  f"    categories: [分组{n % 3}, 全部]", f"    interval: {interval}s"]
    path = tmp_path / "aggregator.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def start(config: Path, *args: str) -> tuple[subprocess.Popen[str], LogWatcher]:
    """``aggregator run *args`` on ``config``, its stderr watched."""
    process = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "--config", str(config), "run", *args],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    return process, LogWatcher(process)


def stop(*processes: subprocess.Popen[str]) -> list[int]:
    """SIGTERM to every process still running (all at once, so none polls on while another
    stops), then their exit codes; one that has not stopped within 30 s is killed (-9)."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return [process.returncode for process in processes]


POLL_LINE = re.compile(r"source=(s\d+) result=(\S+)(?: .*elapsed=(\d+\.\d+)s)?")


def longest_poll(polls: list[list[re.Match[str]]]) -> float:
    """The longest ``elapsed`` the workers logged: how much earlier than ``interval`` after
    a fetch the next fetch of that source may come (see the soak's (a))."""
    return max(float(match.group(3)) for logged in polls for match in logged
               if match.group(3))  # a failed poll logs no elapsed


def test_workers_share_the_sources_and_the_web_role_serves_their_build(
    tmp_path: Path, pg_database: str
) -> None:
    portal = LoopbackPortal()
    config = write_config(tmp_path, pg_database, portal)
    processes = []
    try:
        workers = [start(config, "--role", "worker") for _ in range(2)]
        processes += [p for p, _ in workers]
        web, web_log = start(config, "--role", "web", "--port", "0")
        processes.append(web)
        url = web_log.wait_for(r"listening on (http://[^\s)]+)").group(1)
        assert portal.wait_until_each_fetched(3, SOURCES, timeout=60), "the workers fell behind"
        for _process, log in workers:  # both took part
            log.wait_for(r"source=s\d+ result=", timeout=5)
        # the web role serves the category feed the workers built
        feed = requests.get(url + "categories/%E5%85%A8%E9%83%A8/rss.xml", timeout=10)
        assert feed.status_code == 200
        assert "s00 一" in feed.text
    finally:
        for process in processes:
            stop(process)
        portal.close()
    # each source was fetched by one worker at a time, once per interval at most: the next
    # fetch comes an interval after the poll STARTED, so up to its elapsed time early
    polls = [[match for line in log.wait_closed() if (match := POLL_LINE.search(line))]
             for _process, log in workers]
    tolerance = longest_poll(polls)
    assert tolerance < INTERVAL / 2, tolerance  # polls of a loopback portal are short
    for name, times in portal.fetches().items():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) >= INTERVAL - tolerance, (name, gaps, tolerance)
    # one article per feed, never stored twice
    assert database_rows(pg_database, "SELECT count(*) FROM articles") == [(SOURCES,)]
    # a clean stop leaves no lease behind
    assert database_rows(pg_database, "SELECT count(*) FROM sources "
                                      "WHERE leased_until IS NOT NULL") == [(0,)]


def test_a_second_poller_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    portal = LoopbackPortal()
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}", portal)
    first, first_log = start(config, "--role", "worker")
    try:
        first_log.wait_for(r"worker \S+ started")
        second = subprocess.run(
            [sys.executable, "-m", "aggregator", "--config", str(config), "run", "--role",
             "worker"], capture_output=True, text=True, timeout=60)
        assert second.returncode == 2
        assert "SQLite is one host and one writer" in second.stderr
    finally:
        stop(first)
        portal.close()


@pytest.mark.parametrize("fault", ["kill", "stop"])
def test_a_worker_that_dies_or_stalls_loses_its_sources_to_a_peer(
    tmp_path: Path, pg_database: str, fault: str
) -> None:
    """kill -9: the leases expire and a peer polls the sources.  SIGSTOP past the lease,
    then SIGCONT: the stalled worker's late commits are refused (fencing) — its error
    (the deadline passed while it was stopped) never overwrites the peer's success."""
    portal = LoopbackPortal()
    config = write_config(tmp_path, pg_database, portal)
    processes = []
    try:
        portal.release.clear()
        first, first_log = start(config, "--role", "worker")
        processes.append(first)
        held = portal.wait_for_requests(4, timeout=30)  # 4 threads, each stuck in a fetch
        first.send_signal(signal.SIGKILL if fault == "kill" else signal.SIGSTOP)
        portal.release.set()
        second, second_log = start(config, "--role", "worker")
        processes.append(second)
        for name in held:  # polled again by the peer once the leases expired
            second_log.wait_for(rf"source={name} result=new", timeout=40)
        if fault == "stop":
            first.send_signal(signal.SIGCONT)
            for name in held:
                first_log.wait_for(rf"source={name} lease \d+ was taken over", timeout=30)
        assert portal.wait_until_each_fetched(1, SOURCES, timeout=30)
    finally:
        for process in processes:
            if fault == "stop" and process.poll() is None:
                process.send_signal(signal.SIGCONT)
            stop(process)
        portal.close()
    rows = database_rows(pg_database, "SELECT id, lease_token, error_count, last_result "
                                   "FROM sources ORDER BY id")
    by_id = {row[0]: row for row in rows}
    for name in held:
        assert by_id[name][1] == 2, by_id[name]  # claimed twice: the second claim won
        assert (by_id[name][2], by_id[name][3]) == (0, "new"), by_id[name]
    assert database_rows(pg_database, "SELECT count(*), count(DISTINCT source_id) FROM articles") \
        == [(SOURCES, SOURCES)]  # nothing lost, nothing stored twice


SOAK_SOURCES = 300
SOAK_INTERVAL = 20.0  # seconds
SOAK_WORKERS = 3
def test_three_workers_keep_300_sources_on_schedule_for_several_cycles(
    tmp_path: Path, pg_database: str
) -> None:
    """The soak: 3 workers and a web role on one PostgreSQL database, 300 feeds of one
    portal every 20 s, until each was fetched 3 times (a minute or less).

    Checked: each source is fetched once per interval — never two fetches closer than the
    schedule allows (a double claim or an early poll), never an interval skipped, never
    more fetches than the run's intervals allow; every worker polled, and the polls they
    logged are exactly the requests the portal saw (nothing fetched twice for one poll,
    no poll lost); each feed's one item is stored once; the web role serves the category
    feed the workers built; a clean stop (exit 0) leaves no lease behind.

    Settings for 2 CPU cores shared by PostgreSQL, the portal and 4 processes: 2 poll
    threads a worker (6 polls at a time in all, already more than the cores) and as many
    polls of the portal at a time (``host_concurrency``), so a claimed poll never waits
    for a host slot while its lease runs; parsing in the worker's own process
    (``parse_workers: 0``: no parse processes to start and feed).
    """
    portal = LoopbackPortal()
    config = write_config(tmp_path, pg_database, portal, sources=SOAK_SOURCES,
                          interval=SOAK_INTERVAL, threads=2, host_concurrency=2)
    names = source_ids(SOAK_SOURCES)
    processes: list[subprocess.Popen[str]] = []
    try:
        workers = [start(config, "--role", "worker") for _ in range(SOAK_WORKERS)]
        processes += [process for process, _ in workers]
        web, web_log = start(config, "--role", "web", "--port", "0")
        processes.append(web)
        url = web_log.wait_for(r"listening on (http://[^\s)]+)").group(1)
        assert portal.wait_until_each_fetched(3, SOAK_SOURCES, timeout=180), \
            "the workers fell behind"
        feed = requests.get(url + "categories/%E5%85%A8%E9%83%A8/rss.xml", timeout=10)  # 全部
    finally:
        exits = stop(*processes)
        ended = time.monotonic()
        portal.close()
    assert exits == [0] * (SOAK_WORKERS + 1), exits  # every process stopped cleanly

    # (a) Once per interval.  A poll takes ``at = now()`` as it starts, fetches, and
    # decide() makes the next due time at + poll_delay(interval) + spread(): on success
    # poll_delay is the interval itself, and spread adds jitter × min(0.1 × interval,
    # max_jitter), a draw from [0, 1) — never less, so due ∈ [at + 20 s, at + 22 s).  A
    # claim takes only sources due by then, and the next fetch follows the claim.  So two
    # fetches of a source are at least interval − ε apart, where ε is the time from the
    # first poll's ``at`` to its request reaching the portal; that is part of the poll's
    # logged ``elapsed`` (timed from the same instant, to after the commit), so the
    # longest elapsed any worker logged bounds ε: that is the tolerance, from the code,
    # not from trial.  (The workers' wall clock against the portal's monotonic one: an
    # NTP slew changes 20 s by milliseconds at most.)  A double claim shows as a gap near
    # 0, an early poll as one under the interval.
    logs = [log.wait_closed() for _, log in workers]
    polls = [[match for line in lines if (match := POLL_LINE.search(line))] for lines in logs]
    tolerance = longest_poll(polls)
    fetches = portal.fetches()
    assert sorted(fetches) == names  # every source polled, and nothing else asked for
    # every fetch lies between the portal's first request and the stop
    window = ended - min(times[0] for times in fetches.values())
    allowed = 1 + int(window / (SOAK_INTERVAL - tolerance))
    for name, times in fetches.items():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) >= SOAK_INTERVAL - tolerance, (name, gaps, tolerance)
        assert max(gaps) < 2 * SOAK_INTERVAL, (name, gaps)  # no interval skipped
        assert len(times) <= allowed, (name, len(times), allowed)

    # (b) Every worker took part, and the polls logged are the requests served: one fetch
    # a poll, no lease taken over (a superseded poll logs no result), no poll failed.
    assert all(logged for logged in polls), [len(logged) for logged in polls]
    assert sum(len(logged) for logged in polls) == sum(len(t) for t in fetches.values())
    results = Counter(match.group(2) for logged in polls for match in logged)
    assert set(results) == {"new", "unchanged"} and results["new"] == SOAK_SOURCES, results
    errors = [line for lines in logs for line in lines
              if "level=ERROR" in line or "Traceback" in line]
    assert not errors, errors[:10]

    # (c) No duplicate articles: the one item each feed served, stored once.
    assert database_rows(pg_database, "SELECT count(*), count(DISTINCT (source_id, key)) "
                                      "FROM articles") == [(SOAK_SOURCES, SOAK_SOURCES)]
    served = {(name, f"{name} 一") for name in names}  # what LoopbackPortal answers
    assert set(database_rows(pg_database, "SELECT source_id, title FROM articles")) == served

    # (d) The web role served the category feed the workers built, of those titles.
    assert feed.status_code == 200
    titles = [entry.title for entry in feedparser.parse(feed.content).entries]
    assert titles and set(titles) <= {title for _, title in served}, titles[:5]

    # (e) A clean stop leaves no lease behind.
    assert database_rows(pg_database, "SELECT count(*) FROM sources WHERE leased_until IS "
                                      "NOT NULL OR leased_by IS NOT NULL") == [(0,)]


def test_a_worker_started_with_a_stale_config_does_not_resurrect_a_removed_source(
    tmp_path: Path, pg_database: str
) -> None:
    """An old copy of the file listed s30; the operator's newer file dropped it.  A worker
    started from the old copy claims nothing (and says so in /healthz) — s30 is never
    fetched — until its file is as new; then it polls like its peer."""
    portal = LoopbackPortal()
    (tmp_path / "old").mkdir()
    old = write_config(tmp_path / "old", pg_database, portal, sources=SOURCES + 1)
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    applied = subprocess.run([sys.executable, "-m", "aggregator", "--config", str(old), "prune"],
                             capture_output=True, text=True, timeout=60)
    assert applied.returncode == 0, applied.stderr  # generation 1 lists s30
    new = write_config(tmp_path, pg_database, portal)
    processes = []
    try:
        current, current_log = start(new, "--role", "worker")
        processes.append(current)
        current_log.wait_for(r"applied config generation 2")
        stale, stale_log = start(old, "--role", "worker", "--port", "0")
        processes.append(stale)
        stale_log.wait_for(r"the database holds a newer config generation 2")
        url = stale_log.wait_for(r"listening on (http://[^\s)]+)").group(1)
        assert portal.wait_until_each_fetched(2, SOURCES, timeout=60)
        health = requests.get(url + "healthz", timeout=10).json()
        assert health["status"] == "degraded"
        assert "newer config generation 2" in health["config"]["last_error"]["message"]
        assert not any(re.search(r"source=s\d+ result=", line) for line in stale_log.lines)
        # the operator's file reaches the stale worker's host: it reloads and takes part
        mark = len(stale_log.lines)
        old.write_text(new.read_text(encoding="utf-8"), encoding="utf-8")
        stale_log.wait_for(r"current config generation 2", after=mark)
        stale_log.wait_for(r"source=s\d+ result=", after=mark, timeout=30)
        assert requests.get(url + "healthz", timeout=10).json()["status"] == "ok"
    finally:
        codes = stop(*processes)
        portal.close()
    assert codes == [0, 0]
    assert "s30" not in portal.fetches()
    assert database_rows(pg_database, "SELECT unlisted_since IS NOT NULL, lease_token FROM "
                                      "sources WHERE id = 's30'") == [(True, 0)]
    assert database_rows(pg_database, "SELECT count(*), count(DISTINCT source_id) "
                                      "FROM articles") == [(SOURCES, SOURCES)]
