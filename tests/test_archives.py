"""RFC 5005 archived feeds (aggregator.publish.archives) end to end: a portal on loopback
is polled into a real SQLite store, ``publish.build`` writes the tree, the project's own
HTTP server serves it, and a reader walks ``rel="prev-archive"`` from atom.xml."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import requests
from builders import make_source, rss_items
from lxml import etree
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from aggregator import publish
from aggregator.ingest.fetch import HttpFetcher
from aggregator.ingest.poll import PollOptions, poll_source
from aggregator.publish.archives import archive_path, manifest_path, plan
from aggregator.publish.feeds import BuildReport, entry_id
from aggregator.publish.paths import category_paths, public_url
from aggregator.records import (
    Article,
    ArticleStamp,
    FeedOptions,
    FetchOptions,
    NormalizeOptions,
    PollOutcome,
    Source,
)
from aggregator.service.http import FeedServer, make_app
from aggregator.store import Store

SHARED = Path(__file__).resolve().parents[2] / "shared"
ATOM_RNG = SHARED / "corpus" / "schemas" / "atom-rfc4287.rng"
ATOM = "{http://www.w3.org/2005/Atom}"
FH_ARCHIVE = "{http://purl.org/syndication/history/1.0}archive"
CATEGORY = "新闻"
FEED_SIZE = 5
BASE = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)  # article n is dated BASE + n hours
POLL_OPTIONS = PollOptions(fetch=FetchOptions(allow_private_networks=True, deadline=10),
                           normalize=NormalizeOptions())
NEWSBOAT = Path("/usr/bin/newsboat")

source = partial(make_source, categories=(CATEGORY,))


class Portal:
    """A portal's RSS feed on loopback listing items ``listed`` (numbers), newest first;
    ``dates`` and ``bodies`` override an item's date or text."""

    def __init__(self, server: HTTPServer) -> None:
        self.listed: list[int] = []
        self.dates: dict[int, datetime] = {}
        self.bodies: dict[int, str] = {}
        server.expect_request("/feed").respond_with_handler(self.answer)
        self.url = server.url_for("/feed")

    def answer(self, request: Request) -> Response:
        items = "".join(
            f"<item><title>第{n}条新闻</title><link>http://portal.test/a/{n:03d}</link>"
            f"<guid>item-{n:03d}</guid>"
            f"<pubDate>{format_datetime(self.dates.get(n, BASE + timedelta(hours=n)))}</pubDate>"
            f"<description>{self.bodies.get(n, f'正文 {n}')}</description></item>"
            for n in sorted(self.listed, reverse=True))
        return Response(rss_items(items).encode(), content_type="text/xml")


