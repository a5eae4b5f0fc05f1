from __future__ import annotations

import html
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nh3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_corpus import CORPUS, fetched_from_file

from aggregator.errors import ParseError
from aggregator.ingest.normalize import (
    choose_date,
    clean_text,
    excerpt,
    normalize,
    plain_title,
    proxied_image,
    sanitize_html,
    sanitized_excerpt,
)
from aggregator.ingest.parse import parse
from aggregator.records import NormalizeOptions, ParsedEntry, Source
from aggregator.rules import UNTITLED, strip_xml_illegal

PROXY = "https://cors.zfour.workers.dev/?"
SEEN = datetime(2021, 5, 22, 8, 0, tzinfo=UTC)
SOURCE = Source(
    id="ofweek-news",
    name="高科技行业门户",
    url="http://www.ofweek.com/rss.xml",
    categories=("新媒体", "高科技行业门户", "新闻"),
)
OPTIONS = NormalizeOptions(image_proxy=PROXY)
IMAGE = "http://images.ofweek.com/Upload/News/2021-05/21/jingwei/1621582693914051820.jpg"


def entry(**fields: object) -> ParsedEntry:
    base: dict[str, object] = {
        "guid": "http://www.ofweek.com/news/1.html",
        "link": "http://www.ofweek.com/news/1.html",
        "title": "来了！2021工业互联网先锋TOP100榜单出炉！",
        "published": datetime(2021, 5, 21, 7, 25, tzinfo=UTC),
        "content": f'<p style="text-indent: 2em; text-align: left;">日前</p>'
        f'<p style="text-align:center"><img src="{IMAGE}"></p>',
    }
    base.update(fields)
    return ParsedEntry(**base)  # type: ignore[arg-type]


def test_seed_like_entry_becomes_the_seed_article() -> None:
    article = normalize(entry(), SOURCE, OPTIONS, seen_at=SEEN)
    assert article.title == "来了！2021工业互联网先锋TOP100榜单出炉！"
    assert article.author == "高科技行业门户"  # no entry author → source name
    assert article.categories == ("新媒体", "高科技行业门户", "新闻")
    assert article.date == datetime(2021, 5, 21, 7, 25, tzinfo=UTC)
    assert article.date_from_feed is True
    assert article.headimg == article.thumbnail == PROXY + IMAGE
    assert f'<img src="{PROXY}{IMAGE}" referrerpolicy="no-referrer">' in article.content
    assert 'style="text-indent:2em;text-align:left"' in article.content
    assert article.comments is False
    assert article.key == "http://www.ofweek.com/news/1.html"
    assert article.first_seen == article.updated_at == SEEN
    assert article.summary == "日前"


@pytest.mark.parametrize(
    "hostile",
    [
        "<script>alert(1)</script>",
        '<img src="x.jpg" onerror="alert(1)">',
        '<a href="javascript:alert(1)">x</a>',
        '<a href="vbscript:msgbox(1)">x</a>',
        '<a href="data:text/html;base64,PHNjcmlwdD4=">x</a>',
        '<iframe src="http://evil/"></iframe>',
        '<object data="x.swf"></object>',
        "<svg><script>alert(1)</script></svg>",
        '<p style="background: url(javascript:alert(1))">x</p>',
        '<p onclick="alert(1)" onmouseover="alert(2)">x</p>',
    ],
)
def test_nothing_executable_survives(hostile: str) -> None:
    cleaned = sanitize_html(hostile, "http://portal.test/", OPTIONS).lower()
    for needle in (
        "<script",
        "alert(",
        "javascript:",
        "vbscript:",
        "data:text",
        "<iframe",
        "<object",
        "<svg",
        "onerror",
        "onclick",
        "onmouseover",
    ):
        assert needle not in cleaned


@pytest.mark.parametrize("reference", ["&#1;", "&#x81;", "&#X8D;", "&#0011;", "&#xFFFE;"])
def test_a_character_reference_never_brings_back_an_illegal_character(reference: str) -> None:
    # nh3 (HTML's rules) decodes these references into the characters themselves
    article = normalize(entry(content=f"<p>a{reference}b</p>", summary=None,
                              title=f"t{reference}"), SOURCE, OPTIONS, seen_at=SEEN)
    for text in (article.content, article.summary, article.title):
        assert text == strip_xml_illegal(text), text
    assert article.content.startswith("<p>a") and article.summary.startswith("a")


