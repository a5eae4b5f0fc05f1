"""Pages without a feed (``kind: html``): list pages read with CSS selectors.

The fixture portal (tests/fixtures/portal) is served by pytest-httpserver on loopback as
``text/html`` without a charset, in the encoding its ``<meta>`` names (and the superset
real portals send): GBK behind ``gb2312``, Big5-HKSCS behind ``big5``.  Everything is
fetched by the real fetch stage and parsed by ``parse.parse``, which hands these sources
to ``scrape``; the CLI tests poll and build the way an operator does.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import feedparser
import pytest
from builders import make_source
from click.testing import CliRunner
from pytest_httpserver import HTTPServer

from aggregator.cli import cli
from aggregator.config import load_config
from aggregator.errors import ConfigError, ParseError
from aggregator.ingest.extract import parse_and_normalize
from aggregator.ingest.fetch import fetch
from aggregator.ingest.parse import parse
from aggregator.ingest.scrape import check_page_sources
from aggregator.records import (
    FetchOptions,
    FetchResult,
    NormalizeOptions,
    PageSelectors,
    Source,
    SourceKind,
)

PORTAL = Path(__file__).resolve().parent / "fixtures" / "portal"
GBK_SELECTORS = PageSelectors(item="div.list li.item", title="h3 a", link="h3 a@href",
                              date="span.time", timezone="+08:00", summary="p.desc",
                              image="img@src")
BIG5_SELECTORS = PageSelectors(item="table.news tr:not(.head)", title="td.title a",
                               link="td.title a@href", date="td.date",
                               date_format="%Y/%m/%d", timezone="Asia/Hong_Kong")
GBK_TITLES = ["朱镕基谈制造业： 工业互联网的下一个十年", "王喆：堃字号企业数字化转型",
              "陶喆出席人工智能大会 & 发表演讲", "芯片短缺下的汽车行业"]
BIG5_TITLES = ["係咪真㗎？市民熱議新政策", "颱風「彩雲」逼近 天文台發出三號風球"]


def page_bytes(name: str, encoding: str) -> bytes:
    return (PORTAL / name).read_text(encoding="utf-8").encode(encoding)


@pytest.fixture()
def portal(httpserver: HTTPServer) -> HTTPServer:
    """The fixture pages as the portal sends them: ``text/html``, no charset."""
    httpserver.expect_request("/news/list.html").respond_with_data(
        page_bytes("gbk-list.html", "gbk"), content_type="text/html")
    httpserver.expect_request("/hk/list.html").respond_with_data(
        page_bytes("big5-list.html", "big5hkscs"), content_type="text/html")
    return httpserver


def html_source(url: str, page: PageSelectors, **overrides: object) -> Source:
    return make_source(url, kind=SourceKind.HTML, page=page, **overrides)


def fetched_page(source: Source) -> FetchResult:
    fetched = fetch(source, FetchOptions(allow_private_networks=True))
    assert fetched.headers["content-type"] == "text/html"  # nothing but the page says GBK
    return fetched


def page(body: str, page: PageSelectors, *, date_header: str | None = None) -> FetchResult:
    """An inline list page (UTF-8) as fetched from http://portal.test/list/index.html."""
    headers = {"content-type": "text/html; charset=utf-8"}
    if date_header:
        headers["date"] = date_header
    return FetchResult(source_id="portal", url="http://portal.test/list/index.html",
                       status=200, content=f"<html><body>{body}</body></html>".encode(),
                       headers=headers)


# --- decoding and links ------------------------------------------------------------------


def test_a_gb2312_page_sent_as_gbk_keeps_its_gbk_only_characters(portal: HTTPServer) -> None:
    source = html_source(portal.url_for("/news/list.html"), GBK_SELECTORS)
    raw = fetched_page(source).content
    with pytest.raises(UnicodeDecodeError):
        raw.decode("gb2312")  # 镕, 喆 and 堃 are GBK-only
    feed = parse(fetched_page(source), source)
    assert [e.title for e in feed.entries] == GBK_TITLES  # nav, sidebar, footer: none
    assert feed.encoding == "gb18030"
    assert feed.title == "行业新闻_新闻中心_高科技行业门户"
    assert not any("charset" in w for w in feed.warnings)
    assert all("\ufffd" not in (e.title or "") + (e.summary or "") for e in feed.entries)


