"""``aggregator sources add/import/export/list`` end to end through the CLI, against
loopback portals (pytest-httpserver) and the operator's commented config file."""

from __future__ import annotations

from pathlib import Path

import pytest
from builders import opml_export, rss_items
from click.testing import CliRunner, Result
from pytest_httpserver import HTTPServer

from aggregator.cli import cli
from aggregator.config import load_config

HEADER = (
    "# 运营者的配置\n"
    "database_url: sqlite:///data/aggregator.db   # next to this file\n"
    "allow_private_networks: true  # the portals of these tests live on loopback\n"
    "\n"
    "sources:\n"
    "  # --- 新媒体 ---\n"
    "  - id: kept\n"
    "    name: 已有\n"
    "    url: http://kept.test/feed.xml\n"
    "    categories: [新媒体]\n"
    "    interval: 2h   # slow portal\n"
)
GBK_FEED = rss_items(
    "<item><title>王喆：数字化转型</title><link>http://www.ofweek.com/news/1.html</link></item>",
    title="高科技行业门户", link="http://www.ofweek.com/", encoding="gb2312").encode("gbk")


MINIFLUX, FRESHRSS, FEEDLY, NEWSBOAT = (
    opml_export(reader) for reader in ("miniflux", "freshrss", "feedly", "newsboat"))


@pytest.fixture()
def config(tmp_path: Path) -> Path:
    path = tmp_path / "aggregator.yaml"
    path.write_text(HEADER, encoding="utf-8")
    return path


def run(config: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), "sources", *args],
                              catch_exceptions=False)


def test_add_finds_the_feed_a_page_links_and_appends_it_keeping_the_file(
        httpserver: HTTPServer, config: Path) -> None:
    httpserver.expect_request("/news/").respond_with_data(
        b'<!DOCTYPE html><html><head><meta charset="gb2312">'
        b'<link rel="alternate" type="application/rss+xml" href="rss.xml"></head></html>',
        content_type="text/html")
    httpserver.expect_request("/news/rss.xml").respond_with_data(
        GBK_FEED, content_type="text/xml")
    feed_url = httpserver.url_for("/news/rss.xml")

    result = run(config, "add", httpserver.url_for("/news/"), "--category", "新闻",
                 "--category", "科技", "--interval", "45m")

    assert result.exit_code == 0, result.output
    assert config.read_text(encoding="utf-8") == HEADER + (
        "  - id: localhost\n"
        "    name: 高科技行业门户\n"
        f"    url: {feed_url}\n"
        "    categories: [新闻, 科技]\n"
        "    interval: 45m\n")
    assert f"its feed: {feed_url}" in result.output
    assert "added localhost: 高科技行业门户" in result.output
    assert "(1 entry now)" in result.output


def test_add_takes_the_given_id_and_name_and_a_default_category(
        httpserver: HTTPServer, config: Path) -> None:
    httpserver.expect_request("/feed.xml").respond_with_data(GBK_FEED, content_type="text/xml")

    result = run(config, "add", httpserver.url_for("/feed.xml"), "--id", "ofweek",
                 "--name", "OFweek")

    assert result.exit_code == 0, result.output
    added = load_config(config).sources[-1]
    assert (added.id, added.name, added.categories) == ("ofweek", "OFweek", ("未分类",))


@pytest.mark.parametrize("args, message", [
    (("add", "http://kept.test/other.xml", "--id", "kept"),
     "refused: a source with id 'kept' exists already"),
    (("add", "HTTP://KEPT.test:80/feed.xml"),
     "refused: source 'kept' has this URL already (HTTP://KEPT.test:80/feed.xml)"),
    (("add", "http://new.test/feed.xml", "--interval", "soon"),
     "refused: --interval: 'soon' is not a duration like 90s, 30m, 2h or 1d"),
])
def test_add_refuses_duplicates_and_bad_values_before_fetching(
        config: Path, args: tuple[str, ...], message: str) -> None:
    result = run(config, *args)

    assert result.exit_code == 2
    assert result.stderr.strip() == message
    assert "Traceback" not in result.output
    assert config.read_text(encoding="utf-8") == HEADER


def test_add_refuses_a_feed_found_on_a_page_that_is_configured_already(
        httpserver: HTTPServer, config: Path) -> None:
    feed_url = httpserver.url_for("/rss.xml")
    config.write_text(HEADER.replace("http://kept.test/feed.xml", feed_url), encoding="utf-8")
    httpserver.expect_request("/").respond_with_data(
        b'<html><head><link rel="alternate" type="application/rss+xml" href="/rss.xml">',
        content_type="text/html")
    httpserver.expect_request("/rss.xml").respond_with_data(GBK_FEED, content_type="text/xml")

    result = run(config, "add", httpserver.url_for("/"))

    assert result.exit_code == 2
    assert f"source 'kept' has this URL already ({feed_url})" in result.stderr


def test_add_refuses_what_does_not_parse(httpserver: HTTPServer, config: Path) -> None:
    httpserver.expect_request("/broken.xml").respond_with_data(
        b"<?xml version='1.0'?><data>nothing</data>", content_type="text/xml")

    result = run(config, "add", httpserver.url_for("/broken.xml"))

    assert result.exit_code == 1
    assert (f"cannot add {httpserver.url_for('/broken.xml')}: not a feed: no RSS or Atom root "
            "element") in result.stderr.splitlines()
    assert config.read_text(encoding="utf-8") == HEADER


