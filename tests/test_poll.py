"""The poll: orchestration with an injected fetch, and the real fetch against loopback
portals that misbehave; real SQLite in tmp_path."""

from __future__ import annotations

import html
import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from builders import (
    ARTICLE_PARAGRAPHS,
    PORTAL_BOILERPLATE,
    make_source,
    portal_article_page,
    rss_document,
    rss_items,
)
from pytest_httpserver import HTTPServer
from werkzeug import Response

from aggregator.errors import AggregatorError, FetchError
from aggregator.ingest.decide import REDIRECT_CONFIRMATIONS
from aggregator.ingest.fetch import HttpFetcher
from aggregator.ingest.poll import (
    HostSlots,
    PollOptions,
    body_fingerprint,
    poll_source,
    poll_sources,
)
from aggregator.ingest.sandbox import Budget, WorkerPool
from aggregator.ingest.writer import BatchWriter
from aggregator.records import (
    Article,
    FetchOptions,
    FetchResult,
    Lease,
    NormalizeOptions,
    PollOutcome,
    PollResult,
    Source,
    SourceState,
    SourceUpdate,
    StoreCounts,
    Validators,
)
from aggregator.store import Store

OPTIONS = PollOptions(fetch=FetchOptions(allow_private_networks=True, deadline=10),
                      normalize=NormalizeOptions())
NOW = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


# Sources in 新闻, as the poll tests' portal lists them.
source = partial(make_source, categories=("新闻",))


def poll(src: Source, store: Store, fetch: object, **kwargs: object) -> PollResult:
    """One poll as the CLI and the scheduler run it: read the state, then poll."""
    return poll_source(src, store.source_state(src.id), store, OPTIONS,
                       fetch=fetch, **kwargs)  # type: ignore[arg-type]


def test_new_then_unchanged_body_skips_parsing(
    httpserver: HTTPServer, store: Store, http: HttpFetcher
) -> None:
    httpserver.expect_request("/feed").respond_with_data(rss_document("一", "二"),
                                                       content_type="text/xml")
    src = source(httpserver.url_for("/feed"))
    first = poll(src, store, http, now=lambda: NOW)
    assert (first.result, first.counts.new, first.status) == ("new", 2, 200)
    assert first.fetch_seconds is not None and first.fetch_seconds >= 0
    second = poll(src, store, http)
    assert second.result == "unchanged" and second.counts.new == 0
    assert store.count_articles() == 2


def test_fingerprint_changes_with_the_rules() -> None:
    src = source("http://p.test/")
    base = body_fingerprint(b"x", src, NormalizeOptions())
    assert body_fingerprint(b"x", src, NormalizeOptions(image_proxy="https://p/?")) != base
    recategorized = source(src.url, categories=("其他",))
    assert body_fingerprint(b"x", recategorized, NormalizeOptions()) != base
    assert body_fingerprint(b"y", src, NormalizeOptions()) != base


def test_gone_disables_the_source(
    httpserver: HTTPServer, store: Store, http: HttpFetcher
) -> None:
    httpserver.expect_request("/gone").respond_with_data("bye", status=410)
    result = poll(source(httpserver.url_for("/gone")), store, http)
    assert (result.result, result.status) == ("disabled", 410)
    assert result.next_poll_at is None and result.consecutive_errors == 1
    status = store.source_status("portal")
    assert status is not None and (status.disabled_reason or "").upper() == "HTTP 410 GONE"


def test_retry_after_is_reported(
    httpserver: HTTPServer, store: Store, http: HttpFetcher
) -> None:
    httpserver.expect_request("/busy").respond_with_data(
        "later", status=429, headers={"Retry-After": "120"})
    result = poll(source(httpserver.url_for("/busy")), store, http)
    assert (result.result, result.status, result.retry_after) == ("error", 429, 120.0)
    status = store.source_status("portal")
    assert status is not None and status.error_count == 1 and status.disabled_reason is None


