"""Tests for aggregator.service.http.app (``make_app``): routing, /healthz and /metrics.

Every request goes to a real waitress ``FeedServer`` on 127.0.0.1.  What the
files themselves are answered with is tested in test_static.py, the health
summary in test_health.py, the server's lifecycle in test_http_server.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from served_site import BuiltSite, build_site, raw_get

from aggregator.publish.paths import OPML_FILENAME, category_paths
from aggregator.records import (
    ParserKind,
    PollOutcome,
    PollResult,
    Source,
    SourceStatus,
    StoreCounts,
)
from aggregator.service.health import health_report
from aggregator.service.http import FeedServer, make_app
from aggregator.service.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from aggregator.service.metrics import Metrics

NOW = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
SECRET = b"TOP-SECRET-NOT-FOR-THE-WEB"


@pytest.fixture
def site(tmp_path: Path) -> BuiltSite:
    built = build_site(tmp_path, "http://127.0.0.1/")
    (tmp_path / "secret.txt").write_bytes(SECRET)  # beside output_dir, never served
    return built


@pytest.fixture
def server(site: BuiltSite) -> Iterator[FeedServer]:
    with FeedServer(make_app(site.output_dir, "http://127.0.0.1/")) as running:
        yield running


# --------------------------------------------------------------------------- routing


def test_method_not_allowed(server: FeedServer) -> None:
    for path in (OPML_FILENAME, "healthz", "nope"):
        for method in ("POST", "PUT", "DELETE", "OPTIONS"):
            response = requests.request(method, server.url + path, timeout=10)
            assert response.status_code == 405, (method, path)
            assert response.headers["Allow"] == "GET, HEAD"
            assert response.headers["Cache-Control"] == "no-store"


def test_not_found_is_plain_text_and_uncached(server: FeedServer) -> None:
    missing = requests.get(server.url + "categories/nope/rss.xml", timeout=10)
    assert missing.status_code == 404
    assert missing.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert missing.headers["Cache-Control"] == "no-store"
    assert missing.content == b"not found\n"
    head = requests.head(server.url + "categories/nope/rss.xml", timeout=10)
    assert head.status_code == 404 and head.content == b""


def test_site_url_with_a_sub_path(site: BuiltSite) -> None:
    app = make_app(site.output_dir, "http://news.example.org/feeds/")
    with FeedServer(app) as running:
        base = running.url
        opml = requests.get(base + "feeds/" + OPML_FILENAME, timeout=10)
        assert opml.status_code == 200
        assert opml.content == (site.output_dir / OPML_FILENAME).read_bytes()
        cjk = requests.get(base + "feeds/" + quote(category_paths("新闻").rss), timeout=10)
        assert cjk.status_code == 200
        assert requests.get(base + OPML_FILENAME, timeout=10).status_code == 404
        assert requests.get(base + "other/" + OPML_FILENAME, timeout=10).status_code == 404
        assert requests.get(base + "feedsx/" + OPML_FILENAME, timeout=10).status_code == 404
        assert raw_get(running.port, "/feeds/../feeds/secret.txt")[0] == 404
        moved = requests.get(base + "feeds", allow_redirects=False, timeout=10)
        assert moved.status_code == 301
        assert moved.headers["Location"] == "/feeds/"
        with_query = requests.get(base + "feeds?x=1", allow_redirects=False, timeout=10)
        assert with_query.headers["Location"] == "/feeds/?x=1"
        index = requests.get(base + "feeds/", timeout=10)
        assert index.status_code == 200
        assert index.content == (site.output_dir / "index.html").read_bytes()
        assert requests.get(base + "healthz", timeout=10).status_code == 200
        assert requests.get(base + "feeds/healthz", timeout=10).status_code == 404


def test_site_url_without_trailing_slash_is_the_same_prefix(site: BuiltSite) -> None:
    with FeedServer(make_app(site.output_dir, "http://news.example.org/feeds")) as running:
        opml = requests.get(running.url + "feeds/" + OPML_FILENAME, timeout=10)
        assert opml.status_code == 200
        assert requests.get(running.url + OPML_FILENAME, timeout=10).status_code == 404


def test_cjk_site_path(site: BuiltSite) -> None:
    app = make_app(site.output_dir, "http://news.example.org/%E8%81%9A%E5%90%88/")
    with FeedServer(app) as running:
        response = requests.get(running.url + quote("聚合/" + OPML_FILENAME), timeout=10)
        assert response.status_code == 200
        moved = requests.get(running.url + quote("聚合"), allow_redirects=False, timeout=10)
        assert moved.status_code == 301
        assert moved.headers["Location"] == quote("/聚合/")


# --------------------------------------------------------------------------- /healthz


@pytest.mark.parametrize(
    ("status", "code"),
    [("ok", 200), ("degraded", 200), ("down", 503), ("starting", 503), (None, 503)],
)
def test_healthz_status_codes(site: BuiltSite, status: str | None, code: int) -> None:
    report: dict[str, object] = {"sources": []} if status is None else {"status": status}

    def health() -> dict[str, object]:
        return report

    # Even with a sub-path site, /healthz is at the server root.
    app = make_app(site.output_dir, "http://127.0.0.1/feeds/", health=health)
    with FeedServer(app) as running:
        response = requests.get(running.url + "healthz", timeout=10)
        assert response.status_code == code
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["Cache-Control"] == "no-store"
        assert response.json() == report
        head = requests.head(running.url + "healthz", timeout=10)
        assert head.status_code == code and head.content == b""


def test_healthz_renders_values_json_lacks(site: BuiltSite) -> None:
    east = timezone(timedelta(hours=8))

    def health() -> dict[str, object]:
        return {
            "status": "ok",
            "aware": datetime(2026, 11, 25, 16, 0, 30, 500, tzinfo=east),
            "naive": datetime(2026, 11, 25, 8, 0),
            "set": frozenset({"x"}),
            "path": Path("/srv/feeds"),
            "名称": "新闻",
        }

    with FeedServer(make_app(site.output_dir, "http://127.0.0.1/", health=health)) as running:
        response = requests.get(running.url + "healthz", timeout=10)
    assert response.json() == {
        "status": "ok",
        "aware": "2026-11-25T08:00:30Z",
        "naive": "2026-11-25T08:00:00Z",
        "set": ["x"],
        "path": "/srv/feeds",
        "名称": "新闻",
    }
    assert "新闻".encode() in response.content  # UTF-8 as is, not \\u escapes


def test_healthz_serves_a_health_report(site: BuiltSite) -> None:
    sources = [Source(id=name, name=name, url=f"https://{name}.example/rss",
                      categories=("新闻",)) for name in ("a", "b")]
    statuses = [SourceStatus(source_id="a", last_poll_at=NOW, last_success_at=NOW),
                SourceStatus(source_id="b", last_poll_at=NOW, last_result="error",
                             last_error="HTTP 500", error_count=3)]

    def health() -> dict[str, object]:
        return health_report(sources, statuses, NOW)

    with FeedServer(make_app(site.output_dir, "http://127.0.0.1/", health=health)) as running:
        response = requests.get(running.url + "healthz", timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert [s["id"] for s in body["sources"]] == ["a", "b"]
    assert body["sources"][1]["last_error"] == "HTTP 500"
    assert body["checked_at"] == "2026-11-25T08:00:00Z"


def test_healthz_without_callable_and_when_it_raises(site: BuiltSite) -> None:
    with FeedServer(make_app(site.output_dir, "http://127.0.0.1/")) as running:
        response = requests.get(running.url + "healthz", timeout=10)
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}

    def broken() -> dict[str, object]:
        raise RuntimeError("database is locked")

    with FeedServer(make_app(site.output_dir, "http://127.0.0.1/", health=broken)) as running:
        response = requests.get(running.url + "healthz", timeout=10)
        assert response.status_code == 503
        assert response.json()["status"] == "down"
        assert "database is locked" in response.json()["error"]


# --------------------------------------------------------------------------- /metrics


def test_metrics_endpoint(site: BuiltSite) -> None:
    metrics = Metrics()
    metrics.record_poll(
        PollResult(source_id="portal", result=PollOutcome.NEW, counts=StoreCounts(new=3),
                   fetch_seconds=0.2, parser=ParserKind.FAST),
    )
    metrics.record_poll(PollResult(source_id="tech", result=PollOutcome.ERROR, error="boom",
                                   consecutive_errors=1))
    app = make_app(site.output_dir, "http://127.0.0.1/feeds/", metrics=metrics)
    with FeedServer(app) as running:
        response = requests.get(running.url + "metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == METRICS_CONTENT_TYPE
    assert response.headers["Cache-Control"] == "no-store"
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert "aggregator_polls" in families
    polls = {
        (s.labels["source"], s.labels["result"]): s.value
        for s in families["aggregator_polls"].samples
        if s.name == "aggregator_polls_total"
    }
    assert polls == {("portal", "new"): 1.0, ("tech", "error"): 1.0}
    errors = families["aggregator_source_consecutive_errors"].samples
    assert {s.labels["source"]: s.value for s in errors} == {"portal": 0.0, "tech": 1.0}
    parsed = {s.labels["parser"]: s.value for s in families["aggregator_parsed_documents"].samples
              if s.name == "aggregator_parsed_documents_total"}
    assert parsed == {"fast": 1.0}  # the failed poll parsed nothing


def test_metrics_absent_is_404(server: FeedServer) -> None:
    assert requests.get(server.url + "metrics", timeout=10).status_code == 404
