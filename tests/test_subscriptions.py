"""OPML subscription lists as other readers export them → Subscription records.

The fixtures (tests/fixtures/opml/) are small but written the way each reader writes
its export: Miniflux
(folders by ``text``, feeds with ``title`` and ``text``, no ``type``), FreshRSS (tabs,
its ``frss:`` namespace, ``type="rss"``, feeds named by ``text`` only), Feedly (OPML 1.0,
nested folders), newsboat (flat, ``title`` only, no folders).
"""

from __future__ import annotations

import pytest
from builders import opml_export

from aggregator.errors import ParseError
from aggregator.ingest.subscriptions import Subscription, read_opml

MINIFLUX, FRESHRSS, FEEDLY, NEWSBOAT = (
    opml_export(reader) for reader in ("miniflux", "freshrss", "feedly", "newsboat"))


def test_miniflux_folders_become_categories() -> None:
    assert read_opml(MINIFLUX).subscriptions == (
        Subscription(url="https://36kr.com/feed", title="36氪", categories=("科技",),
                     html_url="https://36kr.com/"),
        Subscription(url="https://www.cnbeta.com.tw/backend.php", title="cnBeta",
                     categories=("科技",), html_url="https://www.cnbeta.com.tw/"),
    )


def test_freshrss_feeds_named_by_text_and_bad_urls_skipped_with_the_reason() -> None:
    listed = read_opml(FRESHRSS)
    assert [(s.url, s.title, s.categories) for s in listed.subscriptions] == [
        ("https://www.ofweek.com/rss.xml", "OFweek 高科技行业门户", ("新闻",))]
    assert listed.skipped == ("坏的: 'javascript:alert(1)' is not an http(s) URL",)


def test_feedly_nested_folders_are_each_a_category_outermost_first() -> None:
    assert [(s.title, s.categories) for s in read_opml(FEEDLY).subscriptions] == [
        ("掘金 后端", ("编程", "后端")), ("开源中国", ("编程",))]


def test_newsboat_flat_lists_have_no_categories_and_may_have_no_title() -> None:
    assert [(s.url, s.title, s.categories, s.html_url)
            for s in read_opml(NEWSBOAT).subscriptions] == [
        ("https://www.oschina.net/news/rss", "OSCHINA", (), "https://www.oschina.net/"),
        ("https://rsshub.app/zaker/channel/13", None, (), None)]


@pytest.mark.parametrize("entity", ['SYSTEM "file:///etc/passwd"', '"一二三"'])
def test_entities_are_refused_never_expanded(entity: str) -> None:
    hostile = (f'<?xml version="1.0"?><!DOCTYPE opml [<!ENTITY x {entity}>]>'
               '<opml version="2.0"><body><outline text="&x;" xmlUrl="http://a.test/"/>'
               "</body></opml>").encode()
    with pytest.raises(ParseError, match="entit"):
        read_opml(hostile)


@pytest.mark.parametrize("content, reason", [
    (b"<html><body>no</body></html>", "the root element is <html>"),
    (b"<opml version='2.0'><head/></opml>", "it has no <body>"),
    (b"not xml at all", "not an OPML file"),
])
def test_what_is_not_opml_says_why(content: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        read_opml(content)
