"""Tests for aggregator.stories: when two portals' articles are one story."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import sys
import unicodedata
from urllib.parse import urlsplit

import pytest
from builders import make_article
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator import stories
from aggregator.stories import (
    MAX_DISTANCE,
    canonical_link,
    distance,
    fingerprint,
    link_key,
    plain_text,
    same_story,
    title_digest,
    title_key,
)

TEXT = ("新华社北京5月21日电 国务院总理今天主持召开国务院常务会议，部署进一步推动工业互联网"
        "发展，促进制造业数字化转型。会议指出，工业互联网是新一代信息技术与制造业深度融合的"
        "产物，要加快网络、平台和安全体系建设。会议要求，各地区各部门要抓好政策落实，支持"
        "中小企业上云用平台，培育一批系统解决方案供应商。")
OTHER = ("本报讯 市气象台今天发布暴雨蓝色预警信号，预计未来十二小时内本市大部分地区将出现"
         "大到暴雨，局部地区伴有雷电和短时强降水。交通部门提醒市民出行注意安全，尽量避开低洼"
         "路段，学校和幼儿园应做好防汛准备。气象专家表示，本轮降雨过程将持续到本周末。")


@pytest.mark.parametrize(("url", "expected"), [
    ("https://news.example.com/a/1.html?utm_source=weibo&utm_medium=social&utm_campaign=x",
     "https://news.example.com/a/1.html"),
    ("https://news.example.com/a/1.html?spm=a2c4g.11186623.0.0&id=7",
     "https://news.example.com/a/1.html?id=7"),
    ("http://news.example.com/a/1.html?from=timeline&isappinstalled=0",
     "https://news.example.com/a/1.html"),
    ("https://news.example.com/a/1.html?fbclid=IwAR0abc&gclid=xyz#comments",
     "https://news.example.com/a/1.html"),
    ("HTTP://News.Example.COM:80/a/1.html", "https://news.example.com/a/1.html"),
    ("https://news.example.com:443/a/1.html#top", "https://news.example.com/a/1.html"),
    ("https://news.example.com:8443/a/1.html", "https://news.example.com:8443/a/1.html"),
    # the parameters that say which article it is stay, in one order
    ("https://news.example.com/view.php?b=2&a=1&UTM_Term=x", "https://news.example.com/view.php?a=1&b=2"),
    # non-ASCII paths compare as their percent-encoding
    ("https://news.example.com/新闻/1.html", "https://news.example.com/%E6%96%B0%E9%97%BB/1.html"),
    ("mailto:editor@example.com", "mailto:editor@example.com"),
])
def test_canonical_link_removes_tracking_fragments_and_spelling(url: str, expected: str) -> None:
    assert canonical_link(url) == expected


def documented_link_key(url: str) -> str | None:
    """``link_key``'s docstring: a digest of the canonical link, None for a front page."""
    if not url.strip():
        return None
    canonical = canonical_link(url)
    with contextlib.suppress(ValueError):  # what urlsplit cannot read is no front page
        parts = urlsplit(canonical)
        if parts.scheme == "https" and parts.path in ("", "/") and not parts.query:
            return None
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


LINK_ODDITIES = [" ", "\t", "\u3000", "A", "Z", ".", ":", ":80", ":443", "?", "?a=1", "#f",
                 "%41", "%", "新", "^", "|", "\\", "@", "/", "//", "?utm_source=x", "'", "~"]
LINKS = st.tuples(
    st.sampled_from(["http://", "https://", "HTTP://", "ftp://", "http:/", ""]),
    st.one_of(st.sampled_from(["p.test", "news.example.com", "x-1.cn", "A.test", "a..b", "a.", ""]),
              st.from_regex(r"[a-zA-Z0-9.-]{0,8}", fullmatch=True)),  # the host
    # a path of what quote keeps, and of some it escapes
    st.from_regex(r"(/[a-z0-9%:@!$&'()*+,;=._~^|\[\]{}` -]{0,6}){0,3}", fullmatch=True),
    st.lists(st.tuples(st.integers(0, 30), st.sampled_from(LINK_ODDITIES)), max_size=2),
).map(lambda t: functools.reduce(lambda url, odd: url[:odd[0]] + odd[1] + url[odd[0]:], t[3],
                                 t[0] + t[1] + t[2]))


@settings(max_examples=1000, deadline=None)
@given(LINKS)
def test_link_key_is_the_digest_of_the_canonical_link_for_every_link(url: str) -> None:
    # the common shape is keyed without canonical_link: it must agree with it
    assert link_key(url) == documented_link_key(url)


def test_link_key_is_one_per_canonical_link_and_none_for_front_pages() -> None:
    assert link_key("http://p.test/1.html?utm_source=a") == link_key("https://P.test/1.html#x")
    assert link_key("https://p.test/1.html") != link_key("https://p.test/2.html")
    assert link_key("https://p.test/1.html?id=1") != link_key("https://p.test/1.html?id=2")
    # a feed linking every entry to its home page must not make them one story
    assert link_key("https://p.test/") is None and link_key("http://p.test") is None
    assert link_key("https://p.test/?utm_source=x") is None
    assert link_key(None) is None and link_key("  ") is None
    assert link_key("http://[") == link_key(" http://[ ")  # not a URL: keyed, never raising