class Loading:
    """The store as publishing reads it, remembering which articles pages were loaded for."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.loaded: list[tuple[str, str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def articles_by_identity(self, identities: Iterable[tuple[str, str]]
                             ) -> dict[tuple[str, str], Article]:
        wanted = list(identities)
        self.loaded += wanted
        return self.store.articles_by_identity(wanted)


@dataclass
class Site:
    """A store, the portal polled into it, the published tree and the server serving it."""

    store: Store
    portal: Portal
    src: Source
    options: FeedOptions
    server: FeedServer
    http: HttpFetcher
    polls: int = 0

    @property
    def out(self) -> Path:
        return Path(self.options.output_dir)

    def poll(self, *numbers: int) -> None:
        """The portal lists these items too; one poll (first seen an hour after the last)."""
        self.portal.listed.extend(numbers)
        self.polls += 1
        at = BASE + timedelta(days=self.polls)
        result = poll_source(self.src, self.store.source_state(self.src.id), self.store,
                             POLL_OPTIONS, fetch=self.http, force=True, now=lambda: at)
        assert result.result in (PollOutcome.NEW, PollOutcome.UPDATED), result

    def build(self) -> BuildReport:
        return publish.build(self.store, self.options, [self.src], index=False)

    def build_loading(self) -> tuple[BuildReport, list[tuple[str, str]]]:
        """A build, and the identities of the full articles it loaded for archive pages."""
        reader = Loading(self.store)
        return publish.build(reader, self.options, [self.src], index=False), reader.loaded

    def get(self, url: str) -> etree._Element:
        assert url.startswith(self.server.url), url
        response = requests.get(url, timeout=10)
        assert response.status_code == 200, url
        return etree.fromstring(response.content)

    def stored_ids(self) -> set[str]:
        return {entry_id(a) for a in self.store.iter_articles(self.src.id)}


@pytest.fixture
def site(tmp_path: Path, httpserver: HTTPServer) -> Iterator[Site]:
    out = tmp_path / "out"
    app = make_app(out, "http://placeholder/feeds/")
    with Store.open(f"sqlite:///{tmp_path / 'db.sqlite'}") as store, \
            FeedServer(app) as server:
        fetcher = HttpFetcher()
        portal = Portal(httpserver)
        options = FeedOptions(output_dir=str(out), site_url=server.url + "feeds/",
                              feed_size=FEED_SIZE, title_prefix="聚合 · ")
        yield Site(store, portal, source(portal.url), options, server, fetcher)
        fetcher.close()


@pytest.fixture(scope="module")
def atom_schema() -> etree.RelaxNG:
    return etree.RelaxNG(etree.parse(str(ATOM_RNG)))


def url_of(site: Site, relative: str) -> str:
    return public_url(site.options, relative)


def links(root: etree._Element, rel: str) -> list[str]:
    """The hrefs of ``rel`` links of a feed (Atom) or channel (RSS, as atom:link)."""
    parent = root.find("channel") if root.tag == "rss" else root
    assert parent is not None
    return [link.get("href") for link in parent.findall(f"{ATOM}link") if link.get("rel") == rel]


def ids(root: etree._Element) -> list[str]:
    return [e.findtext(f"{ATOM}id") for e in root.findall(f"{ATOM}entry")]


def walk(site: Site) -> tuple[list[str], list[list[str]]]:
    """The current feed's entry ids and each archive page's, newest page first, following
    ``prev-archive`` from atom.xml over HTTP; checks what every page must carry."""
    atom_url = url_of(site, category_paths(CATEGORY).atom)
    current = site.get(atom_url)
    pages: list[list[str]] = []
    following = links(current, "prev-archive")
    while following:
        (url,) = following
        page = site.get(url)
        assert page.find(FH_ARCHIVE) is not None, url
        assert links(page, "current") == [atom_url]
        assert links(page, "self") == [url]
        assert links(page, "hub") == []
        assert len(ids(page)) <= FEED_SIZE
        pages.append(ids(page))
        following = links(page, "prev-archive")
        if following:
            assert _number(following[0]) == _number(url) - 1
        else:
            assert _number(url) == 1, "page 1 is the oldest and has no prev-archive"
    return ids(current), pages


def _number(url: str) -> int:
    return int(url.rsplit("/", 1)[1].removesuffix(".xml"))


def assert_every_article_once(site: Site) -> list[list[str]]:
    current, pages = walk(site)
    in_pages = [i for page in pages for i in page]
    assert len(in_pages) == len(set(in_pages)), "pages are disjoint"
    assert set(current) | set(in_pages) == site.stored_ids()
    return pages


def page_times(site: Site) -> dict[str, tuple[int, int]]:
    """Each page's (inode, mtime): a rewrite replaces the file, so both tell it."""
    folder = site.out / archive_path(CATEGORY, 1).rsplit("/", 1)[0]
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(folder.glob("*.xml"))}


def archived(report: BuildReport) -> set[str]:
    return {p for p in report.written if "/archive/" in p}


def three_polls(site: Site) -> list[BuildReport]:
    reports = []
    for numbers in ((1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12)):
        site.poll(*numbers)
        reports.append(site.build())
    return reports


