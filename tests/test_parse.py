from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import feedparser
import pytest
from builders import make_source, rss_items
from lxml import etree
from pytest_httpserver import HTTPServer

from aggregator.errors import ParseError
from aggregator.ingest.fetch import fetch
from aggregator.ingest.normalize import normalize
from aggregator.ingest.parse import declared_html_encoding, decode_document, parse
from aggregator.publish.feeds import render_atom, render_rss
from aggregator.records import FeedOptions, FetchOptions, FetchResult, NormalizeOptions

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "encodings"
SOURCE = make_source()


def fetched(
    content: bytes, content_type: str | None = "text/xml", url: str = "http://portal.test/feed.xml"
) -> FetchResult:
    headers = {"Content-Type": content_type} if content_type else {}
    return FetchResult(source_id="portal", url=url, status=200, content=content, headers=headers)


# --- golden encoding fixtures -------------------------------------------------------


def golden_cases() -> list[Path]:
    return sorted(FIXTURES.glob("*.xml"))


def test_there_are_golden_encoding_fixtures() -> None:
    assert len(golden_cases()) >= 6


@pytest.mark.parametrize("path", golden_cases(), ids=lambda p: p.name)
def test_golden_encodings(path: Path) -> None:
    expected = json.loads(path.with_suffix(".expected.json").read_text(encoding="utf-8"))
    content_type = expected.get("content_type", "text/xml")
    feed = parse(fetched(path.read_bytes(), content_type), SOURCE)
    assert feed.title == expected["feed_title"]
    assert [e.title for e in feed.entries] == expected["item_titles"]
    for entry in feed.entries:
        assert "\ufffd" not in (entry.title or "") + (entry.content or "")


# --- encodings ------------------------------------------------------------------------


def test_gb2312_declared_gbk_sent_keeps_gbk_only_characters() -> None:
    doc = rss_items("<item><title>王喆与李堃</title></item>", encoding="gb2312").encode("gbk")
    with pytest.raises(UnicodeDecodeError):
        doc.decode("gb2312")
    feed = parse(fetched(doc, "text/xml"), SOURCE)
    assert feed.entries[0].title == "王喆与李堃"
    assert feed.encoding == "gb18030"


def test_big5_declared_hkscs_and_cp950_characters() -> None:
    hk = rss_items("<item><title>係咪真㗎</title></item>", encoding="big5", title="頻道")
    hk = hk.encode("big5hkscs")
    assert (
        parse(fetched(hk, "application/rss+xml; charset=big5"), SOURCE).entries[0].title
        == "係咪真㗎"
    )
    euro = rss_items("<item><title>歐元€匯率</title></item>", encoding="big5", title="頻道")
    euro = euro.encode("cp950")
    assert parse(fetched(euro, "text/xml"), SOURCE).entries[0].title == "歐元€匯率"


def test_http_charset_beats_a_wrong_declaration_and_override_beats_both() -> None:
    doc = rss_items("<item><title>中文标题</title></item>", encoding="iso-8859-1").encode("gbk")
    assert parse(fetched(doc, "text/xml; charset=gbk"), SOURCE).entries[0].title == "中文标题"
    forced = make_source(SOURCE.url, name="P", encoding="gbk")
    assert parse(fetched(doc, "text/xml; charset=utf-8"), forced).entries[0].title == "中文标题"


def test_undeclared_encoding_is_detected() -> None:
    body = "".join(
        f"<item><title>第{i}条新闻：国务院常务会议研究部署经济工作</title>"
        f"<description>会议指出，要坚持稳中求进工作总基调，推动高质量发展。</description>"
        "</item>"
        for i in range(20)
    )
    doc = ('<?xml version="1.0"?>' + rss_items(body).split("?>", 1)[1]).encode("gbk")
    feed = parse(fetched(doc, "text/xml"), SOURCE)
    assert feed.entries[0].title == "第0条新闻：国务院常务会议研究部署经济工作"


def test_decode_document_prefers_strict_candidates() -> None:
    text, encoding, exact = decode_document("喆".encode("gbk"), declared="gb2312")
    assert (text, encoding, exact) == ("喆", "gb18030", True)
    text, encoding, exact = decode_document("€".encode("cp950"), declared="big5")
    assert (text, encoding, exact) == ("€", "cp950", True)
    text, encoding, exact = decode_document(b"\xef\xbb\xbfabc")
    assert text == "abc" and exact


