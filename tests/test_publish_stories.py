"""Tests for aggregator.publish.stories and the builds that use it: one story, many
portals, published once — in the feeds, on the index page and in the Hexo export."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import feedparser
from builders import T0, make_article, make_source

from aggregator import publish
from aggregator.publish.feeds import entry_id
from aggregator.publish.hexo import hexo_filename
from aggregator.publish.paths import category_paths
from aggregator.publish.stories import also_reported, merge_stories
from aggregator.records import Article, FeedOptions, SourceState, SourceUpdate
from aggregator.store import Store

TEXT = ("<p>新华社北京5月21日电 国务院总理今天主持召开国务院常务会议，部署进一步推动工业互联网"
        "发展，促进制造业数字化转型。会议指出，工业互联网是新一代信息技术与制造业深度融合的"
        "产物。</p>")
SOURCES = [make_source("https://a.test/feed", "a", name="甲门户", categories=("科技", "甲")),
           make_source("https://b.test/feed", "b", name="乙<网>", categories=("财经", "乙")),
           make_source("https://c.test/feed", "c", name="丙门户", categories=("科技", "丙"))]


def reported(source_id: str, key: str, hours: int, **fields: object) -> Article:
    """The story as ``source_id`` carries it, first seen ``hours`` after T0."""
    seen = T0 + timedelta(hours=hours)
    source = next(s for s in SOURCES if s.id == source_id)
    values: dict[str, object] = {
        "source_id": source_id, "link": f"https://{source_id}.test/{key}.html?utm_source=rss",
        "title": "国务院部署推动工业互联网发展", "content": TEXT, "author": source.name,
        "categories": source.categories, "date": seen, "first_seen": seen, "updated_at": seen}
    values.update(fields)
    return make_article(key, **values)  # type: ignore[arg-type]


def commit(store: Store, *articles: Article) -> None:
    for article in articles:
        state = SourceState(source_id=article.source_id, url=f"https://{article.source_id}.test/")
        store.commit_poll(SourceUpdate(state=state, result=None), [article])


def options(tmp_path: Path) -> FeedOptions:
    return FeedOptions(output_dir=str(tmp_path / "out"), site_url="https://feeds.test/",
                       source_names={s.id: s.name for s in SOURCES})


def feed(tmp_path: Path, category: str, kind: str = "rss") -> feedparser.FeedParserDict:
    paths = category_paths(category)
    parsed = feedparser.parse((tmp_path / "out" / getattr(paths, kind)).read_bytes())
    assert not parsed.bozo, parsed.get("bozo_exception")
    return parsed


ALSO_B = ('<p class="also-reported">也见于：<a href="https://b.test/2.html?utm_source=rss">'
          "乙&lt;网&gt;</a></p>")


def test_one_story_is_one_item_in_every_category_of_its_sources(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'db.sqlite'}") as store:
        first = reported("a", "1", 0)
        second = reported("b", "2", 1, title="【独家】国务院部署推动工业互联网发展")
        alone = reported("c", "3", 2, title="别的新闻", link="https://c.test/3.html",
                         content="<p>" + "完全不同的另一篇报道，关于本市的暴雨预警。" * 3 + "</p>")
        commit(store, first, second, alone)
        publish.build(store, options(tmp_path), SOURCES)
        index = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
        publish.export_hexo(store, tmp_path / "hexo", SOURCES)
    for category in ("科技", "甲", "财经", "乙"):  # the union of A's and B's categories
        entries = [e for e in feed(tmp_path, category).entries if e.title != "别的新闻"]
        assert [e.id for e in entries] == [entry_id(first)], category
        [entry] = entries
        assert entry.title == "国务院部署推动工业互联网发展"  # the first source's
        assert entry.link == first.link and entry.author == "甲门户"
        assert [t.term for t in entry.tags] == ["科技", "甲", "财经", "乙"]
        assert entry.content[0].value == f"{TEXT}\n{ALSO_B}"
    assert [e.title for e in feed(tmp_path, "科技").entries] == ["别的新闻",
                                                                "国务院部署推动工业互联网发展"]
    assert index.count("国务院部署推动工业互联网发展") == 1 and "别的新闻" in index
    posts = sorted(p.name for p in (tmp_path / "hexo").glob("*.md"))
    assert posts == sorted([hexo_filename(first), hexo_filename(alone)])
    post = (tmp_path / "hexo" / hexo_filename(first)).read_text(encoding="utf-8")
    assert "categories: \n - 科技\n - 甲\n - 财经\n - 乙\n" in post
    assert "author: 甲门户\n" in post and f"{TEXT}\n{ALSO_B} \n" in post


def test_the_item_id_stays_when_a_second_portal_reports_the_story_later(
        tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'db.sqlite'}") as store:
        first = reported("a", "1", 0)
        commit(store, first)
        publish.build(store, options(tmp_path), SOURCES)
        [before] = feed(tmp_path, "科技", "atom").entries
        commit(store, reported("b", "2", 3))
        commit(store, reported("c", "3", 5, link="https://c.test/3.html"))
        publish.build(store, options(tmp_path), SOURCES)
        [after] = feed(tmp_path, "科技", "atom").entries
    assert after.id == before.id == entry_id(first)
    # the body changed, so readers are told the entry was updated
    assert after.updated_parsed > before.updated_parsed
    assert after.content[0].value.endswith(
        '<a href="https://c.test/3.html">丙门户</a></p>')  # in the order they were first seen
    assert "也见于：<a href=\"https://b.test/2.html?utm_source=rss\">乙&lt;网&gt;</a>、" in (
        after.content[0].value)


def test_removed_sources_hand_the_story_over_or_take_it_away(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'db.sqlite'}") as store:
        first, second = reported("a", "1", 0), reported("b", "2", 1)
        commit(store, first, second)
        publish.build(store, options(tmp_path), SOURCES)
        assert [e.id for e in feed(tmp_path, "科技").entries] == [entry_id(first)]
        publish.build(store, options(tmp_path), SOURCES[1:])  # "a" removed from the config
        [entry] = feed(tmp_path, "财经").entries
        assert entry.id == entry_id(second) and entry.author == "乙<网>"
        assert entry.content[0].value == TEXT  # nobody else still publishes it
        assert [t.term for t in entry.tags] == ["财经", "乙"]
        assert feed(tmp_path, "科技").entries == []  # it was there only through "a"
        publish.build(store, options(tmp_path), SOURCES[2:])  # "b" removed too
        assert feed(tmp_path, "科技").entries == []
        report = publish.export_hexo(store, tmp_path / "hexo", SOURCES[2:])
    assert report.written == 0 and list((tmp_path / "hexo").glob("*.md")) == []


def test_merge_stories_keeps_each_story_once_in_the_listed_order() -> None:
    a, b = reported("a", "1", 0), reported("b", "2", 1)
    other = reported("c", "9", 2, title="别的")
    members = {("a", "1"): (a, b), ("b", "2"): (a, b)}
    merged = merge_stories([b, other, a], members, {"a": "甲门户", "b": "乙"})
    assert [(m.source_id, m.key) for m in merged] == [("a", "1"), ("c", "9")]
    assert merged[0].categories == ("科技", "甲", "财经", "乙") and merged[1] == other
    assert merged[0].updated_at == b.first_seen
    assert merge_stories([a], {("a", "1"): ()}, {}) == []  # every member unpublished


def test_also_reported_names_each_other_source_once_escaped() -> None:
    b1 = reported("b", "2", 1)
    b2 = reported("b", "3", 2)
    unlinked = reported("c", "4", 3, link=None)
    hostile = make_article("5", source_id="x", link="javascript:alert(1)")
    block = also_reported([b1, b2, unlinked, hostile], {"b": "乙<网>", "c": "丙门户"})
    assert block == ('<p class="also-reported">也见于：'
                     '<a href="https://b.test/2.html?utm_source=rss">乙&lt;网&gt;</a>、丙门户、x</p>')
    assert also_reported([], {}) == ""
