"""Tests for aggregator.publish.feeds: feeds parsed back, validated, compared byte for byte."""

from __future__ import annotations

import html
import logging
import os
import re
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import builders
import feedparser
import pytest
from lxml import etree

from aggregator.publish.feeds import (
    EPOCH,
    BuildReport,
    entry_id,
    modified_at,
    render_archive,
    render_atom,
    render_rss,
    write_atomic,
    write_feeds,
)
from aggregator.publish.opml import JSON_FEED_URL, outline_titles, render_opml
from aggregator.publish.paths import OPML_FILENAME, category_paths
from aggregator.records import Article, ArticleStamp, FeedOptions

SHARED = Path(__file__).resolve().parents[2] / "shared"
ATOM_RNG = SHARED / "corpus" / "schemas" / "atom-rfc4287.rng"
ATOM_NS = "{http://www.w3.org/2005/Atom}"
SITE = "https://news.example.org/agg"  # no trailing slash on purpose
BASE = datetime(2021, 5, 21, 7, 25, tzinfo=UTC)
NOW = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def make_article(n: int, **overrides: Any) -> Article:
    """Article number ``n``: a higher ``n`` is newer."""
    date, url = BASE + timedelta(hours=n), f"https://ofweek.example/{n}.html"
    return builders.make_article(**{
        "source_id": "ofweek", "key": url, "guid": f"guid-{n}", "link": url,
        "title": f"工业互联网先锋榜 {n}", "author": f"作者{n}", "date": date,
        "categories": ("新媒体", "高科技行业门户"), "content": f"<p>正文 {n} &amp; <b>more</b></p>",
        "summary": f"摘要 {n} <not a tag>", "first_seen": date + timedelta(minutes=5),
        "updated_at": date + timedelta(minutes=10), "content_hash": f"hash{n}", **overrides,
    })


def unrenderable(n: int) -> Article:
    """A valid Article no feed can carry: its key has no UTF-8 form, so neither has its id.

    (Articles refuse naive dates and empty titles themselves, see test_rules; the writer
    still needs its last defence, one bad article never failing a build.)
    """
    return make_article(n, key=f"https://ofweek.example/{n}\ud800")


def options(tmp_path: Path, **overrides: Any) -> FeedOptions:
    fields: dict[str, Any] = {
        "output_dir": str(tmp_path / "out"),
        "site_url": SITE,
        "feed_size": 50,
        "title_prefix": "聚合 · ",
        "language": "zh-CN",
    }
    fields.update(overrides)
    return FeedOptions(**fields)


def expected_id(article: Article) -> str:
    return "urn:uuid:" + str(
        uuid.uuid5(uuid.NAMESPACE_URL, f"{article.source_id}\n{article.key}")
    )


def parsed(data: bytes) -> feedparser.FeedParserDict:
    result = feedparser.parse(data)
    assert not result.bozo, result.get("bozo_exception")
    return result


def struct_utc(dt: datetime) -> tuple[int, ...]:
    return tuple(dt.astimezone(UTC).utctimetuple())[:6]


@pytest.fixture(scope="module")
def atom_schema() -> etree.RelaxNG:
    return etree.RelaxNG(etree.parse(str(ATOM_RNG)))


def assert_valid_atom(schema: etree.RelaxNG, data: bytes) -> etree._Element:
    root = etree.fromstring(data)
    assert schema.validate(root), schema.error_log
    # RFC 4287's Schematron rule RELAX NG cannot check: a feed-level author
    # unless every entry has one.
    entries = root.findall(f"{ATOM_NS}entry")
    assert root.find(f"{ATOM_NS}author") is not None or all(
        e.find(f"{ATOM_NS}author") is not None for e in entries
    )
    return root


# --------------------------------------------------------------------------- RSS