@pytest.mark.parametrize(
    "content_type", ["text/xml; charset=ISO-8859-1", "text/xml; charset=latin1", "text/xml"]
)
def test_iso_8859_1_is_read_as_windows_1252(content_type: str) -> None:
    # WHATWG: "iso-8859-1" on the web means windows-1252; 0x80-0x9F are its characters
    # (0x93/0x94 curly quotes, 0x80 euro, 0x85 ellipsis), never C1 controls.
    doc = rss_items("<item><title>\u201cCaf\u00e9\u201d \u20ac5\u2026</title></item>",
                    encoding="ISO-8859-1", title="Caf\u00e9").encode("cp1252")
    assert b"\x93" in doc and b"\x80" in doc
    feed = parse(fetched(doc, content_type), SOURCE)
    assert feed.entries[0].title == "\u201cCaf\u00e9\u201d \u20ac5\u2026"
    assert feed.encoding == "cp1252"


def test_latin_1_bytes_undefined_in_windows_1252_stay_latin_1() -> None:
    # 0x81 has no windows-1252 character: the document is read as the Latin-1 it says it is.
    text, encoding, exact = decode_document(b"caf\xe9\x81", http_charset="ISO-8859-1")
    assert (text, encoding, exact) == ("caf\u00e9\x81", "iso8859-1", True)


# --- an HTTP charset that is a server's single-byte default ---------------------------

BIG5_TITLES = ["係咪真㗎", "歐元€匯率"]  # 㗎 is Big5-HKSCS only, € cp950 only (0xA3E1)


def big5_document(codec: str, titles: list[str]) -> bytes:
    items = "".join(f"<item><title>{t}</title></item>" for t in titles)
    doc = rss_items(items, title="頻道", encoding="big5").encode(codec)
    with pytest.raises(UnicodeDecodeError):
        doc.decode("big5")  # really beyond plain Big5: only the supersets read it
    return doc


def test_big5_served_as_iso_8859_1_over_http_is_read_as_big5_with_a_warning(
    httpserver: HTTPServer,
) -> None:
    doc = big5_document("big5hkscs", ["係咪真㗎"])
    httpserver.expect_request("/feed.xml").respond_with_data(
        doc, headers={"Content-Type": "text/xml; charset=ISO-8859-1"}
    )
    source = make_source(httpserver.url_for("/feed.xml"))
    fetched_over_http = fetch(source, FetchOptions(allow_private_networks=True))
    assert fetched_over_http.headers.get("content-type") == "text/xml; charset=ISO-8859-1"
    feed = parse(fetched_over_http, source)
    assert (feed.title, [e.title for e in feed.entries]) == ("頻道", ["係咪真㗎"])
    assert feed.encoding == "big5hkscs"
    assert feed.warnings == (
        "charset: HTTP said ISO-8859-1, the document says big5 and decodes as big5hkscs: "
        "used big5hkscs",
    )


@pytest.mark.parametrize("http_charset", ["ISO-8859-1", "latin1", "us-ascii", "windows-1252"])
def test_big5_document_beats_a_single_byte_http_charset(http_charset: str) -> None:
    doc = big5_document("cp950", ["歐元€匯率"])
    feed = parse(fetched(doc, f"text/xml; charset={http_charset}"), SOURCE)
    assert [e.title for e in feed.entries] == ["歐元€匯率"]
    assert feed.encoding == "cp950"
    [warning] = feed.warnings
    assert f"HTTP said {http_charset}" in warning and "the document says big5" in warning
    assert warning.endswith("used cp950")


@pytest.mark.parametrize(
    ("text", "declared", "codec"),
    [
        ("王喆的新闻", "gb2312", "gbk"),
        ("日本語のニュース", "shift_jis", "shift_jis"),
        ("日本語のニュース", "euc-jp", "euc_jp"),
        ("한국어 뉴스", "euc-kr", "euc_kr"),
    ],
)
def test_other_cjk_declarations_beat_iso_8859_1(text: str, declared: str, codec: str) -> None:
    doc = rss_items(f"<item><title>{text}</title></item>", title="t", encoding=declared)
    feed = parse(fetched(doc.encode(codec), "text/xml; charset=ISO-8859-1"), SOURCE)
    assert feed.entries[0].title == text
    assert len(feed.warnings) == 1 and f"the document says {declared}" in feed.warnings[0]