@pytest.mark.parametrize(("a", "b"), [
    ("国务院部署推动工业互联网发展", "【独家】国务院：部署推动“工业互联网”发展！"),
    ("国务院部署推动工业互联网发展", " 国务院 部署 推动 工业互联网 发展 "),
    ("国务院部署推动工业互联网发展", "[快讯]（图）国务院部署推动工业互联网发展。"),
    ("Ｆｕｌｌ－ｗｉｄｔｈ ＡＩ 新闻", "full-width ai 新闻"),  # NFKC and case folding
])
def test_title_key_ignores_portal_noise(a: str, b: str) -> None:
    assert title_key(a) == title_key(b) and title_digest(a) == title_digest(b)


def test_title_key_keeps_what_tells_stories_apart() -> None:
    assert title_key("国务院部署推动工业互联网发展") != title_key("国务院部署推动消费互联网发展")
    assert title_key("【独家】") == "独家"  # a title that is only a tag keeps it
    assert title_digest("！？…") is None


def test_fingerprint_is_near_for_small_edits_and_far_for_other_stories() -> None:
    base = fingerprint(TEXT)
    assert base is not None and len(base) == 16
    edited = fingerprint(TEXT.replace("，", ", ") + "另据报道，相关部门将于近期出台配套措施。")
    shortened = fingerprint(TEXT.replace("会议要求，各地区各部门要抓好政策落实，", ""))
    assert edited is not None and distance(base, edited) <= MAX_DISTANCE
    assert shortened is not None and distance(base, shortened) <= MAX_DISTANCE
    other = fingerprint(OTHER)
    assert other is not None and distance(base, other) > MAX_DISTANCE
    assert fingerprint("短讯") is None  # too little text to be evidence
    assert fingerprint(TEXT) == base  # stable: stored values compare across processes


def test_same_story_needs_the_link_or_title_and_text() -> None:
    link, title, text = link_key("https://a.test/1.html"), title_digest("标题"), fingerprint(TEXT)
    near = fingerprint(TEXT + "补充一句。")
    assert same_story(link, None, None, link, None, None)
    assert same_story(None, title, text, link_key("https://b.test/9.html"), title, near)
    assert not same_story(None, title, text, None, title_digest("别的标题"), near)
    assert not same_story(None, title, text, None, title, fingerprint(OTHER))
    assert not same_story(None, title, None, None, title, None)  # a title alone is not enough


def test_plain_text_drops_tags_scripts_and_entities() -> None:
    assert plain_text("<p>甲&amp;乙</p><script>x()</script><p>丙</p>").split() == ["甲&乙", "丙"]


def test_an_article_derives_its_keys_from_its_fields() -> None:
    article = make_article("k", link="https://a.test/1.html?utm_source=x", title="【独家】标题",
                           content=f"<p>{TEXT}</p>")
    assert article.story_link == link_key("https://a.test/1.html")
    assert article.story_title == title_digest("标题")
    assert article.story_print == fingerprint(TEXT)
    summary_only = make_article("s", content="", summary=TEXT)
    assert summary_only.story_print == fingerprint(TEXT)


def test_tracking_parameters_cover_the_common_trackers() -> None:
    for name in ("spm", "from", "fbclid", "gclid", "msclkid", "yclid", "igshid", "mc_cid"):
        assert name in stories.TRACKING_PARAMETERS


def test_a_fingerprint_never_changes_for_the_same_text() -> None:
    """Stored fingerprints are compared with new ones: the value of a text is fixed until
    a migration recomputes the stored ones (these were computed when 0007 introduced the
    tabulation hash; the first implementation gave 98c81b11383b5a3a)."""
    text = "工业互联网先锋榜单出炉，百家企业上榜。The quick brown fox jumps over the lazy dog 2021."
    assert fingerprint(text) == "781b529e00ad69db"
    assert fingerprint(TEXT) == "ff4c688b33cd9206"
    assert fingerprint("हिन्दी में समाचार लेख का पाठ है जो काफी लंबा होना चाहिए ताकि फिंगरप्रिंट बने") \
        == "4d724b788068f21e"  # marks (the vowel signs) are letters too


def reference_letters(text: str) -> str:
    """The rule as the docstring states it: categories L, N and M are kept."""
    return "".join(ch for ch in text if unicodedata.category(ch)[0] in "LNM")


def test_title_keys_keep_exactly_letters_digits_and_marks_of_every_code_point() -> None:
    """The folding keeps what Unicode calls letters, numbers and marks — checked over every
    code point of this Python's Unicode database, in chunks that mix categories."""
    for start in range(0, sys.maxunicode + 1, 4096):
        chunk = "".join(chr(c) for c in range(start, min(start + 4096, sys.maxunicode + 1))
                        if not 0xD800 <= c <= 0xDFFF)
        folded = unicodedata.normalize("NFKC", "x" + chunk).casefold()
        assert title_key("x" + chunk) == reference_letters(folded), hex(start)


def test_a_fingerprint_weighs_every_occurrence_of_a_gram() -> None:
    repeated = TEXT + "会议要求" * 30
    assert distance(fingerprint(repeated) or "", fingerprint(TEXT) or "") > 0
    assert fingerprint(TEXT + " ") == fingerprint(TEXT)  # whitespace is not text
