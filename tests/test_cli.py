"""End to end through the CLI against a loopback portal (pytest-httpserver).

The tests that check stored rows run on both backends (the ``database`` fixture): an
SQLite file named relative to the config's folder, and a fresh PostgreSQL database (skipped
where no server answers); the rows are read through SQLAlchemy (``database_rows``) so
both variants make the same assertions.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import feedparser
import pytest
from builders import (
    ARTICLE_PARAGRAPHS,
    PORTAL_BOILERPLATE,
    database_rows,
    portal_article_page,
    rss_items,
)
from click.testing import CliRunner, Result
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from aggregator.cli import cli

GBK_FEED = (
    '<?xml version="1.0" encoding="gb2312"?>\n<rss version="2.0"><channel>'
    "<title>OFweek 高科技行业门户</title><link>http://www.ofweek.com/</link>"
    "<item><title>王喆：堃字号企业数字化转型</title><link>http://www.ofweek.com/news/1.html</link>"
    "<pubDate>Fri, 21 May 2021 07:25:00 GMT</pubDate>"
    '<description><![CDATA[<p style="text-indent: 2em;">正文<img src="http://images.ofweek.com/1.jpg">'
    "</p>]]></description></item>"
    "<item><title>第二条新闻</title><link>http://www.ofweek.com/news/2.html</link>"
    "<pubDate>Fri, 21 May 2021 06:00:00 GMT</pubDate><description>二</description></item>"
    "</channel></rss>"
).encode("gbk")
BIG5_FEED = (
    '<?xml version="1.0" encoding="big5"?>\n<rss version="2.0"><channel><title>香港新聞</title>'
    "<item><title>係咪真㗎</title><link>http://hk.test/1</link>"
    "<pubDate>Fri, 21 May 2021 05:00:00 GMT</pubDate></item></channel></rss>"
).encode("big5hkscs")
PLAIN_FEED = (
    '<?xml version="1.0"?>\n<rss version="2.0"><channel><title>No charset</title>'
    "<item><title>没有声明编码的中文标题</title><link>http://plain.test/1</link>"
    "<description>这是一段足够长的中文正文，用来检测编码。</description></item></channel></rss>"
).encode()
TRUNCATED = GBK_FEED[: GBK_FEED.index(b"</channel>") - 30]
HTML_PAGE = b"<!DOCTYPE html><html><head><title>Portal</title></head><body>Hi</body></html>"


def etag_handler(body: bytes, content_type: str):  # type: ignore[no-untyped-def]
    etag = '"' + hashlib.sha1(body).hexdigest() + '"'

    def handle(request: Request) -> Response:
        if request.headers.get("If-None-Match") == etag:
            return Response(status=304, headers={"ETag": etag})
        return Response(
            body,
            content_type=content_type,
            headers={"ETag": etag, "Last-Modified": "Fri, 21 May 2021 08:00:00 GMT"},
        )

    return handle


class Database(NamedTuple):
    """Where a test's CLI runs keep their rows: the URL its config names, and the
    (absolute) URL the test reads the rows back at."""

    configured: str
    url: str


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    """A fresh database of each backend.  SQLite: ``data/aggregator.db``, relative to the
    config's folder (tmp_path) as a deployment writes it.  PostgreSQL: a database of its
    own (``pg_database``), so the test skips cleanly where no server answers."""
    if request.param == "sqlite":
        return Database("sqlite:///data/aggregator.db",
                        f"sqlite:///{tmp_path / 'data' / 'aggregator.db'}")
    url: str = request.getfixturevalue("pg_database")
    return Database(url, url)


@pytest.fixture()
def portal(httpserver: HTTPServer) -> HTTPServer:
    httpserver.expect_request("/gbk.xml").respond_with_handler(etag_handler(GBK_FEED, "text/xml"))
    httpserver.expect_request("/big5.xml").respond_with_handler(
        etag_handler(BIG5_FEED, "application/rss+xml; charset=big5")
    )
    httpserver.expect_request("/plain.xml").respond_with_data(PLAIN_FEED, content_type="text/xml")
    httpserver.expect_request("/truncated.xml").respond_with_data(
        TRUNCATED, content_type="text/xml"
    )
    httpserver.expect_request("/missing.xml").respond_with_data("gone", status=404)
    httpserver.expect_request("/broken.xml").respond_with_data("oops", status=500)
    httpserver.expect_request("/page.html").respond_with_data(HTML_PAGE, content_type="text/html")
    return httpserver


def write_config(tmp_path: Path, server: HTTPServer,
                 database: str = "sqlite:///data/aggregator.db") -> Path:
    sources = [
        ("ofweek-news", "高科技行业门户", "/gbk.xml", "[新媒体, 高科技行业门户, 新闻]"),
        ("hk-news", "香港新聞", "/big5.xml", "[新闻]"),
        ("plain", "Plain", "/plain.xml", "[编程]"),
        ("truncated", "Truncated", "/truncated.xml", "[新闻]"),
        ("missing", "Missing", "/missing.xml", "[新闻]"),
        ("broken", "Broken", "/broken.xml", "[新闻]"),
        ("html-page", "HTML", "/page.html", "[新闻]"),
    ]
    lines = [
        f'database_url: "{database}"',
        "output_dir: public",
        "site_url: http://feeds.test/",
        'image_proxy: "https://cors.zfour.workers.dev/?"',
        "allow_private_networks: true",
        "sources:",
    ]
    for source_id, name, path, categories in sources:
        lines += [
            f"  - id: {source_id}",
            f"    name: {name}",
            f'    url: "{server.url_for(path)}"',
            f"    categories: {categories}",
            "    interval: 30m",
        ]
    config = tmp_path / "aggregator.yaml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def summary_line(result: Result, source_id: str) -> str:
    return next(line for line in result.output.splitlines() if line.startswith(source_id + " "))


def test_poll_build_export_end_to_end(portal: HTTPServer, tmp_path: Path,
                                      database: Database) -> None:
    """poll → re-poll (conditional, adds nothing) → build → export → status, through the
    CLI, on each backend: the same summaries, rows, feeds, posts and status table."""
    config = write_config(tmp_path, portal, database.configured)

    first = run("--config", str(config), "poll")
    assert first.exit_code == 0, first.output
    assert "new: 2 new" in summary_line(first, "ofweek-news")
    assert "new: 1 new" in summary_line(first, "hk-news")
    assert "new: 1 new" in summary_line(first, "plain")
    assert "new:" in summary_line(first, "truncated")  # bozo but has an entry
    assert "warning" in summary_line(first, "truncated")
    assert "error: HTTP 404" in summary_line(first, "missing")
    assert "error: HTTP 500" in summary_line(first, "broken")
    assert "error: not a feed: the server sent an HTML page" in summary_line(first, "html-page")
    assert "polled 7 source(s): 4 ok, 3 failed" in first.output

    titles = {row[0] for row in database_rows(database.url, "SELECT title FROM articles")}
    [(count_before,)] = database_rows(database.url, "SELECT count(*) FROM articles")
    assert {"王喆：堃字号企业数字化转型", "係咪真㗎", "没有声明编码的中文标题"} <= titles

    # the second poll is conditional and adds nothing
    portal.clear_log()
    second = run("poll", "--config", str(config))  # --config after the command works too
    assert second.exit_code == 0, second.output
    assert "not-modified" in summary_line(second, "ofweek-news")
    assert "not-modified" in summary_line(second, "hk-news")
    assert "unchanged" in summary_line(second, "plain")  # no validators: same body, no parse
    gbk_requests = [r for r, _ in portal.log if r.path == "/gbk.xml"]
    assert gbk_requests[0].headers.get("If-None-Match")
    assert gbk_requests[0].headers.get("If-Modified-Since") == "Fri, 21 May 2021 08:00:00 GMT"
    assert database_rows(database.url, "SELECT count(*) FROM articles") == [(count_before,)]
    if database.url.startswith("sqlite"):  # SQLite's own check of the file (PG has none)
        assert database_rows(database.url, "PRAGMA integrity_check") == [("ok",)]

    built = run("--config", str(config), "build")
    assert built.exit_code == 0, built.output
    rss = feedparser.parse(
        (tmp_path / "public" / "categories" / "高科技行业门户" / "rss.xml").read_bytes()
    )
    assert not rss.bozo
    assert [e.title for e in rss.entries] == ["王喆：堃字号企业数字化转型", "第二条新闻"]
    assert rss.entries[0].author == "高科技行业门户"
    opml = (tmp_path / "public" / "feeds.opml").read_text(encoding="utf-8")
    assert "http://feeds.test/categories/%E6%96%B0%E9%97%BB/rss.xml" in opml  # 新闻

    out = tmp_path / "hexo"
    exported = run("--config", str(config), "export", "hexo", "--out", str(out))
    assert exported.exit_code == 0, exported.output
    posts = sorted(out.glob("*.md"))
    # "truncated" carries the GBK feed's two stories (the same links): published once each
    truncated = database_rows(database.url,
                              "SELECT count(*) FROM articles WHERE source_id = 'truncated'")
    assert truncated == [(2,)] and len(posts) == count_before - 2
    again = run("--config", str(config), "export", "hexo", "--out", str(out))
    assert sorted(out.glob("*.md")) == posts
    assert f"nothing new: 0 post(s) written, {len(posts)} unchanged" in again.output
    ofweek_post = next(
        p.read_text(encoding="utf-8") for p in posts if "王喆" in p.read_text(encoding="utf-8")
    )
    assert "author: 高科技行业门户\n" in ofweek_post
    assert ('<p class="also-reported">也见于：<a href="http://www.ofweek.com/news/1.html">'
            "Truncated</a></p>") in ofweek_post
    assert (
        "headimg: 'https://cors.zfour.workers.dev/?http://images.ofweek.com/1.jpg'" in ofweek_post
    )

    status = run("--config", str(config), "status")
    assert status.exit_code == 0
    assert "ofweek-news" in status.output and "not-modified" in status.output
    missing_row = next(line for line in status.output.splitlines() if line.startswith("missing "))
    assert "HTTP 404" in missing_row and " 2 " in missing_row  # two failed polls


def test_poll_single_source_and_unknown_source(portal: HTTPServer, tmp_path: Path) -> None:
    config = write_config(tmp_path, portal)
    result = run("--config", str(config), "poll", "--source", "hk-news")
    assert result.exit_code == 0
    assert "polled 1 source(s)" in result.output and "hk-news" in result.output
    assert [r.path for r, _ in portal.log] == ["/big5.xml"]
    unknown = run("--config", str(config), "poll", "--source", "nope")
    assert unknown.exit_code != 0 and "unknown source id(s): nope" in unknown.output


def test_check_config_reports_bad_field_without_traceback(tmp_path: Path) -> None:
    config = tmp_path / "aggregator.yaml"
    config.write_text(
        "sources:\n  - id: good\n    name: G\n    url: http://a.test/\n"
        "    categories: [x]\n    interval: soon\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, "-m", "aggregator", "--config", str(config), "check-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert str(config) in result.stderr and "'good'" in result.stderr
    assert "'interval'" in result.stderr
    config.write_text(config.read_text().replace("soon", "90s"), encoding="utf-8")
    ok = subprocess.run(
        [sys.executable, "-m", "aggregator", "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0 and "OK" in ok.stdout


def test_check_config_reports_a_bad_rule_and_counts_the_good_ones(tmp_path: Path) -> None:
    config = tmp_path / "aggregator.yaml"
    config.write_text(
        "sources:\n  - id: good\n    name: G\n    url: http://a.test/\n"
        "    categories: [x]\n    rules:\n      exclude: [广告, \"(推广\"]\n"
        "      categories: {\"AI\": 人工智能}\n",
        encoding="utf-8",
    )
    bad = run("--config", str(config), "check-config")
    assert bad.exit_code != 0 and "Traceback" not in bad.output
    assert ("source 'good': field 'rules.exclude[1]': invalid regex '(推广': missing )"
            in bad.output)
    config.write_text(config.read_text().replace('"(推广"', "推广"), encoding="utf-8")
    ok = run("--config", str(config), "check-config")
    assert ok.exit_code == 0, ok.output
    assert "categories: x, 人工智能" in ok.output
    assert "rules: 1 source(s), 3 regex(es) compiled" in ok.output


def test_demo_command_runs_offline(tmp_path: Path) -> None:
    result = run("demo", "--workdir", str(tmp_path / "demo"))
    assert result.exit_code == 0, result.output
    assert "failed" in result.output and ", 0 failed" in result.output
    feeds = tmp_path / "demo" / "public"
    assert (feeds / "feeds.opml").is_file()
    posts = list((tmp_path / "demo" / "hexo").glob("*.md"))
    seed_post = next(
        p.read_text(encoding="utf-8")
        for p in posts
        if "来了！2021工业互联网先锋TOP100榜单出炉！" in p.read_text(encoding="utf-8")
    )
    assert "date: Fri, 21 May 2021 07:25:00 GMT\n" in seed_post
    assert (
        "thumbnail: 'https://cors.zfour.workers.dev/?http://images.ofweek.com/Upload/News/"
        "2021-05/21/jingwei/1621582693914051820.jpg'"
    ) in seed_post


def gone_and_dated_config(tmp_path: Path, server: HTTPServer, extra: str = "",
                          database: str = "sqlite:///data/aggregator.db") -> Path:
    lines = [f'database_url: "{database}"', "output_dir: public",
             "allow_private_networks: true", extra, "sources:"]
    for source_id, path in (("gone", "/gone.xml"), ("dated", "/dated.xml")):
        lines += [f"  - id: {source_id}", f"    name: {source_id}",
                  f'    url: "{server.url_for(path)}"', "    categories: [新闻]",
                  "    interval: 30m"]
    config = tmp_path / "aggregator.yaml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


DATED_FEED = (
    '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>D</title>'
    + "".join(f"<item><title>第{n}条</title><link>http://dated.test/{n}</link>"
              f"<pubDate>{day:02d} May 2021 07:25:00 GMT</pubDate></item>"
              for n, day in enumerate((21, 20, 19, 18, 17)))
    + "</channel></rss>"
).encode()


def test_poll_skips_a_source_a_410_disabled_unless_named(httpserver: HTTPServer,
                                                          tmp_path: Path) -> None:
    httpserver.expect_request("/gone.xml").respond_with_data("gone", status=410)
    httpserver.expect_request("/dated.xml").respond_with_data(DATED_FEED, content_type="text/xml")
    config = gone_and_dated_config(tmp_path, httpserver)
    first = run("--config", str(config), "poll")
    assert "disabled: HTTP 410" in summary_line(first, "gone")
    assert "polled 2 source(s): 1 ok, 1 failed" in first.output

    httpserver.clear_log()
    again = run("--config", str(config), "poll")
    assert again.exit_code == 0, again.output
    assert "skipped: disabled" in summary_line(again, "gone")
    assert "--source gone polls it anyway" in summary_line(again, "gone")
    assert "polled 1 source(s): 1 ok, 0 failed, 1 skipped" in again.output
    assert [r.path for r, _ in httpserver.log] == ["/dated.xml"]  # the gone feed is not asked

    named = run("--config", str(config), "poll", "--source", "gone")
    assert "disabled: HTTP 410" in summary_line(named, "gone")
    assert [r.path for r, _ in httpserver.log][-1] == "/gone.xml"


def test_prune_removes_what_retention_says_and_a_repoll_does_not_bring_it_back(
    httpserver: HTTPServer, tmp_path: Path, database: Database
) -> None:
    """Retention keeps the two newest of five, and a re-poll of a feed still listing all
    five stores none of the removed ones again (tombstones), on each backend."""
    httpserver.expect_request("/gone.xml").respond_with_data("", status=404)
    httpserver.expect_request("/dated.xml").respond_with_data(DATED_FEED, content_type="text/xml")
    config = gone_and_dated_config(tmp_path, httpserver, database=database.configured)
    assert "no retention configured" in run("--config", str(config), "prune").output

    config = gone_and_dated_config(tmp_path, httpserver, "max_articles_per_source: 2",
                                   database.configured)
    assert "new: 5 new" in summary_line(run("--config", str(config), "poll"), "dated")
    pruned = run("--config", str(config), "prune")
    assert pruned.exit_code == 0, pruned.output
    assert "dated  3 article(s) removed" in pruned.output
    assert "pruned 3 article(s) from 1 source(s), forgot 0 source(s)" in pruned.output

    # The portal still lists all five (the same bytes would not even be parsed: change them).
    httpserver.clear_all_handlers()
    httpserver.expect_request("/gone.xml").respond_with_data("", status=404)
    httpserver.expect_request("/dated.xml").respond_with_data(
        DATED_FEED.replace(b"<title>D</title>", b"<title>D2</title>"), content_type="text/xml")
    repoll = summary_line(run("--config", str(config), "poll"), "dated")
    assert "unchanged: 0 new, 0 updated, 2 unchanged, 3 removed by retention" in repoll
    assert sorted(database_rows(database.url, "SELECT title FROM articles")) == [
        ("第0条",), ("第1条",)]


def test_poll_summary_says_what_a_parse_found(httpserver: HTTPServer, tmp_path: Path) -> None:
    empty = b'<?xml version="1.0"?><rss version="2.0"><channel><title>E</title></channel>'
    board = (b'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>B</title>'
             + b"".join(b"<item><link>http://board.test/</link><description>post %d"
                        b"</description></item>" % n for n in range(3))
             + b"</channel></rss>")
    httpserver.expect_request("/gone.xml").respond_with_data(empty, content_type="text/xml")
    httpserver.expect_request("/dated.xml").respond_with_data(board, content_type="text/xml")
    config = gone_and_dated_config(tmp_path, httpserver)
    first = run("--config", str(config), "poll")
    assert "unchanged: 0 new, 0 updated, 0 unchanged (the document has no entries)" in \
        summary_line(first, "gone")  # truncated to nothing: parsed, not "nothing to parse"
    assert "new: 3 new, 0 updated, 0 unchanged, 2 given a key of their own" in \
        summary_line(first, "dated")
    again = run("--config", str(config), "poll")
    assert "unchanged (nothing to parse)" in summary_line(again, "dated")


def test_poll_summary_counts_the_documents_each_parse_path_read(
        httpserver: HTTPServer, tmp_path: Path) -> None:
    item = b"<item><title>t</title><link>http://p.test/1</link>%s</item>"
    feed = b'<?xml version="1.0"?><rss version="2.0"><channel><title>C</title>%s</channel></rss>'
    unmodelled = b'<x:rating xmlns:x="urn:example:rating">5</x:rating>'  # fast path declines
    httpserver.expect_request("/gone.xml").respond_with_data(feed % (item % b""),
                                                             content_type="text/xml")
    httpserver.expect_request("/dated.xml").respond_with_data(feed % (item % unmodelled),
                                                              content_type="text/xml")
    config = gone_and_dated_config(tmp_path, httpserver)
    first = run("--config", str(config), "poll")
    assert "parsed 2 RSS/Atom document(s): 1 by the fast path, 1 by feedparser" in first.output
    again = run("--config", str(config), "poll")  # the same bytes: nothing parsed
    assert "RSS/Atom document(s)" not in again.output


def test_a_source_removed_from_the_config_leaves_every_output(
    httpserver: HTTPServer, tmp_path: Path, database: Database
) -> None:
    """A source dropped from the config leaves the feeds, OPML, index page and export at
    the next build, while its rows stay for the grace period, on each backend."""
    feed = (b'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>X'
            b"</title><item><title>%s</title><link>http://x.test/%s</link></item></channel></rss>")
    httpserver.expect_request("/gone.xml").respond_with_data(feed % (b"bye", b"1"),
                                                             content_type="text/xml")
    httpserver.expect_request("/dated.xml").respond_with_data(feed % (b"stay", b"2"),
                                                              content_type="text/xml")
    config = gone_and_dated_config(tmp_path, httpserver, database=database.configured
                                   ).read_text(encoding="utf-8")
    config = config.replace("categories: [新闻]", "categories: [新闻, 独有]", 1)  # gone's own
    path = tmp_path / "aggregator.yaml"
    path.write_text(config, encoding="utf-8")
    run("--config", str(path), "poll")
    run("--config", str(path), "build")
    public = tmp_path / "public"
    assert "独有" in (public / "feeds.opml").read_text(encoding="utf-8")
    hexo = tmp_path / "hexo"
    assert "exported 2 post(s)" in run("--config", str(path), "export", "hexo", "--out",
                                       str(hexo)).output

    path.write_text(config[:config.index("  - id: gone")]
                    + config[config.index("  - id: dated"):], encoding="utf-8")
    assert run("--config", str(path), "build").exit_code == 0
    shared = feedparser.parse((public / "categories" / "新闻" / "rss.xml").read_bytes())
    assert [e.title for e in shared.entries] == ["stay"]
    assert "独有" not in (public / "feeds.opml").read_text(encoding="utf-8")
    index = (public / "index.html").read_text(encoding="utf-8")
    assert "独有" not in index and "bye" not in index and "stay" in index
    assert database_rows(database.url, "SELECT count(*) FROM articles "
                                       "WHERE source_id='gone'") == [(1,)]  # kept for the grace
    exported = run("--config", str(path), "export", "hexo", "--out", str(hexo))
    assert "nothing new: 0 post(s) written, 1 unchanged" in exported.output
    assert len(list(hexo.glob("*.md"))) == 2  # without --prune the gone source's post stays
    pruned = run("--config", str(path), "export", "hexo", "--out", str(hexo), "--prune")
    assert "exported 0 post(s), 1 unchanged, 1 removed" in pruned.output
    (post,) = hexo.glob("*.md")
    assert "title: 'stay'" in post.read_text(encoding="utf-8")


def test_status_shows_what_the_last_document_was_warned_about(portal: HTTPServer,
                                                              tmp_path: Path) -> None:
    config = write_config(tmp_path, portal)
    run("--config", str(config), "poll")
    run("--config", str(config), "poll")  # the same bytes again: the warning stays
    status = run("--config", str(config), "status")
    assert "warning: feed is not well-formed" in summary_line(status, "truncated")
    assert "warning" not in summary_line(status, "ofweek-news")
    assert "HTTP 404" in summary_line(status, "missing")


def test_a_charset_guess_is_shown_in_status(httpserver: HTTPServer, tmp_path: Path,
                                            database: Database) -> None:
    """A document's own big5 declaration wins over an HTTP ISO-8859-1 default: the stored
    title (read back from each backend) is the right text, and status says why."""
    httpserver.expect_request("/gone.xml").respond_with_data(
        BIG5_FEED, content_type="text/xml; charset=ISO-8859-1")  # an old server's default
    httpserver.expect_request("/dated.xml").respond_with_data(DATED_FEED, content_type="text/xml")
    config = gone_and_dated_config(tmp_path, httpserver, database=database.configured)
    run("--config", str(config), "poll")
    assert database_rows(database.url, "SELECT title FROM articles WHERE source_id='gone'") \
        == [("係咪真㗎",)]  # the document's big5 is believed, not the HTTP default
    line = summary_line(run("--config", str(config), "status"), "gone")
    assert "warning: charset: HTTP said ISO-8859-1, the document says big5" in line


def test_status_says_which_config_the_database_holds(portal: HTTPServer, tmp_path: Path) -> None:
    config = write_config(tmp_path, portal)
    assert "config: none applied to the database yet" in run(
        "--config", str(config), "status").output
    run("--config", str(config), "prune")  # applies the file: generation 1
    assert re.search(r"config: generation 1, applied by \S+ at [\d: -]+: this file's sources",
                     run("--config", str(config), "status").output)
    # an old copy of the file, without one source: older than what the database holds
    text = config.read_text(encoding="utf-8")
    old = tmp_path / "old.yaml"
    old.write_text(text[:text.index("  - id: broken")] + text[text.index("  - id: html-page"):],
                   encoding="utf-8")
    os.utime(old, (config.stat().st_mtime - 60,) * 2)
    assert "this file is OLDER: a worker started with it claims nothing" in run(
        "--config", str(old), "status").output
    pruned = run("--config", str(old), "prune")
    assert "note: the database holds a newer config generation 1" in pruned.output
    os.utime(old, (config.stat().st_mtime + 60,) * 2)  # the operator's latest edit
    assert "this file is newer: the next start, reload or prune applies it" in run(
        "--config", str(old), "status").output


def test_full_text_through_poll_and_build(httpserver: HTTPServer, tmp_path: Path) -> None:
    """A summary-only feed with full_text: the summary line counts the pages, and the
    built feed carries each article's whole text, none of its page's boilerplate."""
    items = "".join(
        f"<item><title>文章{n}</title><link>{httpserver.url_for(f'/a/{n}.html')}</link>"
        f"<description>摘要{n}</description></item>" for n in ("ok", "missing"))
    httpserver.expect_request("/summaries.xml").respond_with_data(
        rss_items(items).encode(), content_type="text/xml")
    httpserver.expect_request("/a/ok.html").respond_with_data(
        portal_article_page().encode("gbk"), content_type="text/html")
    httpserver.expect_request("/a/missing.html").respond_with_data("", status=404)
    config = tmp_path / "aggregator.yaml"
    config.write_text("\n".join([
        'database_url: "sqlite:///data/aggregator.db"', "output_dir: public",
        "site_url: http://feeds.test/", "allow_private_networks: true", "sources:",
        "  - id: summaries", "    name: 摘要网",
        f'    url: "{httpserver.url_for("/summaries.xml")}"',
        "    categories: [新闻]", "    full_text: true"]) + "\n", encoding="utf-8")

    polled = run("--config", str(config), "poll")
    run("--config", str(config), "build")

    assert ("new: 2 new, 0 updated, 0 unchanged, 1 full text(s) (1 page(s) failed: summary "
            "kept)") in summary_line(polled, "summaries")
    feeds = [feedparser.parse(path.read_bytes()) for path in (tmp_path / "public").rglob("*.xml")
             if path.name != "feeds.opml"]
    bodies = {e.title: e.get("content", [{"value": e.get("summary", "")}])[0]["value"]
              for feed in feeds for e in feed.entries}
    assert set(bodies) == {"文章ok", "文章missing"}
    assert all(p in bodies["文章ok"] for p in ARTICLE_PARAGRAPHS)
    assert [b for b in PORTAL_BOILERPLATE if b in bodies["文章ok"]] == []
    assert "摘要missing" in bodies["文章missing"]


def test_a_poll_whose_database_cannot_be_created_fails_with_a_database_error(
        portal: HTTPServer, tmp_path: Path) -> None:
    # the store opens while the poll fetches: its failure must still fail the command
    (tmp_path / "data").write_text("a file where the database folder should be")
    config = write_config(tmp_path, portal, f"sqlite:///{tmp_path / 'data' / 'aggregator.db'}")
    result = CliRunner().invoke(cli, ["--config", str(config), "poll"])
    assert result.exit_code == 1, result.output
    assert "database error: cannot open database" in result.output
    assert "polled" not in result.output  # no summary: nothing was stored
    assert (tmp_path / "data").read_text() == "a file where the database folder should be"


def test_the_console_script_flushes_everything_and_keeps_its_exit_status(
        portal: HTTPServer, tmp_path: Path) -> None:
    # ``main`` ends the process without the interpreter's teardown: nothing may be lost
    config = write_config(tmp_path, portal)
    command = [sys.executable, "-m", "aggregator", "--config", str(config)]
    polled = subprocess.run([*command, "-v", "poll"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
    assert polled.returncode == 0, polled.stderr
    assert polled.stdout.rstrip().endswith("3 by the fast path, 1 by feedparser")  # piped
    assert "source=missing" in polled.stderr  # the log, flushed at exit
    unknown = subprocess.run([*command, "poll", "--source", "nope"], capture_output=True,
                             text=True, cwd=tmp_path, timeout=60)
    assert unknown.returncode == 2 and "unknown source id(s): nope" in unknown.stderr
    status = subprocess.run([*command, "status"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=60)
    assert status.returncode == 0 and status.stdout.count("\n") >= 7, status.stdout
