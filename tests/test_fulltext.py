"""Full text: an article page of a Chinese portal → its main content, then the article
showing it, sanitized and image-proxied as feed content is.  Pages are values here
(``FetchResult``); the poll fetching them from a loopback portal is in test_poll.py."""

from __future__ import annotations

import html
import re

import pytest
from builders import (
    ARTICLE_PARAGRAPHS,
    PORTAL_BOILERPLATE,
    make_article,
    make_source,
    portal_article_page,
)

from aggregator.errors import ParseError
from aggregator.ingest.fulltext import (
    MIN_TEXT,
    article_with_full_text,
    decode_page,
    extract_main_content,
)
from aggregator.records import FetchResult, NormalizeOptions

PAGE_URL = "http://www.portal.test/tech/2024/05/21/1.html"
PROXY = NormalizeOptions(image_proxy="https://proxy.test/?")


def page(content: bytes, content_type: str = "text/html", url: str = PAGE_URL) -> FetchResult:
    headers = {"Content-Type": content_type} if content_type else {}
    return FetchResult(source_id="portal", url=url, status=200, content=content, headers=headers)


def gbk_page(**kwargs: object) -> FetchResult:
    """The portal's page as it is served: GBK bytes, ``<meta charset="gb2312">``, and no
    charset in the HTTP Content-Type."""
    return page(portal_article_page(**kwargs).encode("gbk"))  # type: ignore[arg-type]


def text_of(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def test_the_article_is_found_whole_and_nothing_around_it() -> None:
    fragment = extract_main_content(gbk_page(), make_source())

    assert text_of(fragment) == " ".join(ARTICLE_PARAGRAPHS)
    assert [b for b in PORTAL_BOILERPLATE if b in fragment] == []


def test_a_gb2312_page_without_an_http_charset_is_decoded_by_its_meta() -> None:
    served = gbk_page()
    assert "charset" not in served.headers["content-type"]

    assert ARTICLE_PARAGRAPHS[2] in decode_page(served, make_source())  # “…” are GBK-only


def test_the_source_encoding_overrides_the_server() -> None:
    unmarked = portal_article_page().replace('<meta charset="gb2312">', "").encode("gbk")
    lying = page(unmarked, "text/html; charset=iso-8859-1")

    assert ARTICLE_PARAGRAPHS[0] in decode_page(lying, make_source(encoding="gbk"))
    assert ARTICLE_PARAGRAPHS[0] not in decode_page(lying, make_source())


def test_lazy_images_become_proxied_sources_and_the_first_is_the_headimg() -> None:
    article = article_with_full_text(make_article(), gbk_page(), make_source(), PROXY)

    sources = re.findall(r'<img[^>]*\ssrc="([^"]+)"', article.content)
    assert sources == ["https://proxy.test/?http://www.portal.test/upload/2024/05/a1.jpg",
                       "https://proxy.test/?http://img.portal.test/upload/2024/05/a2.jpg",
                       "https://proxy.test/?http://img.portal.test/upload/a3.png"]
    assert article.content.count('referrerpolicy="no-referrer"') == 3
    assert "grey.gif" not in article.content and "loading.png" not in article.content
    assert "data-src" not in article.content  # sanitized like feed content
    assert article.headimg == article.thumbnail == sources[0]


def test_the_feed_identity_and_summary_are_kept() -> None:
    feed = make_article("k9", summary="摘要", content="<p>摘要</p>", content_hash="feed-hash")

    article = article_with_full_text(feed, gbk_page(), make_source(), PROXY)

    assert (article.key, article.content_hash, article.summary) == ("k9", "feed-hash", "摘要")
    assert ARTICLE_PARAGRAPHS[4] in article.content


def test_an_article_without_a_summary_gets_an_excerpt_of_its_page() -> None:
    article = article_with_full_text(make_article(summary=""), gbk_page(), make_source(),
                                     NormalizeOptions(summary_length=20))

    assert article.summary == ARTICLE_PARAGRAPHS[0][:19] + "…"


def test_the_content_selector_picks_exactly_its_block() -> None:
    source = make_source(content_selector="div.comments")  # what readability would drop

    fragment = extract_main_content(gbk_page(), source)

    assert fragment.startswith('<div class="comments" id="comments">')
    assert PORTAL_BOILERPLATE[12] in fragment and PORTAL_BOILERPLATE[13] in fragment
    assert ARTICLE_PARAGRAPHS[0] not in fragment and PORTAL_BOILERPLATE[18] not in fragment


def test_the_content_selector_keeps_every_match_in_order_and_styles_survive() -> None:
    source = make_source(content_selector="div.article-content p")

    article = article_with_full_text(make_article(), gbk_page(), source, PROXY)

    assert text_of(article.content) == " ".join(ARTICLE_PARAGRAPHS)
    assert 'style="text-indent:2em"' in article.content
    assert article.headimg == "https://proxy.test/?http://www.portal.test/upload/2024/05/a1.jpg"


@pytest.mark.parametrize(("served", "selector", "why"), [
    (page(b"\x89PNG\r\n", "image/png"), None, "not an HTML page (image/png)"),
    (page("<html><body><p>请登录后阅读全文</p></body></html>".encode()), None,
     "no main content found"),
    (page(portal_article_page().encode("gbk")), "div.nothing-here",
     "content_selector 'div.nothing-here' matched nothing on the page"),
    (page(portal_article_page().encode("gbk")), "div[", "invalid content_selector 'div['"),
    (page(b"   "), None, "empty page"),
])
def test_a_page_without_an_article_is_an_error_saying_why(
    served: FetchResult, selector: str | None, why: str
) -> None:
    with pytest.raises(ParseError) as raised:
        extract_main_content(served, make_source(content_selector=selector))

    assert raised.value.source_id == "portal"
    assert why in raised.value.reason


def test_a_too_short_result_names_its_length() -> None:
    short = "<html><body><div><p>" + "字" * (MIN_TEXT - 1) + "</p></div></body></html>"

    with pytest.raises(ParseError, match=f"{MIN_TEXT - 1} characters"):
        extract_main_content(page(short.encode()), make_source())


def test_an_xhtml_page_with_an_xml_declaration_is_read() -> None:
    xhtml = ('<?xml version="1.0" encoding="gbk"?>\n'
             + portal_article_page(charset="gbk")).encode("gbk")

    fragment = extract_main_content(page(xhtml, "application/xhtml+xml"), make_source())

    assert text_of(fragment) == " ".join(ARTICLE_PARAGRAPHS)