def test_links_and_images_are_absolute_against_the_page_url(portal: HTTPServer) -> None:
    source = html_source(portal.url_for("/news/list.html"), GBK_SELECTORS)
    feed = parse(fetched_page(source), source)
    root = portal.url_for("/")
    assert [e.link for e in feed.entries] == [
        f"{root}news/2021-05/ART-8420-1.html",  # root-relative
        f"{root}news/ART-8420-2.html",  # relative to the page
        f"{root}news/ART-8420-3.html?from=list",
        f"{root}news/2021-05/ART-8420-5.html",
    ]
    assert feed.entries[0].thumbnails == (f"{root}images/2021/0521/thumb1.jpg",)
    assert [e.thumbnails for e in feed.entries[1:]] == [(), (), ()]
    assert {e.base for e in feed.entries} == {portal.url_for("/news/list.html")}


def test_a_big5_page_with_a_base_href(portal: HTTPServer) -> None:
    source = html_source(portal.url_for("/hk/list.html"), BIG5_SELECTORS)
    feed = parse(fetched_page(source), source)
    assert [e.title for e in feed.entries] == BIG5_TITLES
    assert feed.encoding == "big5hkscs"  # declared big5, sent with an HKSCS character
    assert [e.link for e in feed.entries] == [
        portal.url_for("/hk/articles/20210521-001.html"),
        portal.url_for("/hk/articles/20210520-007.html"),
    ]
    assert [e.published for e in feed.entries] == [  # midnight in Hong Kong
        datetime(2021, 5, 20, 16, 0, tzinfo=UTC), datetime(2021, 5, 19, 16, 0, tzinfo=UTC)]
    assert feed.warnings == ()


def test_the_source_encoding_overrides_the_meta_charset() -> None:
    body = '<meta charset="utf-8"><ul><li><a href="/1">新闻一</a></li></ul>'
    fetched = FetchResult(source_id="portal", url="http://portal.test/list.html", status=200,
                          content=f"<html><head>{body}</head></html>".encode("gbk"))
    selectors = PageSelectors(item="li", title="a", link="a")
    source = html_source("http://portal.test/list.html", selectors, encoding="gbk")
    assert [e.title for e in parse(fetched, source).entries] == ["新闻一"]


# --- the fields --------------------------------------------------------------------------


def test_dates_in_several_forms_are_read_in_the_page_timezone(portal: HTTPServer) -> None:
    source = html_source(portal.url_for("/news/list.html"), GBK_SELECTORS)
    feed = parse(fetched_page(source), source)
    assert [e.published for e in feed.entries] == [
        datetime(2021, 5, 21, 0, 30, tzinfo=UTC),  # 2021-05-21 08:30 at +08:00
        datetime(2021, 5, 20, 16, 0, tzinfo=UTC),  # 2021年05月21日
        datetime(2021, 5, 20, 10, 5, tzinfo=UTC),  # 发布时间：2021年5月20日 18:05
        None,  # no date on the page: normalize dates it when first seen
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2021-05-21 08:30", datetime(2021, 5, 21, 0, 30, tzinfo=UTC)),
        ("2021/05/21", datetime(2021, 5, 20, 16, 0, tzinfo=UTC)),
        ("2021.05.21", datetime(2021, 5, 20, 16, 0, tzinfo=UTC)),
        ("2021年5月21日 08:30", datetime(2021, 5, 21, 0, 30, tzinfo=UTC)),
        ("2021-05-21T08:30:00Z", datetime(2021, 5, 21, 8, 30, tzinfo=UTC)),  # its own zone
        ("Fri, 21 May 2021 08:30:00 GMT", datetime(2021, 5, 21, 8, 30, tzinfo=UTC)),
        ("[05-21 08:30]", datetime(2021, 5, 21, 0, 30, tzinfo=UTC)),  # the page's year
        ("5月21日", datetime(2021, 5, 20, 16, 0, tzinfo=UTC)),
        ("12-31 23:00", datetime(2020, 12, 31, 15, 0, tzinfo=UTC)),  # not 7 months ahead
        ("昨天", None),
        ("2021-13-45", None),
    ],
)
def test_common_date_forms(text: str, expected: datetime | None) -> None:
    selectors = PageSelectors(item="li", title="a", link="a@href", date="span",
                              timezone="+08:00")
    fetched = page(f'<ul><li><a href="a.html">标题</a><span>{text}</span></li></ul>', selectors,
                   date_header="Fri, 21 May 2021 10:00:00 GMT")
    [entry] = parse(fetched, html_source(fetched.url, selectors)).entries
    assert entry.published == expected


