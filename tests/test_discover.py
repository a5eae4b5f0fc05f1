"""Feed autodiscovery against loopback portals (pytest-httpserver): the URL given is
the feed, or a page whose ``<link rel="alternate">`` names it."""

from __future__ import annotations

import pytest
from builders import rss_items
from pytest_httpserver import HTTPServer

from aggregator.errors import FetchError, ParseError
from aggregator.ingest.discover import feed_links, find_feed, looks_like_html
from aggregator.ingest.fetch import HttpFetcher
from aggregator.ingest.sandbox import Budget, WorkerPool
from aggregator.records import FetchOptions, FetchResult

LOOPBACK = FetchOptions(allow_private_networks=True, deadline=10.0)
GBK_FEED = rss_items("<item><title>王喆：数字化转型</title><link>http://www.ofweek.com/1</link>"
                     "</item>", title="OFweek 高科技行业门户", link="http://www.ofweek.com/",
                     encoding="gb2312").encode("gbk")


def page(head: str) -> bytes:
    return f"<!DOCTYPE html><html><head><title>门户</title>{head}</head><body>新闻</body></html>" \
        .encode()


def test_a_page_links_its_feed_by_a_relative_href(httpserver: HTTPServer,
                                                  http: HttpFetcher) -> None:
    httpserver.expect_request("/news/index.html").respond_with_data(page(
        '<link rel="stylesheet" type="text/css" href="site.css">'
        '<link rel="alternate" type="application/rss+xml" title="新闻" href="feed.xml">'),
        content_type="text/html")
    httpserver.expect_request("/news/feed.xml").respond_with_data(
        GBK_FEED, content_type="text/xml")

    found = find_feed(httpserver.url_for("/news/index.html"), http, LOOPBACK)

    assert found.url == httpserver.url_for("/news/feed.xml")
    assert found.title == "OFweek 高科技行业门户"  # GBK, declared gb2312, decoded exactly
    assert found.link == "http://www.ofweek.com/"
    assert found.page == httpserver.url_for("/news/index.html")
    assert found.entries == 1


def test_the_url_given_may_be_the_feed_itself(httpserver: HTTPServer, http: HttpFetcher) -> None:
    httpserver.expect_request("/feed.json").respond_with_json(
        {"version": "https://jsonfeed.org/version/1.1", "title": "开源中国",
         "items": [{"id": "1", "url": "https://www.oschina.net/news/1", "title": "一"}]})

    found = find_feed(httpserver.url_for("/feed.json"), http, LOOPBACK)

    assert (found.url, found.title, found.page, found.entries) == (
        httpserver.url_for("/feed.json"), "开源中国", None, 1)


def test_a_link_that_fails_is_passed_over_for_the_next(httpserver: HTTPServer,
                                                       http: HttpFetcher) -> None:
    httpserver.expect_request("/").respond_with_data(page(
        '<link rel="alternate" type="application/atom+xml" href="/gone.xml">'
        '<link rel="ALTERNATE" type="Application/RSS+XML; charset=gbk" href="/rss.xml">'),
        content_type="text/html")
    httpserver.expect_request("/gone.xml").respond_with_data("", status=404)
    httpserver.expect_request("/rss.xml").respond_with_data(GBK_FEED, content_type="text/xml")

    found = find_feed(httpserver.url_for("/"), http, LOOPBACK)

    assert found.url == httpserver.url_for("/rss.xml")


def test_a_page_without_feed_links_is_refused_with_the_reason(httpserver: HTTPServer,
                                                             http: HttpFetcher) -> None:
    httpserver.expect_request("/").respond_with_data(
        page('<link rel="alternate" hreflang="en" type="text/html" href="/en/">'),
        content_type="text/html")

    with pytest.raises(ParseError, match='no <link rel="alternate">'):
        find_feed(httpserver.url_for("/"), http, LOOPBACK)


def test_links_that_only_fail_are_each_named(httpserver: HTTPServer, http: HttpFetcher) -> None:
    httpserver.expect_request("/").respond_with_data(
        page('<link rel="alternate" type="application/rss+xml" href="/broken.xml">'),
        content_type="text/html")
    httpserver.expect_request("/broken.xml").respond_with_data(
        page(""), content_type="application/rss+xml")

    with pytest.raises(ParseError) as raised:
        find_feed(httpserver.url_for("/"), http, LOOPBACK)

    assert "/broken.xml: not a feed: the server sent an HTML page" in str(raised.value)


def test_the_address_guard_holds_for_discovery(httpserver: HTTPServer,
                                              http: HttpFetcher) -> None:
    httpserver.expect_request("/").respond_with_data(GBK_FEED, content_type="text/xml")

    with pytest.raises(FetchError):
        find_feed(httpserver.url_for("/"), http, FetchOptions(allow_private_networks=False))
    assert httpserver.log == []


def fetched(body: bytes, content_type: str = "text/html",
            url: str = "http://portal.test/a/b.html") -> FetchResult:
    return FetchResult(source_id="s", url=url, status=200, content=body,
                       headers={"Content-Type": content_type})


def test_links_resolve_against_base_href_and_meta_charset_decodes_titles() -> None:
    body = ('<html><head><meta charset="gb2312"><base href="http://cdn.portal.test/x/">'
            '<link rel="alternate" type="application/atom+xml" title="高科技" href="atom.xml">'
            '<link rel="alternate" type="application/feed+json" href="//portal.test/f.json">'
            '<link rel="alternate" type="application/rss+xml" href="javascript:alert(1)">'
            "</head></html>").encode("gbk")

    links = feed_links(fetched(body))

    assert [(link.url, link.type, link.title) for link in links] == [
        ("http://cdn.portal.test/x/atom.xml", "application/atom+xml", "高科技"),
        ("http://portal.test/f.json", "application/feed+json", None),
    ]


def test_feeds_served_as_html_are_not_taken_for_pages() -> None:
    assert looks_like_html(b"\xef\xbb\xbf  <!DOCTYPE html><html>")
    assert looks_like_html(b"<HTML><head>")
    assert not looks_like_html(GBK_FEED)


def test_feeds_are_parsed_in_a_worker_within_the_parse_budget(httpserver: HTTPServer,
                                                              http: HttpFetcher) -> None:
    httpserver.expect_request("/rss.xml").respond_with_data(GBK_FEED, content_type="text/xml")

    with WorkerPool(workers=1, budget=Budget(seconds=20)) as pool:
        found = find_feed(httpserver.url_for("/rss.xml"), http, LOOPBACK, pool)
        assert pool.pids()  # a worker parsed it

    assert found.title == "OFweek 高科技行业门户"


def test_a_parse_that_exceeds_its_budget_is_a_parse_error(httpserver: HTTPServer,
                                                        http: HttpFetcher) -> None:
    httpserver.expect_request("/rss.xml").respond_with_data(GBK_FEED, content_type="text/xml")

    # one byte of address space: the worker dies, or its parser cannot even load
    with WorkerPool(workers=1, budget=Budget(seconds=20, memory_bytes=1)) as pool, \
            pytest.raises(ParseError, match=r"^\[new-source\] parser? failed: "):
        find_feed(httpserver.url_for("/rss.xml"), http, LOOPBACK, pool)
