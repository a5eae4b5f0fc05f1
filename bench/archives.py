"""The cost of RFC 5005 archive pages in a build (issue 14): one category, many articles.

    .venv/bin/python bench/archives.py [--articles 20000] [--feed-size 50] [--new 10]

A fresh SQLite store gets ``--articles`` articles (2 KB bodies, one category, 20 sources,
first seen over a year), then ``publish.build`` runs four times: the first build (every
archive page written), a second one with nothing new (the figure to watch: no page
written, no full article loaded beyond the current feed's), a third after ``--new`` new
articles arrived (what the daemon runs after a poll), and one after retention removed the
oldest 1,000.  Each line prints its wall time, the pages written and how many full
articles the build loaded through ``articles_by_identity`` / ``latest_articles``.

Standard library and the project only; everything lives in a temporary directory.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Collection, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aggregator import publish  # noqa: E402
from aggregator.records import Article, FeedOptions, Source, SourceState, SourceUpdate  # noqa: E402
from aggregator.store import Store  # noqa: E402

CATEGORY = "新闻"
SOURCES = 20
T0 = datetime(2025, 1, 1, tzinfo=UTC)
BODY = "<p>" + "工业互联网产业规模持续扩大，重点平台连接设备数量超过九千万台。" * 40 + "</p>"


class Counting:
    """The store, counting the full articles publishing loads from it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.loaded = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def latest_articles(self, category: str | None, limit: int,
                        source_ids: Collection[str] | None = None) -> list[Article]:
        found = self.store.latest_articles(category, limit, source_ids)
        self.loaded += len(found)
        return found

    def articles_by_identity(self, identities: Iterable[tuple[str, str]]
                             ) -> dict[tuple[str, str], Article]:
        found = self.store.articles_by_identity(identities)
        self.loaded += len(found)
        return found


def article(n: int) -> Article:
    seen = T0 + timedelta(minutes=30 * n)
    return Article(source_id=f"s{n % SOURCES:02d}", key=f"https://portal.example/{n}.html",
                   guid=None, link=f"https://portal.example/{n}.html", title=f"第{n}条新闻 {n}",
                   author="记者", date=seen, date_from_feed=True, categories=(CATEGORY,),
                   content=BODY + f"<p>{n}</p>", summary=f"摘要 {n}", headimg=None,
                   thumbnail=None, comments=False, first_seen=seen, updated_at=seen,
                   content_hash=f"hash-{n}")


def store_articles(store: Store, numbers: range) -> None:
    by_source: dict[str, list[Article]] = {}
    for n in numbers:
        made = article(n)
        by_source.setdefault(made.source_id, []).append(made)
    for source_id, articles in sorted(by_source.items()):
        for start in range(0, len(articles), 1000):
            state = SourceState(source_id=source_id, url=f"https://portal.example/{source_id}")
            store.commit_poll(SourceUpdate(state=state, result=None),
                              articles[start:start + 1000])


def timed_build(label: str, reader: Counting, options: FeedOptions,
                sources: list[Source]) -> None:
    reader.loaded = 0
    started = time.perf_counter()
    report = publish.build(reader, options, sources, index=False)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - started
    pages = sum(1 for p in report.written if "/archive/" in p)
    kept = sum(1 for p in report.unchanged if "/archive/" in p)
    print(f"{label:<34} {elapsed:7.3f} s   pages written {pages:4d}, unchanged {kept:4d}, "
          f"articles loaded {reader.loaded:6d}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--articles", type=int, default=20_000)
    parser.add_argument("--feed-size", type=int, default=50)
    parser.add_argument("--new", type=int, default=10)
    args = parser.parse_args()
    sources = [Source(id=f"s{i:02d}", name=f"s{i:02d}", url=f"https://portal.example/s{i:02d}",
                      categories=(CATEGORY,)) for i in range(SOURCES)]
    with tempfile.TemporaryDirectory() as work:  # noqa: SIM117 - the store lives in it
        with Store.open(f"sqlite:///{Path(work) / 'db.sqlite'}") as store:
            started = time.perf_counter()
            store_articles(store, range(args.articles))
            print(f"stored {args.articles} articles in {time.perf_counter() - started:.1f} s")
            options = FeedOptions(output_dir=str(Path(work) / "out"),
                                  site_url="https://feeds.example/", feed_size=args.feed_size)
            reader = Counting(store)
            timed_build("first build", reader, options, sources)
            timed_build("second build (nothing new)", reader, options, sources)
            store_articles(store, range(args.articles, args.articles + args.new))
            timed_build(f"after {args.new} new articles", reader, options, sources)
            store.prune(older_than=T0 + timedelta(minutes=30 * 1000))
            timed_build("after retention removed 1,000", reader, options, sources)


if __name__ == "__main__":
    main()