def test_a_date_format_reads_exactly_that_form_and_warns_about_others() -> None:
    selectors = PageSelectors(item="li", title="a", link="a@href", date="em",
                              date_format="%Y年%m月%d日 %H:%M")
    fetched = page('<ul><li><a href="1.html">一</a><em>2021年05月21日 08:30</em></li>'
                   '<li><a href="2.html">二</a><em>2021-05-21</em></li></ul>', selectors)
    feed = parse(fetched, html_source(fetched.url, selectors))
    assert [e.published for e in feed.entries] == [
        datetime(2021, 5, 21, 8, 30, tzinfo=UTC), None]  # no timezone: UTC
    assert any("1 date(s) could not be read" in w and "'2021-05-21'" in w
               for w in feed.warnings), feed.warnings


def test_the_summary_keeps_its_html(portal: HTTPServer) -> None:
    source = html_source(portal.url_for("/news/list.html"), GBK_SELECTORS)
    feed = parse(fetched_page(source), source)
    assert [e.summary for e in feed.entries] == [
        "制造业数字化转型进入<b>深水区</b>，专家认为……", "一家老字号的转型之路。", None,
        "没有日期的条目。"]
    assert all(e.content is None for e in feed.entries)


def test_an_item_without_a_link_is_skipped_and_counted_in_a_warning(
        portal: HTTPServer) -> None:
    source = html_source(portal.url_for("/news/list.html"), GBK_SELECTORS)
    feed = parse(fetched_page(source), source)
    assert "【公告】本栏目投稿须知" not in [e.title for e in feed.entries]
    [warning] = [w for w in feed.warnings if "skipped" in w]
    assert "skipped 1 of 5 items" in warning and "item 4" in warning


def test_the_item_itself_and_link_selectors_without_an_attribute() -> None:
    # item = the <a>: "@href" is its own attribute, "a" matches it too (descendant-or-self)
    selectors = PageSelectors(item="ul.news a", title="a", link="@href")
    fetched = page('<ul class="news"><a href="1.html">一</a><a href="javascript:void(0)">'
                   '二</a></ul>', selectors)
    feed = parse(fetched, html_source(fetched.url, selectors))
    assert [(e.title, e.link) for e in feed.entries] == [
        ("一", "http://portal.test/list/1.html")]  # a javascript: link is no link
    plain = PageSelectors(item="li", title="a", link="a", image="img")
    fetched = page('<ul><li><a href="/x.html">X</a><img src="x.png"></li></ul>', plain)
    [entry] = parse(fetched, html_source(fetched.url, plain)).entries
    assert (entry.link, entry.thumbnails) == (
        "http://portal.test/x.html", ("http://portal.test/list/x.png",))