def test_rss_parses_back_with_every_field(tmp_path: Path) -> None:
    articles = [make_article(2), make_article(3), make_article(1)]  # not in date order
    data = render_rss("新媒体", articles, options(tmp_path))
    feed = parsed(data)

    assert feed.version == "rss20"
    assert feed.feed.title == "聚合 · 新媒体"
    assert feed.feed.link == SITE + "/"
    assert feed.feed.language == "zh-CN"
    assert feed.feed.generator == "aggregator"
    newest_first = sorted(articles, key=lambda a: a.date, reverse=True)
    assert [e.title for e in feed.entries] == [a.title for a in newest_first]
    for entry, article in zip(feed.entries, newest_first, strict=True):
        assert entry.link == article.link
        assert entry.id == expected_id(article) == entry_id(article)
        assert entry.guidislink is False
        assert entry.author == article.author
        assert [t.term for t in entry.tags] == list(article.categories)
        assert tuple(entry.published_parsed)[:6] == struct_utc(article.date)
        assert html.unescape(entry.summary) == article.summary  # HTML-escaped plain text
        assert entry.content[0].value == article.content


def test_rss_structure_guid_author_and_self_link(tmp_path: Path) -> None:
    article = make_article(1)
    root = etree.fromstring(render_rss("编程", [article], options(tmp_path)))
    item = root.find("channel/item")
    assert item is not None
    guid = item.find("guid")
    assert guid is not None and guid.get("isPermaLink") == "false"
    assert guid.text == expected_id(article)
    assert item.find("author") is None  # RSS <author> needs an e-mail; names go to dc:creator
    assert item.findtext("{http://purl.org/dc/elements/1.1/}creator") == article.author
    self_link = root.find(f"channel/{ATOM_NS}link")
    assert self_link is not None and self_link.get("rel") == "self"
    assert self_link.get("href") == f"{SITE}/categories/{quote('编程')}/rss.xml"


def test_feed_size_keeps_the_newest(tmp_path: Path) -> None:
    articles = [make_article(n) for n in (5, 1, 9, 3, 7, 2, 8)]
    opts = options(tmp_path, feed_size=3)
    rss = parsed(render_rss("新媒体", articles, opts))
    atom = parsed(render_atom("新媒体", articles, opts))
    wanted = [make_article(n).title for n in (9, 8, 7)]
    assert [e.title for e in rss.entries] == wanted
    assert [e.title for e in atom.entries] == wanted


def test_equal_dates_order_by_key_whatever_the_input_order(tmp_path: Path) -> None:
    same = BASE + timedelta(days=1)
    articles = [
        make_article(n, key=f"k{n}", date=same, updated_at=same) for n in (3, 1, 2)
    ]
    opts = options(tmp_path)
    first = render_atom("新媒体", articles, opts)
    second = render_atom("新媒体", list(reversed(articles)), opts)
    assert first == second
    assert [e.id for e in parsed(first).entries] == [
        expected_id(make_article(n, key=f"k{n}")) for n in (1, 2, 3)
    ]


def test_thumbnail_from_headimg(tmp_path: Path, atom_schema: etree.RelaxNG) -> None:
    img = "https://cors.example/?http://images.example/1.jpg"
    articles = [make_article(1, headimg=img), make_article(2)]
    opts = options(tmp_path)
    rss = parsed(render_rss("新媒体", articles, opts))
    atom_bytes = render_atom("新媒体", articles, opts)
    atom = parsed(atom_bytes)
    assert_valid_atom(atom_schema, atom_bytes)
    for feed in (rss, atom):
        by_title = {e.title: e for e in feed.entries}
        assert by_title[articles[0].title].media_thumbnail[0]["url"] == img
        assert "media_thumbnail" not in by_title[articles[1].title]


# --------------------------------------------------------------------------- Atom


def test_atom_parses_back_and_validates(tmp_path: Path, atom_schema: etree.RelaxNG) -> None:
    articles = [make_article(1), make_article(3), make_article(2)]
    data = render_atom("高科技行业门户", articles, options(tmp_path))
    assert_valid_atom(atom_schema, data)
    feed = parsed(data)

    assert feed.version == "atom10"
    assert feed.feed.title == "聚合 · 高科技行业门户"
    atom_url = f"{SITE}/categories/{quote('高科技行业门户')}/atom.xml"
    assert feed.feed.id == atom_url
    links = {link.rel: link.href for link in feed.feed.links}
    assert links == {"self": atom_url, "alternate": SITE + "/"}
    assert feed.feed.author == "聚合"
    newest_first = sorted(articles, key=lambda a: a.date, reverse=True)
    assert [e.title for e in feed.entries] == [a.title for a in newest_first]
    for entry, article in zip(feed.entries, newest_first, strict=True):
        assert entry.id == expected_id(article)
        assert entry.link == article.link
        assert entry.author == article.author
        assert [t.term for t in entry.tags] == list(article.categories)
        assert tuple(entry.published_parsed)[:6] == struct_utc(article.date)
        assert tuple(entry.updated_parsed)[:6] == struct_utc(article.updated_at)
        assert entry.content[0].type == "text/html"
        assert entry.content[0].value == article.content
        assert html.unescape(entry.summary) == article.summary  # HTML-escaped plain text