@pytest.mark.parametrize("opml, expected", [
    (MINIFLUX, [("36kr", "36氪", ("科技",)), ("cnbeta", "cnBeta", ("科技",))]),
    (FRESHRSS, [("ofweek", "OFweek 高科技行业门户", ("新闻",))]),
    (FEEDLY, [("rsshub", "掘金 后端", ("编程", "后端")), ("oschina", "开源中国", ("编程",))]),
    (NEWSBOAT, [("oschina", "OSCHINA", ("未分类",)),
                ("rsshub", "rsshub.app", ("未分类",))]),
], ids=["miniflux", "freshrss", "feedly", "newsboat"])
def test_import_reads_each_readers_opml(config: Path, tmp_path: Path, opml: bytes,
                                        expected: list[tuple[str, str, tuple[str, ...]]]) -> None:
    file = tmp_path / "export.opml"
    file.write_bytes(opml)

    result = run(config, "import", str(file))

    assert result.exit_code == 0, result.output
    sources = load_config(config).sources
    assert [(s.id, s.name, s.categories) for s in sources[1:]] == expected
    assert config.read_text(encoding="utf-8").startswith(HEADER)
    assert f"imported {len(expected)} source(s)" in result.output


def test_import_skips_and_reports_duplicates_and_adds_the_given_category(
        config: Path, tmp_path: Path) -> None:
    file = tmp_path / "export.opml"
    file.write_bytes(FRESHRSS.replace(b"https://www.ofweek.com/rss.xml",
                                      b"http://kept.test/feed.xml", 1))
    file.write_bytes(file.read_bytes().replace(
        b"</outline>\n\t</body>",
        b'</outline>\n\t\t<outline text="New" xmlUrl="https://new.test/rss"/>\n\t</body>'))

    result = run(config, "import", str(file), "--category", "导入")

    assert result.exit_code == 0, result.output
    assert [(s.id, s.categories) for s in load_config(config).sources] == [
        ("kept", ("新媒体",)), ("new", ("导入",))]
    assert ("skipped OFweek 高科技行业门户 <http://kept.test/feed.xml>: "
            "source 'kept' has this URL already") in result.output
    assert "skipped 坏的: 'javascript:alert(1)' is not an http(s) URL" in result.output
    assert "imported 1 source(s)" in result.output and "skipped 2" in result.output


def test_import_of_what_is_not_opml_is_refused(config: Path, tmp_path: Path) -> None:
    file = tmp_path / "x.opml"
    file.write_text("<html></html>", encoding="utf-8")

    result = run(config, "import", str(file))

    assert result.exit_code == 2
    assert "the root element is <html>" in result.stderr
    assert config.read_text(encoding="utf-8") == HEADER


def test_export_then_import_into_an_empty_config_gives_the_same_sources(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[1] / "config" / "aggregator.yaml"
    exported = CliRunner().invoke(cli, ["--config", str(example), "sources", "export"],
                                  catch_exceptions=False)
    assert exported.exit_code == 0
    assert exported.stdout.startswith("<?xml version='1.0' encoding='UTF-8'?>\n<opml")
    file = tmp_path / "sources.opml"
    file.write_text(exported.stdout, encoding="utf-8")
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\nsite_title: 新站\n", encoding="utf-8")

    imported = run(empty, "import", str(file))

    assert imported.exit_code == 0, imported.output
    assert load_config(empty).source_list() == load_config(example).source_list()


def test_export_nests_feeds_by_first_category(config: Path) -> None:
    result = run(config, "export")

    assert ('<outline text="新媒体" title="新媒体">\n'
            '      <outline type="rss" text="已有" title="已有" xmlUrl="http://kept.test/feed.xml"'
            ' category="新媒体" aggregator:id="kept" aggregator:interval="2h"/>\n'
            '    </outline>') in result.stdout


def test_list_shows_each_source_without_creating_a_database(config: Path) -> None:
    config.write_text(HEADER + "    enabled: false\n", encoding="utf-8")

    result = run(config, "list")

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["ID", "KIND", "URL", "CATEGORIES", "STATE"]
    assert lines[1].split() == ["kept", "feed", "http://kept.test/feed.xml", "新媒体",
                                "disabled,", "never", "polled"]
    assert lines[2].startswith("1 source(s); no database yet at sqlite:///")
    assert not (config.parent / "data").exists()


def test_list_shows_the_last_poll_once_there_is_one(httpserver: HTTPServer,
                                                    config: Path) -> None:
    httpserver.expect_request("/feed.xml").respond_with_data(GBK_FEED, content_type="text/xml")
    config.write_text(HEADER.replace("http://kept.test/feed.xml",
                                     httpserver.url_for("/feed.xml")), encoding="utf-8")
    polled = CliRunner().invoke(cli, ["--config", str(config), "poll"], catch_exceptions=False)
    assert polled.exit_code == 0, polled.output

    result = run(config, "list")

    row = result.output.splitlines()[1]
    assert row.startswith("kept  feed  " + httpserver.url_for("/feed.xml"))
    assert "enabled, new at " in row
    assert result.output.splitlines()[-1] == "1 source(s); last polls from the database"
