"""A real feed reader subscribes: newsboat imports feeds.opml and reloads every feed.

The site is built for real (write_feeds + render_index) under a sub-path site URL
and served by FeedServer on 127.0.0.1; newsboat runs non-interactively
(``-x reload``) with HOME and the XDG dirs inside tmp_path.  Its SQLite cache must
then hold every article, CJK titles included, under each feed the OPML lists, and
later reloads must be answered with 304s (newsboat keeps ETag/Last-Modified).

newsboat keeps one item per guid across all feeds, and our RSS and Atom feeds
share entry ids, so the RSS and Atom subscriptions use two separate caches.
Skipped only when /usr/bin/newsboat is absent (Debian package: newsboat).
"""

from __future__ import annotations

import sqlite3
import subprocess
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from lxml import etree
from served_site import BuiltSite, build_site

from aggregator.publish.paths import OPML_FILENAME, category_paths
from aggregator.service.http import FeedServer, make_app

NEWSBOAT = Path("/usr/bin/newsboat")
RUN_TIMEOUT = 60  # seconds per newsboat invocation

pytestmark = pytest.mark.skipif(
    not NEWSBOAT.exists(), reason="/usr/bin/newsboat is absent (apt-get install newsboat)"
)


class Recorder:
    """WSGI middleware remembering (path, status, If-None-Match sent) of every request."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.seen: list[tuple[str, str, bool]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        def record(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
            with self.lock:
                self.seen.append(
                    (environ["PATH_INFO"], status[:3], "HTTP_IF_NONE_MATCH" in environ)
                )
            return start_response(status, headers, *rest)

        return self.app(environ, record)

    def clear(self) -> None:
        with self.lock:
            self.seen.clear()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[FeedServer, BuiltSite, Recorder]]:
    recorder = Recorder(make_app(tmp_path / "out", "http://placeholder/news/"))
    with FeedServer(recorder) as server:
        built = build_site(tmp_path, server.url + "news/")
        yield server, built, recorder


def newsboat(home: Path, urls: Path, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    config = home / "config"
    if not config.exists():
        config.write_text('reload-threads 4\ndownload-timeout 20\nuser-agent "aggregator-test"\n')
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TERM": "dumb",
        "no_proxy": "*",
    }
    result = subprocess.run(
        [str(NEWSBOAT), "-u", str(urls), "-c", str(cache), "-C", str(config), *args],
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=RUN_TIMEOUT, check=False,
    )
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def opml_urls(built: BuiltSite) -> list[str]:
    tree = etree.fromstring((built.output_dir / OPML_FILENAME).read_bytes())
    return [node.get("xmlUrl") for node in tree.iter("outline") if node.get("xmlUrl")]


def test_newsboat_subscribes_to_every_feed(
    served: tuple[FeedServer, BuiltSite, Recorder], tmp_path: Path
) -> None:
    server, built, recorder = served
    home = tmp_path / "home"
    home.mkdir()

    # 1. Import the OPML exactly as a person would.
    imported = home / "imported-urls"
    newsboat(home, imported, home / "import-cache.db", "-i", str(built.output_dir / OPML_FILENAME))
    listed = opml_urls(built)
    assert len(listed) == 2 * len(built.categories)
    imported_urls = [line.split()[0] for line in imported.read_text().splitlines() if line]
    assert sorted(imported_urls) == sorted(listed)
    assert all(url.startswith(server.url + "news/categories/") for url in listed)

    expected_feed: dict[str, tuple[str, set[str]]] = {}
    for category in built.categories:
        titles = {a.title for a in built.by_category[category]}
        paths = category_paths(category)
        for relative in (paths.rss, paths.atom):
            expected_feed[server.url + "news/" + quote(relative)] = (category, titles)
    assert set(expected_feed) == set(listed)

    # 2. Reload RSS and Atom subscriptions into separate caches (newsboat dedups guids).
    for kind in ("rss.xml", "atom.xml"):
        urls = home / f"urls-{kind}"
        urls.write_text("".join(f"{u}\n" for u in listed if u.endswith(kind)))
        cache = home / f"cache-{kind}.db"
        newsboat(home, urls, cache, "-x", "reload")
        with sqlite3.connect(cache) as db:
            items: dict[str, set[str]] = {}
            for feedurl, title in db.execute("SELECT feedurl, title FROM rss_item"):
                items.setdefault(feedurl, set()).add(title)
            feed_titles = dict(db.execute("SELECT rssurl, title FROM rss_feed"))
        for url in listed:
            if not url.endswith(kind):
                continue
            category, titles = expected_feed[url]
            assert items.get(url) == titles, url
            assert feed_titles[url] == built.options.title_prefix + category

    cjk = {t for _, titles in expected_feed.values() for t in titles if "工业互联网" in t}
    assert cjk, "the sample must include CJK titles"

    # 3. Later reloads are answered from the validators newsboat remembered.  newsboat
    #    2.21 stores a feed's ETag/Last-Modified from its second fetch on, so reload
    #    once more, check what it stored, then expect 304s.
    urls, cache = home / "urls-rss.xml", home / "cache-rss.xml.db"
    newsboat(home, urls, cache, "-x", "reload")
    with sqlite3.connect(cache) as db:
        stored = dict(db.execute("SELECT rssurl, etag FROM rss_feed"))
    assert set(stored) == {u for u in listed if u.endswith("rss.xml")}
    assert all(etag.startswith('"') for etag in stored.values()), stored
    recorder.clear()
    newsboat(home, urls, cache, "-x", "reload")
    feed_requests = [r for r in recorder.seen if r[0].endswith("rss.xml")]
    assert len(feed_requests) == len(built.categories)
    assert all(status == "304" and conditional for _, status, conditional in feed_requests), (
        feed_requests
    )
    with sqlite3.connect(cache) as db:
        count = db.execute("SELECT COUNT(*) FROM rss_item").fetchone()[0]
    assert count == sum(len(titles) for url, (_, titles) in expected_feed.items()
                        if url.endswith("rss.xml"))
