"""Config file edits: new sources appended in the file's own style, every other byte kept;
duplicates and invalid results refused with the file left as it was."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from aggregator.config import load_config
from aggregator.configfile import (
    DuplicateSource,
    NewSource,
    append_sources,
    derive_id,
    same_url,
)
from aggregator.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "aggregator.yaml"
OFWEEK = NewSource(url="https://www.ofweek.com/rss.xml", name="OFweek", categories=("新闻",),
                   interval="1h")
SINA = NewSource(url="https://news.sina.com.cn/feed?x=1", name="新浪: 新闻 #1",
                 categories=("新闻", "国内"))


def copy_of_example(tmp_path: Path) -> Path:
    path = tmp_path / "aggregator.yaml"
    shutil.copy(EXAMPLE, path)
    return path


def test_appending_to_the_example_keeps_every_byte_and_its_style(tmp_path: Path) -> None:
    path = copy_of_example(tmp_path)
    before = path.read_text(encoding="utf-8")

    appended = append_sources(path, [OFWEEK, SINA])

    after = path.read_text(encoding="utf-8")
    assert after == before + (
        "\n"
        "  - id: ofweek\n"
        "    name: OFweek\n"
        "    url: https://www.ofweek.com/rss.xml\n"
        "    categories: [新闻]\n"
        "    interval: 1h\n"
        "\n"
        "  - id: news-sina\n"
        "    name: '新浪: 新闻 #1'\n"
        "    url: https://news.sina.com.cn/feed?x=1\n"
        "    categories: [新闻, 国内]\n"
    )
    assert [(s.id, s.name, s.categories) for s in appended.added] == [
        ("ofweek", "OFweek", ("新闻",)), ("news-sina", "新浪: 新闻 #1", ("新闻", "国内"))]
    assert [s.id for s in load_config(path).sources][-3:] == [
        "dockone-weekly", "ofweek", "news-sina"]


@pytest.mark.parametrize("last_line", ["    categories: [新闻]\n",
                                       "    categories: [新闻]\n    interval: 2h\n"])
def test_comments_after_the_last_entry_stay_where_they_belong(tmp_path: Path,
                                                              last_line: str) -> None:
    """ruamel keeps them in two places (after a flow list, after a scalar): the same text."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "# top comment\n"
        "sources:\n"
        "  - id: one            # the first\n"
        "    name: 一\n"
        "    url: http://one.test/feed\n"
        f"{last_line}"
        "    # a note about one\n"
        "\n"
        "# --- below the sources ---\n"
        "site_title: 聚合  # kept\n",
        encoding="utf-8")

    append_sources(path, [OFWEEK])

    assert path.read_text(encoding="utf-8") == (
        "# top comment\n"
        "sources:\n"
        "  - id: one            # the first\n"
        "    name: 一\n"
        "    url: http://one.test/feed\n"
        f"{last_line}"
        "    # a note about one\n"
        "  - id: ofweek\n"
        "    name: OFweek\n"
        "    url: https://www.ofweek.com/rss.xml\n"
        "    categories: [新闻]\n"
        "    interval: 1h\n"
        "\n"
        "# --- below the sources ---\n"
        "site_title: 聚合  # kept\n")


def test_a_file_indented_its_own_way_keeps_its_indentation(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    original = ("sources:\n"
                "- id: one\n"
                "  name: \"一\"\n"
                "  url: http://one.test/feed\n"
                "  categories:\n"
                "  - 新闻\n")
    path.write_text(original, encoding="utf-8")

    append_sources(path, [OFWEEK])

    assert path.read_text(encoding="utf-8") == original + (
        "- id: ofweek\n"
        "  name: OFweek\n"
        "  url: https://www.ofweek.com/rss.xml\n"
        "  categories: [新闻]\n"
        "  interval: 1h\n")


@pytest.mark.parametrize("sources_line", ["", "sources: []\n"])
def test_a_config_without_sources_gets_a_list(tmp_path: Path, sources_line: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"# settings only\nsite_title: 聚合\n{sources_line}", encoding="utf-8")

    append_sources(path, [OFWEEK])

    assert path.read_text(encoding="utf-8") == (
        "# settings only\nsite_title: 聚合\nsources:\n"
        "  - id: ofweek\n    name: OFweek\n    url: https://www.ofweek.com/rss.xml\n"
        "    categories: [新闻]\n    interval: 1h\n")


@pytest.mark.parametrize("duplicate, reason", [
    (NewSource(url="https://other.test/feed", name="x", categories=("c",), id="cnbeta"),
     "a source with id 'cnbeta' exists already"),
    (NewSource(url="HTTPS://RSSHub.app:443/cnbeta#top", name="x", categories=("c",)),
     "source 'cnbeta' has this URL already"),
])
def test_a_duplicate_id_or_url_is_refused_and_nothing_written(
        tmp_path: Path, duplicate: NewSource, reason: str) -> None:
    path = copy_of_example(tmp_path)
    before = path.read_bytes()

    with pytest.raises(DuplicateSource, match=reason):
        append_sources(path, [OFWEEK, duplicate])

    assert path.read_bytes() == before


def test_duplicates_can_be_skipped_and_reported(tmp_path: Path) -> None:
    path = copy_of_example(tmp_path)
    again = NewSource(url="https://www.ofweek.com/rss.xml", name="again", categories=("c",))

    appended = append_sources(path, [OFWEEK, again], skip_duplicates=True)

    assert [s.id for s in appended.added] == ["ofweek"]
    assert [(s.source.name, s.reason) for s in appended.skipped] == [
        ("again", "source 'ofweek' has this URL already (https://www.ofweek.com/rss.xml)")]


def test_an_edit_the_config_would_refuse_is_not_written(tmp_path: Path) -> None:
    path = copy_of_example(tmp_path)
    before = path.read_bytes()
    bad = NewSource(url="https://x.test/feed", name="x", categories=("c",), interval="5 minutes")

    with pytest.raises(ConfigError) as raised:
        append_sources(path, [bad])

    assert (raised.value.source_id, raised.value.field) == ("x", "interval")
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_derived_ids_come_from_the_host_then_the_path_then_a_number() -> None:
    assert derive_id("https://www.ofweek.com/rss.xml") == "ofweek"
    assert derive_id("https://news.sina.com.cn/feed") == "news-sina"
    assert derive_id("http://127.0.0.1:8080/feed") == "127-0-0-1"
    assert derive_id("https://rsshub.app/ofweek/news", {"rsshub"}) == "rsshub-ofweek-news"
    assert derive_id("https://rsshub.app/feed", {"rsshub"}) == "rsshub-2"
    assert derive_id("https://rsshub.app/a", {"rsshub", "rsshub-a", "rsshub-a-2"}) == "rsshub-a-3"
    assert derive_id("https://中文.cn/rss") == "xn--fiq228c" or derive_id("https://中文.cn/rss")


def test_urls_compare_without_case_default_ports_and_fragments() -> None:
    assert same_url("HTTP://Portal.TEST:80/feed#x") == same_url("http://portal.test/feed")
    assert same_url("https://portal.test") == same_url("https://portal.test/")
    assert same_url("https://portal.test/feed?a=1") != same_url("https://portal.test/feed?a=2")
