"""Property tests: whatever values an entry carries, normalize + generate give feeds that
parse back cleanly and validate, and Hexo front matter that loads."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import feedparser
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from aggregator.config import printable
from aggregator.ingest.normalize import normalize
from aggregator.publish.feeds import render_atom, render_rss
from aggregator.publish.hexo import render_front_matter
from aggregator.records import FeedOptions, NormalizeOptions, ParsedEntry, Source

RNG = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "schemas" / "atom-rfc4287.rng"
SEEN = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
FEED_OPTIONS = FeedOptions(output_dir="unused", site_url="http://feeds.test/", feed_size=50)

HTML_BITS = st.sampled_from([
    "<p>", "</p>", "<b>", "<img src=", "<a href=", '"', "'", "&", "&amp;", "&#0;", "&#x1;",
    "<script>", "</script>", "javascript:", "<![CDATA[", "]]>", "\x00", "\x01", "\x0b", "\ufffe",
    "<svg onload=x>", "<!--", "-->", "<style>", "{{", "{%", "---", "\n", "é", "喆", "㗎", "€",
    "\ud800", "<iframe>", "style=\"background:url(javascript:x)\"",
])
TEXT = st.lists(st.one_of(st.text(max_size=20), HTML_BITS), max_size=12).map("".join)
URLS = st.one_of(
    st.none(), TEXT,
    st.builds(lambda host, path: f"http://{host}.test/{path}",
              st.text("abcdefghijklmnop", min_size=1, max_size=8), TEXT),
    st.sampled_from(["javascript:alert(1)", "data:text/html,x", "//evil.test/x", "/relative",
                     "http://images.test/a b.jpg", "https://x.test/?q=1&r=<2>"]),
)
DATES = st.one_of(st.none(), st.datetimes(min_value=datetime(1, 1, 1),
                                          max_value=datetime(9999, 12, 31),
                                          timezones=st.just(UTC)))
ENTRIES = st.builds(
    ParsedEntry,
    guid=st.one_of(st.none(), TEXT),
    link=URLS,
    title=st.one_of(st.none(), TEXT),
    title_is_html=st.booleans(),
    author=st.one_of(st.none(), TEXT),
    published=DATES,
    updated=DATES,
    content=st.one_of(st.none(), TEXT),
    summary=st.one_of(st.none(), TEXT),
    thumbnails=st.lists(URLS.filter(lambda u: u is not None), max_size=2).map(tuple),
)
def config_accepts(category: str) -> bool:
    try:
        printable(category)
    except ValueError:
        return False
    return True


# Categories come from the validated config, which refuses control characters.
CATEGORIES = st.lists(TEXT.map(str.strip).filter(bool).filter(config_accepts), min_size=1,
                      max_size=3, unique=True).map(tuple)


@cache
def atom_schema() -> etree.RelaxNG:
    return etree.RelaxNG(etree.parse(str(RNG)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries=st.lists(ENTRIES, min_size=1, max_size=5), categories=CATEGORIES,
       proxy=st.sampled_from([None, "https://cors.zfour.workers.dev/?"]))
def test_any_entry_gives_valid_feeds_and_front_matter(
    entries: list[ParsedEntry], categories: tuple[str, ...], proxy: str | None
) -> None:
    source = Source(id="prop", name="属性测试", url="http://portal.test/feed.xml",
                    categories=categories)
    options = NormalizeOptions(image_proxy=proxy)
    articles = [normalize(entry, source, options, seen_at=SEEN) for entry in entries]
    unique = list({a.key: a for a in reversed(articles)}.values())
    category = categories[0]

    rss = feedparser.parse(render_rss(category, unique, FEED_OPTIONS))
    assert not rss.bozo, rss.get("bozo_exception")
    assert len(rss.entries) == len(unique)

    atom_bytes = render_atom(category, unique, FEED_OPTIONS)
    atom = feedparser.parse(atom_bytes)
    assert not atom.bozo, atom.get("bozo_exception")
    assert len(atom.entries) == len(unique)
    assert atom_schema().validate(etree.fromstring(atom_bytes)), atom_schema().error_log

    for article in articles:
        assert article.link is None or article.link.startswith(("http://", "https://"))
        assert "<script" not in article.content.lower()
        front_matter = render_front_matter(article)
        assert front_matter.startswith("---\n") and front_matter.endswith("\n---\n")
        loaded = yaml.safe_load(front_matter[4 : -len("---\n")])
        assert loaded["categories"] == [c for c in article.categories]
        assert loaded["author"] == article.author
        assert loaded["comments"] is False