def test_atom_entry_without_author_or_link_still_validates(
    tmp_path: Path, atom_schema: etree.RelaxNG
) -> None:
    article = make_article(1, author="", link=None, content="", summary="只有摘要")
    data = render_atom("新媒体", [article], options(tmp_path))
    root = assert_valid_atom(atom_schema, data)
    entry = root.find(f"{ATOM_NS}entry")
    assert entry is not None
    assert entry.find(f"{ATOM_NS}author") is None
    assert root.find(f"{ATOM_NS}author/{ATOM_NS}name") is not None
    assert entry.findtext(f"{ATOM_NS}content") == "只有摘要"  # fallback content
    assert parsed(data).entries[0].id == expected_id(article)


def test_microseconds_and_non_utc_offsets_are_normalized(tmp_path: Path) -> None:
    plus8 = datetime(2021, 5, 21, 23, 25, 0, 123456, tzinfo=timezone(timedelta(hours=8)))
    article = make_article(1, date=plus8, updated_at=plus8)
    root = etree.fromstring(render_atom("新媒体", [article], options(tmp_path)))
    assert root.findtext(f"{ATOM_NS}entry/{ATOM_NS}published") == "2021-05-21T15:25:00+00:00"


# --------------------------------------------------------------------------- determinism


def test_same_input_gives_same_bytes_and_ids(tmp_path: Path) -> None:
    articles = [make_article(n) for n in range(1, 6)]
    opts = options(tmp_path)
    for render in (render_rss, render_atom):
        first = render("新媒体", articles, opts)
        again = render("新媒体", list(reversed(articles)), opts)
        assert first == again
        assert [e.id for e in parsed(first).entries] == [
            expected_id(a) for a in reversed(articles)
        ]
    # The id depends on the identity only, not on the content.
    edited = replace(articles[0], title="改过的标题", content="<p>new</p>")
    assert parsed(render_rss("新媒体", [edited], opts)).entries[0].id == expected_id(articles[0])


def test_last_build_date_is_newest_updated_at_not_now(tmp_path: Path) -> None:
    # Article 1 is the oldest by date but was updated last.
    late_update = BASE + timedelta(days=30, seconds=7)
    articles = [make_article(1, updated_at=late_update), make_article(2), make_article(3)]
    opts = options(tmp_path)
    rss = parsed(render_rss("新媒体", articles, opts))
    atom = parsed(render_atom("新媒体", articles, opts))
    assert tuple(rss.feed.updated_parsed)[:6] == struct_utc(late_update)
    assert tuple(atom.feed.updated_parsed)[:6] == struct_utc(late_update)


def test_last_build_date_only_counts_included_articles(tmp_path: Path) -> None:
    old_but_updated = make_article(1, updated_at=BASE + timedelta(days=99))
    articles = [old_but_updated, make_article(2), make_article(3)]
    atom = parsed(render_atom("新媒体", articles, options(tmp_path, feed_size=2)))
    assert [e.title for e in atom.entries] == [make_article(3).title, make_article(2).title]
    assert tuple(atom.feed.updated_parsed)[:6] == struct_utc(make_article(3).updated_at)


def test_empty_category_is_a_valid_empty_feed(tmp_path: Path, atom_schema: etree.RelaxNG) -> None:
    opts = options(tmp_path)
    rss = parsed(render_rss("编程", [], opts))
    atom_bytes = render_atom("编程", [], opts)
    atom = parsed(atom_bytes)
    assert_valid_atom(atom_schema, atom_bytes)
    assert rss.entries == [] and atom.entries == []
    assert rss.feed.title == atom.feed.title == "聚合 · 编程"
    assert tuple(rss.feed.updated_parsed)[:6] == struct_utc(EPOCH)
    assert tuple(atom.feed.updated_parsed)[:6] == struct_utc(EPOCH)
    assert render_atom("编程", [], opts) == atom_bytes  # no clock in the output