def test_permanent_redirect_is_followed_after_confirmations(
    httpserver: HTTPServer, store: Store, http: HttpFetcher
) -> None:
    httpserver.expect_request("/old").respond_with_data(
        "", status=301, headers={"Location": "/new"})
    httpserver.expect_request("/new").respond_with_data(rss_document("搬家了"),
                                                       content_type="text/xml")
    src = source(httpserver.url_for("/old"))
    for number in range(1, REDIRECT_CONFIRMATIONS + 1):
        result = poll(src, store, http)
        assert result.result in ("new", "unchanged")
        status = store.source_status("portal")
        assert status is not None
        if number < REDIRECT_CONFIRMATIONS:
            assert status.redirect_count == number and status.moved_to is None
    assert status.moved_to == httpserver.url_for("/new")
    httpserver.clear_log()
    poll(src, store, http)
    assert [r.path for r, _ in httpserver.log] == ["/new"]  # the old URL is no longer asked


def test_a_broken_redirect_streak_starts_counting_again(
    httpserver: HTTPServer, store: Store, http: HttpFetcher
) -> None:
    state = {"redirect": True}

    def handler(request):  # type: ignore[no-untyped-def]
        from werkzeug import Response

        if state["redirect"]:
            return Response("", status=308, headers={"Location": "/new"})
        return Response(rss_document("原地"), content_type="text/xml")

    httpserver.expect_request("/old").respond_with_handler(handler)
    httpserver.expect_request("/new").respond_with_data(rss_document("新址"),
                                                       content_type="text/xml")
    src = source(httpserver.url_for("/old"))
    poll(src, store, http)
    poll(src, store, http)
    state["redirect"] = False
    poll(src, store, http)
    status = store.source_status("portal")
    assert status is not None and status.redirect_count == 0 and status.moved_to is None


def test_one_failing_source_never_stops_or_rolls_back_the_others(
    httpserver: HTTPServer, store: Store, http: HttpFetcher
) -> None:
    httpserver.expect_request("/ok").respond_with_data(rss_document("好"), content_type="text/xml")
    httpserver.expect_request("/bad").respond_with_data(b"\x00garbage", content_type="text/xml")
    httpserver.expect_request("/dead").respond_with_data("", status=500)
    sources = [source(httpserver.url_for("/ok"), "ok"), source(httpserver.url_for("/bad"), "bad"),
               source(httpserver.url_for("/dead"), "dead")]
    results = poll_sources(sources, store, OPTIONS, fetch=http, workers=3)
    assert [r.result for r in results] == ["new", "error", "error"]
    assert store.count_articles("ok") == 1
    statuses = {s.source_id: s for s in store.statuses()}
    assert statuses["bad"].error_count == 1 and "not a feed" in (statuses["bad"].last_error or "")
    assert statuses["ok"].error_count == 0


# -- the orchestration, with an injected fetch (no HTTP) --------------------------------


class Portal:
    """An injected fetch: answers from a script and records what each call sent."""

    def __init__(self, *answers: FetchResult | FetchError) -> None:
        self.answers = list(answers)
        self.sent: list[Validators] = []

    def __call__(self, src: Source, _options: FetchOptions, validators: Validators) -> FetchResult:
        self.sent.append(validators)
        answer = self.answers.pop(0)
        if isinstance(answer, FetchError):
            raise answer
        return answer