def test_a_dateless_entry_is_dated_when_first_seen() -> None:
    selectors = PageSelectors(item="li", title="a", link="a@href", date="span")
    fetched = page('<ul><li><a href="1.html">无日期</a></li></ul>', selectors)
    seen = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    _, [article] = parse_and_normalize(fetched, html_source(fetched.url, selectors),
                                       NormalizeOptions(), seen)
    assert (article.date, article.date_from_feed) == (seen, False)
    assert article.link == "http://portal.test/list/1.html" and article.title == "无日期"


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selectors", "named"),
    [
        (PageSelectors(item="div.articles li", title="h3 a", link="h3 a@href"),
         "html.item selector 'div.articles li' matched nothing on the page"),
        (PageSelectors(item="div.list li.item", title="h2 a", link="h3 a@href"),
         "html.title selector 'h2 a' matched nothing in any of the 5 items"),
        (PageSelectors(item="div.list li.item", title="h3 a", link="h3 a@data-url"),
         "html.link selector 'h3 a@data-url' matched nothing in any of the 5 items"),
    ],
    ids=["item", "title", "link"],
)
def test_a_selector_matching_nothing_is_an_error_naming_it(
        portal: HTTPServer, selectors: PageSelectors, named: str) -> None:
    source = html_source(portal.url_for("/news/list.html"), selectors, source_id="ofweek-list")
    with pytest.raises(ParseError) as raised:
        parse(fetched_page(source), source)
    assert raised.value.source_id == "ofweek-list"
    assert named in str(raised.value) and str(raised.value).startswith("[ofweek-list] ")


def test_a_page_that_is_not_html_is_a_parse_error() -> None:
    selectors = PageSelectors(item="li", title="a", link="a@href")
    source = html_source("http://portal.test/list.html", selectors)
    empty = FetchResult(source_id="portal", url=source.url, status=200, content=b"  ")
    with pytest.raises(ParseError, match="empty response body"):
        parse(empty, source)
    feed_instead = FetchResult(source_id="portal", url=source.url, status=200,
                               content=b'<?xml version="1.0"?><rss><channel/></rss>')
    with pytest.raises(ParseError, match=r"html\.item selector 'li' matched nothing"):
        parse(feed_instead, source)


def write_html_config(tmp_path: Path, portal: HTTPServer, **overrides: str) -> Path:
    """A config with the fixture portal's two list pages as ``kind: html`` sources;
    ``overrides`` replace keys of the first one's ``html:`` block."""
    gbk = {"item": "div.list li.item", "title": "h3 a", "link": "h3 a@href",
           "date": "span.time", "timezone": "+08:00", "summary": "p.desc",
           "image": "img@src", **overrides}
    big5 = {"item": "table.news tr:not(.head)", "title": "td.title a",
            "link": "td.title a@href", "date": "td.date", "date_format": "%Y/%m/%d",
            "timezone": "Asia/Hong_Kong"}
    lines = ['database_url: "sqlite:///data/aggregator.db"', "output_dir: public",
             "site_url: http://feeds.test/", "allow_private_networks: true", "sources:"]
    for source_id, name, path, selectors in (
            ("ofweek-list", "高科技行业门户", "/news/list.html", gbk),
            ("hk-list", "香港新聞網", "/hk/list.html", big5)):
        lines += [f"  - id: {source_id}", f"    name: {name}",
                  f'    url: "{portal.url_for(path)}"', "    categories: [新闻]",
                  "    kind: html", "    html:"]
        lines += [f"      {key}: '{value}'" for key, value in selectors.items()]
    config = tmp_path / "aggregator.yaml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