def test_a_cjk_declaration_that_does_not_decode_leaves_http_charset_with_a_warning() -> None:
    # Really Latin-1 (é is 0xE9, not a Big5 lead byte followed by a trail byte here)
    doc = rss_items("<item><title>café</title></item>", title="t", encoding="big5")
    doc_bytes = doc.encode("latin-1")
    with pytest.raises(UnicodeDecodeError):
        doc_bytes.decode("cp950")
    feed = parse(fetched(doc_bytes, "text/xml; charset=ISO-8859-1"), SOURCE)
    assert feed.entries[0].title == "café"
    assert feed.warnings == (
        "charset: HTTP said ISO-8859-1, the document says big5 but does not decode as big5: "
        "used cp1252",
    )


def test_an_ascii_only_big5_document_needs_no_warning() -> None:
    doc = rss_items("<item><title>plain</title></item>", title="t", encoding="big5").encode()
    feed = parse(fetched(doc, "text/xml; charset=ISO-8859-1"), SOURCE)
    assert feed.entries[0].title == "plain" and feed.warnings == ()


def test_a_latin_1_document_with_a_latin_1_http_charset_is_unchanged_and_not_warned() -> None:
    title = "Ça coûte 5 £ à Zürich — «déjà vu»".replace("—", "-")
    doc = rss_items(f"<item><title>{title}</title></item>", title="Nouvelles",
                    encoding="ISO-8859-1").encode("latin-1")
    assert any(b >= 0xA0 for b in doc) and not any(0x80 <= b < 0xA0 for b in doc)
    feed = parse(fetched(doc, "text/xml; charset=ISO-8859-1"), SOURCE)
    assert (feed.title, feed.entries[0].title) == ("Nouvelles", title)
    assert feed.warnings == ()


def test_a_big5_http_charset_is_believed_without_a_warning() -> None:
    for codec, title in zip(("big5hkscs", "cp950"), BIG5_TITLES, strict=True):
        doc = big5_document(codec, [title])
        feed = parse(fetched(doc, "text/xml; charset=big5"), SOURCE)
        assert [e.title for e in feed.entries] == [title] and feed.warnings == ()


@pytest.mark.parametrize(
    ("content_type", "declared", "body", "warning"),
    [
        # HTTP's charset is wrong and the declaration right
        ("text/xml; charset=utf-8", "gbk", "中文".encode("gbk"),
         "charset: HTTP said utf-8, which does not decode the bytes; "
         "the document says gbk: used gbk"),
        ("text/xml; charset=x-no-such", "gbk", "中文".encode("gbk"),
         "charset: HTTP said x-no-such, which is no encoding Python knows; "
         "the document says gbk: used gbk"),
        # both wrong, and the bytes are UTF-8
        ("text/xml; charset=gbk", "big5", "\u4e2d\u6587\u20ac\u00e9".encode(),
         "charset: HTTP said gbk, which does not decode the bytes; the document says big5, "
         "which does not decode the bytes: used utf-8"),
        # us-ascii declared, UTF-8 sent
        ("text/xml", "us-ascii", "中文".encode(),
         "charset: the document says us-ascii but the bytes are not ASCII; "
         "they decode as utf-8: used utf-8"),
    ],
    ids=["http-wrong", "http-unknown", "both-wrong-utf8", "us-ascii-utf8"],
)
def test_an_encoding_other_than_the_one_declared_is_warned(
    content_type: str, declared: str, body: bytes, warning: str
) -> None:
    doc = f'<?xml version="1.0" encoding="{declared}"?><rss version="2.0"><channel><title>'
    doc_bytes = doc.encode() + body + b"</title></channel></rss>"
    feed = parse(fetched(doc_bytes, content_type), SOURCE)
    assert feed.title == body.decode(feed.encoding)
    assert feed.warnings == (warning,)


def test_a_detected_encoding_is_warned_as_a_guess() -> None:
    title = "条新闻：国务院常务会议研究部署经济工作"
    body = "".join(f"<item><title>第{i}{title}</title></item>" for i in range(20))
    doc = ('<?xml version="1.0"?>' + rss_items(body).split("?>", 1)[1]).encode("gbk")
    feed = parse(fetched(doc, "text/xml"), SOURCE)
    assert feed.entries[0].title == "第0条新闻：国务院常务会议研究部署经济工作"
    assert feed.warnings == (
        f"charset: no encoding declared and the bytes are not utf-8: "
        f"guessed {feed.encoding} from the bytes",
    )


def test_a_configured_encoding_is_not_a_guess() -> None:
    doc = rss_items("<item><title>中文</title></item>", encoding="utf-8").encode("gbk")
    forced = make_source(SOURCE.url, encoding="gbk")
    feed = parse(fetched(doc, "text/xml; charset=ISO-8859-1"), forced)
    assert feed.entries[0].title == "中文" and feed.warnings == ()