class CountingStore:
    """A real store that counts what a poll asks of it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.reads = 0
        self.commits = 0  # polls committed, alone or in a batch
        self.batches: list[int] = []  # the size of each commit_polls batch

    def source_states(self, source_ids: object = None) -> dict[str, SourceState]:
        self.reads += 1
        return self.store.source_states(source_ids)  # type: ignore[arg-type]

    def commit_poll(self, update: SourceUpdate, articles: Sequence[Article] | None = None,
                    lease: Lease | None = None) -> StoreCounts:
        self.commits += 1
        return self.store.commit_poll(update, articles, lease)

    def commit_polls(self, items: Sequence[tuple[SourceUpdate, Sequence[Article] | None,
                                                 Lease | None]]
                     ) -> list[StoreCounts | AggregatorError]:
        self.commits += len(items)
        self.batches.append(len(items))
        return self.store.commit_polls(items)


def answer(status: int = 200, content: bytes = b"", **kwargs: object) -> FetchResult:
    return FetchResult(source_id="portal", url="http://p.test/feed", status=status,
                       content=content, headers={"content-type": "text/xml"},
                       **kwargs)  # type: ignore[arg-type]


SRC = source("http://p.test/feed", interval=timedelta(hours=1))


def test_validators_go_out_and_a_304_keeps_the_ones_it_left_out(store: Store) -> None:
    portal = Portal(answer(content=rss_document("一"), etag='"v1"',
                           last_modified="Mon, 01 Jan 2024"),
                    answer(304, last_modified="Tue, 02 Jan 2024"),
                    answer(content=rss_document("一")))
    assert poll(SRC, store, portal).result is PollOutcome.NEW
    assert poll(SRC, store, portal).result is PollOutcome.NOT_MODIFIED
    state = store.source_state("portal")
    assert state is not None and (state.etag, state.last_modified) == ('"v1"', "Tue, 02 Jan 2024")
    third = poll(SRC, store, portal)
    assert third.result is PollOutcome.UNCHANGED and third.counts == StoreCounts()  # not parsed
    assert portal.sent == [Validators(), Validators('"v1"', "Mon, 01 Jan 2024"),
                           Validators('"v1"', "Tue, 02 Jan 2024")]


def test_an_error_backs_off_and_honours_retry_after(store: Store) -> None:
    portal = Portal(FetchError("HTTP 503", source_id="portal", status=503, retry_after=3 * 3600),
                    FetchError("HTTP 500", source_id="portal", status=500))
    first = poll(SRC, store, portal, now=lambda: NOW, jitter=lambda: 0.0)
    assert (first.result, first.status, first.consecutive_errors) == ("error", 503, 1)
    assert first.next_poll_at == NOW + timedelta(hours=3)  # Retry-After beats 2 × interval
    second = poll(SRC, store, portal, now=lambda: NOW, jitter=lambda: 0.0)
    assert second.next_poll_at == NOW + timedelta(hours=4) and second.consecutive_errors == 2
    state = store.source_state("portal")
    assert state is not None and state.next_poll_at == second.next_poll_at


def test_every_next_poll_is_spread_by_a_bounded_jitter(store: Store) -> None:
    portal = Portal(answer(content=rss_document("一")), answer(304))
    late = poll(SRC, store, portal, now=lambda: NOW, jitter=lambda: 0.999)
    assert NOW + timedelta(hours=1) < late.next_poll_at <= NOW + timedelta(minutes=66)  # type: ignore[operator]
    early = poll(SRC, store, portal, now=lambda: NOW, jitter=lambda: 0.0)
    assert early.next_poll_at == NOW + timedelta(hours=1)


def test_one_read_for_all_sources_and_one_commit_per_poll(store: Store) -> None:
    counting = CountingStore(store)
    sources = [Source(id=f"s{i}", name="S", url=f"http://p{i}.test/", categories=("c",))
               for i in range(4)]
    portal = Portal(answer(content=rss_document("一")), answer(304), FetchError("HTTP 500"),
                    answer(content=b"not a feed"))
    results = poll_sources(sources, counting, OPTIONS, fetch=portal, workers=1)
    assert sorted(r.result.value for r in results) == ["error", "error", "new", "not-modified"]
    assert (counting.reads, counting.commits) == (1, 4)


def test_a_disabled_source_is_skipped_unless_forced(store: Store) -> None:
    portal = Portal(FetchError("HTTP 410 Gone", source_id="portal", status=410),
                    answer(content=rss_document("回来了")))
    assert poll(SRC, store, portal).result is PollOutcome.DISABLED
    skipped = poll(SRC, store, portal)
    assert (skipped.result, skipped.error) == ("skipped", "HTTP 410 Gone")
    assert len(portal.sent) == 1  # nothing was fetched
    forced = poll_sources([SRC], store, OPTIONS, fetch=portal, force={"portal"})
    assert forced[0].result is PollOutcome.NEW
    state = store.source_state("portal")
    assert state is not None and state.disabled_reason is None and state.error_count == 0


def test_a_failing_commit_is_an_error_result_not_an_exception(store: Store) -> None:
    wrong = Portal(answer(content=rss_document("一")))
    other = Source(id="other", name="O", url="http://p.test/feed", categories=("c",))

    class BrokenStore(CountingStore):
        def commit_poll(self, update: SourceUpdate, articles: Sequence[Article] | None = None,
                        lease: Lease | None = None) -> StoreCounts:
            from aggregator.errors import StoreError

            raise StoreError("cannot commit the poll: disk full", source_id=update.state.source_id)

    result = poll_source(other, None, BrokenStore(store), OPTIONS, fetch=wrong,
                         now=lambda: NOW, jitter=lambda: 0.0)
    assert (result.result, result.consecutive_errors) == ("error", 1)
    assert "disk full" in (result.error or "")
    assert result.next_poll_at == NOW + timedelta(hours=1)  # 30 min × 2: backed off


# -- per-host limits ------------------------------------------------------------------


def test_waiting_for_a_busy_host_holds_no_thread(store: Store, http: HttpFetcher,
                                             held_portal: Any) -> None:
    slow, fast = held_portal("127.0.0.1"), held_portal("127.0.0.2")
    fast.release.set()
    sources = [source(slow.url(f"slow{i}"), f"slow{i}") for i in range(3)]
    sources.append(source(fast.url("fast"), "fast"))
    fast_done = threading.Event()
    results: list[PollResult] = []

    def on_result(result: PollResult) -> None:
        results.append(result)
        if result.source_id == "fast":
            fast_done.set()

    def run() -> None:
        poll_sources(sources, store, OPTIONS, fetch=http, workers=2, host_concurrency=1,
                     on_result=on_result)

    poller = threading.Thread(target=run)
    poller.start()
    # Two threads, one slot on the slow host: the second slow poll must queue, not
    # block its thread, so the fast host's poll still gets one.
    assert fast_done.wait(20), "the fast host waited behind the slow one"
    assert slow.arrived.acquire(timeout=5)
    assert [r.source_id for r in results] == ["fast"]
    slow.release.set()
    poller.join(30)
    assert not poller.is_alive()
    assert slow.peak == 1  # one slow request at a time
    assert sorted(r.source_id for r in results) == ["fast", "slow0", "slow1", "slow2"]
    assert all(r.result is PollOutcome.NEW for r in results)


def test_host_slots_run_queued_work_in_order_on_the_finishing_thread() -> None:
    slots = HostSlots()
    order: list[str] = []
    nested: list[bool] = []

    def first() -> None:
        order.append("first")
        nested.append(slots.run("h", 1, lambda: order.append("second")))
        nested.append(slots.run("h", 1, lambda: order.append("third")))
        assert slots.waiting() == 2

    assert slots.run("h", 1, first) is True
    assert nested == [False, False]
    assert order == ["first", "second", "third"] and slots.waiting() == 0
    assert slots.run("h", 1, lambda: order.append("again")) is True


def test_a_poll_whose_lease_was_taken_over_writes_nothing(store: Store) -> None:
    store.add_sources([SRC], now=NOW)
    [paused] = store.claim_due("w1", limit=1, lease_for=timedelta(minutes=1), now=NOW)
    [current] = store.claim_due("w2", limit=1, lease_for=timedelta(minutes=1),
                                now=NOW + timedelta(minutes=2))
    late = poll_source(SRC, paused.state, store, OPTIONS,
                       fetch=Portal(answer(content=rss_document("一"))), lease=paused.lease,
                       now=lambda: NOW)
    assert late.result is PollOutcome.SUPERSEDED and "taken over" in (late.error or "")
    assert store.count_articles() == 0 and store.source_state("portal") == current.state
    fresh = poll_source(SRC, current.state, store, OPTIONS,
                        fetch=Portal(answer(content=rss_document("一"))), lease=current.lease)
    assert fresh.result is PollOutcome.NEW


# -- full text: the pages of a summary-only feed, from a loopback portal ----------------

FULL_TEXT = PollOptions(fetch=OPTIONS.fetch, normalize=NormalizeOptions(
    image_proxy="https://proxy.test/?"))


class SummaryPortal:
    """A loopback portal whose feed carries only summaries and links to its article pages
    (GBK, ``<meta charset="gb2312">``, no HTTP charset); ``/a/missing.html`` is a 404."""

    def __init__(self, httpserver: HTTPServer) -> None:
        self.server = httpserver
        self.listed: list[str] = []
        httpserver.expect_request("/feed").respond_with_handler(self._feed)
        httpserver.expect_request("/a/missing.html").respond_with_data("没有这个页面",
                                                                       status=404)
        for name in ("one", "two", "three"):
            httpserver.expect_request(f"/a/{name}.html").respond_with_data(
                portal_article_page(title=f"文章{name}").encode("gbk"),
                content_type="text/html")

    def link(self, name: str) -> str:
        return self.server.url_for(f"/a/{name}.html")

    def _feed(self, _request: object) -> Response:
        items = "".join(
            f"<item><title>文章{name}</title><link>{self.link(name)}</link><guid>{name}</guid>"
            f"<description>摘要{name}：工业互联网产业规模持续扩大</description></item>"
            for name in self.listed)
        return Response(rss_items(items).encode(), content_type="text/xml")

    def pages_asked(self) -> list[str]:
        return [request.path for request, _ in self.server.log if request.path.startswith("/a/")]


def stored(store: Store) -> dict[str, Article]:
    return {a.key: a for a in store.iter_articles("portal")}


def plain(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def test_full_text_stores_each_new_page_once_and_a_failing_one_keeps_its_summary(
    httpserver: HTTPServer, store: Store, http: HttpFetcher, caplog: pytest.LogCaptureFixture
) -> None:
    portal = SummaryPortal(httpserver)
    src = source(httpserver.url_for("/feed"), full_text=True)
    portal.listed = ["one", "missing"]

    with caplog.at_level(logging.INFO, logger="aggregator.ingest.poll"):
        first = poll_source(src, None, store, FULL_TEXT, fetch=http)

    assert (first.result, first.counts.new) == (PollOutcome.NEW, 2)
    assert (first.pages_fetched, first.pages_failed, first.pages_pending) == (2, 1, 0)
    articles = stored(store)
    one = articles["one"]
    assert plain(one.content) == " ".join(ARTICLE_PARAGRAPHS)
    assert [b for b in PORTAL_BOILERPLATE if b in one.content] == []
    assert re.findall(r'src="([^"]+)"', one.content) == [
        f"https://proxy.test/?{httpserver.url_for('/upload/2024/05/a1.jpg')}",
        "https://proxy.test/?http://img.portal.test/upload/2024/05/a2.jpg",
        "https://proxy.test/?http://img.portal.test/upload/a3.png"]
    assert one.headimg == f"https://proxy.test/?{httpserver.url_for('/upload/2024/05/a1.jpg')}"
    assert one.summary == "摘要one：工业互联网产业规模持续扩大"
    assert articles["missing"].content == "摘要missing：工业互联网产业规模持续扩大"
    assert (f"source=portal full text of {portal.link('missing')} failed: HTTP 404"
            in caplog.text)
    assert "pages=2 pages_failed=1 pages_pending=0" in caplog.text

    portal.listed = ["two", "one", "missing"]  # a new article: the feed's bytes change
    httpserver.clear_log()
    second = poll(src, store, http, parse_pool=None)

    assert portal.pages_asked() == ["/a/two.html"]  # neither the stored one nor the 404
    assert (second.counts.new, second.counts.unchanged, second.pages_fetched) == (1, 2, 1)
    assert stored(store)["one"].content == one.content  # the summary did not come back
    assert plain(stored(store)["two"].content) == " ".join(ARTICLE_PARAGRAPHS)

    httpserver.clear_log()
    third = poll(src, store, http)

    assert portal.pages_asked() == [] and not third.parsed and third.pages_fetched == 0


def test_pages_beyond_the_cap_keep_their_summary_until_the_next_poll(
    httpserver: HTTPServer, store: Store, http: HttpFetcher
) -> None:
    portal = SummaryPortal(httpserver)
    portal.listed = ["one", "two", "three"]
    src = source(httpserver.url_for("/feed"), full_text=True)
    capped = PollOptions(fetch=OPTIONS.fetch, normalize=NormalizeOptions(),
                         full_text_max_pages=2)

    first = poll_source(src, None, store, capped, fetch=http)

    assert portal.pages_asked() == ["/a/one.html", "/a/two.html"]
    assert (first.counts.new, first.pages_fetched, first.pages_pending) == (3, 2, 1)
    assert stored(store)["three"].content == "摘要three：工业互联网产业规模持续扩大"

    httpserver.clear_log()  # the same feed bytes: parsed again for the page left
    second = poll_source(src, store.source_state(src.id), store, capped, fetch=http)

    assert portal.pages_asked() == ["/a/three.html"]
    assert (second.counts.updated, second.counts.unchanged, second.pages_pending) == (1, 2, 0)
    assert plain(stored(store)["three"].content) == " ".join(ARTICLE_PARAGRAPHS)

    httpserver.clear_log()
    third = poll_source(src, store.source_state(src.id), store, capped, fetch=http)

    assert not third.parsed and portal.pages_asked() == []


def test_full_text_pages_are_extracted_in_the_parse_workers(
    httpserver: HTTPServer, store: Store, http: HttpFetcher
) -> None:
    portal = SummaryPortal(httpserver)
    portal.listed = ["one"]
    src = source(httpserver.url_for("/feed"), full_text=True,
                 content_selector="div.article-content")

    with WorkerPool(workers=1, budget=Budget(seconds=30)) as pool:
        result = poll_source(src, None, store, FULL_TEXT, fetch=http, parse_pool=pool)

    assert (result.pages_fetched, result.pages_failed) == (1, 0)
    content = stored(store)["one"].content
    assert content.startswith('<div class="article-content">')
    assert plain(content) == " ".join(ARTICLE_PARAGRAPHS)


def test_a_new_content_selector_reads_the_listed_pages_again(
    httpserver: HTTPServer, store: Store, http: HttpFetcher
) -> None:
    portal = SummaryPortal(httpserver)
    portal.listed = ["one", "missing"]
    src = source(httpserver.url_for("/feed"), full_text=True)
    poll_source(src, None, store, FULL_TEXT, fetch=http)
    assert stored(store)["one"].content.startswith("<div><div")  # readability's wrapper

    httpserver.clear_log()
    selected = replace(src, content_selector="div.article-content")
    again = poll_source(selected, store.source_state(src.id), store, FULL_TEXT, fetch=http)

    assert sorted(portal.pages_asked()) == ["/a/missing.html", "/a/one.html"]
    assert (again.counts.updated, again.pages_fetched, again.pages_failed) == (2, 2, 1)
    assert stored(store)["one"].content.startswith('<div class="article-content">')

    httpserver.clear_log()
    plain_feed = poll_source(replace(src, full_text=False), store.source_state(src.id), store,
                             FULL_TEXT, fetch=http)

    assert portal.pages_asked() == [] and plain_feed.counts.updated == 2
    assert stored(store)["one"].content == "摘要one：工业互联网产业规模持续扩大"


def test_the_full_text_deadline_bounds_a_poll_whose_pages_hang(
    httpserver: HTTPServer, store: Store, http: HttpFetcher
) -> None:
    portal = SummaryPortal(httpserver)
    hung = threading.Event()

    def hang(_request: object) -> Response:
        hung.wait(30)  # released when the test ends
        return Response("迟到", content_type="text/html")

    httpserver.expect_request("/a/slow.html").respond_with_handler(hang)
    portal.listed = ["slow", "one", "two"]
    src = source(httpserver.url_for("/feed"), full_text=True)
    hurried = PollOptions(fetch=OPTIONS.fetch, normalize=NormalizeOptions(),
                          full_text_deadline=0.5)
    try:
        result = poll_source(src, None, store, hurried, fetch=http)
    finally:
        hung.set()

    assert result.result is PollOutcome.NEW and result.counts.new == 3
    assert (result.pages_fetched, result.pages_failed, result.pages_pending) == (1, 1, 2)
    assert result.elapsed < 5  # the page's own fetch deadline (10 s) was cut to what was left
    state = store.source_state(src.id)
    assert state is not None and state.body_hash is None  # parsed again by the next poll


# -- one writer: several polls per transaction ----------------------------------------


class GatedStore(CountingStore):
    """A real store whose first batch waits, inside commit_polls, until released."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.entered, self.release = threading.Event(), threading.Event()

    def commit_polls(self, items: Sequence[tuple[SourceUpdate, Sequence[Article] | None,
                                                 Lease | None]]
                     ) -> list[StoreCounts | AggregatorError]:
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(10)
        return super().commit_polls(items)


