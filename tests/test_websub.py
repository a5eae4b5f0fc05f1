"""WebSub publish pings (aggregator.service.websub): which feeds a build pings, retries,
giving up, a hanging hub, and the scheduler's and a worker's builds pinging a loopback hub.

The hub is ``HubStub``, a threaded http.server on 127.0.0.1 that records each ping's form
and answers the statuses a test scripts; synchronization is by its condition and the
pinger's ``wait_idle``, never by sleeping.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import requests
from builders import (
    T0,
    LogWatcher,
    LoopbackPortal,
    make_article,
    make_source,
    rss_document,
    write_config_file,
)
from prometheus_client.parser import text_string_to_metric_families
from pytest_httpserver import HTTPServer
from werkzeug import Response

from aggregator import publish
from aggregator.config import load_config
from aggregator.errors import FetchError
from aggregator.publish.feeds import BuildReport
from aggregator.publish.paths import category_paths, is_category_feed, public_url
from aggregator.records import Article, FeedOptions, FetchOptions, SourceState, SourceUpdate
from aggregator.service.metrics import Metrics
from aggregator.service.scheduler import Scheduler
from aggregator.service.websub import HubPinger, changed_feed_urls, retryable
from aggregator.service.worker import ClaimWorker
from aggregator.store import Store

OPTIONS = FetchOptions(allow_private_networks=True, connect_timeout=2.0, read_timeout=5.0,
                       deadline=10.0)
SOURCES = [make_source("https://a.test/feed", "a", categories=("科技",)),
           make_source("https://b.test/feed", "b", categories=("财经",))]
TOPIC = "http://feeds.test/categories/%E7%A7%91%E6%8A%80/rss.xml"


class HubStub(ThreadingHTTPServer):
    """A loopback hub: records every POST's form; answers ``statuses`` in turn (then 202);
    while ``release`` is clear (``held=True``) answers wait for it."""

    daemon_threads = True

    def __init__(self, *statuses: int, held: bool = False) -> None:
        self.statuses = list(statuses)
        self.pings: list[dict[str, str]] = []
        self.changed = threading.Condition()
        self.release = threading.Event()
        if not held:
            self.release.set()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
                with hub.changed:
                    hub.pings.append(form)
                    status = hub.statuses.pop(0) if hub.statuses else 202
                    hub.changed.notify_all()
                hub.release.wait(30)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hub"

    def topics(self) -> list[str]:
        with self.changed:
            return [ping.get("hub.url", "") for ping in self.pings]

    def wait_for(self, enough: Callable[[list[str]], bool], timeout: float = 30) -> list[str]:
        """The pinged topics once ``enough`` of them arrived (fails the test otherwise)."""
        with self.changed:
            ok = self.changed.wait_for(
                lambda: enough([p.get("hub.url", "") for p in self.pings]), timeout=timeout)
            topics = [p.get("hub.url", "") for p in self.pings]
        assert ok, f"the hub saw only {topics}"
        return topics

    def close(self) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()


HubFactory = Callable[..., HubStub]


@pytest.fixture()
def hubs() -> Iterator[Callable[..., HubStub]]:
    started: list[HubStub] = []

    def start(*statuses: int, held: bool = False) -> HubStub:
        started.append(HubStub(*statuses, held=held))
        return started[-1]

    yield start
    for hub in started:
        hub.close()


@pytest.fixture()
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture()
def pinger(metrics: Metrics) -> Iterator[HubPinger]:
    made = HubPinger(metrics, backoff=0.01, max_backoff=0.05)
    yield made
    made.stop(timeout=10)


def ping_counts(metrics: Metrics) -> dict[str, float]:
    """``aggregator_websub_pings_total`` by result, read back from the exposition."""
    return {s.labels["result"]: s.value
            for family in text_string_to_metric_families(metrics.exposition().decode())
            for s in family.samples if s.name == "aggregator_websub_pings_total"}


def commit(store: Store, *articles: Article) -> None:
    for article in articles:
        state = SourceState(source_id=article.source_id, url=f"https://{article.source_id}.test/")
        store.commit_poll(SourceUpdate(state=state, result=None), [article])


def feed_options(tmp_path: Path, hub_url: str | None) -> FeedOptions:
    return FeedOptions(output_dir=str(tmp_path / "out"), site_url="https://feeds.test/",
                       hub_url=hub_url)


def published_feeds(options: FeedOptions) -> set[str]:
    """The public URLs of every category feed in the output tree."""
    root = Path(options.output_dir)
    return {public_url(options, path.relative_to(root).as_posix())
            for path in root.rglob("*")
            if path.is_file() and is_category_feed(path.relative_to(root).as_posix())}


# ------------------------------------------------------------------------------ pure rules


@pytest.mark.parametrize(("relative", "expected"), [
    ("categories/科技/rss.xml", True), ("categories/科技/atom.xml", True),
    ("categories/科技/feed.json", True), ("categories/科技/archive/1.xml", False),
    ("categories/科技/index.html", False), ("feeds.opml", False), ("index.html", False),
    ("rss.xml", False), ("elsewhere/科技/rss.xml", False),
])
def test_is_category_feed_names_only_the_category_feeds(relative: str, expected: bool) -> None:
    assert is_category_feed(relative) is expected


@pytest.mark.parametrize(("status", "expected"), [
    (None, True), (500, True), (503, True), (429, True), (404, False), (410, False),
    (400, False), (307, False),
])
def test_which_failures_are_retried(status: int | None, expected: bool) -> None:
    assert retryable(FetchError("x", source_id="websub", status=status)) is expected


# ------------------------------------------------------------------------------ one pinger


def test_a_failed_ping_is_retried_and_delivered(hubs: HubFactory, pinger: HubPinger,
                                                metrics: Metrics) -> None:
    hub = hubs(500)
    assert pinger.publish(hub.url, [TOPIC], OPTIONS) == 1
    assert pinger.wait_idle(30)
    assert hub.topics() == [TOPIC, TOPIC]
    assert all(ping["hub.mode"] == "publish" for ping in hub.pings)
    assert ping_counts(metrics) == {"retried": 1, "sent": 1}


def test_a_404_from_the_hub_is_not_retried(hubs: HubFactory, pinger: HubPinger, metrics: Metrics,
                                           caplog: pytest.LogCaptureFixture) -> None:
    hub = hubs(404)
    pinger.publish(hub.url, [TOPIC], OPTIONS)
    assert pinger.wait_idle(30)
    assert hub.topics() == [TOPIC]
    assert ping_counts(metrics) == {"failed": 1}
    assert f"websub ping of {TOPIC} to {hub.url} failed after 1 try: HTTP 404" in caplog.text


def test_retries_stop_at_the_bound(hubs: HubFactory, metrics: Metrics) -> None:
    hub = hubs(503, 503, 503, 503)
    pinger = HubPinger(metrics, attempts=3, backoff=0.01, max_backoff=0.05)
    try:
        pinger.publish(hub.url, [TOPIC], OPTIONS)
        assert pinger.wait_idle(30)
    finally:
        pinger.stop()
    assert hub.topics() == [TOPIC] * 3
    assert ping_counts(metrics) == {"retried": 2, "failed": 1}


def test_stop_does_not_wait_out_a_retry_backoff(hubs: HubFactory, metrics: Metrics,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    hub = hubs(500)
    pinger = HubPinger(metrics, backoff=60.0, max_backoff=60.0)
    pinger.publish(hub.url, [TOPIC], OPTIONS)
    hub.wait_for(lambda topics: topics == [TOPIC])
    started = time.monotonic()
    assert pinger.stop(timeout=10)
    assert time.monotonic() - started < 5  # not the 60 s backoff
    assert hub.topics() == [TOPIC]
    assert ping_counts(metrics) == {"retried": 1, "failed": 1}
    assert f"websub ping of {TOPIC} to {hub.url} not retried: stopping" in caplog.text


def test_a_hanging_hub_never_holds_the_caller_and_stop_is_prompt(
        hubs: HubFactory, metrics: Metrics) -> None:
    hub = hubs(held=True)
    pinger = HubPinger(metrics, queue_size=2, backoff=0.01)
    other = TOPIC.replace("rss.xml", "atom.xml")
    third = TOPIC.replace("rss.xml", "feed.json")
    assert pinger.publish(hub.url, [TOPIC], OPTIONS) == 1
    hub.wait_for(lambda topics: topics == [TOPIC])  # the hub holds the first ping

    returned = threading.Event()
    queued: list[int] = []

    def build_path() -> None:  # what a build does after writing: queue, return
        report = BuildReport(written=("categories/科技/atom.xml", "categories/科技/feed.json",
                                      "categories/科技/atom.xml", "feeds.opml"),
                             unchanged=(), skipped_articles=0)
        queued.append(pinger.after_build(report, FeedOptions(
            output_dir="out", site_url="http://feeds.test/", hub_url=hub.url), OPTIONS))
        queued.append(pinger.publish(hub.url, [other, "http://feeds.test/x"], OPTIONS))
        returned.set()

    threading.Thread(target=build_path, daemon=True).start()
    assert returned.wait(5), "queueing a ping waited for the hub"
    assert not hub.release.is_set() and hub.topics() == [TOPIC]  # still hanging
    # the duplicate atom.xml was coalesced; the queue (2) was full for the last one
    assert queued == [2, 0]
    assert ping_counts(metrics) == {"dropped": 1}

    started = time.monotonic()
    ended = pinger.stop(timeout=0.5)
    assert time.monotonic() - started < 2
    assert not ended  # its one POST is still in progress, bounded by its own deadline
    assert pinger.publish(hub.url, [third], OPTIONS) == 0  # stopped: nothing more queued
    hub.release.set()
    assert pinger.stop(timeout=10)
    assert hub.topics() == [TOPIC]  # the queued pings were dropped, nothing retried
    assert ping_counts(metrics) == {"dropped": 2, "sent": 1}


# ------------------------------------------------------------------------------ real builds


def test_a_build_pings_each_changed_feed_once_and_an_unchanged_build_none(
        hubs: HubFactory, pinger: HubPinger, metrics: Metrics, tmp_path: Path,
        store: Store) -> None:
    hub = hubs()
    options = feed_options(tmp_path, hub.url)
    commit(store, make_article("1", source_id="a", categories=("科技",)),
           make_article("2", source_id="b", categories=("财经",)))

    report = publish.build(store, options, SOURCES)
    expected = changed_feed_urls(report.written, options)
    for category in ("科技", "财经"):
        paths = category_paths(category)
        assert {public_url(options, paths.rss), public_url(options, paths.atom)} <= set(expected)
    assert set(expected) == published_feeds(options)
    assert pinger.after_build(report, options, OPTIONS) == len(expected)
    assert pinger.wait_idle(30)
    assert sorted(hub.topics()) == sorted(expected)
    assert {ping["hub.mode"] for ping in hub.pings} == {"publish"}

    again = publish.build(store, options, SOURCES)
    assert changed_feed_urls(again.written, options) == []
    assert pinger.after_build(again, options, OPTIONS) == 0
    assert pinger.wait_idle(30)
    assert len(hub.topics()) == len(expected)

    commit(store, make_article("3", source_id="a", categories=("科技",),
                               date=T0 + timedelta(hours=1)))
    third = publish.build(store, options, SOURCES)
    pinger.after_build(third, options, OPTIONS)
    assert pinger.wait_idle(30)
    later = hub.topics()[len(expected):]
    assert sorted(later) == sorted(changed_feed_urls(third.written, options))
    assert later and all("%E7%A7%91%E6%8A%80" in topic for topic in later)  # 科技 only
    assert ping_counts(metrics) == {"sent": len(expected) + len(later)}


def test_no_hub_url_no_ping(pinger: HubPinger, metrics: Metrics, tmp_path: Path,
                            store: Store) -> None:
    options = feed_options(tmp_path, None)
    commit(store, make_article("1", source_id="a", categories=("科技",)))
    report = publish.build(store, options, SOURCES)
    assert changed_feed_urls(report.written, options)  # feeds changed...
    assert pinger.after_build(report, options, OPTIONS) == 0  # ...and nobody is told
    assert pinger.wait_idle(5)
    assert ping_counts(metrics) == {}


# ------------------------------------------------------------------------------ the service


def test_the_scheduler_pings_after_its_builds_and_follows_a_reloaded_hub_url(
        hubs: HubFactory, httpserver: HTTPServer, tmp_path: Path) -> None:
    first, second = hubs(), hubs()
    titles = ["甲"]
    httpserver.expect_request("/a").respond_with_handler(lambda _request: Response(
        rss_document(*titles, link="http://p.test/{title}"), content_type="text/xml"))

    def config(hub: HubStub) -> str:
        return "\n".join([
            "database_url: sqlite:///data/db.sqlite", "output_dir: public",
            "allow_private_networks: true", "start_jitter: 0", "build_debounce: 0.1s",
            f"hub_url: {hub.url}", "sources:", "  - id: a", "    name: a",
            f'    url: "{httpserver.url_for("/a")}"', "    categories: [a-cat, 全部]",
            "    interval: 1h"]) + "\n"

    path = tmp_path / "aggregator.yaml"
    path.write_text(config(first), encoding="utf-8")
    settings = load_config(path)
    metrics = Metrics()
    shared = tmp_path / "public" / category_paths("全部").rss
    polled = threading.Event()  # a build has published the first poll's article

    def on_build() -> None:
        if shared.exists() and "甲" in shared.read_text(encoding="utf-8"):
            polled.set()

    expected = {public_url(settings.feed_options(), getattr(category_paths(c), kind))
                for c in ("a-cat", "全部") for kind in ("rss", "atom", "json")}
    with Store.open(settings.database_url) as store:
        daemon = Scheduler(settings, store, metrics, on_build=on_build)
        daemon.start()
        try:
            assert polled.wait(30)
            topics = first.wait_for(lambda seen: expected <= set(seen))
            assert set(topics) == published_feeds(settings.feed_options())

            path.write_text(config(second), encoding="utf-8")
            assert daemon.reload()
            titles.append("乙")
            result = daemon.poll_now("a")
            assert result is not None and result.counts.new == 1
            topics = second.wait_for(lambda seen: expected <= set(seen))
            assert set(topics) == published_feeds(daemon.settings.feed_options())
        finally:
            daemon.stop(timeout=10)
    assert ping_counts(metrics)["sent"] >= 2 * len(expected)


def test_a_workers_build_pings_the_feeds_it_wrote(hubs: HubFactory, tmp_path: Path,
                                                  store: Store) -> None:
    hub = hubs()
    portal = LoopbackPortal()
    settings = load_config(write_config_file(
        tmp_path / "a.yaml",
        [f"database_url: sqlite:///{tmp_path / 'db.sqlite'}",
         f"output_dir: {tmp_path / 'public'}", "allow_private_networks: true",
         "parse_workers: 0", f"hub_url: {hub.url}"],
        {"s1": portal.url("s1.xml")}))
    metrics = Metrics()
    worker = ClaimWorker(settings, store, metrics, holder="w1")
    try:
        assert worker.reload()
        assert worker.claim_once() == 1 and worker.wait_idle(30)
        worker.build_now()
        expected = published_feeds(settings.feed_options())
        paths = category_paths("新闻")
        assert {public_url(settings.feed_options(), p) for p in (paths.rss, paths.atom)} \
            <= expected
        hub.wait_for(lambda seen: set(seen) == expected)
    finally:
        worker.stop(timeout=10)
        portal.close()
    assert sorted(hub.topics()) == sorted(expected)  # once each
    assert ping_counts(metrics) == {"sent": len(expected)}


# ------------------------------------------------------------------------------ the daemon


def run_daemon(tmp_path: Path, hub: HubStub,
               portal: LoopbackPortal) -> tuple[subprocess.Popen[str], LogWatcher]:
    """``aggregator run --port 0`` with one source (category 新闻) and ``hub_url``."""
    config = write_config_file(
        tmp_path / "aggregator.yaml",
        ["database_url: sqlite:///data/aggregator.db", "output_dir: public",
         "site_url: http://localhost:8080/", "allow_private_networks: true",
         "start_jitter: 0", "build_debounce: 0.2s", "shutdown_timeout: 10s",
         f"hub_url: {hub.url}"],
        {"s1": portal.url("s1.xml")})
    process = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "--config", str(config), "run", "--port", "0"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return process, LogWatcher(process)


@pytest.fixture()
def portal() -> Iterator[LoopbackPortal]:
    served = LoopbackPortal()
    yield served
    served.close()


def test_the_daemon_retries_a_failed_ping_and_counts_it_in_metrics(
        hubs: HubFactory, portal: LoopbackPortal, tmp_path: Path,
        processes: list[subprocess.Popen[str]]) -> None:
    hub = hubs(500)
    process, log = run_daemon(tmp_path, hub, portal)
    processes.append(process)
    url = log.wait_for(r"listening on (http://127\.0\.0\.1:\d+)").group(1)
    failed = log.wait_for(r"websub ping of (\S+) to \S+ failed \(try 1 of \d+\), again in "
                          r"[\d.]+s: HTTP 500")
    log.wait_for(rf"websub ping of {re.escape(failed.group(1))} to \S+: HTTP 202")
    assert failed.group(1).startswith("http://localhost:8080/categories/")

    response = requests.get(f"{url}/metrics", timeout=10)
    counts = {s.labels["result"]: s.value
              for family in text_string_to_metric_families(response.text)
              for s in family.samples if s.name == "aggregator_websub_pings_total"}
    assert counts["retried"] == 1 and counts["sent"] >= 1
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


def test_the_daemon_stops_promptly_while_the_hub_hangs(
        hubs: HubFactory, portal: LoopbackPortal, tmp_path: Path,
        processes: list[subprocess.Popen[str]]) -> None:
    hub = hubs(held=True)
    process, log = run_daemon(tmp_path, hub, portal)
    processes.append(process)
    log.wait_for(r"listening on")
    hub.wait_for(lambda topics: len(topics) >= 1)  # a ping is in progress, and hangs
    log.wait_for(r"source=s1 result=new")  # no poll in flight: only the ping could hold the stop
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert time.monotonic() - started < 10  # the ping's own deadline is 15 s
    assert not hub.release.is_set() and len(hub.topics()) == 1  # nothing retried


def test_a_cron_build_announces_its_changed_feeds_before_it_exits(
        hubs: HubFactory, portal: LoopbackPortal, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from aggregator.cli import cli

    hub = hubs(500)  # the first ping fails: the command waits for its retry
    config = write_config_file(
        tmp_path / "aggregator.yaml",
        ["database_url: sqlite:///data/aggregator.db", "output_dir: public",
         "site_url: http://feeds.test/", "allow_private_networks: true", f"hub_url: {hub.url}"],
        {"s1": portal.url("s1.xml")})
    runner = CliRunner()
    assert runner.invoke(cli, ["--config", str(config), "poll"]).exit_code == 0
    built = runner.invoke(cli, ["--config", str(config), "build"])
    assert built.exit_code == 0, built.output
    options = load_config(config).feed_options()
    feeds = {public_url(options, category_paths("新闻").rss),
             public_url(options, category_paths("新闻").atom)}
    assert feeds <= set(hub.topics())  # delivered before the command returned
    assert f"changed feed(s) announced to {hub.url}" in built.output
    pings = len(hub.topics())
    assert pings == len(set(hub.topics())) + 1  # the first one failed and was sent again
    again = runner.invoke(cli, ["--config", str(config), "build"])
    assert "announced" not in again.output and len(hub.topics()) == pings