def test_a_byte_order_mark_over_a_different_http_charset_is_warned() -> None:
    doc = rss_items("<item><title>中文</title></item>").encode("utf-16")
    feed = parse(fetched(doc, "text/xml; charset=ISO-8859-1"), SOURCE)
    assert feed.entries[0].title == "中文"
    assert feed.warnings == (
        "charset: HTTP said ISO-8859-1, the byte-order mark says utf-16: used utf-16",
    )


# --- dialects -------------------------------------------------------------------------


def test_rss_entry_fields_and_relative_links() -> None:
    doc = rss_items("""<item><title>Hello &amp; welcome</title><link>/news/1.html</link>
      <guid isPermaLink="false">id-1</guid><author>ed@portal.test (编辑部)</author>
      <pubDate>Fri, 21 May 2021 07:25:00 GMT</pubDate>
      <description><![CDATA[<p>Body <img src="/img/1.jpg"></p>]]></description>
      <enclosure url="http://portal.test/e.jpg" type="image/jpeg" length="1"/></item>""")
    entry = parse(fetched(doc.encode()), SOURCE).entries[0]
    assert entry.title == "Hello & welcome"
    assert entry.link == "http://portal.test/news/1.html"
    assert entry.guid == "id-1"
    assert entry.author == "编辑部"
    assert entry.published == datetime(2021, 5, 21, 7, 25, tzinfo=UTC)
    # HTML comes as written; normalize resolves it against ``base``
    assert entry.content == '<p>Body <img src="/img/1.jpg"></p>'
    assert entry.base == "http://portal.test/feed.xml"
    assert entry.image_enclosures == ("http://portal.test/e.jpg",)


def test_relative_urls_resolve_against_xml_base_relative_to_the_document() -> None:
    doc = rss_items("""<item xml:base="/news/2021/"><title>t</title><link>a.html</link>
      <description>&lt;a href="b.html"&gt;b&lt;/a&gt;</description>
      <enclosure url="../img/e.jpg" type="image/jpeg" length="1"/></item>""")
    entry = parse(fetched(doc.encode()), SOURCE).entries[0]
    assert entry.link == "http://portal.test/news/2021/a.html"
    assert entry.base == "http://portal.test/news/2021/"
    assert entry.image_enclosures == ("http://portal.test/news/img/e.jpg",)


def test_content_location_is_the_document_url() -> None:
    doc = rss_items("<item><title>t</title><link>a.html</link></item>")
    result = fetched(doc.encode())
    moved = replace(result, headers={**result.headers,
                                     "content-location": "http://mirror.test/x/feed.xml"})
    entry = parse(moved, SOURCE).entries[0]
    assert entry.link == "http://mirror.test/x/a.html"
    assert entry.base == "http://mirror.test/x/feed.xml"


def test_atom_with_media_thumbnail_and_xml_base() -> None:
    doc = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:media="http://search.yahoo.com/mrss/"
      xml:base="http://blog.test/posts/">
  <title>掘金</title><id>urn:x</id><updated>2021-05-21T07:25:00Z</updated>
  <entry><title type="html">&lt;b&gt;Rust&lt;/b&gt; 入门</title><id>urn:e1</id>
    <link href="rust.html"/><updated>2021-05-21T08:00:00+08:00</updated>
    <author><name>张三</name></author>
    <content type="html">&lt;p&gt;正文&lt;/p&gt;</content>
    <media:thumbnail url="thumb.jpg"/></entry>