def unchanged(source_id: str) -> SourceUpdate:
    return SourceUpdate(state=SourceState(source_id=source_id, url="http://p.test/feed",
                                          etag='"v2"', last_poll_at=NOW,
                                          last_success_at=NOW,
                                          next_poll_at=NOW + timedelta(hours=1)),
                        result=PollOutcome.NOT_MODIFIED)


def test_the_writer_commits_what_waits_in_one_transaction_and_reports_after_it(
        store: Store) -> None:
    gated = GatedStore(store)
    seen: dict[str, SourceState | None] = {}
    outcomes: dict[str, object] = {}

    def done(source_id: str, outcome: object) -> None:
        seen[source_id] = store.source_state(source_id)  # committed before it is reported
        outcomes[source_id] = outcome

    with BatchWriter(gated) as writer:
        writer.submit(unchanged("s0"), None, None, partial(done, "s0"))
        assert gated.entered.wait(10)
        for i in range(1, 30):
            writer.submit(unchanged(f"s{i}"), None, None, partial(done, f"s{i}"))
        assert outcomes == {}  # nothing is done before its transaction committed
        gated.release.set()
    assert gated.batches == [1, 29] and writer.transactions == 2
    assert outcomes == {f"s{i}": StoreCounts() for i in range(30)}
    assert {state.next_poll_at if state else None for state in seen.values()} == {
        NOW + timedelta(hours=1)}


