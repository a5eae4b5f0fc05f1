"""``aggregator run`` as a real process against loopback portals."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from builders import LogWatcher
from prometheus_client.parser import text_string_to_metric_families

ENTRIES_PER_FEED = 40


def feed(source_id: str, count: int = 3) -> bytes:
    items = "".join(
        f"<item><title>{source_id} 第{i}条</title><link>http://portal.test/{source_id}/{i}</link>"
        f"<guid>{source_id}-{i}</guid><description>&lt;p&gt;正文 {i}&lt;/p&gt;</description></item>"
        for i in range(count))
    return (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
            f"<title>{source_id}</title>{items}</channel></rss>").encode()


@pytest.fixture()
def portal() -> Iterator[str]:
    """A threaded loopback portal: /<id>.xml is a feed of ENTRIES_PER_FEED entries;
    /slow-<id>.xml answers after a short delay, so polls are in flight for a while."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            name = self.path.strip("/").removesuffix(".xml")
            if name.startswith("slow-"):
                threading.Event().wait(0.3)  # server-side latency, not test synchronization
            body = feed(name, ENTRIES_PER_FEED)
            self.send_response(200)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def write_config(path: Path, portal: str, sources: list[str], *, interval: str = "1h",
                 broken: bool = False) -> None:
    lines = ["database_url: sqlite:///data/aggregator.db", "output_dir: public",
             "site_url: http://localhost:8080/", "allow_private_networks: true",
             "start_jitter: 0", "build_debounce: 0.2s", "shutdown_timeout: 10s", "sources:"]
    for source_id in sources:
        lines += [f"  - id: {source_id}", f"    name: {source_id}",
                  f'    url: "{portal}{source_id}.xml"', "    categories: [新闻]",
                  f"    interval: {'whenever' if broken else interval}"]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)  # as editors do: the watcher must notice a replaced file