</feed>"""
    feed = parse(fetched(doc.encode(), "application/atom+xml"), SOURCE)
    entry = feed.entries[0]
    assert entry.title_is_html and "Rust" in (entry.title or "")
    assert entry.link == "http://blog.test/posts/rust.html"
    assert entry.updated == datetime(2021, 5, 21, 0, 0, tzinfo=UTC)
    assert entry.author == "张三"
    assert entry.content == "<p>正文</p>"
    assert entry.thumbnails == ("http://blog.test/posts/thumb.jpg",)


def test_json_feed() -> None:
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "开源中国",
        "home_page_url": "https://oschina.test/",
        "authors": [{"name": "OSC"}],
        "items": [
            {
                "id": "1",
                "url": "/news/1",
                "title": "发布",
                "content_html": "<p>x</p>",
                "date_published": "2021-05-21T15:25:00+08:00",
                "image": "/i.png",
            },
            {"id": 2, "content_text": "plain\n\ntext", "authors": [{"name": "李四"}]},
        ],
    }
    feed = parse(
        fetched(
            json.dumps(doc).encode(), "application/feed+json", "https://oschina.test/feed.json"
        ),
        SOURCE,
    )
    first, second = feed.entries
    assert feed.title == "开源中国"
    assert first.link == "https://oschina.test/news/1"
    assert first.published == datetime(2021, 5, 21, 7, 25, tzinfo=UTC)
    assert first.author == "OSC" and first.thumbnails == ("https://oschina.test/i.png",)
    assert second.guid == "2" and second.content == "<p>plain</p><p>text</p>"
    assert second.author == "李四"


# --- broken input ------------------------------------------------------------------------


def test_truncated_feed_with_entries_is_read_with_a_warning() -> None:
    doc = rss_items("<item><title>one</title></item><item><title>two</title></item>")
    cut = doc.encode()[: doc.index("</channel>") - 5]
    feed = parse(fetched(cut), SOURCE)
    assert [e.title for e in feed.entries][:1] == ["one"]
    assert feed.warnings and "not well-formed" in feed.warnings[0]


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b"", "text/xml", "empty response body"),
        (b"   \n", "text/xml", "empty response body"),
        (
            b"<!DOCTYPE html><html><head><title>404</title></head><body>nope</body></html>",
            "text/html",
            "HTML page",
        ),
        (b"\x00\x01\x02garbage\xff\xfe", "application/octet-stream", "not a feed"),
        (b'{"hello": "world"}', "application/json", "JSON Feed version"),
        (b"{not json", "application/json", "invalid JSON Feed"),
    ],
)
def test_not_a_feed_is_a_clear_parse_error(body: bytes, content_type: str, reason: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse(fetched(body, content_type), SOURCE)
    assert reason in str(caught.value)
    assert caught.value.source_id == "portal" and "[portal]" in str(caught.value)


def test_xml_illegal_characters_do_not_break_parsing() -> None:
    doc = rss_items("<item><title>a\x01b\x0bc</title></item>").encode()
    feed = parse(fetched(doc), SOURCE)
    assert feed.entries[0].title == "abc"
    assert not feed.warnings


def test_empty_channel_is_a_feed_with_no_entries() -> None:
    feed = parse(fetched(rss_items("").encode()), SOURCE)
    assert feed.entries == () and feed.title == "频道"


def test_feed_document_without_items_is_an_empty_feed_not_an_error() -> None:
    cdf = b'<?xml version="1.0"?>\n<!-- portal -->\n<CHANNEL HREF="http://portal.test/"></CHANNEL>'
    assert parse(fetched(cdf), SOURCE).entries == ()
    with pytest.raises(ParseError, match="no RSS or Atom root element"):
        parse(fetched(b'<?xml version="1.0"?><catalog><book id="1"/></catalog>'), SOURCE)


# --- guids are not links ------------------------------------------------------------------

SEEN = datetime(2024, 1, 1, tzinfo=UTC)
FEEDS = FeedOptions(output_dir="unused", site_url="http://feeds.test/")


@pytest.mark.parametrize("channel", ["<channel>", '<channel xml:base="http://portal.test/news/">'])
def test_a_bare_guid_is_not_made_into_a_link(channel: str) -> None:
    doc = rss_items("<item><guid>123456</guid><title>x</title></item>")
    doc = doc.replace("<channel>", channel)
    [entry] = parse(fetched(doc.encode()), SOURCE).entries
    assert entry.guid == "123456"  # as written, with or without an xml:base
    assert entry.link is None
    article = normalize(entry, SOURCE, NormalizeOptions(), seen_at=SEEN)
    assert article.link is None and article.guid == article.key == "123456"
    data = render_rss("c", [article], FEEDS)
    assert b"123456" not in data and b"portal.test/" not in data.split(b"<item>", 1)[1]
    [item] = etree.fromstring(data).findall("channel/item")
    assert item.find("link") is None
    [generated] = feedparser.parse(data).entries
    assert "link" not in generated
    assert b"123456" not in render_atom("c", [article], FEEDS)


@pytest.mark.parametrize(
    ("item", "link"),
    [
        # A guid that is an absolute web URL is still the permalink it says it is.
        ("<guid>http://portal.test/a/1.html</guid>", "http://portal.test/a/1.html"),
        ('<guid isPermaLink="true">https://portal.test/a/2</guid>', "https://portal.test/a/2"),
        ('<guid isPermaLink="false">http://portal.test/a/3</guid>', None),
        ("<guid>/a/4.html</guid>", None),  # relative: not an absolute URL, not a link
        ("<guid>javascript:alert(1)</guid>", None),
        ("<guid>urn:uuid:1f0c4e44-0000-4000-8000-000000000000</guid>", None),
        # A real link element wins, before or after the guid.
        ("<guid>123</guid><link>/a/5.html</link>", "http://portal.test/a/5.html"),
        ("<link>/a/6.html</link><guid>123</guid>", "http://portal.test/a/6.html"),
        ("<guid>/a/7.html</guid><link>/a/7.html</link>", "http://portal.test/a/7.html"),
    ],
)
def test_a_guid_is_a_link_only_when_it_is_an_absolute_web_url(item: str, link: str | None) -> None:
    doc = rss_items(f"<item><title>x</title>{item}</item>")
    [entry] = parse(fetched(doc.encode()), SOURCE).entries
    assert entry.link == link
    assert normalize(entry, SOURCE, NormalizeOptions(), seen_at=SEEN).link == link


def test_an_atom_id_is_not_made_into_a_link() -> None:
    doc = b"""<feed xmlns="http://www.w3.org/2005/Atom" xml:base="http://portal.test/x/">
      <title>t</title><id>urn:feed</id><updated>2024-01-01T00:00:00Z</updated>
      <entry><id>1</id><title>bare</title><updated>2024-01-01T00:00:00Z</updated></entry>
      <entry><id>http://portal.test/e/2</id><title>web</title>
        <updated>2024-01-01T00:00:00Z</updated></entry>
    </feed>"""
    bare, web = parse(fetched(doc, "application/atom+xml"), SOURCE).entries
    assert (bare.guid, bare.link) == ("1", None)
    assert (web.guid, web.link) == ("http://portal.test/e/2", "http://portal.test/e/2")


# --- HTML pages' declared encoding (kind: html sources decode with the same rules) ------


@pytest.mark.parametrize(
    ("head", "declared"),
    [
        (b'<meta charset="gb2312">', "gb2312"),
        (b"<meta charset=GBK />", "GBK"),
        (b'<meta http-equiv="Content-Type" content="text/html; charset=big5">', "big5"),
        (b"<META HTTP-EQUIV=content-type CONTENT='text/html;charset=gb18030'>", "gb18030"),
        (b'<!-- <meta charset="big5"> --><meta charset="gbk">', "gbk"),  # comments ignored
        (b'<meta name="keywords" content="x"><title>t</title>', None),
        (b'<?xml version="1.0" encoding="gb2312"?><html>', "gb2312"),  # XHTML
        (b"<script>" + b"x" * 6000 + b'</script><meta charset="gbk">', "gbk"),  # after scripts
    ],
)
def test_declared_html_encoding(head: bytes, declared: str | None) -> None:
    page = head if head.startswith(b"<?xml") else b"<html><head>" + head + b"</head></html>"
    assert declared_html_encoding(page) == declared


def test_feedparser_is_imported_only_once_a_document_needs_it() -> None:
    # a parse worker reading the common dialects never loads it (12 MB, 60 ms)
    probe = """