# --------------------------------------------------------------------------- hostile input


def test_hostile_articles_do_not_break_the_feed(
    tmp_path: Path, atom_schema: etree.RelaxNG, caplog: pytest.LogCaptureFixture
) -> None:
    huge = "<p>" + "长" * 1_000_000 + "</p>"
    control = make_article(
        5,
        title="控制\x01字符\x0b标题\x00",
        content="<p>a\x01b\x0bc\ud800d\ufffe</p>",
        summary="s\x1fummary",
        author="坏\x08作者",
        categories=("新媒体", "bad\x0ccat", "", "\x01"),
    )
    no_link = make_article(4, link=None)
    big = make_article(3, content=huge)
    bad = unrenderable(6)
    good = make_article(1)
    articles = [control, no_link, big, bad, good]
    opts = options(tmp_path)

    with caplog.at_level(logging.WARNING, logger="aggregator.publish.feeds"):
        rss_bytes = render_rss("新媒体", articles, opts)
        atom_bytes = render_atom("新媒体", articles, opts)

    etree.fromstring(rss_bytes, etree.XMLParser(huge_tree=True))
    assert_valid_atom(atom_schema, atom_bytes)
    rss = parsed(rss_bytes)
    atom = parsed(atom_bytes)
    survivors = [control, no_link, big, good]
    for feed in (rss, atom):
        assert [e.id for e in feed.entries] == [expected_id(a) for a in survivors]
        first = feed.entries[0]
        assert first.title == "控制字符标题"
        assert first.author == "坏作者"
        assert [t.term for t in first.tags] == ["新媒体", "badcat"]
        assert first.content[0].value == "<p>abcd</p>"
    assert rss.entries[1].get("link") is None
    assert atom.entries[1].get("link") in (None, expected_id(no_link))  # feedparser: id as link
    assert etree.fromstring(atom_bytes).findall(f"{ATOM_NS}entry")[1].find(f"{ATOM_NS}link") is None
    for feed in (rss, atom):
        assert len(feed.entries[2].content[0].value) == len(huge)
    assert "skipping article source_id='ofweek'" in caplog.text
    assert repr(bad.key) in caplog.text


def test_bad_article_frees_its_slot_for_the_next(tmp_path: Path) -> None:
    articles = [unrenderable(9), make_article(1), make_article(2), make_article(3)]
    atom = parsed(render_atom("新媒体", articles, options(tmp_path, feed_size=3)))
    assert [e.title for e in atom.entries] == [make_article(n).title for n in (3, 2, 1)]


def test_hostile_category_name_and_prefix(tmp_path: Path, atom_schema: etree.RelaxNG) -> None:
    opts = options(tmp_path, title_prefix="前缀\x01 ")
    name = "../a/b\x00c"
    atom_bytes = render_atom(name, [make_article(1)], opts)
    assert_valid_atom(atom_schema, atom_bytes)
    assert parsed(atom_bytes).feed.title == "前缀 ../a/bc"
    rss = parsed(render_rss(name, [make_article(1)], opts))
    assert len(rss.entries) == 1


# --------------------------------------------------------------------------- paths and OPML


def test_category_paths_keep_cjk_and_make_names_safe() -> None:
    paths = category_paths("新媒体")
    assert paths.category == "新媒体"
    assert paths.rss == "categories/新媒体/rss.xml"
    assert paths.atom == "categories/新媒体/atom.xml"
    assert paths.json == "categories/新媒体/feed.json"

    hostile = ["a/b", "a\\b", "a\x00b", "..", ".hidden", "x\x07y", "a_b", "", "长" * 200]
    dirs = [category_paths(name).rss.split("/") for name in hostile]
    for parts in dirs:
        assert len(parts) == 3 and parts[0] == "categories" and parts[2] == "rss.xml"
        directory = parts[1]
        assert directory and not directory.startswith(".")
        assert not any(ch in directory for ch in "/\\\x00\x07")
        assert len(directory.encode("utf-8")) <= 255
    assert len({parts[1] for parts in dirs}) == len(hostile)  # no two share files
    assert dirs[6][1] == "a_b"  # an already safe name is kept as is