def test_urls_become_absolute_and_http_images_are_proxied() -> None:
    html = '<a href="/a/2.html">x</a><img src="img/1.jpg"><img src="https://secure.test/2.png">'
    cleaned = sanitize_html(html, "http://portal.test/news/", OPTIONS)
    assert 'href="http://portal.test/a/2.html"' in cleaned
    assert f'src="{PROXY}http://portal.test/news/img/1.jpg"' in cleaned
    assert 'src="https://secure.test/2.png"' in cleaned  # scope "http" leaves https alone
    assert cleaned.count('referrerpolicy="no-referrer"') == 2


def test_content_resolves_against_the_entry_base_not_its_link() -> None:
    item = entry(content='<a href="b.html">b</a><img src="../i/1.jpg"><a href="#top">t</a>',
                 link="http://portal.test/elsewhere/page.html",
                 base="http://portal.test/news/2021/feed.xml")
    content = normalize(item, SOURCE, OPTIONS, seen_at=SEEN).content
    assert 'href="http://portal.test/news/2021/b.html"' in content
    assert f'src="{PROXY}http://portal.test/news/i/1.jpg"' in content
    assert 'href="http://portal.test/news/2021/feed.xml#top"' in content


@pytest.mark.parametrize("base", ["javascript://x/%0aalert(1)/", "javascript:alert(1)//",
                                  "data:text/html,x/", "file:///etc/"])
def test_a_hostile_xml_base_never_makes_links_executable(base: str) -> None:
    item = entry(content='<a href="x.html">a</a><img src="i.png"><q cite="c">q</q>',
                 link="http://portal.test/news/1.html", base=base)
    content = normalize(item, SOURCE, OPTIONS, seen_at=SEEN).content
    assert 'href="http://portal.test/news/x.html"' in content  # the entry's link instead
    assert f'src="{PROXY}http://portal.test/news/i.png"' in content
    for scheme in ("javascript:", "data:", "file:"):
        assert scheme not in content
    for hostile in (base, "not a url"):  # sanitize_html itself, given such a base
        cleaned = sanitize_html('<a href="x.html">a</a><img src="i.png"><q cite="c">q</q>',
                                hostile, OPTIONS)
        assert "href=" not in cleaned and "src=" not in cleaned and "cite=" not in cleaned


def test_relative_urls_are_dropped_without_a_usable_base() -> None:
    cleaned = sanitize_html('<a href="b.html">b</a><img src="i.jpg">', "not a url", OPTIONS)
    assert "b.html" not in cleaned and "i.jpg" not in cleaned and ">b</a>" in cleaned


def test_proxy_scope_all_and_no_proxy() -> None:
    everything = replace(OPTIONS, image_proxy_scope="all")
    assert proxied_image("https://a.test/i.png", everything) == PROXY + "https://a.test/i.png"
    assert proxied_image(PROXY + IMAGE, OPTIONS) == PROXY + IMAGE  # never twice
    assert proxied_image(IMAGE, NormalizeOptions()) == IMAGE


def test_headimg_falls_back_to_media_thumbnail_then_default_image() -> None:
    no_img = entry(content="<p>text</p>", thumbnails=("http://img.test/t.jpg",))
    assert (
        normalize(no_img, SOURCE, OPTIONS, seen_at=SEEN).headimg == PROXY + "http://img.test/t.jpg"
    )
    enclosure = entry(content="<p>text</p>", image_enclosures=("https://img.test/e.jpg",))
    assert normalize(enclosure, SOURCE, OPTIONS, seen_at=SEEN).headimg == "https://img.test/e.jpg"
    bare = entry(content="<p>text</p>")
    with_default = replace(OPTIONS, default_images=("https://site.test/default.png",))
    assert (
        normalize(bare, SOURCE, with_default, seen_at=SEEN).thumbnail
        == "https://site.test/default.png"
    )
    assert normalize(bare, SOURCE, OPTIONS, seen_at=SEEN).headimg is None