import sys
from aggregator.ingest.parse import parse
from aggregator.records import FetchResult, Source
source = Source(id="s", name="S", url="http://p.test/feed", categories=("c",))
def fetched(body):
    return FetchResult(source_id="s", url=source.url, status=200, content=body,
                       headers={"content-type": "application/rss+xml"})
common = parse(fetched(b"<rss version='2.0'><channel><title>c</title><item><title>t</title>"
                       b"<pubDate>Wed, 01 Jan 2025 08:00:00 +0800</pubDate></item>"
                       b"</channel></rss>"), source)
print(common.parser.value, common.entries[0].published.isoformat(), "feedparser" in sys.modules)
odd = parse(fetched(b"<rss version='2.0'><channel><item><title>t</title><pubDate>1 January"
                    b" 2025</pubDate></item></channel></rss>"), source)
print(odd.entries[0].published.date().isoformat(), "feedparser" in sys.modules)
broken = parse(fetched(b"<rss version='2.0'><channel><item><title>t & u</title></item>"), source)
print(broken.parser.value, broken.entries[0].title)
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0] == "fast 2025-01-01T00:00:00+00:00 False"
    assert out[1] == "2025-01-01 True"  # an unusual date: feedparser's reading
    assert out[2].startswith("feedparser ") and "t & u" in out[2]