def test_opml_lists_every_feed_with_encoded_urls(tmp_path: Path) -> None:
    categories = ["新媒体", "高科技行业门户", "编程", "C/C++"]
    root = etree.fromstring(render_opml(categories, options(tmp_path)))
    assert root.tag == "opml" and root.get("version") == "2.0"
    assert root.findtext("head/title")
    groups = root.findall("body/outline")
    assert [g.get("text") for g in groups] == ["RSS 2.0", "Atom 1.0", "JSON Feed 1.1"]
    for group, attr in zip(groups[:2], ("rss", "atom"), strict=True):
        outlines = group.findall("outline")
        kind = {"rss": "RSS", "atom": "Atom"}[attr]
        assert [o.get("text") for o in outlines] == [f"{c} ({kind})" for c in categories]
        assert [o.get("title") for o in outlines] == [f"{c} ({kind})" for c in categories]
        for outline, category in zip(outlines, categories, strict=True):
            relative = getattr(category_paths(category), attr)
            assert outline.get("type") == "rss"
            assert outline.get("xmlUrl") == SITE + "/" + quote(relative)
            assert outline.get("htmlUrl") == SITE + "/"
    # JSON feeds are listed, but with no xmlUrl (nor url) a reader would subscribe to.
    json_outlines = groups[2].findall("outline")
    assert [o.get("text") for o in json_outlines] == [f"{c} (JSON Feed)" for c in categories]
    for outline, category in zip(json_outlines, categories, strict=True):
        assert outline.get("type") == "jsonfeed"
        assert outline.get(JSON_FEED_URL) == SITE + "/" + quote(category_paths(category).json)
        assert outline.get("xmlUrl") is None and outline.get("url") is None
    first = groups[0].find("outline")
    assert first is not None
    assert first.get("xmlUrl") == (
        "https://news.example.org/agg/categories/%E6%96%B0%E5%AA%92%E4%BD%93/rss.xml"
    )
    assert render_opml(categories, options(tmp_path)) == render_opml(categories, options(tmp_path))


def test_opml_outline_titles_are_distinct_also_as_reader_names(tmp_path: Path) -> None:
    # rss2email names a feed by its outline title, every run of characters other than
    # letters, digits, "." and "-" made one "-", and refuses a name twice.
    categories = ["科技", "a b", "a/b", "a", "a!", "编程"]
    titles = outline_titles(categories)
    assert titles[("科技", "rss")] == "科技 (RSS)" and titles[("科技", "atom")] == "科技 (Atom)"
    assert titles[("编程", "rss")] == "编程 (RSS)"
    assert titles[("科技", "json")] == "科技 (JSON Feed)"
    assert len(set(titles.values())) == 3 * len(categories)
    names = {re.sub(r"[^\w.-]+", "-", t).lower() for t in titles.values()}
    assert len(names) == 3 * len(categories)
    for category in ("a b", "a/b", "a", "a!"):  # slugs collide: each gets its own hash
        assert titles[(category, "rss")].startswith(category + " #")
    root = etree.fromstring(render_opml(categories, options(tmp_path)))
    texts = [o.get("title") for o in root.iter("outline") if o.get("xmlUrl")]
    assert texts == [titles[(c, f)] for f in ("rss", "atom") for c in categories]


# --------------------------------------------------------------------------- files