def start_daemon(config: Path, *options: str) -> tuple[subprocess.Popen[str], LogWatcher]:
    """``aggregator [options] --config CONFIG run --port 0``, its stderr watched."""
    process = subprocess.Popen(
        [sys.executable, "-m", "aggregator", *options, "--config", str(config), "run",
         "--port", "0"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return process, LogWatcher(process)


def test_daemon_polls_follows_config_edits_serves_and_stops_cleanly(
    tmp_path: Path, portal: str, processes: list[subprocess.Popen[str]]
) -> None:
    config = tmp_path / "aggregator.yaml"
    write_config(config, portal, ["alpha"], interval="2s")
    process, log = start_daemon(config)
    processes.append(process)

    url = log.wait_for(r"listening on (http://127\.0\.0\.1:\d+)").group(1)
    log.wait_for(r"source=alpha result=new new=40")
    # polled again on its own 2 s interval: the body is unchanged, nothing re-parsed
    log.wait_for(r"source=alpha result=unchanged")

    health = requests.get(f"{url}/healthz", timeout=10)
    assert health.status_code == 200
    report = health.json()
    assert report["status"] == "ok"
    assert json.dumps(report).count("alpha") >= 1

    mark = len(log.lines)
    write_config(config, portal, ["alpha", "beta"], interval="2s")
    log.wait_for(r"source=beta result=new new=40", after=mark)

    mark = len(log.lines)
    write_config(config, portal, ["alpha", "beta", "gamma"], broken=True)
    log.wait_for(r"config reload failed, keeping the last good config: .*source 'alpha'.*"
                 r"field 'interval'", after=mark)
    log.wait_for(r"source=beta result=unchanged", after=mark)  # still running the old config

    mark = len(log.lines)
    write_config(config, portal, ["alpha", "gamma"], interval="2s")
    log.wait_for(r"config reloaded: 2 source\(s\)", after=mark)
    log.wait_for(r"source=gamma result=new", after=mark)
    log.wait_for(r"source=beta removed from the schedule", after=mark)

    mark = len(log.lines)
    process.send_signal(signal.SIGHUP)
    log.wait_for(r"config reloaded", after=mark)

    feeds = requests.get(f"{url}/feeds.opml", timeout=10)
    assert feeds.status_code == 200 and "新闻" in feeds.text

    metrics = requests.get(f"{url}/metrics", timeout=10)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(metrics.text)
               for s in family.samples}
    assert samples[("aggregator_polls_total", (("result", "new"), ("source", "alpha")))] == 1
    assert samples[("aggregator_polls_total", (("result", "unchanged"), ("source", "alpha")))] >= 1
    assert samples[("aggregator_articles", ())] >= 80
    assert samples[("aggregator_source_consecutive_errors", (("source", "alpha"),))] == 0
    assert samples[("aggregator_source_last_fetch_seconds", (("source", "alpha"),))] >= 0
    assert samples[("aggregator_fetch_seconds_count", ())] >= 4  # every fetch, no source label
    assert not any(name.startswith("aggregator_fetch_seconds") and "source" in dict(labels)
                   for name, labels in samples)
    assert any(name == "aggregator_build_seconds_count" and value >= 1
               for (name, _), value in samples.items())

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    log.wait_for(r"daemon stopped")
    with sqlite3.connect(tmp_path / "data" / "aggregator.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        counts = dict(db.execute("SELECT source_id, count(*) FROM articles GROUP BY source_id"))
    assert counts == {"alpha": 40, "beta": 40, "gamma": 40}


def metric_samples(url: str) -> dict[str, float]:
    """The unlabelled samples of ``/metrics``, by name."""
    response = requests.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    return {s.name: s.value for family in text_string_to_metric_families(response.text)
            for s in family.samples if not s.labels}


def test_a_failed_reload_shows_in_healthz_and_metrics_until_a_good_one(
    tmp_path: Path, portal: str, processes: list[subprocess.Popen[str]]
) -> None:
    config = tmp_path / "aggregator.yaml"
    write_config(config, portal, ["alpha"])
    process, log = start_daemon(config, "-v")
    processes.append(process)
    url = log.wait_for(r"listening on (http://127\.0\.0\.1:\d+)").group(1)
    log.wait_for(r"source=alpha result=new")

    health = requests.get(f"{url}/healthz", timeout=10)
    assert health.status_code == 200
    report = health.json()
    assert report["status"] == "ok"
    assert report["config"]["path"] == str(config.resolve())
    assert report["config"]["last_error"] is None
    loaded_at = report["config"]["loaded_at"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", loaded_at)
    # the daemon's server writes the access log at -v too
    access = log.wait_for(r'"GET /healthz HTTP/1\.1" (\d+) (\d+) ')
    assert access.group(1, 2) == ("200", str(len(health.content)))
    before = metric_samples(url)
    assert before["aggregator_config_last_reload_success"] == 1
    assert before["aggregator_config_reload_failures_total"] == 0
    loaded_ts = before["aggregator_config_loaded_timestamp_seconds"]
    assert loaded_ts > 1e9

    mark = len(log.lines)
    write_config(config, portal, ["alpha", "beta"], broken=True)
    log.wait_for(r"config reload failed", after=mark)
    health = requests.get(f"{url}/healthz", timeout=10)
    assert health.status_code == 200  # the last good config still polls and serves
    report = health.json()
    assert report["status"] == "degraded"
    assert report["sources_failing"] == 0
    assert [s["id"] for s in report["sources"]] == ["alpha"]  # still the old config
    assert report["config"]["loaded_at"] == loaded_at
    error = report["config"]["last_error"]
    assert "source 'alpha'" in error["message"] and "field 'interval'" in error["message"]
    assert error["at"] >= loaded_at
    failed = metric_samples(url)
    assert failed["aggregator_config_last_reload_success"] == 0
    assert failed["aggregator_config_reload_failures_total"] == 1
    assert failed["aggregator_config_loaded_timestamp_seconds"] == loaded_ts

    mark = len(log.lines)
    write_config(config, portal, ["alpha", "beta"])
    log.wait_for(r"config reloaded: 2 source\(s\)", after=mark)
    report = requests.get(f"{url}/healthz", timeout=10).json()
    assert report["config"]["last_error"] is None
    assert report["config"]["loaded_at"] >= error["at"]
    assert [s["id"] for s in report["sources"]] == ["alpha", "beta"]
    assert report["status"] == "ok"
    recovered = metric_samples(url)
    assert recovered["aggregator_config_last_reload_success"] == 1
    assert recovered["aggregator_config_reload_failures_total"] == 1  # a counter stays
    assert recovered["aggregator_config_loaded_timestamp_seconds"] > loaded_ts

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


def test_kill_9_mid_poll_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, portal: str, processes: list[subprocess.Popen[str]]
) -> None:
    sources = [f"slow-{i:02d}" for i in range(24)]
    config = tmp_path / "aggregator.yaml"
    write_config(config, portal, sources)
    process, log = start_daemon(config)
    processes.append(process)
    log.wait_for(r"source=slow-\d+ result=new", timeout=60)  # some stored, others in flight
    process.kill()
    process.wait(timeout=10)

    database = tmp_path / "data" / "aggregator.db"
    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        per_source = dict(db.execute("SELECT source_id, count(*) FROM articles GROUP BY 1"))
        orphans = db.execute("SELECT count(*) FROM article_categories c LEFT JOIN articles a "
                             "ON a.id = c.article_id WHERE a.id IS NULL").fetchone()[0]
    assert per_source, "nothing was stored before the kill"
    # no half-stored source: each source has all of its articles or none
    assert set(per_source.values()) == {ENTRIES_PER_FEED}
    assert orphans == 0
    for path in (tmp_path / "public").rglob("*"):
        assert not path.name.endswith(".tmp") or path.name.startswith(".")

    poll = subprocess.run([sys.executable, "-m", "aggregator", "--config", str(config), "poll"],
                          capture_output=True, text=True, timeout=120)
    assert poll.returncode == 0, poll.stderr
    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        total, distinct = db.execute(
            "SELECT count(*), count(DISTINCT source_id || '|' || key) FROM articles").fetchone()
    assert total == distinct == len(sources) * ENTRIES_PER_FEED