def test_titles_are_plain_text_with_entities_decoded_once() -> None:
    assert plain_title("<b>Rust</b> &amp; Go", True) == "Rust & Go"
    assert plain_title("A &amp;quot;quoted&amp;quot; word", False) == "A &quot;quoted&quot; word"
    assert plain_title("  多行\n标题\t ", False) == "多行 标题"
    assert plain_title("x\x01y\x0bz", False) == "xyz"


def test_entry_without_title_date_or_link_still_makes_a_valid_article() -> None:
    bare = ParsedEntry(content="<p>只有正文的条目，没有标题也没有日期。</p>")
    article = normalize(bare, SOURCE, OPTIONS, seen_at=SEEN)
    assert article.title == "只有正文的条目，没有标题也没有日期。"
    assert article.date == SEEN and article.date_from_feed is False
    assert article.key.startswith("sha256:")
    empty = normalize(ParsedEntry(), SOURCE, OPTIONS, seen_at=SEEN)
    assert empty.title == UNTITLED


def test_fallback_date_does_not_change_the_hash_between_polls() -> None:
    bare = ParsedEntry(guid="g1", title="t", content="<p>c</p>")
    first = normalize(bare, SOURCE, OPTIONS, seen_at=SEEN)
    later = normalize(bare, SOURCE, OPTIONS, seen_at=SEEN + timedelta(hours=1))
    assert first.content_hash == later.content_hash
    changed = normalize(replace(bare, content="<p>d</p>"), SOURCE, OPTIONS, seen_at=SEEN)
    assert changed.content_hash != first.content_hash


def test_dates_fall_back_and_future_dates_are_not_believed() -> None:
    published = datetime(2021, 1, 1, tzinfo=UTC)
    updated = datetime(2021, 2, 1, tzinfo=UTC)
    assert choose_date(published, updated, SEEN) == (published, True)
    assert choose_date(None, updated, SEEN) == (updated, True)
    assert choose_date(None, None, SEEN) == (SEEN, False)
    assert choose_date(datetime(9999, 1, 1, tzinfo=UTC), None, SEEN) == (SEEN, False)
    old = datetime(1900, 1, 1, tzinfo=UTC)
    assert choose_date(old, None, SEEN) == (old, True)


def test_overlong_guids_are_hashed_into_a_bounded_key() -> None:
    long_guid = "urn:x:" + "a" * 5000
    article = normalize(entry(guid=long_guid), SOURCE, OPTIONS, seen_at=SEEN)
    assert article.guid == long_guid
    assert article.key.startswith("sha256:") and len(article.key) == 7 + 64
    again = normalize(entry(guid=long_guid, title="changed"), SOURCE, OPTIONS, seen_at=SEEN)
    assert again.key == article.key


def test_entry_author_wins_over_source_name() -> None:
    assert normalize(entry(author="张喆"), SOURCE, OPTIONS, seen_at=SEEN).author == "张喆"


def test_excerpt_is_plain_and_bounded() -> None:
    text = excerpt("<p>" + "字" * 500 + "</p><script>x()</script>", 200)
    assert len(text) == 200 and text.endswith("…") and "<" not in text
    assert excerpt("<p>a &amp; b</p>", 200) == "a & b"


def whole_text_excerpt(fragment: str, length: int) -> str:
    """The definition ``excerpt`` must agree with: the text of the whole fragment."""
    cleaned = nh3.clean(strip_xml_illegal(fragment), tags=set(),
                        clean_content_tags={"script", "style"})
    text = clean_text(html.unescape(cleaned))
    return text if len(text) <= length else text[: length - 1].rstrip() + "…"


HTML_PIECES = st.sampled_from(["<p>", "</p>", "<b>", "<img src='x.jpg'>", "<script>", "</script>",
                               "&amp;", "&#x5b57;", "&lt;", "<!--", "-->", " ", "\n", "字", "ab"])


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(st.one_of(HTML_PIECES, st.text(max_size=8)), max_size=80),
       length=st.integers(1, 40))
