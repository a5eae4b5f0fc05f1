"""A source's article rules: each rule on normalized articles, the time bound on a
catastrophic pattern, and end to end — config file, ``aggregator poll`` (parse workers)
against a loopback feed, the stored articles and the built feeds."""

from __future__ import annotations

import logging
import zlib
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from builders import make_source, rss_items
from click.testing import CliRunner, Result
from pytest_httpserver import HTTPServer

from aggregator.cli import cli
from aggregator.ingest.extract import parse_and_normalize
from aggregator.ingest.fetch import HttpFetcher
from aggregator.ingest.filters import apply_rules
from aggregator.ingest.normalize import normalize
from aggregator.ingest.poll import PollOptions, poll_source
from aggregator.publish.paths import category_paths
from aggregator.records import (
    Article,
    FetchOptions,
    FetchResult,
    NormalizeOptions,
    ParsedEntry,
    Source,
    SourceRules,
)
from aggregator.regexes import MATCH_TIMEOUT
from aggregator.rules import UNTITLED
from aggregator.store import Store

SEEN = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
OPTIONS = NormalizeOptions()
CATASTROPHIC = r"(a+)+$"  # exponential backtracking on "aaaa…b"
HOPELESS_TITLE = "a" * 5000 + "b"


def article(title: str, content: str = "<p>正文</p>", source: Source | None = None,
            **entry: str) -> Article:
    """The article normalize makes of an entry with this title and content."""
    parsed = ParsedEntry(title=title, content=content, summary=content,
                         link=entry.get("link", f"http://portal.test/{zlib.crc32(title.encode())}"))
    return normalize(parsed, source or make_source(), OPTIONS, seen_at=SEEN)


def ruled(**rules: object) -> Source:
    return make_source(rules=SourceRules(**rules))  # type: ignore[arg-type]


def test_a_source_without_rules_gets_its_articles_back_untouched() -> None:
    articles = [article("一"), article("二")]
    result = apply_rules(articles, make_source())
    assert result.articles == articles and result.dropped == 0 and result.warnings == ()


def test_exclude_drops_articles_whose_title_or_text_matches() -> None:
    source = ruled(exclude=("广告", "推广"))
    by_title = article("【广告】买一送一")
    by_text = article("新品发布", "<p>本文为<b>推广</b>内容</p>")
    in_markup_only = article("技术", '<p class="推广">纯技术文章</p>')
    kept = article("工业互联网大会召开")
    result = apply_rules([by_title, by_text, in_markup_only, kept], source)
    assert result.articles == [in_markup_only, kept]  # the class is markup, not text
    assert result.dropped == 2


def test_include_keeps_only_matching_articles_and_exclude_still_wins() -> None:
    source = ruled(include=("工业互联网", "(?i)iot"), exclude=("广告",))
    industrial = article("工业互联网大会召开")
    iot = article("New IoT chips", "<p>x</p>")
    by_text = article("大会", "<p>聚焦工业互联网</p>")
    other = article("体育新闻")
    advert = article("工业互联网广告位招租")
    result = apply_rules([industrial, iot, by_text, other, advert], source)
    assert result.articles == [industrial, iot, by_text]
    assert result.dropped == 2


def test_categories_are_added_in_config_order_each_once() -> None:
    source = make_source(categories=("新闻", "人工智能"), rules=SourceRules(categories=(
        ("机器人", "机器人"), ("人工智能|AI", "人工智能"), ("AI|芯片", "芯片"),
        ("芯片", "芯片"))))
    chip = article("AI 芯片与机器人", source=source)
    plain = article("天气预报", source=source)
    [tagged, untouched] = apply_rules([chip, plain], source).articles
    assert tagged.categories == ("新闻", "人工智能", "机器人", "芯片")
    assert untouched == plain
    assert tagged.content_hash != chip.content_hash  # a changed article is stored again
    assert source.all_categories == ("新闻", "人工智能", "机器人", "芯片")


def test_strip_title_removes_its_matches_and_the_article_is_hashed_as_it_now_shows() -> None:
    source = ruled(strip_title=r"^【[^】]*】\s*|\s*-\s*某某网$")
    [stripped, untouched] = apply_rules(
        [article("【独家】 芯片  新闻 - 某某网"), article("普通标题")], source).articles
    assert (stripped.title, untouched.title) == ("芯片 新闻", "普通标题")
    # the same hash as an entry that had this title to begin with: nothing else differs
    assert stripped.content_hash == replace(
        article("芯片 新闻", link=stripped.link or ""), key=stripped.key).content_hash
    assert stripped.key == article("【独家】 芯片  新闻 - 某某网").key  # identity stays


