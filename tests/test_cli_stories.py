"""End to end through the CLI: two loopback portals carry the same stories — one under
the same link with different tracking parameters, one under each portal's own link with a
noisy title and a sentence more — and ``poll``, ``build`` and ``export hexo`` publish
each story once, with exact titles and bodies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import feedparser
import pytest
from click.testing import CliRunner, Result
from pytest_httpserver import HTTPServer

from aggregator.cli import cli

STORY = "国务院部署推动工业互联网发展"
STORY_BODY = ("<p>新华社北京5月21日电 国务院总理今天主持召开国务院常务会议，部署进一步推动工业"
              "互联网发展，促进制造业数字化转型。会议指出，工业互联网是新一代信息技术与制造业"
              "深度融合的产物。</p>")
CHIP = "国产芯片出货量创新高"
CHIP_BODY = ("<p>据行业协会统计，今年前三季度国产芯片出货量同比增长三成，创历史新高。"
             "业内人士认为，产能扩张与下游需求回暖共同推动了增长，预计全年仍将保持两位数增速。</p>")
CHIP_MORE = CHIP_BODY.replace("</p>", "另据报道，多家厂商计划明年继续扩产。</p>")
ONLY_B = "乙门户自己的新闻"
ONLY_B_BODY = "<p>只有乙门户报道的一条本地新闻，内容与其他两条完全无关，讲的是地铁新线开通。</p>"


def item(title: str, link: str, body: str, date: str) -> str:
    return (f"<item><title>{title}</title><link>{link}</link><pubDate>{date}</pubDate>"
            f"<description><![CDATA[{body}]]></description></item>")


def rss(title: str, *items: str) -> bytes:
    return (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
            f"<title>{title}</title>{''.join(items)}</channel></rss>").encode()


A_FEED = rss("甲门户",
             item(STORY, "http://news.test/2026/12/story.html?utm_source=rss&amp;utm_medium=feed",
                  STORY_BODY, "Wed, 02 Dec 2026 01:00:00 GMT"),
             item(CHIP, "https://a.test/chip.html", CHIP_BODY, "Wed, 02 Dec 2026 00:30:00 GMT"))
B_LINK = "https://NEWS.test/2026/12/story.html?spm=a2c4g.1.0.0&amp;from=timeline#comments"
B_FEED = rss("乙门户",
             item(f"【独家】{STORY}", B_LINK, STORY_BODY, "Wed, 02 Dec 2026 01:05:00 GMT"),
             item(f"【快讯】 {CHIP}！", "https://b.test/chip.html", CHIP_MORE,
                  "Wed, 02 Dec 2026 00:40:00 GMT"),
             item(ONLY_B, "https://b.test/local.html", ONLY_B_BODY,
                  "Wed, 02 Dec 2026 00:10:00 GMT"))


@pytest.fixture()
def second_portal() -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    yield server
    server.clear()
    server.stop()


def run(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def also(name: str, link: str) -> str:
    return f'<p class="also-reported">也见于：<a href="{link}">{name}</a></p>'


def test_two_portals_one_story_each_published_once(httpserver: HTTPServer,
                                                   second_portal: HTTPServer,
                                                   tmp_path: Path) -> None:
    httpserver.expect_request("/feed.xml").respond_with_data(A_FEED, content_type="text/xml")
    second_portal.expect_request("/rss").respond_with_data(B_FEED, content_type="text/xml")
    config = tmp_path / "aggregator.yaml"
    config.write_text(f"""\
database_url: sqlite:///data/aggregator.db
output_dir: public
site_url: http://feeds.test/
allow_private_networks: true
sources:
  - {{id: a-portal, name: 甲门户, url: "{httpserver.url_for('/feed.xml')}",
     categories: [科技, 甲门户]}}
  - {{id: b-portal, name: 乙门户, url: "{second_portal.url_for('/rss')}",
     categories: [财经, 乙门户]}}
""", encoding="utf-8")
    run("--config", str(config), "poll", "--source", "a-portal")  # the first to report
    polled = run("--config", str(config), "poll")
    assert "b-portal" in polled.output and "3 new" in polled.output
    run("--config", str(config), "build")
    run("--config", str(config), "export", "hexo", "--out", str(tmp_path / "hexo"))

    b_story = "https://NEWS.test/2026/12/story.html?spm=a2c4g.1.0.0&amp;from=timeline#comments"
    story_body = STORY_BODY + "\n" + also("乙门户", b_story)  # its own link, as published
    chip_body = CHIP_BODY + "\n" + also("乙门户", "https://b.test/chip.html")
    expected = {
        "科技": [(STORY, story_body), (CHIP, chip_body)],
        "甲门户": [(STORY, story_body), (CHIP, chip_body)],
        "财经": [(STORY, story_body), (CHIP, chip_body), (ONLY_B, ONLY_B_BODY)],
        "乙门户": [(STORY, story_body), (CHIP, chip_body), (ONLY_B, ONLY_B_BODY)],
    }
    public = tmp_path / "public"
    for category, items in expected.items():
        for kind in ("rss.xml", "atom.xml"):
            parsed = feedparser.parse((public / "categories" / category / kind).read_bytes())
            assert not parsed.bozo, (category, kind, parsed.get("bozo_exception"))
            assert [(e.title, e.content[0].value) for e in parsed.entries] == items, category
            assert len({e.id for e in parsed.entries}) == len(items)
            story = parsed.entries[0]
            assert story.author == "甲门户"
            assert story.link == "http://news.test/2026/12/story.html?utm_source=rss&utm_medium=feed"
            assert [t.term for t in story.tags] == ["科技", "甲门户", "财经", "乙门户"]
    index = (public / "index.html").read_text(encoding="utf-8")
    assert index.count(f">{STORY}<") == 1 and index.count(f">{CHIP}<") == 1
    assert "【独家】" not in index and "【快讯】" not in index

    posts = {path.read_text(encoding="utf-8").split("\n", 2)[1]: path.read_text(encoding="utf-8")
             for path in (tmp_path / "hexo").glob("*.md")}
    assert sorted(posts) == sorted(f"title: '{t}'" for t in (STORY, CHIP, ONLY_B))
    story_post = posts[f"title: '{STORY}'"]
    assert "categories: \n - 科技\n - 甲门户\n - 财经\n - 乙门户\n" in story_post
    assert "author: 甲门户\n" in story_post
    assert story_post.endswith(f"\n<div>   \n{story_body} \n  \n</div>\n")
    assert posts[f"title: '{ONLY_B}'"].endswith(f"\n<div>   \n{ONLY_B_BODY} \n  \n</div>\n")