def test_excerpt_of_a_prefix_equals_the_excerpt_of_the_whole(pieces: list[str],
                                                             length: int) -> None:
    fragment = "".join(pieces)
    assert excerpt(fragment, length) == whole_text_excerpt(fragment, length)



def test_a_list_of_default_images_gives_each_article_always_the_same_one() -> None:
    images = tuple(f"https://site.test/default-{n}.png" for n in range(4))
    options = replace(OPTIONS, default_images=images)
    picked = {}
    for n in range(40):
        bare = entry(content=f"<p>text {n}</p>", guid=f"https://a.test/{n}")
        first = normalize(bare, SOURCE, options, seen_at=SEEN).headimg
        again = normalize(bare, SOURCE, options, seen_at=SEEN + timedelta(days=1)).headimg
        assert first == again and first in images
        picked[n] = first
    assert set(picked.values()) == set(images)  # 40 articles spread over all four


def corpus_fragments() -> list[tuple[str, str]]:
    """(document, HTML) of every entry's content and summary: ../shared/corpus, the
    project's fixtures and the demo feeds."""
    root = Path(__file__).resolve().parents[1]
    paths = sorted(p for p in CORPUS.rglob("*") if p.is_file()
                   and p.suffix in (".xml", ".rdf", ".atom", ".json")) if CORPUS.is_dir() else []
    for folder in (root / "tests" / "fixtures", root / "aggregator" / "demo" / "feeds"):
        paths += sorted(folder.rglob("*.xml"))
    out = []
    for path in paths:
        try:
            feed = parse(fetched_from_file(path), SOURCE)
        except ParseError:
            continue
        out += [(path.name, f) for e in feed.entries for f in {e.content, e.summary} if f]
    return out


def test_the_excerpt_of_the_sanitized_output_equals_the_excerpt_of_the_html() -> None:
    """Differential: over every entry HTML of the corpus and the fixtures, the excerpt
    read from nh3's output (one nh3 call) equals ``excerpt`` of the HTML (two calls)."""
    fragments = corpus_fragments()
    assert len(fragments) > 50
    for name, fragment in fragments:
        cleaned = sanitize_html(fragment, "http://corpus.test/x/", OPTIONS)
        for length in (1, 5, 20, 80, 200, 1000):
            assert sanitized_excerpt(cleaned, length) == excerpt(fragment, length), name


PREFIX_PIECES = st.sampled_from([
    "<p>", "</p>", "<b>", '<img src="x.jpg" alt="a>b">', '<a title="&quot;<>" href="/a">',
    "</a>", "<script>", "</script>", "<style>", "</style>", "&amp;", "&nbsp;", "&#x5b57;",
    "&lt;", "&amp;lt;", "&", "<!--", "-->", "<table>", "<td>", " ", "\n\t", "字", "漢字 ",
    "ab", "<xmp>", "</xmp>", "<br>", "\x01"])


@settings(max_examples=400, deadline=None)
@given(pieces=st.lists(st.one_of(PREFIX_PIECES, st.text(max_size=6)), max_size=120),
       length=st.integers(1, 60))
def test_the_excerpt_of_a_cut_sanitized_output_equals_the_whole_excerpt(
        pieces: list[str], length: int) -> None:
    """Tags cut in the middle (with ``>`` in attribute values), entities cut, CJK,
    whitespace runs: the prefix read equals ``excerpt`` of the HTML."""
    fragment = "".join(pieces)
    cleaned = sanitize_html(fragment, "http://portal.test/", OPTIONS)
    assert sanitized_excerpt(cleaned, length) == whole_text_excerpt(fragment, length)


def test_normalize_reads_the_summary_when_it_differs_from_the_content() -> None:
    item = entry(summary="<p>摘要 only</p>", content="<p>正文 only</p>")
    article = normalize(item, SOURCE, OPTIONS, seen_at=SEEN)
    assert article.summary == "摘要 only" and "正文" in article.content
    same = normalize(entry(summary=None, content="<p>a &amp; b</p>"), SOURCE, OPTIONS,
                     seen_at=SEEN)
    assert same.summary == "a & b"
