"""Tests for aggregator.publish.jsonfeed: JSON Feed 1.1 files next to the RSS and Atom.

Every feed.json is written by the real ``write_feeds``, validated against a JSON Schema
(draft 2020-12) written from the JSON Feed 1.1 spec (tests/data/jsonfeed-1.1.schema.json,
with stdlib checks of its ``uri`` and ``date-time`` formats) and compared item by item
with the Atom feed of the same build, as feedparser and lxml read it (feedparser 6.0
reads no JSON Feed, so the JSON side is read with ``json``).  The served files go
through the project's real server on 127.0.0.1.
"""

from __future__ import annotations

import gzip
import html
import json
import re
import tempfile
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import builders
import feedparser
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker
from lxml import etree
from served_site import build_site

from aggregator.publish.feeds import entry_id, write_feeds
from aggregator.publish.jsonfeed import JSON_FEED_VERSION
from aggregator.publish.opml import JSON_FEED_URL
from aggregator.publish.paths import OPML_FILENAME, category_paths
from aggregator.records import Article, FeedOptions
from aggregator.service.http import FeedServer, make_app

SCHEMA = Path(__file__).resolve().parent / "data" / "jsonfeed-1.1.schema.json"
ATOM = "{http://www.w3.org/2005/Atom}"
MEDIA = "{http://search.yahoo.com/mrss/}"
SITE = "https://news.example.org/agg/"
BASE = datetime(2021, 5, 21, 7, 25, tzinfo=UTC)

# RFC 3986 URI: a scheme, then only unreserved, reserved and percent characters.
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
FORMATS = FormatChecker(formats=())


@FORMATS.checks("uri")
def _is_uri(value: object) -> bool:
    return not isinstance(value, str) or bool(_URI.match(value))


@FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    datetime.fromisoformat(value.replace("z", "Z"))  # a real date and time, not 02-30
    return bool(_RFC3339.match(value))


@cache
def validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FORMATS)


def errors(document: Any) -> list[str]:
    return [error.message for error in validator().iter_errors(document)]


def make_article(n: int, **overrides: Any) -> Article:
    """Article number ``n`` of category 新媒体: a higher ``n`` is newer."""
    date, url = BASE + timedelta(hours=n), f"https://ofweek.example/{n}.html"
    return builders.make_article(**{
        "source_id": "ofweek", "key": url, "guid": f"guid-{n}", "link": url,
        "title": f"工业互联网先锋榜 {n}", "author": f"作者{n}", "date": date,
        "categories": ("新媒体", "高科技"), "content": f"<p>正文 {n} &amp; <b>more</b></p>",
        "summary": f"摘要 {n} <not a tag>", "first_seen": date + timedelta(minutes=5),
        "updated_at": date + timedelta(minutes=5), "content_hash": f"hash{n}",
        "headimg": f"https://img.example/{n}.jpg", **overrides,
    })


def options(out: Path, **overrides: Any) -> FeedOptions:
    fields: dict[str, Any] = {"output_dir": str(out), "site_url": SITE, "feed_size": 50,
                              "title_prefix": "聚合 · ", "language": "zh-CN"}
    fields.update(overrides)
    return FeedOptions(**fields)