# --------------------------------------------------------------------------- tests


def test_prev_archive_links_reach_every_article_once(site: Site, atom_schema: etree.RelaxNG
                                                      ) -> None:
    first, second, third = three_polls(site)

    assert archived(first) == set()  # 4 articles: all in the current feed
    assert archived(second) == {archive_path(CATEGORY, 1)}
    assert archived(third) == {archive_path(CATEGORY, 2)}  # page 1 is never rewritten
    pages = assert_every_article_once(site)
    by_number = {a.key: entry_id(a) for a in site.store.iter_articles(site.src.id)}
    # oldest first: page 1 holds items 1-5, page 2 items 6-10 (newest page first here)
    assert [sorted(p) for p in pages] == [
        sorted(by_number[f"item-{n:03d}"] for n in range(6, 11)),
        sorted(by_number[f"item-{n:03d}"] for n in range(1, 6))]
    for number in (1, 2):
        data = (site.out / archive_path(CATEGORY, number)).read_bytes()
        assert atom_schema.validate(etree.fromstring(data)), atom_schema.error_log
    rss = site.get(url_of(site, category_paths(CATEGORY).rss))
    assert links(rss, "prev-archive") == [url_of(site, archive_path(CATEGORY, 2))]
    assert links(rss, "hub") == []


def test_a_build_with_nothing_new_rewrites_no_page(site: Site) -> None:
    three_polls(site)
    before = page_times(site)

    again, loaded = site.build_loading()

    assert loaded == []  # no page was even rendered
    assert archived(again) == set()
    assert {archive_path(CATEGORY, 1), archive_path(CATEGORY, 2)} <= set(again.unchanged)
    assert page_times(site) == before


def test_a_changed_article_rewrites_only_its_page(site: Site) -> None:
    three_polls(site)
    before = page_times(site)
    site.portal.bodies[3] = "正文 3（更正）"

    site.poll()
    report, loaded = site.build_loading()

    assert sorted(loaded) == sorted((site.src.id, f"item-{n:03d}") for n in range(1, 6))
    assert archived(report) == {archive_path(CATEGORY, 1)}
    after = page_times(site)
    assert after["2.xml"] == before["2.xml"] and after["1.xml"] != before["1.xml"]
    page = etree.fromstring((site.out / archive_path(CATEGORY, 1)).read_bytes())
    assert any("更正" in (e.findtext(f"{ATOM}content") or "") for e in page.iter(f"{ATOM}entry"))
    assert_every_article_once(site)


def test_retention_rewrites_only_the_pages_that_held_the_removed(site: Site) -> None:
    three_polls(site)
    before = page_times(site)

    removed = site.store.prune(keep_per_source=9)  # items 1-3 go
    report, loaded = site.build_loading()

    assert removed == {site.src.id: 3}
    assert archived(report) == {archive_path(CATEGORY, 1)}
    assert sorted(loaded) == [(site.src.id, "item-004"), (site.src.id, "item-005")]
    assert page_times(site)["2.xml"] == before["2.xml"]
    pages = assert_every_article_once(site)
    assert [len(p) for p in pages] == [5, 2]  # page numbers never shift

    site.store.prune(keep_per_source=7)  # items 4-5: page 1 is emptied, but stays
    site.build()
    assert [len(p) for p in assert_every_article_once(site)] == [5, 0]


def test_a_back_dated_arrival_closes_a_partial_page(site: Site) -> None:
    three_polls(site)
    site.portal.dates[13] = BASE - timedelta(days=30)  # older than everything, new to us

    site.poll(13)
    report = site.build()

    assert archived(report) == {archive_path(CATEGORY, 3)}
    pages = assert_every_article_once(site)
    assert [len(p) for p in pages] == [3, 5, 5]  # items 11, 12 and 13
    # 11 and 12 are in the current feed too: overlap with the newest page is allowed


