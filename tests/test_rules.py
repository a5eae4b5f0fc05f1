"""Tests for aggregator.rules and for the invariants ``Article`` enforces with them.

Tests that used to build invalid Articles to probe a writer's defence live here now:
such a record cannot be made any more, so no writer needs the defence.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
import yaml
from builders import make_article
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree
from test_corpus import CORPUS

from aggregator import rules
from aggregator.ingest.normalize import normalize
from aggregator.records import NormalizeOptions, ParsedEntry, Source
from aggregator.rules import (
    UNTITLED,
    as_utc,
    check_title,
    fallback_title,
    has_text,
    strip_xml_illegal,
    web_url,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
BEIJING = timezone(timedelta(hours=8))
SOURCE = Source(id="portal", name="Portal", url="http://portal.test/feed.xml", categories=("c",))


# --- the module itself ---------------------------------------------------------------------


def test_rules_is_the_bottom_of_the_import_graph() -> None:
    tree = ast.parse(Path(rules.__file__).read_text(encoding="utf-8"))
    imported = {
        (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported
    assert all(name.split(".")[0] in sys.stdlib_module_names or name == "__future__"
               for name in imported), imported


# --- characters ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a\x00b\x08c\x0bd\x0ce\x1ff", "abcdef"),
        ("del\x7f c1\x80\x85\x9f", "del c1"),
        ("lone\ud800\udfff surrogates", "lone surrogates"),
        ("non\ufffe\uffffchars", "nonchars"),
        ("tab\tlf\ncr\r", "tab\tlf\ncr\r"),  # whitespace, not garbage
        ("中文 㗎 € \ufffd \U0001f600 \xa0", "中文 㗎 € \ufffd \U0001f600 \xa0"),
    ],
)
def test_strip_xml_illegal(text: str, expected: str) -> None:
    assert strip_xml_illegal(text) == expected


@given(st.text())
def test_what_strip_xml_illegal_leaves_lxml_and_yaml_can_carry(text: str) -> None:
    cleaned = strip_xml_illegal(text)
    element = etree.Element("t")
    element.text = cleaned  # lxml raises ValueError for what XML 1.0 cannot carry
    assert etree.fromstring(etree.tostring(element, encoding="UTF-8")).text in (cleaned, None)
    one_line = cleaned.replace("\r", " ").replace("\n", " ")
    assert yaml.safe_load("v: " + yaml.safe_dump(one_line, allow_unicode=True)) == {
        "v": one_line
    }


def test_has_text() -> None:
    assert has_text("a") and has_text(" 中 ")
    assert not has_text("") and not has_text(" \t\n") and not has_text("\x01\x0b \ufffe")


# --- titles --------------------------------------------------------------------------------


def test_fallback_title_is_summary_then_link_then_untitled() -> None:
    assert fallback_title("短摘要", "https://x.test/1") == "短摘要"
    long = "长" * 80
    cut = fallback_title(long, None)
    assert cut == "长" * 49 + "…" and len(cut) == rules.FALLBACK_TITLE_LENGTH
    assert fallback_title("", "https://x.test/1") == "https://x.test/1"
    assert fallback_title("", None) == UNTITLED == "(无标题)"


def test_check_title() -> None:
    assert check_title("标题") == "标题"
    for empty in ("", "   ", "  \x01 ", "\ufffe"):
        with pytest.raises(ValueError, match="title"):
            check_title(empty)
    with pytest.raises(TypeError, match="title"):
        check_title(None)


# --- URLs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://a.example/x?y=1", "https://a.example/x?y=1"),
        ("HTTP://A.EXAMPLE/", "HTTP://A.EXAMPLE/"),
        (" https://a.example/ ", "https://a.example/"),
        ("\u3000https://a.example/\n", "https://a.example/"),
        ("https://a.example/a b", "https://a.example/a b"),  # harmless; browsers encode it
        ("https://a.ex\tample/a\nb\r", "https://a.example/ab"),  # what a browser reads
        ("javascript:alert(1)", None),
        (" javascript:alert(1)", None),
        ("java\nscript:alert(1)", None),
        ("java\tscript:alert(1)", None),
        ("vbscript:msgbox(1)", None),
        ("https://a.example/\x00", None),
        ("https://a.example/\x7f", None),
        ("https://a.example/\x85x", None),
        ("data:text/html,<script>", None),
        ("mailto:a@example.org", None),
        ("ftp://a.example/x", None),
        ("//a.example/x", None),
        ("/x", None),
        ("x.html", None),
        ("https://", None),
        ("https:///path", None),
        ("http://user@/x", None),  # a netloc, but no host
        ("https://:443/", None),
        ("https://[::1", None),
        ("", None),
        (None, None),
    ],
)
def test_web_url(url: str | None, expected: str | None) -> None:
    assert web_url(url) == expected


def documented_web_url(value: str | None) -> str | None:
    """``web_url``'s docstring, step by step, with urlsplit judging every value."""
    if not value:
        return None
    url = "".join(value.strip().split("\t")).replace("\n", "").replace("\r", "")
    if not url or any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in url):
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return None
    return url if parts.scheme.lower() in ("http", "https") and host else None


TRICKY = [" ", "\t", "\n", "\r", "\u3000", "\xa0", "\x85", "\x00", "\x1f", "\x7f", "\u2028",
          "\ud800", "新闻", "\\", "%20", "@", ":", "[", "]", "/", "?", "#", ".", "-", "H"]