def test_a_title_stripped_to_nothing_gets_the_untitled_fallback() -> None:
    source = ruled(strip_title=r"^【[^】]*】")
    with_text = article("【快讯】", "<p>央行宣布降准</p>")
    bare = normalize(ParsedEntry(title="【快讯】", link=None), source, OPTIONS, seen_at=SEEN)
    linked = normalize(ParsedEntry(title="【快讯】", link="http://portal.test/9"), source,
                       OPTIONS, seen_at=SEEN)
    titles = [a.title for a in apply_rules([with_text, bare, linked], source).articles]
    assert titles == ["央行宣布降准", UNTITLED, "http://portal.test/9"]


def test_rules_read_the_title_before_strip_title_removes_its_label() -> None:
    source = ruled(exclude=("^【广告】",), strip_title=r"^【[^】]*】", categories=(
        ("^【快讯】", "快讯"),))
    result = apply_rules([article("【广告】买一送一"), article("【快讯】降准")], source)
    assert [(a.title, a.categories) for a in result.articles] == [("降准", ("c", "快讯"))]
    assert result.dropped == 1


def test_a_catastrophic_pattern_times_out_as_no_match_and_is_not_run_again() -> None:
    source = ruled(exclude=(CATASTROPHIC, "广告"), categories=((CATASTROPHIC, "x"),))
    hopeless = [article(HOPELESS_TITLE, link=f"http://portal.test/{i}") for i in range(3)]
    advert = article("广告")
    result = apply_rules([*hopeless, advert], source)
    # no match: not dropped, no category; the other exclude rule still works
    assert result.articles == hopeless and result.dropped == 1
    [warning] = result.warnings  # timed out once, then left out for the rest of the document
    assert warning.startswith(f"rules.exclude[0] {CATASTROPHIC!r} timed out after "
                              f"{MATCH_TIMEOUT:g}s on http://portal.test/0")


def test_a_strip_title_that_times_out_keeps_the_title() -> None:
    source = ruled(strip_title=r"(a+)+$|^x")
    [kept] = apply_rules([article(HOPELESS_TITLE)], source).articles
    assert kept.title == HOPELESS_TITLE
    assert "rules.strip_title" in apply_rules([article(HOPELESS_TITLE)], source).warnings[0]


FEED = rss_items(
    "<item><title>【独家】工业互联网平台发布</title><link>http://portal.test/1</link>"
    "<description>&lt;p&gt;AI 驱动的工业互联网&lt;/p&gt;</description></item>"
    "<item><title>【广告】工业互联网展会门票</title><link>http://portal.test/2</link></item>"
    "<item><title>体育新闻</title><link>http://portal.test/3</link></item>"
    "<item><title>【快讯】</title><link>http://portal.test/4</link>"
    "<description>&lt;p&gt;工业互联网标准出台&lt;/p&gt;</description></item>"
    f"<item><title>{HOPELESS_TITLE}</title><link>http://portal.test/5</link>"
    "<description>工业互联网</description></item>"
)
RULES = """\
    rules:
      exclude: ["广告", "(a+)+$"]
      include: ["工业互联网"]
      strip_title: "^【[^】]*】\\\\s*"
      categories:
        "人工智能|AI": 人工智能
"""