def test_a_bug_in_the_writer_surfaces_when_it_closes(store: Store) -> None:
    class Buggy(CountingStore):
        def commit_polls(self, items: object) -> list[StoreCounts | AggregatorError]:
            raise TypeError("a bug")

    with pytest.raises(TypeError, match="a bug"), BatchWriter(Buggy(store)) as writer:
        writer.submit(unchanged("s0"), None, None, lambda _outcome: None)
    assert store.source_state("s0") is None


def test_poll_sources_reports_a_result_only_once_it_is_committed(store: Store) -> None:
    counting = CountingStore(store)
    sources = [Source(id=f"s{i}", name="S", url=f"http://p{i}.test/", categories=("c",))
               for i in range(40)]
    portal = Portal(*[answer(304, etag='"v1"') for _ in sources])
    committed: list[bool] = []

    def on_result(result: PollResult) -> None:
        state = store.source_state(result.source_id)
        committed.append(state is not None and state.next_poll_at == result.next_poll_at
                         and state.etag == '"v1"')

    results = poll_sources(sources, counting, OPTIONS, fetch=portal, workers=4,
                           on_result=on_result)
    assert [r.result for r in results] == [PollOutcome.NOT_MODIFIED] * 40
    assert committed == [True] * 40
    assert counting.commits == 40 and sum(counting.batches) == 40