def test_a_wiped_output_dir_is_rebuilt_the_same_from_the_store(site: Site) -> None:
    three_polls(site)
    site.poll(13, 14, 15)
    site.build()
    pages = {n: (site.out / archive_path(CATEGORY, n)).read_bytes() for n in (1, 2, 3)}

    shutil.rmtree(site.out)
    rebuilt = site.build()

    assert archived(rebuilt) == {archive_path(CATEGORY, n) for n in (1, 2, 3)}
    assert {n: (site.out / archive_path(CATEGORY, n)).read_bytes() for n in (1, 2, 3)} == pages
    assert (site.out / manifest_path(CATEGORY)).is_file()
    assert_every_article_once(site)


def test_hub_link_in_both_current_feeds_not_in_pages(site: Site) -> None:
    site.options = replace(site.options, hub_url="https://hub.example/")
    three_polls(site)

    paths = category_paths(CATEGORY)
    for relative in (paths.atom, paths.rss):
        root = site.get(url_of(site, relative))
        assert links(root, "hub") == ["https://hub.example/"]
        assert links(root, "self") == [url_of(site, relative)]
    walk(site)  # asserts no page links the hub


def test_a_page_membership_is_stable_and_pages_are_disjoint() -> None:
    def stamp(n: int, seen: int) -> ArticleStamp:
        at = BASE + timedelta(hours=seen)
        return ArticleStamp(source_id="s", key=f"k{n:02d}", first_seen=at, updated_at=at,
                            date=BASE + timedelta(hours=n), content_hash=f"h{n}")

    stamps = [stamp(n, n) for n in range(1, 13)]
    first = plan([], stamps, 5)
    assert [[k for _, k, _ in p] for p in first.pages] == [
        [f"k{n:02d}" for n in range(1, 6)], [f"k{n:02d}" for n in range(6, 11)]]
    assert first.dirty == {0, 1}
    # the two oldest removed: page 1 shrinks and must be rewritten; page 2 stays as it was
    second = plan(first.pages, stamps[2:], 5)
    assert [len(p) for p in second.pages] == [3, 5]
    assert second.dirty == {0}
    assert plan(second.pages, stamps[2:], 5).dirty == frozenset()
    # a manifest listing an article twice (edited by hand): the later page loses it
    doubled = plan([first.pages[0], first.pages[0], first.pages[1]], stamps, 5)
    assert [len(p) for p in doubled.pages] == [5, 0, 5] and doubled.dirty == {1}


@pytest.mark.skipif(not NEWSBOAT.exists(), reason="/usr/bin/newsboat is absent")
def test_newsboat_reads_feeds_with_archive_and_hub_links(site: Site, tmp_path: Path) -> None:
    site.options = replace(site.options, hub_url="https://hub.example/")
    three_polls(site)
    home = tmp_path / "home"
    home.mkdir()
    (home / "config").write_text('download-timeout 20\nuser-agent "aggregator-test"\n')
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
           "TERM": "dumb", "no_proxy": "*", "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_DATA_HOME": str(home / ".local"), "XDG_CACHE_HOME": str(home / ".cache")}
    paths = category_paths(CATEGORY)
    for relative in (paths.rss, paths.atom):
        url = url_of(site, relative)
        name = Path(relative).name  # newsboat keeps one item per guid: a cache per format
        urls, cache = home / f"urls-{name}", home / f"cache-{name}.db"
        urls.write_text(url + "\n")
        run = subprocess.run(
            [str(NEWSBOAT), "-u", str(urls), "-c", str(cache), "-C", str(home / "config"),
             "-x", "reload"], env=env,
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False)
        assert run.returncode == 0, (run.stdout, run.stderr)
        with sqlite3.connect(cache) as db:
            titles = {t for (t,) in db.execute("SELECT title FROM rss_item")}
        assert titles == {f"第{n}条新闻" for n in range(8, 13)}, relative