@pytest.mark.parametrize(
    ("override", "field"),
    [({"item": "div.list li["}, "html.item"), ({"link": "h3 a:nth-child(x)@href"}, "html.link"),
     ({"timezone": "+25:00"}, "html.timezone"), ({"date_format": "%Y-%Q"}, "html.date_format")],
    ids=["item", "link", "timezone", "date_format"],
)
def test_a_bad_html_setting_is_a_config_error_naming_source_and_field(
        tmp_path: Path, portal: HTTPServer, override: dict[str, str], field: str) -> None:
    config = write_html_config(tmp_path, portal, **override)
    settings = load_config(config)  # the config module reads it: selectors are not its job
    with pytest.raises(ConfigError) as raised:
        check_page_sources(settings.source_list(), str(config))
    assert (raised.value.source_id, raised.value.field) == ("ofweek-list", field)
    checked = CliRunner().invoke(cli, ["--config", str(config), "check-config"])
    assert checked.exit_code != 0
    assert f"source 'ofweek-list': field '{field}'" in checked.output
    assert str(config) in checked.output


def test_check_config_accepts_good_html_sources(tmp_path: Path, portal: HTTPServer) -> None:
    checked = CliRunner().invoke(cli, ["--config", str(write_html_config(tmp_path, portal)),
                                       "check-config"])
    assert checked.exit_code == 0, checked.output
    assert "sources: 2 (2 enabled)" in checked.output


# --- end to end ----------------------------------------------------------------------------


def summary_line(output: str, source_id: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(source_id + " "))


def test_poll_and_build_publish_the_list_pages_as_a_category_feed(
        tmp_path: Path, portal: HTTPServer) -> None:
    config = str(write_html_config(tmp_path, portal))
    polled = CliRunner().invoke(cli, ["--config", config, "poll"], catch_exceptions=False)
    assert polled.exit_code == 0, polled.output
    assert "new: 4 new" in summary_line(polled.output, "ofweek-list")
    assert "1 warning(s): html: skipped 1 of 5 items" in summary_line(polled.output,
                                                                      "ofweek-list")
    assert "new: 2 new" in summary_line(polled.output, "hk-list")
    again = CliRunner().invoke(cli, ["--config", config, "poll"], catch_exceptions=False)
    assert "unchanged" in summary_line(again.output, "ofweek-list")  # nothing added twice
    built = CliRunner().invoke(cli, ["--config", config, "build"], catch_exceptions=False)
    assert built.exit_code == 0, built.output

    rss = feedparser.parse((tmp_path / "public/categories/新闻/rss.xml").read_bytes())
    assert not rss.bozo
    dated = {e.title: e.link for e in rss.entries if e.title != "芯片短缺下的汽车行业"}
    root = portal.url_for("/")
    assert list(dated.items()) == [  # newest first; the dateless one is dated now
        ("朱镕基谈制造业： 工业互联网的下一个十年", f"{root}news/2021-05/ART-8420-1.html"),
        ("係咪真㗎？市民熱議新政策", f"{root}hk/articles/20210521-001.html"),
        ("王喆：堃字号企业数字化转型", f"{root}news/ART-8420-2.html"),
        ("陶喆出席人工智能大会 & 发表演讲", f"{root}news/ART-8420-3.html?from=list"),
        ("颱風「彩雲」逼近 天文台發出三號風球", f"{root}hk/articles/20210520-007.html"),
    ]
    assert rss.entries[0].title == "芯片短缺下的汽车行业"  # first seen just now: the newest
    assert rss.entries[0].link == f"{root}news/2021-05/ART-8420-5.html"
    first = next(e for e in rss.entries if e.title.startswith("朱镕基"))
    assert first.content[0].value == "制造业数字化转型进入<b>深水区</b>，专家认为……"
    assert first.description == "制造业数字化转型进入深水区，专家认为……"
    assert first.author == "高科技行业门户"


def test_a_bad_content_selector_is_a_config_error_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "aggregator.yaml"
    config.write_text("sources:\n  - id: news\n    name: News\n    url: https://news.test/rss\n"
                      "    categories: [新闻]\n    full_text: true\n"
                      '    content_selector: "div.article["\n', encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        check_page_sources(load_config(config).source_list(), str(config))
    assert (raised.value.source_id, raised.value.field) == ("news", "content_selector")
    assert "invalid CSS selector 'div.article['" in raised.value.reason
