"""The scheduler in-process against loopback portals: backoff, Retry-After, 410,
live config, debounced builds."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import feedparser
import pytest
from builders import rss_document
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from aggregator.config import Settings, load_config
from aggregator.publish.paths import category_paths
from aggregator.records import PollOutcome
from aggregator.service.metrics import Metrics
from aggregator.service.scheduler import Scheduler
from aggregator.store import Store

# The daemon's clock in tests that drive polls by hand: far ahead of the real clock, so
# the running scheduler never fires the jobs these tests inspect.
NOW = datetime(2100, 1, 1, 8, 0, tzinfo=UTC)
# One item per feed, linked by its title (so each title is its own article).
rss = partial(rss_document, link="http://p.test/{title}")


class NoJitter(random.Random):
    """Draws 0: start and poll jitter off, so due times are exact."""

    def random(self) -> float:
        return 0.0


def config_text(server: HTTPServer, sources: dict[str, str], extra: str = "") -> str:
    lines = ["database_url: sqlite:///data/db.sqlite", "output_dir: public",
             "allow_private_networks: true", "start_jitter: 0", "build_debounce: 0.2s",
             "max_backoff: 6h", extra, "sources:"]
    for source_id, path in sources.items():
        lines += [f"  - id: {source_id}", f"    name: {source_id}",
                  f'    url: "{server.url_for(path)}"', f"    categories: [{source_id}-cat, 全部]",
                  "    interval: 1h"]
    return "\n".join(lines) + "\n"


@pytest.fixture()
def make_daemon(tmp_path: Path) -> Iterator[object]:
    daemons: list[tuple[Scheduler, Store]] = []

    def make(text: str, **kwargs: object) -> tuple[Scheduler, Settings, Store]:
        path = tmp_path / "aggregator.yaml"
        path.write_text(text, encoding="utf-8")
        settings = load_config(path)
        store = Store.open(settings.database_url)
        kwargs.setdefault("rng", NoJitter())
        daemon = Scheduler(settings, store, Metrics(), **kwargs)  # type: ignore[arg-type]
        daemons.append((daemon, store))
        return daemon, settings, store

    yield make
    for daemon, store in daemons:
        daemon.stop(timeout=10)
        store.close()


def test_backoff_grows_with_errors_and_resets_on_success(
    httpserver: HTTPServer, make_daemon
) -> None:  # type: ignore[no-untyped-def]
    state = {"fail": True}

    def handler(request: Request) -> Response:
        if state["fail"]:
            return Response("down", status=500)
        return Response(rss("恢复"), content_type="text/xml")

    httpserver.expect_request("/feed").respond_with_handler(handler)
    daemon, _, store = make_daemon(config_text(httpserver, {"flaky": "/feed"}), now=lambda: NOW)
    daemon.start()
    for errors, hours in ((1, 2), (2, 4), (3, 6)):  # 1h × 2^n, capped at max_backoff 6h
        result = daemon.poll_now("flaky")
        assert result is not None and result.result == "error"
        status = store.source_status("flaky")
        assert status.error_count == errors
        assert status.next_poll_at == NOW + timedelta(hours=hours)
        assert daemon.next_poll_at("flaky") == NOW + timedelta(hours=hours)
    state["fail"] = False
    assert daemon.poll_now("flaky").result == "new"
    status = store.source_status("flaky")
    assert status.error_count == 0 and status.next_poll_at == NOW + timedelta(hours=1)


def test_retry_after_delays_only_that_source(httpserver: HTTPServer, make_daemon) -> None:  # type: ignore[no-untyped-def]
    httpserver.expect_request("/busy").respond_with_data(
        "slow down", status=503, headers={"Retry-After": "18000"})
    httpserver.expect_request("/fine").respond_with_data(rss("好"), content_type="text/xml")
    daemon, _, store = make_daemon(
        config_text(httpserver, {"busy": "/busy", "fine": "/fine"}), now=lambda: NOW)
    daemon.start()
    daemon.poll_now("busy")
    daemon.poll_now("fine")
    assert store.source_status("busy").next_poll_at == NOW + timedelta(hours=5)
    assert store.source_status("fine").next_poll_at == NOW + timedelta(hours=1)


def test_gone_source_is_disabled_and_no_longer_polled(httpserver: HTTPServer, make_daemon) -> None:  # type: ignore[no-untyped-def]
    httpserver.expect_request("/gone").respond_with_data("gone", status=410)
    daemon, _, store = make_daemon(config_text(httpserver, {"gone": "/gone"}), now=lambda: NOW)
    daemon.start()
    assert daemon.poll_now("gone").status == 410
    assert daemon.next_poll_at("gone") is None
    assert store.source_status("gone").disabled_reason
    httpserver.clear_log()
    assert daemon.poll_now("gone").result is PollOutcome.SKIPPED
    assert httpserver.log == []


def test_reload_adds_removes_and_survives_a_bad_edit(httpserver: HTTPServer, make_daemon,
                                                     tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    far = "start_jitter: 1h"  # keep first polls far away: this test is about the schedule
    daemon, _, _ = make_daemon(config_text(httpserver, {"a": "/a", "b": "/b"}, far),
                               rng=random.Random(7))
    daemon.start()
    assert daemon.next_poll_at("a") is not None and daemon.next_poll_at("b") is not None
    path = tmp_path / "aggregator.yaml"

    path.write_text(config_text(httpserver, {"a": "/a", "c": "/c"}, far), encoding="utf-8")
    assert daemon.reload() is True
    assert daemon.next_poll_at("b") is None
    assert daemon.next_poll_at("c") is not None

    path.write_text(config_text(httpserver, {"a": "/a", "c": "/c"}, far).replace(
        "interval: 1h", "interval: sometimes"), encoding="utf-8")
    assert daemon.reload() is False
    assert [s.id for s in daemon.settings.sources] == ["a", "c"]
    assert daemon.next_poll_at("a") is not None and daemon.next_poll_at("c") is not None


def test_polls_run_on_their_own_and_trigger_one_debounced_build(
    httpserver: HTTPServer, make_daemon, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    httpserver.expect_request("/a").respond_with_data(rss("甲"), content_type="text/xml")
    httpserver.expect_request("/b").respond_with_data(rss("乙"), content_type="text/xml")
    built = threading.Event()
    builds: list[int] = []

    def on_build() -> None:
        # what the build wrote, not what is stored now: a commit may land during a build
        written = feedparser.parse((settings.output_dir / category_paths("全部").rss).read_bytes())
        builds.append(len(written.entries))
        if len(written.entries) == 2:
            built.set()

    daemon, settings, store = make_daemon(
        config_text(httpserver, {"a": "/a", "b": "/b"}), on_build=on_build)
    daemon.start()
    assert built.wait(timeout=30), f"no build with both articles; builds saw {builds}"
    shared = feedparser.parse(
        (settings.output_dir / category_paths("全部").rss).read_bytes())
    assert sorted(e.title for e in shared.entries) == ["乙", "甲"]
    assert store.count_articles() == 2
    assert len(builds) <= 3  # the start build, then polls coalesced into few builds
    assert {r.path for r, _ in httpserver.log} == {"/a", "/b"}


def test_metrics_and_health_agree_on_a_gone_source(httpserver: HTTPServer, make_daemon) -> None:  # type: ignore[no-untyped-def]
    from prometheus_client.parser import text_string_to_metric_families

    from aggregator.service.health import health_report

    httpserver.expect_request("/gone").respond_with_data("gone", status=410)
    metrics = Metrics()
    daemon, settings, store = make_daemon(config_text(httpserver, {"gone": "/gone"}),
                                          now=lambda: NOW)
    daemon = Scheduler(settings, store, metrics, now=lambda: NOW, rng=NoJitter())
    daemon.start()
    try:
        assert daemon.poll_now("gone").result is PollOutcome.DISABLED
    finally:
        daemon.stop(timeout=10)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(metrics.exposition().decode())
               for s in family.samples}
    errors = samples[("aggregator_source_consecutive_errors", (("source", "gone"),))]
    health = health_report(settings.source_list(), store.statuses(), NOW)
    assert errors == 1
    assert health["sources_failing"] == 1 and health["status"] == "down"
    assert samples[("aggregator_polls_total", (("result", "disabled"), ("source", "gone")))] == 1


def test_a_poll_waiting_for_its_host_holds_no_worker(make_daemon, held_portal,  # type: ignore[no-untyped-def]
                                                     tmp_path: Path) -> None:
    slow, fast = held_portal("127.0.0.1"), held_portal("127.0.0.2")
    fast.release.set()
    lines = ["database_url: sqlite:///data/db.sqlite", "output_dir: public",
             "allow_private_networks: true", "start_jitter: 0", "workers: 2",
             "host_concurrency: 1", "sources:"]
    for source_id, url in (("slow1", slow.url("a")), ("slow2", slow.url("b")),
                           ("slow3", slow.url("c")), ("fast", fast.url("d"))):
        lines += [f"  - id: {source_id}", f"    name: {source_id}", f'    url: "{url}"',
                  "    categories: [c]", "    interval: 1h"]
    daemon, _, _ = make_daemon("\n".join(lines) + "\n")
    daemon.start()
    # Two pool threads; the slow host's first poll holds one, its other polls queue
    # without holding the second, which polls the fast host.
    assert slow.arrived.acquire(timeout=20)
    assert fast.arrived.acquire(timeout=20), "the fast host waited for a worker"
    slow.release.set()
    for _ in range(2):
        assert slow.arrived.acquire(timeout=20)  # the queued polls of the slow host ran too
    assert slow.peak == 1


def test_a_reloaded_user_agent_takes_effect_on_the_next_poll(httpserver: HTTPServer,
                                                              make_daemon,  # type: ignore[no-untyped-def]
                                                              tmp_path: Path) -> None:
    httpserver.expect_request("/feed").respond_with_data(rss("一"), content_type="text/xml")
    text = config_text(httpserver, {"portal": "/feed"}, 'user_agent: "first-agent/1"')
    daemon, _, _ = make_daemon(text, now=lambda: NOW)
    daemon.start()
    daemon.poll_now("portal")
    (tmp_path / "aggregator.yaml").write_text(
        text.replace("first-agent/1", "second-agent/2"), encoding="utf-8")
    assert daemon.reload() is True
    daemon.poll_now("portal")
    agents = [request.headers.get("User-Agent") for request, _ in httpserver.log]
    assert agents[0] == "first-agent/1" and agents[-1] == "second-agent/2"


def test_retention_removes_old_articles_and_they_stay_removed(httpserver: HTTPServer,
                                                               make_daemon) -> None:  # type: ignore[no-untyped-def]
    old = ('<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>P</title>'
           + "".join(f"<item><title>旧闻{n}</title><link>http://p.test/{n}</link>"
                     f"<pubDate>{20 + n} May {2095 if n < 2 else 2099} 07:25:00 GMT</pubDate>"
                     "</item>" for n in range(3))
           + "</channel></rss>")
    state = {"body": old}
    httpserver.expect_request("/feed").respond_with_handler(
        lambda _request: Response(state["body"], content_type="text/xml"))
    daemon, _, store = make_daemon(
        config_text(httpserver, {"portal": "/feed"}, "retention_days: 365"), now=lambda: NOW)
    daemon.start()
    assert daemon.poll_now("portal").counts.new == 3
    # NOW is 2100-01-01: the articles of May 2095 are older than a year, May 2099's is not
    assert daemon.prune_now().articles == {"portal": 2}
    state["body"] = old.replace("<title>P</title>", "<title>P2</title>")  # new bytes: parsed
    again = daemon.poll_now("portal")
    assert (again.counts.new, again.counts.retired, again.counts.unchanged) == (0, 2, 1)
    assert [a.title for a in store.iter_articles()] == ["旧闻2"]
