"""The fast parse path (``ingest.fastparse``) against the feedparser path.

Fidelity first: over every document of ../shared/corpus (feedparser's suite, the
feed-rs fixtures), the project's fixtures and the demo feeds, wherever the fast path
accepts a document its feed title, link, warnings and every normalized ``Article``
field equal the feedparser path's; where it declines, feedparser reads the document.
A floor on the share of documents taken fast catches a fast path that declines
everything.  Unit tests name the declines that matter.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urljoin

import pytest
from builders import make_source, rss_items
from hypothesis import example, given, settings
from hypothesis import strategies as st
from test_corpus import CORPUS, fetched_from_file

from aggregator.errors import ParseError
from aggregator.ingest.fastparse_text import absolute, common_date
from aggregator.ingest.normalize import normalize
from aggregator.ingest.parse import parse
from aggregator.records import FetchResult, NormalizeOptions, ParsedFeed, ParserKind

ROOT = Path(__file__).resolve().parents[1]
SEEN = datetime(2024, 1, 1, tzinfo=UTC)
OPTIONS = NormalizeOptions(image_proxy="https://proxy.test/?")
SOURCE = make_source("http://corpus.test/feed.xml", source_id="corpus")
# The share of documents taken fast (printed with pytest -s); the floor sits a little below.
MIN_FAST_SHARE = 0.55  # measured 1253/2182 (57.4%)


def documents() -> list[Path]:
    found: list[Path] = []
    if CORPUS.is_dir():
        found += sorted(p for p in CORPUS.rglob("*") if p.is_file()
                        and p.suffix in (".xml", ".rdf", ".atom"))
    for folder in (ROOT / "tests" / "fixtures", ROOT / "aggregator" / "demo" / "feeds"):
        found += sorted(p for p in folder.rglob("*.xml"))
    return found


def _both(path: Path) -> tuple[ParsedFeed, ParsedFeed] | None:
    fetched = fetched_from_file(path)
    try:
        reference = parse(fetched, SOURCE, fast=False)
    except ParseError:
        reference = None
    try:
        candidate = parse(fetched, SOURCE)
    except ParseError:
        assert reference is None, f"{path}: the fast path raised where feedparser read it"
        return None
    assert reference is not None or candidate.parser is ParserKind.FEEDPARSER, path
    return (reference, candidate) if reference is not None else None


def _articles(parsed: ParsedFeed) -> list[object]:
    out: list[object] = []
    for entry in parsed.entries:
        try:
            out.append(normalize(entry, SOURCE, OPTIONS, seen_at=SEEN))
        except Exception as exc:  # the same refusal on both paths is equality too
            out.append(f"{type(exc).__name__}: {exc}")
    return out


def test_the_fast_path_equals_feedparser_wherever_it_accepts() -> None:
    paths = documents()
    assert paths, "no documents found"
    fast = 0
    mismatches: list[str] = []
    own_declined: list[Path] = []  # the project's fixtures and demo feeds: all fast
    for path in paths:
        pair = _both(path)
        if pair is None:
            continue
        reference, candidate = pair
        if candidate.parser is not ParserKind.FAST:
            if not path.is_relative_to(CORPUS):
                own_declined.append(path)
            continue
        fast += 1
        got = (candidate.title, candidate.link, candidate.encoding, candidate.warnings,
               len(candidate.entries))
        want = (reference.title, reference.link, reference.encoding, reference.warnings,
                len(reference.entries))
        if got != want:
            mismatches.append(f"{path}: feed {got} != {want}")
            continue
        for index, (a, b) in enumerate(
            zip(_articles(candidate), _articles(reference), strict=True)
        ):
            if a != b:
                fields = [f for f in getattr(a, "__dataclass_fields__", {"?": 0})
                          if getattr(a, f, None) != getattr(b, f, None)]
                mismatches.append(f"{path} entry {index}: {fields} "
                                  f"{[(getattr(a, f, a), getattr(b, f, b)) for f in fields]}")
                break
    share = fast / len(paths)
    print(f"\nfast path: {fast}/{len(paths)} documents ({share:.1%})")
    assert not mismatches, f"{len(mismatches)} mismatches:\n" + "\n".join(mismatches[:20])
    assert share >= MIN_FAST_SHARE
    assert not own_declined


def _fetched(document: str, content_type: str = "application/xml") -> FetchResult:
    return FetchResult(source_id="corpus", url="http://corpus.test/feed.xml", status=200,
                       content=document.encode(), headers={"content-type": content_type})


ATOM_HEAD = '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'


def test_a_plain_rss_document_takes_the_fast_path_with_feedparsers_readings() -> None:
    document = rss_items(
        "<item><title>A &amp;lt;b&amp;gt; <![CDATA[x</b>]]></title><guid>http://portal.test/1</guid>"
        "<author>ed@portal.test (编辑部)</author><pubDate>Fri, 21 May 2021 07:25:00 GMT</pubDate>"
        "<description>short</description><content:encoded><![CDATA[<p>long</p>]]>"
        "</content:encoded></item>"
    ).replace("<rss ", '<rss xmlns:content="http://purl.org/rss/1.0/modules/content/" ')
    fast, reference = parse(_fetched(document), SOURCE), parse(_fetched(document), SOURCE,
                                                                fast=False)
    assert fast.parser is ParserKind.FAST and reference.parser is ParserKind.FEEDPARSER
    assert fast.entries == reference.entries
    entry = fast.entries[0]
    assert (entry.link, entry.author, entry.content, entry.summary) == (
        "http://portal.test/1", "编辑部", "<p>long</p>", "short")
    assert entry.published == datetime(2021, 5, 21, 7, 25, tzinfo=UTC)


@pytest.mark.parametrize(
    ("document", "why"),
    [
        (ATOM_HEAD + '<entry><id>x</id><title type="xhtml"><div xmlns="http://www.w3.org/1999/'
         'xhtml">t</div></title></entry></feed>', "xhtml title"),
        (ATOM_HEAD + '<entry><id>x</id><title>t</title><content mode="escaped">&lt;p&gt;'
         "</content></entry></feed>", "Atom 0.3 escaped mode"),
        ('<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY e "x">]><rss version="2.0"><channel>'
         "<item><title>&e;</title></item></channel></rss>", "internal DTD"),
        ('<?xml version="1.0"?><!DOCTYPE rss SYSTEM "http://x.test/rss.dtd"><rss version="2.0">'
         "<channel><item><title>t</title></item></channel></rss>", "external DOCTYPE"),
        ('<rss version="2.0" xmlns:x="http://madeup.test/"><channel><item><x:title>t</x:title>'
         "</item></channel></rss>", "unknown namespace in an item"),
        ('<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/"><channel><item>'
         "<title>a</title><dc:title>b</dc:title></item></channel></rss>", "a second title"),
        ('<rss version="2.0"><channel><item><title>a<b>bold</b></title></item></channel></rss>',
         "markup in a title"),
        ('<rss version="2.0"><channel><item><title>a &nbsp; b</title></item></channel></rss>',
         "an undeclared entity (not well-formed)"),
        ('<rss version="2.0"><channel xml:base="http://b.test/"><item><title>t</title></item>'
         "</channel></rss>", "xml:base and no feed title (feedparser then bases on the subtitle)"),
        ('<rss version="2.0"><channel><item><title>smart &#146;quote</title></item></channel>'
         "</rss>", "a C1 character feedparser maps to windows-1252"),
    ],
    ids=lambda value: value if len(value) < 60 else None,
)
def test_the_fast_path_declines_what_it_is_not_sure_of(document: str, why: str) -> None:
    parsed = parse(_fetched(document), SOURCE)
    assert parsed.parser is ParserKind.FEEDPARSER, why
    assert parsed.entries == parse(_fetched(document), SOURCE, fast=False).entries


def test_a_document_served_as_html_goes_to_feedparser() -> None:
    # feedparser warns about the media type; the fast path does not repeat that warning
    document = rss_items("<item><title>t</title></item>")
    parsed = parse(_fetched(document, "text/html"), SOURCE)
    assert parsed.parser is ParserKind.FEEDPARSER
    assert parsed.warnings == parse(_fetched(document, "text/html"), SOURCE, fast=False).warnings


def test_xml_base_is_resolved_as_feedparser_resolves_it() -> None:
    document = (
        ATOM_HEAD.replace("<feed ", '<feed xml:base="http://base.test/a/" ')
        + '<title>T</title><link href="home"/>'
        '<entry xml:base="sub/"><id>tag:1</id><title>t</title><link href="post.html"/>'
        '<content type="html" xml:base="/c/">&lt;img src="i.png"&gt;</content>'
        '<link rel="enclosure" type="image/png" href="e.png"/></entry></feed>'
    )
    fast, reference = parse(_fetched(document), SOURCE), parse(_fetched(document), SOURCE,
                                                                fast=False)
    assert fast.parser is ParserKind.FAST
    assert (fast.title, fast.link, fast.entries) == (reference.title, reference.link,
                                                     reference.entries)
    entry = fast.entries[0]
    assert (entry.link, entry.base, entry.image_enclosures) == (
        "http://base.test/a/sub/post.html", "http://base.test/c/",
        ("http://base.test/a/sub/e.png",))


def test_the_uri_schemes_a_base_may_have_are_feedparsers() -> None:
    import feedparser.urls

    from aggregator.ingest.fastparse_text import ACCEPTABLE_URI_SCHEMES

    assert frozenset(feedparser.urls.ACCEPTABLE_URI_SCHEMES) == ACCEPTABLE_URI_SCHEMES


@pytest.mark.parametrize(
    ("items", "field", "expected"),
    [
        ('<item><guid isPermaLink="false">http://p.test/1</guid><title>t</title></item>',
         "link", None),
        ("<item><guid>123456</guid><title>t</title></item>", "link", None),
        ("<item><guid>http://p.test/9</guid><title>t</title></item>", "link", "http://p.test/9"),
        ("<item><title>a &lt;b&gt;x&lt;/b&gt;</title></item>", "title_is_html", True),
        ("<item><title>AT&amp;T</title></item>", "title_is_html", False),
        ("<item><title>t</title><description>d</description></item>", "content", "d"),
        ("<item><title>t</title><link>/rel?a=1&amp;b=2</link></item>", "link",
         "http://portal.test/rel?a=1&b=2"),
        ("<item><title>\u00c3\u00a9t\u00c3\u00a9</title></item>", "title", "été"),
    ],
)
def test_feedparsers_readings_are_reproduced(items: str, field: str, expected: object) -> None:
    document = rss_items(items)
    fetched = FetchResult(source_id="corpus", url="http://portal.test/feed.xml", status=200,
                          content=document.encode(), headers={"content-type": "text/xml"})
    fast, reference = parse(fetched, SOURCE), parse(fetched, SOURCE, fast=False)
    assert fast.parser is ParserKind.FAST
    assert fast.entries == reference.entries
    assert getattr(fast.entries[0], field) == expected


ODD_URL_PIECES = [" ", "\t", "\n", "\x01", ";", ";p", "?", "#", "?#", "@", ":", ":8", "[",
                  "HTTP", "新", "%2e", "..", "/./", "\\", "~"]
WRITTEN_URLS = st.tuples(
    st.sampled_from(["http://", "https://", "HTTP://", "ftp://", "//", "http:", ""]),
    st.sampled_from(["p.test", "A.B", "x-1.cn:8080", "a..b", "", "[::1]", "u@h"]),
    st.from_regex(r"(/[a-z0-9%.;=&~-]{0,5}){0,3}(\?[a-z=&;]{0,4})?(#[a-z?]{0,3})?",
                  fullmatch=True),
    st.lists(st.tuples(st.integers(0, 30), st.sampled_from(ODD_URL_PIECES)), max_size=2),
).map(lambda t: functools.reduce(lambda url, odd: url[:odd[0]] + odd[1] + url[odd[0]:], t[3],
                                 t[0] + t[1] + t[2]))


@settings(max_examples=1000, deadline=None)
@example("http://p.test/a;", "http://doc.test/")  # urljoin drops an empty parameter,
@example("http://p.test/a?", "http://doc.test/")  # an empty query or fragment,
@example("http://p.test/a#", "http://doc.test/")
@example("HTTP://p.test/a", "http://doc.test/")  # lower-cases the scheme of the base's,
@example("http://p.test/a", "http://[")  # and refuses a base it cannot read
@given(WRITTEN_URLS, st.sampled_from(["http://doc.test/feeds/a.xml", "https://doc.test/",
                                      "", "http://[", "ftp://f.test/x", "http://doc.test/a;b?c"]))
def test_a_url_resolves_as_urljoin_resolves_it(url: str, base: str) -> None:
    # the fast path's resolution (written URLs returned as they are) is urljoin's reading
    text = url.strip() or None
    try:
        expected = None if text is None else urljoin(base, text)
    except ValueError:
        expected = None
    assert absolute(url, base) == expected


def feedparser_date(raw: str) -> datetime | None:
    """What feedparser reads from an RSS ``<pubDate>`` (its public API), as UTC."""
    import feedparser

    document = (f"<rss version='2.0'><channel><item><title>t</title><pubDate>{raw}</pubDate>"
                "</item></channel></rss>")
    parsed = feedparser.parse(document.encode()).entries[0].get("published_parsed")
    return None if not parsed else datetime(*parsed[:5], min(parsed[5], 59), tzinfo=UTC)


RFC822_DATES = st.builds(
    "{}{:02d} {} {} {:02d}:{:02d}:{:02d} {}".format,
    st.sampled_from(["", "Wed, ", "sat, ", "Mon, ", "Thu,", "Fri , ", "Xyz, ", "Monday, ",
                     "星期三, "]),
    st.integers(0, 32),
    st.sampled_from(["Jan", "feb", "MAR", "Sep", "Oct", "Dec", "January", "Okt"]),
    st.sampled_from(["2025", "1999", "0001", "9999", "25", "20250"]),
    st.integers(0, 25), st.integers(0, 61), st.integers(0, 61),
    st.sampled_from(["+0800", "-0530", "+1400", "GMT", "UT", "UTC", "Z", "z", "EST", "+08:00",
                     "GMT+8", "-0000", "+9999"]),
)
W3DTF_DATES = st.builds(
    "{}-{:02d}-{:02d}{}{:02d}:{:02d}:{:02d}{}{}".format,
    st.sampled_from(["2025", "1999", "0001", "9999", "25"]),
    st.integers(0, 13), st.integers(0, 32), st.sampled_from(["T", "t", " "]),
    st.integers(0, 25), st.integers(0, 61), st.integers(0, 61),
    st.sampled_from(["", ".5", ".123456", ".9999999", ".99999999999999999"]),
    st.sampled_from(["Z", "z", "+08:00", "-05:30", "+0530", "+14:00", "", "-23:59"]),
)


@settings(max_examples=1500, deadline=None)
@example("Wed, 01 Jan 2025 08:00:00 +0800")
@example("2025-01-01T23:59:59.999999-23:59")
@example("Sat, 01 Jan 0001 00:00:00 +0100")  # before the first day: feedparser's None
@given(st.one_of(RFC822_DATES, W3DTF_DATES))
def test_the_common_date_shapes_read_as_feedparser_reads_them(raw: str) -> None:
    common = common_date(raw)
    assert common is None or common == feedparser_date(raw), raw


def test_the_common_date_shapes_are_read_without_feedparser() -> None:
    assert common_date("Wed, 01 Jan 2025 08:00:00 +0800") == datetime(2025, 1, 1, 0, 0, tzinfo=UTC)
    assert common_date("01 jan 2025 08:00:00 GMT") == datetime(2025, 1, 1, 8, 0, tzinfo=UTC)
    assert common_date("2025-01-01T08:00:00.5-05:30") == datetime(2025, 1, 1, 13, 30,
                                                                   tzinfo=UTC)
    assert common_date("2025-01-01t08:00:00z") == datetime(2025, 1, 1, 8, 0, tzinfo=UTC)
    for unusual in ("Wed, 01 January 2025 08:00:00 +0800", "2025-01-01T08:00:00+0800",
                    "2025-01-01", "Wed, 31 Feb 2025 08:00:00 GMT", "  2025-01-01T08:00:00Z"):
        assert common_date(unusual) is None, unusual  # feedparser reads these