def load(out: Path, category: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((out / category_paths(category).json).read_bytes())
    assert errors(document) == []
    return document


def assert_same_as_atom(out: Path, category: str) -> dict[str, Any]:
    """The category's feed.json says what its atom.xml says, entry by entry, in order."""
    document = load(out, category)
    atom_bytes = (out / category_paths(category).atom).read_bytes()
    parsed = feedparser.parse(atom_bytes)
    assert not parsed.bozo, parsed.get("bozo_exception")
    root = etree.fromstring(atom_bytes)
    entries = root.findall(f"{ATOM}entry")
    items = document["items"]
    assert [i["id"] for i in items] == [e.id for e in parsed.entries] \
        == [e.findtext(f"{ATOM}id") for e in entries]
    assert document["title"] == parsed.feed.title == root.findtext(f"{ATOM}title")
    assert document["description"] == root.findtext(f"{ATOM}subtitle")
    for item, fp, entry in zip(items, parsed.entries, entries, strict=True):
        assert item["title"] == entry.findtext(f"{ATOM}title")
        links = [link.get("href") for link in entry.findall(f"{ATOM}link")
                 if link.get("rel", "alternate") == "alternate"]  # no rel: alternate
        assert ([item["url"]] if "url" in item else []) == links
        if links:
            assert fp.link == item["url"]
        # The very same RFC 3339 strings, and the same instants as feedparser reads them.
        assert item["date_published"] == entry.findtext(f"{ATOM}published")
        assert item["date_modified"] == entry.findtext(f"{ATOM}updated")
        published = datetime.fromisoformat(item["date_published"]).astimezone(UTC)
        assert tuple(fp.published_parsed)[:6] == published.timetuple()[:6]
        modified = datetime.fromisoformat(item["date_modified"]).astimezone(UTC)
        assert tuple(fp.updated_parsed)[:6] == modified.timetuple()[:6]
        names = [a.findtext(f"{ATOM}name") for a in entry.findall(f"{ATOM}author")]
        assert [a["name"] for a in item.get("authors", [])] == names
        assert item.get("tags", []) == [c.get("term") for c in entry.findall(f"{ATOM}category")]
        assert item.get("content_html") == entry.findtext(f"{ATOM}content")
        summary = entry.findtext(f"{ATOM}summary")
        assert item.get("summary") == (None if summary is None else html.unescape(summary))
        thumbnail = entry.find(f"{MEDIA}thumbnail")
        assert item.get("image") == (None if thumbnail is None else thumbnail.get("url"))
    return document


# --------------------------------------------------------------------------- the schema


def test_the_schema_refuses_what_the_spec_forbids() -> None:
    item = {"id": "1", "content_text": "x"}
    good = {"version": JSON_FEED_VERSION, "title": "t", "items": [item],
            "_ext": {"about": "https://x.example/"}, "hubs": [{"type": "WebSub",
                                                               "url": "https://hub.example/"}]}
    assert errors(good) == []
    bad: list[dict[str, Any]] = [
        {"title": "t", "items": []},  # no version
        {**good, "version": "https://jsonfeed.org/version/1"},
        {"version": JSON_FEED_VERSION, "items": []},  # no title
        {"version": JSON_FEED_VERSION, "title": "t"},  # no items
        {**good, "items": [{"content_text": "x"}]},  # an item without id
        {**good, "items": [{"id": 1, "content_text": "x"}]},  # a number, not a string
        {**good, "items": [{"id": "1"}]},  # neither content_html nor content_text
        {**good, "items": [{**item, "url": "not a url"}]},
        {**good, "items": [{**item, "date_published": "2024-05-01 12:00"}]},
        {**good, "items": [{**item, "date_modified": "2024-02-30T12:00:00Z"}]},
        {**good, "items": [{**item, "authors": [{}]}]},  # an author must say something
        {**good, "items": [{**item, "authors": ["名字"]}]},  # authors are objects
        {**good, "feed_url": "/relative/feed.json"},
        {**good, "hubs": [{"type": "WebSub"}]},
        {**good, "updated": "2024-05-01T12:00:00Z"},  # not in the spec, no underscore
        {**good, "items": [{**item, "_": {}}]},  # an underscore alone is no extension
        {**good, "language": "zh CN"},
    ]
    for document in bad:
        assert errors(document), document


# --------------------------------------------------------------------------- contents


def test_every_category_gets_a_valid_json_feed_equal_to_its_atom(tmp_path: Path) -> None:
    built = build_site(tmp_path, "http://127.0.0.1:8080/news/")
    for category in built.categories:
        document = assert_same_as_atom(built.output_dir, category)
        assert len(document["items"]) == len(built.by_category[category])
    # The hostile article's title is data, kept exactly (JSON escapes nothing it need not).
    hostile = load(built.output_dir, "财经")["items"]
    assert "<script>window.__pwned = 1</script>" in hostile[0]["title"]


def test_feed_fields(tmp_path: Path) -> None:
    out = tmp_path / "out"
    articles = [make_article(1), make_article(3), make_article(2)]
    write_feeds({"新媒体": articles}, options(out, site_title="聚合站"))
    document = load(out, "新媒体")
    raw = (out / category_paths("新媒体").json).read_bytes()
    assert raw.startswith(b'{\n  "version": ')  # first, for readers that sniff it
    assert document["version"] == "https://jsonfeed.org/version/1.1"
    assert document["title"] == "聚合 · 新媒体"
    assert document["home_page_url"] == SITE
    assert document["feed_url"] == SITE + "categories/%E6%96%B0%E5%AA%92%E4%BD%93/feed.json"
    assert document["description"] == "“新媒体”分类的最新文章 — 聚合站"
    assert document["language"] == "zh-CN"
    assert document["authors"] == [{"name": "聚合站"}]
    assert "hubs" not in document
    newest = make_article(3)
    first = document["items"][0]
    assert first == {
        "id": entry_id(newest),
        "url": newest.link,
        "title": newest.title,
        "content_html": newest.content,
        "summary": newest.summary,
        "image": newest.headimg,
        "date_published": "2021-05-21T10:25:00+00:00",
        "date_modified": "2021-05-21T10:25:00+00:00",
        "authors": [{"name": "作者3"}],
        "tags": ["新媒体", "高科技"],
    }
    assert [i["title"] for i in document["items"]] == [make_article(n).title for n in (3, 2, 1)]
    assert_same_as_atom(out, "新媒体")


def test_websub_hub_and_languages(tmp_path: Path) -> None:
    out = tmp_path / "out"
    opts = options(out, hub_url="https://hub.example/websub",
                   category_languages={"World": "en", "混合": None})
    write_feeds({"World": [make_article(1)]}, opts, all_categories=["混合"])
    world = load(out, "World")
    assert world["hubs"] == [{"type": "WebSub", "url": "https://hub.example/websub"}]
    assert world["language"] == "en"
    assert world["description"] == "Latest articles in “World” — 聚合"
    mixed = load(out, "混合")
    assert "language" not in mixed  # its sources differ: none declared, as in RSS and Atom
    assert mixed["items"] == []
    assert mixed["hubs"] == world["hubs"]


def test_articles_without_content_say_what_they_have(tmp_path: Path) -> None:
    out = tmp_path / "out"
    linked = make_article(2, content="", summary="只有摘要", headimg=None, author="",
                          categories=())
    bare = make_article(1, content="", link=None, summary="摘要 <b>")
    write_feeds({"新媒体": [linked, bare]}, options(out))
    first, second = load(out, "新媒体")["items"]
    # With a link, Atom shows the link; JSON Feed needs content: the summary as text.
    assert first["content_text"] == "只有摘要" and "content_html" not in first
    assert "image" not in first and "authors" not in first and "tags" not in first
    # Without one, both carry the escaped summary as HTML content.
    assert second["content_html"] == "摘要 &lt;b&gt;" and "url" not in second
    assert_same_as_atom(out, "新媒体")


def test_same_selection_as_rss_and_atom(tmp_path: Path) -> None:
    out = tmp_path / "out"
    bad = make_article(9, key="https://ofweek.example/9\ud800")  # no UTF-8 form: no entry
    articles = [make_article(n) for n in range(1, 6)] + [bad]
    report = write_feeds({"新媒体": articles}, options(out, feed_size=3))
    assert report.skipped_articles == 1
    paths = category_paths("新媒体")
    assert report.written == (paths.rss, paths.atom, paths.json, OPML_FILENAME)
    document = assert_same_as_atom(out, "新媒体")
    assert [i["id"] for i in document["items"]] == [entry_id(make_article(n)) for n in (5, 4, 3)]
    rss = feedparser.parse((out / paths.rss).read_bytes())
    assert [e.id for e in rss.entries] == [i["id"] for i in document["items"]]


# --------------------------------------------------------------------------- stability


def test_ids_stay_and_files_stay_untouched_across_builds(tmp_path: Path) -> None:
    out = tmp_path / "out"
    opts = options(out)
    articles = [make_article(n) for n in range(1, 4)]
    write_feeds({"新媒体": articles}, opts)
    path = out / category_paths("新媒体").json
    before = path.read_bytes()
    inode = path.stat().st_ino
    again = write_feeds({"新媒体": list(reversed(articles))}, opts)
    assert category_paths("新媒体").json in again.unchanged
    assert path.read_bytes() == before and path.stat().st_ino == inode
    # Article 2's content changes later: same id, a later date_modified, a new file.
    changed = make_article(2, content="<p>改</p>", updated_at=BASE + timedelta(days=3))
    third = write_feeds({"新媒体": [articles[0], changed, articles[2]]}, opts)
    assert category_paths("新媒体").json in third.written
    old = {i["id"]: i for i in json.loads(before)["items"]}
    new = {i["id"]: i for i in load(out, "新媒体")["items"]}
    assert set(old) == set(new)
    item = new[entry_id(changed)]
    assert item["content_html"] == "<p>改</p>"
    assert item["date_modified"] == "2021-05-24T07:25:00+00:00"
    assert item["date_published"] == old[entry_id(changed)]["date_published"]


@settings(max_examples=25, deadline=None)
@given(order=st.permutations(list(range(1, 7))), size=st.integers(min_value=0, max_value=7))
def test_identical_input_gives_byte_identical_files(order: list[int], size: int) -> None:
    articles = [make_article(n) for n in order]
    with tempfile.TemporaryDirectory() as first, tempfile.TemporaryDirectory() as second:
        write_feeds({"新媒体": articles}, options(Path(first), feed_size=size))
        write_feeds({"新媒体": list(reversed(articles))}, options(Path(second), feed_size=size))
        relative = category_paths("新媒体").json
        data = (Path(first) / relative).read_bytes()
        assert data == (Path(second) / relative).read_bytes()
        items = json.loads(data)["items"]
        wanted = sorted(order, reverse=True)[:size]
        assert [i["id"] for i in items] == [entry_id(make_article(n)) for n in wanted]


# --------------------------------------------------------------------------- serving


def test_served_as_json_feed_with_validators_and_gzip(tmp_path: Path) -> None:
    with FeedServer(make_app(tmp_path / "out", "http://placeholder/")) as server:
        built = build_site(tmp_path, server.url)
        for category in built.categories:
            relative = category_paths(category).json
            url = server.url + quote(relative)
            plain = requests.get(url, headers={"Accept-Encoding": "identity"}, timeout=10)
            assert plain.status_code == 200
            assert plain.headers["Content-Type"] == "application/feed+json; charset=utf-8"
            assert plain.content == (built.output_dir / relative).read_bytes()
            assert json.loads(plain.content)["feed_url"] == url
            etag = plain.headers["ETag"]
            again = requests.get(url, headers={"Accept-Encoding": "identity",
                                               "If-None-Match": etag}, timeout=10)
            assert again.status_code == 304 and again.content == b""
            zipped = requests.get(url, headers={"Accept-Encoding": "gzip"}, timeout=10,
                                  stream=True)
            assert zipped.headers["Content-Encoding"] == "gzip"
            assert zipped.headers["Vary"] == "Accept-Encoding"
            assert gzip.decompress(zipped.raw.read()) == plain.content
            zipped_etag = zipped.headers["ETag"]
            assert zipped_etag != etag
            not_modified = requests.get(url, headers={"Accept-Encoding": "gzip",
                                                      "If-None-Match": zipped_etag}, timeout=10)
            assert not_modified.status_code == 304
        # feeds.opml lists every JSON feed, and each of those addresses is served.
        opml = etree.fromstring((built.output_dir / OPML_FILENAME).read_bytes())
        listed = [o.get(JSON_FEED_URL) for o in opml.iter("outline") if o.get(JSON_FEED_URL)]
        assert listed == [server.url + quote(category_paths(c).json) for c in built.categories]
        for url in listed:
            assert urlsplit(url).path.endswith("/feed.json")
            response = requests.get(url, timeout=10)
            assert response.headers["Content-Type"].startswith("application/feed+json")


def test_our_own_json_feed_reader_reads_it_back_as_the_atom_says(tmp_path: Path) -> None:
    """feedparser 6.0 reads no JSON Feed; the project's own JSON Feed parser (what a poll
    of another aggregator's feed.json uses) is the reader that reads it back here."""
    from aggregator.ingest.parse import parse
    from aggregator.records import FetchResult

    built = build_site(tmp_path, "http://127.0.0.1:8080/news/")
    for category in built.categories:
        paths = category_paths(category)
        url = "http://127.0.0.1:8080/news/" + quote(paths.json)
        fetched = FetchResult(source_id="self", url=url, status=200,
                              content=(built.output_dir / paths.json).read_bytes(),
                              headers={"Content-Type": "application/feed+json"})
        parsed = parse(fetched, builders.make_source(url, "self"))
        atom = feedparser.parse((built.output_dir / paths.atom).read_bytes())
        assert [e.guid for e in parsed.entries] == [e.id for e in atom.entries]
        assert [e.title for e in parsed.entries] == [e.title for e in atom.entries]
        assert [e.link for e in parsed.entries] == [e.get("link") for e in atom.entries]
        assert [e.published for e in parsed.entries] == [
            datetime(*e.published_parsed[:6], tzinfo=UTC) for e in atom.entries]
        assert parsed.entries, category