WEB_URLS = st.tuples(
    st.sampled_from(["http://", "https://", "HTTP://", "javascript://", "ftp://", "http:/"]),
    st.from_regex(r"[a-z0-9.@:\[\]-]{0,8}", fullmatch=True),  # the host (or what follows //)
    st.sampled_from(["", ":", ":80", ":99999", ":x"]),
    st.from_regex(r"(/[a-z0-9?#=&%.]{0,6}){0,3}", fullmatch=True),
).map("".join)
# a web URL with one odd character somewhere (or none): where a shortcut would go wrong
URLISH = st.one_of(WEB_URLS, st.tuples(WEB_URLS, st.integers(0, 30), st.sampled_from(TRICKY))
                   .map(lambda t: t[0][:t[1]] + t[2] + t[0][t[1]:]))


@settings(max_examples=1000, deadline=None)
@given(st.one_of(URLISH, st.text(max_size=12)))
def test_web_url_judges_every_value_as_its_documented_steps_do(value: str) -> None:
    # the common shape is judged without urlsplit: it must agree with the full steps
    assert web_url(value) == documented_web_url(value)


def test_web_url_agrees_with_its_documented_steps_on_the_corpus_urls() -> None:
    found = 0
    for path in sorted(CORPUS.rglob("*")):
        if path.is_file() and path.suffix in (".xml", ".rdf", ".atom", ".html"):
            text = path.read_bytes().decode("utf-8", "replace")
            for url in re.findall(r"""(?:href|src|url)=["']([^"']*)["']""", text):
                found += 1
                assert web_url(url) == documented_web_url(url), (path, url)
    assert found > 1000


# --- datetimes -----------------------------------------------------------------------------


def test_as_utc_converts_aware_datetimes() -> None:
    assert as_utc(T0) is T0
    local = datetime(2024, 5, 1, 20, 0, 0, 123456, tzinfo=BEIJING)
    converted = as_utc(local)
    assert converted == local and converted.tzinfo is UTC
    assert converted == datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert as_utc(datetime(2024, 5, 1, 12, tzinfo=ZoneInfo("UTC"))).tzinfo is UTC


def test_as_utc_refuses_naive_and_non_datetimes() -> None:
    with pytest.raises(ValueError, match="naive"):
        as_utc(datetime(2024, 5, 1, 12, 0))
    with pytest.raises(TypeError, match="datetime"):
        as_utc("2024-05-01T12:00:00Z")


# --- the Article invariants ----------------------------------------------------------------


@pytest.mark.parametrize("field", ["date", "first_seen", "updated_at"])
def test_article_refuses_naive_datetimes(field: str) -> None:
    # (the writers used to refuse them one by one, or silently take them as UTC)
    with pytest.raises(ValueError, match="naive"):
        make_article(**{field: datetime(2021, 5, 21, 7, 25)})
    with pytest.raises(ValueError, match="naive"):
        replace(make_article(), **{field: datetime(2021, 5, 21, 7, 25)})


def test_article_datetimes_are_converted_to_utc() -> None:
    local = datetime(2021, 5, 21, 15, 25, tzinfo=BEIJING)
    article = make_article(date=local, first_seen=local, updated_at=local)
    for value in (article.date, article.first_seen, article.updated_at):
        assert value.tzinfo is UTC and value == datetime(2021, 5, 21, 7, 25, tzinfo=UTC)


@pytest.mark.parametrize("title", ["", "   ", "  \x01 ", None])
def test_article_refuses_a_title_that_shows_nothing(title: str | None) -> None:
    with pytest.raises((ValueError, TypeError), match="title"):
        make_article(title=title)


def test_normalize_applies_the_title_fallback_the_article_requires() -> None:
    seen = datetime(2024, 1, 1, tzinfo=UTC)
    link = "http://portal.test/a/1.html"
    # (a writer used to fall back to the link itself when a title came out empty)
    blank = ParsedEntry(guid="g", link=link, title="  \x01 ")
    assert normalize(blank, SOURCE, NormalizeOptions(), seen_at=seen).title == link
    summary = ParsedEntry(guid="g", link=link, title="\x0b", summary="<p>只有摘要</p>")
    assert normalize(summary, SOURCE, NormalizeOptions(), seen_at=seen).title == "只有摘要"
    assert normalize(ParsedEntry(), SOURCE, NormalizeOptions(), seen_at=seen).title == UNTITLED


def test_normalize_gives_utc_dates_and_refuses_a_naive_first_seen() -> None:
    local = datetime(2021, 5, 21, 15, 25, tzinfo=BEIJING)
    seen = datetime(2024, 1, 1, 8, 0, tzinfo=BEIJING)
    article = normalize(ParsedEntry(title="t", published=local), SOURCE, NormalizeOptions(),
                        seen_at=seen)
    assert article.date.tzinfo is UTC and article.date == local
    assert article.first_seen.tzinfo is UTC and article.first_seen == seen
    with pytest.raises(ValueError, match="naive"):
        normalize(ParsedEntry(title="t"), SOURCE, NormalizeOptions(),
                  seen_at=datetime(2024, 1, 1))


def test_normalize_keeps_only_web_urls_for_link_and_images() -> None:
    seen = datetime(2024, 1, 1, tzinfo=UTC)
    entry = ParsedEntry(
        title="t", link="javascript:alert(1)",
        content='<p>x</p><img src="http:///no-host.png">',
        thumbnails=("http:no-host.jpg", "data:image/png;base64,AAAA",
                    "https://img.test/ok.jpg"),
    )
    article = normalize(entry, SOURCE, NormalizeOptions(), seen_at=seen)
    assert article.link is None
    assert "no-host" not in article.content
    assert article.headimg == article.thumbnail == "https://img.test/ok.jpg"
