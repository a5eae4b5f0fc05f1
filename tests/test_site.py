"""Tests for aggregator.publish.index_page: escaping, URL filtering, determinism, structure."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

import lxml.html
import pytest
from builders import make_source
from served_site import make_article

from aggregator.ingest.normalize import normalize
from aggregator.publish.index_page import render_index
from aggregator.publish.language import WORDS, words_for
from aggregator.publish.paths import INDEX_FILENAME, OPML_FILENAME, category_paths
from aggregator.records import Article, FeedOptions, NormalizeOptions, ParsedEntry
from aggregator.rules import UNTITLED

OPTIONS = FeedOptions(output_dir="/unused", site_url="https://news.example.org/feeds/",
                      title_prefix="聚合 · ", language="zh-CN")
CATEGORIES = ["新闻", "科技 Tech", "a/b", "财经&投资"]


def render(articles: list[Article], categories: list[str] | None = None, **kw: Any) -> bytes:
    return render_index(CATEGORIES if categories is None else categories, articles, OPTIONS, **kw)


def parse(page: bytes) -> Any:
    return lxml.html.document_fromstring(page)


def test_index_filename() -> None:
    assert INDEX_FILENAME == "index.html"


def test_document_basics() -> None:
    page = render([make_article(1)], site_title="新闻聚合")
    assert page.startswith(b"<!DOCTYPE html>\n")
    doc = parse(page)
    assert doc.get("lang") == "zh-CN"
    assert doc.findtext(".//title") == "新闻聚合"
    assert doc.xpath("//meta[@charset='utf-8']")
    viewport = doc.xpath("//meta[@name='viewport']/@content")
    assert viewport == ["width=device-width, initial-scale=1"]
    assert not doc.xpath("//script")
    # No external resource: no stylesheet links, no script src, CSS inline.
    assert not doc.xpath("//link[@rel='stylesheet']")
    assert doc.xpath("//style")
    assert "@media (max-width: 700px)" in doc.findtext(".//style")
    assert "Noto Sans CJK SC" in doc.findtext(".//style")
    csp = doc.xpath("//meta[@http-equiv='Content-Security-Policy']/@content")[0]
    assert "default-src 'none'" in csp and "script-src" not in csp


def test_every_category_links_its_feeds_and_the_opml() -> None:
    doc = parse(render([]))
    hrefs = set(doc.xpath("//a/@href"))
    for category in CATEGORIES:
        paths = category_paths(category)
        assert quote(paths.rss) in hrefs, category
        assert quote(paths.atom) in hrefs, category
        assert quote(paths.json) in hrefs, category
        # Autodiscovery for feed readers pointed at the page.
        assert doc.xpath(f"//link[@rel='alternate'][@href='{quote(paths.rss)}']")
    assert OPML_FILENAME in hrefs
    assert quote(category_paths("新闻").rss) == "categories/%E6%96%B0%E9%97%BB/rss.xml"
    names = [n.text_content() for n in doc.xpath("//aside//span[@class='name']")]
    assert names == CATEGORIES
    # Links are relative (served under site_url), never absolute or rooted.
    for href in doc.xpath("//aside//a/@href"):
        assert not href.startswith(("/", "http")), href


def test_duplicate_categories_are_listed_once() -> None:
    doc = parse(render([], categories=["新闻", "新闻", "科技 Tech"]))
    assert len(doc.xpath("//aside//li")) == 2


def test_article_fields() -> None:
    article = make_article(
        3, headimg="https://img.example/a.jpg?x=1&y=2", author="记者 张三",
        date=datetime(2024, 3, 1, 19, 5, 42, tzinfo=timezone(timedelta(hours=8))),
        summary="  摘要\n第一行   第二行 ",
    )
    doc = parse(render([article]))
    [item] = doc.xpath("//li[@class='article']")
    [img] = item.xpath(".//img")
    assert img.get("src") == "https://img.example/a.jpg?x=1&y=2"
    assert img.get("loading") == "lazy"
    assert img.get("referrerpolicy") == "no-referrer"
    assert img.get("alt") == ""
    [link] = item.xpath(".//h3/a")
    assert link.get("href") == article.link
    assert link.get("rel") == "noopener noreferrer"
    assert link.text_content() == article.title
    [time_el] = item.xpath(".//time")
    assert time_el.get("datetime") == "2024-03-01T11:05:42Z"
    assert time_el.text_content() == "2024-03-01 11:05"
    meta = item.xpath(".//p[@class='meta']")[0].text_content()
    assert "portal" in meta and "记者 张三" in meta
    assert item.xpath(".//p[@class='summary']")[0].text_content() == "摘要 第一行 第二行"


def test_articles_keep_the_given_order_and_thumbnail_fallback() -> None:
    articles = [make_article(5), make_article(9, thumbnail="https://img.example/t.png"),
                make_article(1)]
    doc = parse(render(articles))
    titles = [a.text_content() for a in doc.xpath("//li[@class='article']//h3")]
    assert titles == [a.title for a in articles]
    assert doc.xpath("//img/@src") == ["https://img.example/t.png"]


def test_empty_site() -> None:
    doc = parse(render([], categories=[]))
    assert "暂无文章" in doc.text_content()
    assert "暂无分类" in doc.text_content()
    assert doc.xpath(f"//a[@href='{OPML_FILENAME}']")


HOSTILE = [
    make_article(
        1,
        title='<script>alert(1)</script>" onmouseover="alert(2)',
        summary="</p><script>alert(3)</script><img src=x onerror=alert(4)>",
        author='"><svg onload=alert(5)>',
        link="javascript:alert(6)",
        headimg='https://img.example/x.jpg"onerror="alert(7)"<b>',
        source_id="<b>src</b>",
    ),
    make_article(2, link="JaVaScRiPt:alert(8)", headimg="data:image/png;base64,AAAA"),
    make_article(3, link="java\tscript:alert(9)", headimg="//evil.example/x.png"),
    make_article(4, link="  https://ok.example/4  ", headimg="vbscript:msgbox(1)"),
    make_article(5, link="/relative/path", headimg="ftp://img.example/x.png"),
]


def test_hostile_values_are_escaped_and_unsafe_urls_dropped() -> None:
    page = render(HOSTILE, categories=['<script>alert("c")</script>', "x\" onclick=\"y"],
                  site_title="<script>alert('t')</script>")
    text = page.decode("utf-8")
    assert "<script>" not in text
    assert "<svg" not in text and "<img src=x" not in text
    assert "javascript:" not in text.lower() and "vbscript:" not in text
    assert "data:image" not in text and "ftp://" not in text and "//evil.example" not in text
    doc = parse(page)
    assert not doc.xpath("//script")
    # No element carries an event handler attribute.
    for element in doc.iter():
        assert not [a for a in element.attrib if a.lower().startswith("on")], element.tag
    # The hostile text is shown as text.
    titles = [h.text_content() for h in doc.xpath("//li[@class='article']//h3")]
    assert titles[0] == '<script>alert(1)</script>" onmouseover="alert(2)'
    summary = doc.xpath("//p[@class='summary']")[0].text_content()
    assert summary == HOSTILE[0].summary
    assert doc.findtext(".//title") == "<script>alert('t')</script>"
    # Only http(s) links survive; a title without a safe link is plain text.
    article_links = doc.xpath("//li[@class='article']//h3/a/@href")
    assert article_links == ["https://ok.example/4"]
    assert [len(h.xpath("a")) for h in doc.xpath("//li[@class='article']//h3")] == [
        0, 0, 0, 1, 0]
    # The only image had a quote in its URL: escaped, so it stays one attribute value.
    assert doc.xpath("//img/@src") == ['https://img.example/x.jpg"onerror="alert(7)"<b>']
    for href in doc.xpath("//@href | //@src"):
        assert href.startswith(("https://", "http://", "categories/", OPML_FILENAME, "#")), href


def test_deterministic_bytes() -> None:
    articles = [make_article(n) for n in range(1, 8)] + HOSTILE
    first = render(articles)
    second = render(list(articles))
    assert first == second
    assert render(articles[:-1]) != first  # and it does depend on the input


def test_untitled_and_linkless_articles() -> None:
    # The untitled fallback is decided once, when normalize makes the Article.
    source = make_source(name="", categories=("新闻",))
    seen = datetime(2024, 3, 1, tzinfo=UTC)
    untitled = normalize(ParsedEntry(), source, NormalizeOptions(), seen_at=seen)
    doc = parse(render([untitled, make_article(1, link=None, author="", summary="")]))
    headings = doc.xpath("//li[@class='article']//h3")
    assert [h.text_content() for h in headings] == [UNTITLED, make_article(1).title]
    assert UNTITLED == "(无标题)"
    assert not any(h.xpath("a") for h in headings)
    assert not doc.xpath("//p[@class='summary']")
    assert not doc.xpath("//span[@class='author']")


def test_long_summaries_are_cut() -> None:
    doc = parse(render([make_article(1, summary="长" * 1000)]))
    summary = doc.xpath("//p[@class='summary']")[0].text_content()
    assert len(summary) == 300 and summary.endswith("…")


def test_links_with_spaces_are_kept_and_tabs_do_not_hide_a_scheme() -> None:
    articles = [make_article(1, link="https://a.example/a b.html"),
                make_article(2, link="java\tscript:alert(1)", headimg="https://i.example/\x01.png")]
    doc = parse(render(articles))
    assert doc.xpath("//li[@class='article']//h3/a/@href") == ["https://a.example/a b.html"]
    assert not doc.xpath("//img")


def test_the_page_speaks_the_sites_language() -> None:
    traditional = parse(render_index(CATEGORIES, [], replace(OPTIONS, language="zh-TW")))
    assert traditional.get("lang") == "zh-TW"
    text = traditional.text_content()
    assert "分類訂閱" in text and "暫無文章" in text and "匯入" in text
    assert "分类订阅" not in text and "暂无" not in text
    english = parse(render_index([], [], replace(OPTIONS, language="en")))
    assert english.get("lang") == "en"
    assert [h.text_content() for h in english.xpath("//h2")] == ["Latest articles", "Categories"]
    assert "No articles yet." in english.text_content()
    assert not re.search(r"[\u4e00-\u9fff]", english.find("body").text_content())
    # The introduction's links survive in every language.
    for doc in (traditional, english):
        assert doc.xpath("//header//a[@href='#categories']")
        assert doc.xpath(f"//header//a[@href='{OPML_FILENAME}']")


def test_an_unknown_language_is_not_declared_and_words_fall_back_to_english() -> None:
    doc = parse(render_index([], [], replace(OPTIONS, language=None)))
    assert doc.get("lang") is None
    assert "No categories yet." in doc.text_content()
    assert parse(render_index([], [], replace(OPTIONS, language="de-CH"))).get("lang") == "de-CH"


@pytest.mark.parametrize(("tag", "words"), [
    ("zh-CN", "zh-CN"), ("zh", "zh-CN"), ("zh-Hans-TW", "zh-CN"), ("zh-SG", "zh-CN"),
    ("zh-TW", "zh-TW"), ("zh-HK", "zh-TW"), ("zh-Hant", "zh-TW"), ("zh-Hant-CN", "zh-TW"),
    ("en", "en"), ("en-GB", "en"), ("it", "en"), (None, "en"),
])
def test_the_closest_built_in_words(tag: str | None, words: str) -> None:
    assert words_for(tag) is WORDS[words]


def test_configured_site_description_is_shown_as_text() -> None:
    options = replace(OPTIONS, site_description="Taiwan <b>news</b>\n  in one place")
    doc = parse(render_index([], [], options))
    [intro] = doc.xpath("//header/p")
    assert intro.text_content() == "Taiwan <b>news</b> in one place"
    assert not intro.xpath("*")


def test_articles_show_their_sources_configured_name() -> None:
    options = replace(OPTIONS, source_names={"portal": "门户 <网>"})
    doc = parse(render_index([], [make_article(1), make_article(2, source_id="other")], options))
    sources = [s.text_content() for s in doc.xpath("//span[@class='source']")]
    assert sources == ["门户 <网>", "other"]  # a source the config no longer names: its id


def test_each_category_has_an_alternate_per_feed_format_rss_first() -> None:
    doc = parse(render([]))
    alternates = [(link.get("type"), link.get("title"), link.get("href"))
                  for link in doc.xpath("//head/link[@rel='alternate']")]
    assert alternates[0] == ("text/x-opml", "OPML", OPML_FILENAME)
    wanted = []
    for category in CATEGORIES:
        paths = category_paths(category)
        wanted += [
            ("application/rss+xml", f"聚合 · {category} (RSS)", quote(paths.rss)),
            ("application/atom+xml", f"聚合 · {category} (Atom)", quote(paths.atom)),
            ("application/feed+json", f"聚合 · {category} (JSON Feed)", quote(paths.json)),
        ]
    assert alternates[1:] == wanted
    # The category list links the same three feeds, each with its media type.
    [item] = doc.xpath("//aside//li[span[@class='name']='新闻']")
    links = [(a.get("class"), a.get("type"), a.get("href"), a.text_content())
             for a in item.xpath("a")]
    paths = category_paths("新闻")
    assert links == [("feed rss", "application/rss+xml", quote(paths.rss), "RSS"),
                     ("feed atom", "application/atom+xml", quote(paths.atom), "Atom"),
                     ("feed json", "application/feed+json", quote(paths.json), "JSON")]
