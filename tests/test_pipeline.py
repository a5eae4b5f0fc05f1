"""poll_source against loopback portals that misbehave; real SQLite in tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from aggregator.ingest.decide import REDIRECT_CONFIRMATIONS
from aggregator.ingest.poll import PollOptions, body_fingerprint, poll_source, poll_sources
from aggregator.records import FetchOptions, NormalizeOptions, Source
from aggregator.store import Store

OPTIONS = PollOptions(fetch=FetchOptions(allow_private_networks=True, deadline=10),
                      normalize=NormalizeOptions())
NOW = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def rss(*titles: str) -> bytes:
    items = "".join(f"<item><title>{t}</title><link>http://p.test/{i}</link></item>"
                    for i, t in enumerate(titles))
    return f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>P</title>' \
           f"{items}</channel></rss>".encode()


def source(url: str, source_id: str = "portal") -> Source:
    return Source(id=source_id, name="Portal", url=url, categories=("新闻",))


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{tmp_path / 'db.sqlite'}") as opened:
        yield opened


def test_new_then_unchanged_body_skips_parsing(httpserver: HTTPServer, store: Store) -> None:
    httpserver.expect_request("/feed").respond_with_data(rss("一", "二"), content_type="text/xml")
    src = source(httpserver.url_for("/feed"))
    first = poll_source(src, store, OPTIONS, now=lambda: NOW)
    assert (first.result, first.counts.new, first.status) == ("new", 2, 200)
    assert first.fetch_seconds is not None and first.fetch_seconds >= 0
    second = poll_source(src, store, OPTIONS)
    assert second.result == "unchanged" and second.counts.new == 0
    assert store.count_articles() == 2


def test_fingerprint_changes_with_the_rules() -> None:
    src = source("http://p.test/")
    base = body_fingerprint(b"x", src, NormalizeOptions())
    assert body_fingerprint(b"x", src, NormalizeOptions(image_proxy="https://p/?")) != base
    recategorized = Source(id="portal", name="Portal", url=src.url, categories=("其他",))
    assert body_fingerprint(b"x", recategorized, NormalizeOptions()) != base
    assert body_fingerprint(b"y", src, NormalizeOptions()) != base


def test_gone_disables_the_source(httpserver: HTTPServer, store: Store) -> None:
    httpserver.expect_request("/gone").respond_with_data("bye", status=410)
    result = poll_source(source(httpserver.url_for("/gone")), store, OPTIONS)
    assert (result.result, result.status) == ("error", 410)
    status = store.source_status("portal")
    assert status is not None and (status.disabled_reason or "").upper() == "HTTP 410 GONE"


def test_retry_after_is_reported(httpserver: HTTPServer, store: Store) -> None:
    httpserver.expect_request("/busy").respond_with_data(
        "later", status=429, headers={"Retry-After": "120"})
    result = poll_source(source(httpserver.url_for("/busy")), store, OPTIONS)
    assert (result.result, result.status, result.retry_after) == ("error", 429, 120.0)
    status = store.source_status("portal")
    assert status is not None and status.error_count == 1 and status.disabled_reason is None


def test_permanent_redirect_is_followed_after_confirmations(
    httpserver: HTTPServer, store: Store
) -> None:
    httpserver.expect_request("/old").respond_with_data(
        "", status=301, headers={"Location": "/new"})
    httpserver.expect_request("/new").respond_with_data(rss("搬家了"), content_type="text/xml")
    src = source(httpserver.url_for("/old"))
    for poll in range(1, REDIRECT_CONFIRMATIONS + 1):
        result = poll_source(src, store, OPTIONS)
        assert result.result in ("new", "unchanged")
        status = store.source_status("portal")
        assert status is not None
        if poll < REDIRECT_CONFIRMATIONS:
            assert status.redirect_count == poll and status.moved_to is None
    assert status.moved_to == httpserver.url_for("/new")
    httpserver.clear_log()
    poll_source(src, store, OPTIONS)
    assert [r.path for r, _ in httpserver.log] == ["/new"]  # the old URL is no longer asked


def test_a_broken_redirect_streak_starts_counting_again(
    httpserver: HTTPServer, store: Store
) -> None:
    state = {"redirect": True}

    def handler(request):  # type: ignore[no-untyped-def]
        from werkzeug import Response

        if state["redirect"]:
            return Response("", status=308, headers={"Location": "/new"})
        return Response(rss("原地"), content_type="text/xml")

    httpserver.expect_request("/old").respond_with_handler(handler)
    httpserver.expect_request("/new").respond_with_data(rss("新址"), content_type="text/xml")
    src = source(httpserver.url_for("/old"))
    poll_source(src, store, OPTIONS)
    poll_source(src, store, OPTIONS)
    state["redirect"] = False
    poll_source(src, store, OPTIONS)
    status = store.source_status("portal")
    assert status is not None and status.redirect_count == 0 and status.moved_to is None


def test_one_failing_source_never_stops_or_rolls_back_the_others(
    httpserver: HTTPServer, store: Store
) -> None:
    httpserver.expect_request("/ok").respond_with_data(rss("好"), content_type="text/xml")
    httpserver.expect_request("/bad").respond_with_data(b"\x00garbage", content_type="text/xml")
    httpserver.expect_request("/dead").respond_with_data("", status=500)
    sources = [source(httpserver.url_for("/ok"), "ok"), source(httpserver.url_for("/bad"), "bad"),
               source(httpserver.url_for("/dead"), "dead")]
    results = poll_sources(sources, store, OPTIONS, workers=3)
    assert [r.result for r in results] == ["new", "error", "error"]
    assert store.count_articles("ok") == 1
    statuses = {s.source_id: s for s in store.statuses()}
    assert statuses["bad"].error_count == 1 and "not a feed" in (statuses["bad"].last_error or "")
    assert statuses["ok"].error_count == 0