def test_write_atomic_detects_unchanged_files(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "feed.xml"
    assert write_atomic(target, b"one") is True
    assert target.read_bytes() == b"one"
    inode = target.stat().st_ino
    assert write_atomic(target, b"one") is False
    assert target.stat().st_ino == inode  # not replaced
    assert write_atomic(target, b"two") is True
    assert target.read_bytes() == b"two"
    assert target.stat().st_ino != inode  # a new file was moved in
    assert sorted(os.listdir(target.parent)) == ["feed.xml"]  # no temp files left


def test_build_feeds_writes_everything_then_nothing(
    tmp_path: Path, atom_schema: etree.RelaxNG
) -> None:
    opts = options(tmp_path, feed_size=2)
    bad = unrenderable(9)
    by_category = {
        "新媒体": [make_article(1), make_article(2), make_article(3), bad],
        "高科技行业门户": [make_article(2), bad],
    }
    report = write_feeds(by_category, opts, all_categories=["编程", "新媒体"])
    assert isinstance(report, BuildReport)
    names = sorted(["新媒体", "高科技行业门户", "编程"])
    expected = [p for n in names
                for p in (category_paths(n).rss, category_paths(n).atom, category_paths(n).json)]
    assert report.written == (*expected, OPML_FILENAME)
    assert report.unchanged == ()
    assert report.skipped_articles == 1  # the same bad article in two categories

    out = Path(opts.output_dir)
    for name in names:
        paths = category_paths(name)
        rss = parsed((out / paths.rss).read_bytes())
        atom_bytes = (out / paths.atom).read_bytes()
        atom = parsed(atom_bytes)
        assert_valid_atom(atom_schema, atom_bytes)
        wanted = [a.title for a in by_category.get(name, []) if a is not bad]
        wanted = sorted(wanted, reverse=True)[:2]
        assert [e.title for e in rss.entries] == wanted
        assert [e.title for e in atom.entries] == wanted
        assert (out / paths.rss).read_bytes() == render_rss(name, by_category.get(name, []), opts)
    opml = etree.parse(str(out / OPML_FILENAME)).getroot()
    assert [o.get("text") for o in opml.findall("body/outline/outline")] == (
        [f"{n} (RSS)" for n in names] + [f"{n} (Atom)" for n in names]
        + [f"{n} (JSON Feed)" for n in names])

    again = write_feeds(by_category, opts, all_categories=["编程", "新媒体"])
    assert again.written == ()
    assert again.unchanged == report.written

    by_category["编程"] = [make_article(4, categories=("编程",))]
    third = write_feeds(by_category, opts, all_categories=["编程", "新媒体"])
    assert third.written == (category_paths("编程").rss, category_paths("编程").atom,
                             category_paths("编程").json)
    assert OPML_FILENAME in third.unchanged


def test_entry_updated_is_its_date_until_its_content_changes(tmp_path: Path) -> None:
    fresh = make_article(1, first_seen=NOW, updated_at=NOW)
    assert modified_at(fresh) == fresh.date  # an old article first seen today is not "new"
    changed = make_article(1, first_seen=NOW, updated_at=NOW + timedelta(hours=1))
    assert modified_at(changed) == NOW + timedelta(hours=1)
    atom = feedparser.parse(render_atom("新媒体", [fresh], options(tmp_path)))
    assert atom.entries[0].updated_parsed[:6] == fresh.date.timetuple()[:6]
    assert atom.feed.updated_parsed[:6] == fresh.date.timetuple()[:6]


# --------------------------------------------------------------------------- languages


def rss_channel(data: bytes) -> etree._Element:
    channel = etree.fromstring(data).find("channel")
    assert channel is not None
    return channel


XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


def test_a_category_declares_its_sources_language(
    tmp_path: Path, atom_schema: etree.RelaxNG
) -> None:
    opts = options(tmp_path, language="zh-CN",
                   category_languages={"臺灣": "zh-TW", "World": "en", "混合": None})
    articles = [make_article(1)]
    for category, tag in (("臺灣", "zh-TW"), ("World", "en"), ("未配置", "zh-CN")):
        rss = render_rss(category, articles, opts)
        assert rss_channel(rss).findtext("language") == tag, category
        assert parsed(rss).feed.language == tag
        atom = assert_valid_atom(atom_schema, render_atom(category, articles, opts))
        assert atom.get(XML_LANG) == tag, category
    # Sources of different languages: no language at all, and the Atom feed stays valid.
    rss = render_rss("混合", articles, opts)
    assert rss_channel(rss).find("language") is None
    assert "language" not in parsed(rss).feed
    atom = assert_valid_atom(atom_schema, render_atom("混合", articles, opts))
    assert XML_LANG not in atom.attrib
    assert all(XML_LANG not in e.attrib for e in atom.iter())


def test_no_language_anywhere_declares_none(tmp_path: Path, atom_schema: etree.RelaxNG) -> None:
    opts = options(tmp_path, language=None)
    assert rss_channel(render_rss("新媒体", [make_article(1)], opts)).find("language") is None
    atom = assert_valid_atom(atom_schema, render_atom("新媒体", [make_article(1)], opts))
    assert XML_LANG not in atom.attrib


def test_feed_descriptions_are_in_the_feeds_language(tmp_path: Path) -> None:
    opts = options(tmp_path, language="en", site_title="聚合",
                   category_languages={"新闻": "zh-CN", "臺灣": "zh-Hant-TW", "World": "en-GB",
                                       "混合": None})
    wanted = {
        "新闻": "“新闻”分类的最新文章 — 聚合",
        "臺灣": "「臺灣」分類的最新文章 — 聚合",
        "World": "Latest articles in “World” — 聚合",
        "混合": "Latest articles in “混合” — 聚合",  # no common language: the site's words
    }
    for category, description in wanted.items():
        assert rss_channel(render_rss(category, [], opts)).findtext("description") == description
        atom = etree.fromstring(render_atom(category, [], opts))
        assert atom.findtext(f"{ATOM_NS}subtitle") == description
        assert parsed(render_rss(category, [], opts)).feed.subtitle == description


def test_configured_feed_description_replaces_the_default(tmp_path: Path) -> None:
    opts = options(tmp_path, site_title="Site", category_languages={"臺灣": "zh-TW"},
                   feed_description="{site}: {category} ({unknown}) {{category}}")
    # Only {category} and {site} are replaced, once: a category's own braces stay text.
    assert rss_channel(render_rss("臺灣", [], opts)).findtext("description") == (
        "Site: 臺灣 ({unknown}) {臺灣}")
    assert rss_channel(render_rss("{site}", [], opts)).findtext("description") == (
        "Site: {site} ({unknown}) {{site}}")


class MemoryReader:
    """The ArticleReader protocol over a list of articles."""

    def __init__(self, articles: list[Article]) -> None:
        self.articles = articles

    def categories(self) -> list[str]:
        return sorted({c for a in self.articles for c in a.categories})

    def latest_articles(self, category: str | None, limit: int,
                        source_ids: Any = None) -> list[Article]:
        chosen = [a for a in self.articles if category is None or category in a.categories
                  if source_ids is None or a.source_id in source_ids]
        return sorted(chosen, key=lambda a: a.date, reverse=True)[:limit]

    def iter_articles(self, source_id: str | None = None) -> Any:
        return iter(a for a in self.articles if source_id in (None, a.source_id))

    def story_members(self, articles: Any, source_ids: Any = None) -> dict[Any, Any]:
        return {}  # every article is a story of its own

    def category_index(self, category: str, source_ids: Any = None) -> list[ArticleStamp]:
        return [ArticleStamp(source_id=a.source_id, key=a.key, first_seen=a.first_seen,
                             updated_at=a.updated_at, date=a.date, content_hash=a.content_hash)
                for a in self.latest_articles(category, len(self.articles), source_ids)]

    def articles_by_identity(self, identities: Any) -> dict[tuple[str, str], Article]:
        wanted = set(identities)
        return {(a.source_id, a.key): a for a in self.articles if (a.source_id, a.key) in wanted}


def test_config_languages_reach_the_built_feeds_and_page(
    tmp_path: Path, atom_schema: etree.RelaxNG
) -> None:
    from aggregator import publish
    from aggregator.config import parse_config

    settings = parse_config(f"""\
output_dir: {tmp_path / "out"}
site_url: https://news.example.org/
language: zh-tw
sources:
  - {{id: cna, name: 中央社, url: "https://cna.example/rss", categories: [臺灣, 國際]}}
  - {{id: bbc, name: BBC News, url: "https://bbc.example/rss", categories: [World, 國際],
     language: EN-gb}}
""", tmp_path / "aggregator.yaml")
    articles = [make_article(1, source_id="cna", categories=("臺灣", "國際")),
                make_article(2, source_id="bbc", categories=("World", "國際"))]
    publish.build(MemoryReader(articles), settings.feed_options(), settings.source_list())
    out = tmp_path / "out"
    for category, tag in (("臺灣", "zh-TW"), ("World", "en-GB"), ("國際", None)):
        paths = category_paths(category)
        channel = rss_channel((out / paths.rss).read_bytes())
        assert channel.findtext("language") == tag, category
        atom = assert_valid_atom(atom_schema, (out / paths.atom).read_bytes())
        assert atom.get(XML_LANG) == tag, category
    page = (out / "index.html").read_text(encoding="utf-8")
    assert '<html lang="zh-TW">' in page and "分類訂閱" in page and "分类订阅" not in page
    # The index page names each article's source as configured, not by its id.
    assert '<span class="source">中央社</span>' in page
    assert '<span class="source">BBC News</span>' in page
    assert '<span class="source">cna</span>' not in page


# --------------------------------------------------------------------------- links


def feed_links(root: etree._Element) -> dict[str, list[str]]:
    """rel → hrefs of a feed's links (Atom <link>, RSS <atom:link>)."""
    parent = root.find("channel") if root.tag == "rss" else root
    assert parent is not None
    found: dict[str, list[str]] = {}
    for link in parent.findall(f"{ATOM_NS}link"):
        found.setdefault(link.get("rel") or "", []).append(link.get("href") or "")
    return found


def test_hub_and_self_links_in_both_feeds_iff_hub_url(
    tmp_path: Path, atom_schema: etree.RelaxNG
) -> None:
    articles = [make_article(1), make_article(2)]
    with_hub = options(tmp_path, hub_url="https://pubsubhubbub.example/")
    for render, kind in ((render_rss, "rss.xml"), (render_atom, "atom.xml")):
        data = render("新媒体", articles, with_hub)
        links = feed_links(etree.fromstring(data))
        assert links["hub"] == ["https://pubsubhubbub.example/"], kind
        assert links["self"] == [f"{SITE}/categories/{quote('新媒体')}/{kind}"], kind
        assert "hub" not in feed_links(etree.fromstring(render("新媒体", articles,
                                                               options(tmp_path))))
        back = parsed(data)
        assert {link.rel: link.href for link in back.feed.links}["hub"] == (
            "https://pubsubhubbub.example/")
        assert len(back.entries) == 2
    rss_root = rss_channel(render_rss("新媒体", articles, with_hub))
    assert rss_root.findtext("link") == SITE + "/"  # the hub link is not RSS <link>
    assert_valid_atom(atom_schema, render_atom("新媒体", articles, with_hub))


def test_current_feeds_link_the_newest_archive_page(
    tmp_path: Path, atom_schema: etree.RelaxNG
) -> None:
    opts = options(tmp_path)
    page = "categories/新媒体/archive/3.xml"
    write_feeds({"新媒体": [make_article(1)], "编程": []}, opts, prev_archives={"新媒体": page})
    out = Path(opts.output_dir)
    for kind in ("rss", "atom"):
        data = (out / getattr(category_paths("新媒体"), kind)).read_bytes()
        assert feed_links(etree.fromstring(data))["prev-archive"] == [
            f"{SITE}/{quote(page)}"], kind
        other = (out / getattr(category_paths("编程"), kind)).read_bytes()
        assert "prev-archive" not in feed_links(etree.fromstring(other))
    assert_valid_atom(atom_schema, (out / category_paths("新媒体").atom).read_bytes())


def test_an_archive_page_is_a_valid_rfc5005_document(
    tmp_path: Path, atom_schema: etree.RelaxNG
) -> None:
    opts = options(tmp_path, hub_url="https://hub.example/", feed_size=2)
    articles = [make_article(n) for n in (1, 2)]
    first = render_archive("新媒体", 1, "categories/新媒体/archive/1.xml", articles, opts, None)
    second = render_archive("新媒体", 2, "categories/新媒体/archive/2.xml", articles, opts,
                            "categories/新媒体/archive/1.xml")
    for data in (first, second):
        root = assert_valid_atom(atom_schema, data)
        assert root.find("{http://purl.org/syndication/history/1.0}archive") is not None
        assert [e.findtext(f"{ATOM_NS}id") for e in root.findall(f"{ATOM_NS}entry")] == [
            expected_id(articles[1]), expected_id(articles[0])]
    one, two = feed_links(etree.fromstring(first)), feed_links(etree.fromstring(second))
    assert one["current"] == two["current"] == [f"{SITE}/categories/{quote('新媒体')}/atom.xml"]
    assert one["self"] == [f"{SITE}/{quote('categories/新媒体/archive/1.xml')}"]
    assert "prev-archive" not in one and "hub" not in one and "hub" not in two
    assert two["prev-archive"] == one["self"]
    assert "next-archive" not in two
    empty = render_archive("新媒体", 1, "categories/新媒体/archive/1.xml", [], opts, None)
    assert_valid_atom(atom_schema, empty)
