"""Several ``aggregator run --role worker`` processes share one PostgreSQL database, and a
``--role web`` serves what they build.  Real processes, real PostgreSQL, a loopback portal
that records every request."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from builders import LogWatcher, LoopbackPortal, database_rows

SOURCES = 30
INTERVAL = 4.0  # seconds


def write_config(tmp_path: Path, database: str, portal: LoopbackPortal) -> Path:
    """Leases last fetch_deadline + parse_timeout + 5 s margin = 10 s here."""
    port = portal.server_address[1]
    lines = [f"database_url: {database}", f"output_dir: {tmp_path / 'public'}",
             "allow_private_networks: true", "build_debounce: 0.5s", "parse_workers: 0",
             "workers: 4", "host_concurrency: 4", "fetch_deadline: 3s", "parse_timeout: 2s",
             "sources:"]
    for n in range(SOURCES):
        lines += [f"  - id: s{n:02d}", f"    name: 源{n}",
                  f'    url: "http://127.0.0.1:{port}/s{n:02d}.xml"',
                  f"    categories: [分组{n % 3}, 全部]", f"    interval: {INTERVAL}s"]
    path = tmp_path / "aggregator.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def start(config: Path, *args: str) -> tuple[subprocess.Popen[str], LogWatcher]:
    process = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "--config", str(config), "run", *args],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    return process, LogWatcher(process)


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
    # each source was fetched by one worker at a time, once per interval at most
    for name, times in portal.fetches().items():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) >= INTERVAL - 0.5, (name, gaps)
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