def write_config(tmp_path: Path, feed_url: str, rules: str) -> Path:
    config = tmp_path / "aggregator.yaml"
    config.write_text(
        "database_url: sqlite:///data/aggregator.db\noutput_dir: public\n"
        "allow_private_networks: true\nparse_workers: 1\nsources:\n"
        f"  - id: portal\n    name: Portal\n    url: \"{feed_url}\"\n"
        f"    categories: [新闻]\n{rules}", encoding="utf-8")
    return config


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_rules_end_to_end_through_poll_and_build(httpserver: HTTPServer, tmp_path: Path) -> None:
    httpserver.expect_request("/feed.xml").respond_with_data(FEED.encode(),
                                                            content_type="text/xml")
    config = write_config(tmp_path, httpserver.url_for("/feed.xml"), RULES)
    polled = run("--config", str(config), "poll")
    assert polled.exit_code == 0, polled.output
    assert "portal  new: 3 new, 0 updated, 0 unchanged, 2 filtered by rules" in polled.output
    assert "timed out" in polled.output  # the catastrophic exclude, as a warning
    with Store.open(f"sqlite:///{tmp_path / 'data' / 'aggregator.db'}") as store:
        stored = sorted(store.iter_articles("portal"), key=lambda a: a.link or "")
    assert [(a.link, a.title, a.categories) for a in stored] == [
        ("http://portal.test/1", "工业互联网平台发布", ("新闻", "人工智能")),
        ("http://portal.test/4", "工业互联网标准出台", ("新闻",)),  # the untitled fallback
        ("http://portal.test/5", HOPELESS_TITLE, ("新闻",)),  # its exclude timed out
    ]
    built = run("--config", str(config), "build")
    assert built.exit_code == 0, built.output
    assert (tmp_path / "public" / category_paths("人工智能").rss).is_file()


def test_a_new_rule_reparses_the_feed_and_keeps_what_was_stored(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    httpserver.expect_request("/feed.xml").respond_with_data(FEED.encode(),
                                                            content_type="text/xml")
    config = write_config(tmp_path, httpserver.url_for("/feed.xml"), "")
    assert "5 new" in run("--config", str(config), "poll").output
    write_config(tmp_path, httpserver.url_for("/feed.xml"),
                 '    rules:\n      exclude: ["体育"]\n')
    again = run("--config", str(config), "poll").output
    assert "unchanged: 0 new, 0 updated, 4 unchanged, 1 filtered by rules" in again
    with Store.open(f"sqlite:///{tmp_path / 'data' / 'aggregator.db'}") as store:
        assert store.count_articles() == 5  # the excluded one stays until retention


def test_a_timed_out_rule_is_logged_with_the_source_and_the_poll_goes_on(
    httpserver: HTTPServer, store: Store, http: HttpFetcher, caplog: pytest.LogCaptureFixture
) -> None:
    httpserver.expect_request("/feed.xml").respond_with_data(FEED.encode(),
                                                            content_type="text/xml")
    source = make_source(httpserver.url_for("/feed.xml"), source_id="slow",
                         rules=SourceRules(exclude=(CATASTROPHIC,)))
    options = PollOptions(fetch=FetchOptions(allow_private_networks=True),
                          normalize=OPTIONS)
    with caplog.at_level(logging.WARNING, logger="aggregator"):
        result = poll_source(source, None, store, options, fetch=http)
    assert result.counts.new == 5 and result.filtered == 0
    assert any(r.getMessage().startswith("source=slow rules.exclude[0] '(a+)+$' timed out")
               for r in caplog.records)


def test_parse_and_normalize_reports_what_the_rules_dropped() -> None:
    source = ruled(exclude=("体育",))
    fetched = FetchResult(source_id=source.id, url=source.url, status=200,
                          content=FEED.encode(), headers={"content-type": "text/xml"})
    parsed, articles = parse_and_normalize(fetched, source, OPTIONS, SEEN)
    assert parsed.filtered == 1 and len(articles) == 4
    assert "体育新闻" not in {a.title for a in articles}


def test_the_rules_never_change_an_articles_key() -> None:
    """Two entries sharing one link: the second has a key of its own, and keeps it when a
    rule drops the first or retitles it (else the edit would store it again, anew)."""
    shared = rss_items(
        "<item><title>广告：促销</title><link>http://portal.test/same</link></item>"
        "<item><title>【快讯】新闻</title><link>http://portal.test/same</link></item>")
    fetched = FetchResult(source_id="portal", url="http://portal.test/feed.xml", status=200,
                          content=shared.encode(), headers={"content-type": "text/xml"})
    _parsed, [_advert, news] = parse_and_normalize(fetched, make_source(), OPTIONS, SEEN)
    ruled_source = ruled(exclude=("广告",), strip_title="^【[^】]*】")
    parsed, [kept] = parse_and_normalize(fetched, ruled_source, OPTIONS, SEEN)
    assert (kept.key, kept.title, parsed.rekeyed) == (news.key, "新闻", 1)
    assert news.key != "http://portal.test/same"
