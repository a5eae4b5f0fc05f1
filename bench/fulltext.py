"""Full text (``full_text: true``): extraction quality on the test fixtures, and the time of
a poll of N sources × M new articles whose pages are fetched and extracted (loopback).

    .venv/bin/python bench/fulltext.py [--sources 20] [--articles 20] [--parse-workers 2]

Quality: for each fixture page (tests/builders.portal_article_page and variants), the
characters of article text found in the extracted text (kept) and the characters of
extracted text that are not the article (leaked boilerplate), readability and
``content_selector``.  Poll: one portal per loopback address 127.0.0.1 … 127.0.0.N (so
the per-host limit is per source, as with real portals), each with a summary-only feed
of M items whose links are GBK article pages; ``poll_sources`` as ``aggregator poll``
runs it (8 workers, host_concurrency 2), on a fresh SQLite store: full text off, full
text on (in-process extraction, then in a parse pool), and the re-poll (nothing new).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from builders import (
    ARTICLE_PARAGRAPHS,
    PORTAL_BOILERPLATE,
    make_source,
    portal_article_page,
    rss_items,
)

from aggregator.ingest.fetch import HttpFetcher
from aggregator.ingest.fulltext import extract_main_content
from aggregator.ingest.poll import (
    ARTICLE_WITH_FULL_TEXT,
    PARSE_AND_NORMALIZE,
    PollOptions,
    poll_sources,
)
from aggregator.ingest.sandbox import Budget, WorkerPool
from aggregator.records import FetchOptions, FetchResult, NormalizeOptions
from aggregator.store import Store

SHORT = ARTICLE_PARAGRAPHS[:2]  # a two-paragraph news flash
LONG_COMMENTS = PORTAL_BOILERPLATE[12:14] * 6  # a comment thread longer than the article


def fixtures() -> dict[str, tuple[str, tuple[str, ...]]]:
    """name → (page HTML, the article's paragraphs)."""
    long_thread = portal_article_page().replace(
        '<div class="comments" id="comments">',
        '<div class="comments" id="comments">' + "".join(f"<p>{c}</p>" for c in LONG_COMMENTS))
    return {
        "portal page (5 paragraphs, 3 lazy images)": (portal_article_page(), ARTICLE_PARAGRAPHS),
        "news flash (2 paragraphs)": (portal_article_page(paragraphs=SHORT), SHORT),
        "long comment thread (12 comments)": (long_thread, ARTICLE_PARAGRAPHS),
        "no images": (portal_article_page(images=()), ARTICLE_PARAGRAPHS),
    }


def _chars(text: str) -> str:
    return "".join(re.sub(r"<[^>]+>", " ", text).replace("&nbsp;", " ").split())


def quality() -> None:
    print("## Extraction quality on the fixtures (characters, whitespace not counted)\n")
    print("| page | extractor | article chars | kept | leaked | ms |")
    print("|---|---|---:|---:|---:|---:|")
    for name, (page_html, paragraphs) in fixtures().items():
        page = FetchResult(source_id="bench", url="http://www.portal.test/a/1.html", status=200,
                           content=page_html.encode("gbk"), headers={"content-type": "text/html"})
        for label, selector in (("readability", None),
                                ("content_selector", "div.article-content")):
            started = time.perf_counter()
            fragment = extract_main_content(page, make_source(content_selector=selector))
            ms = (time.perf_counter() - started) * 1000
            out = _chars(fragment)
            truth = sum(len(_chars(p)) for p in paragraphs)
            kept = sum(len(_chars(p)) for p in paragraphs if _chars(p) in out)
            leaked = len(out) - kept
            print(f"| {name} | {label} | {truth} | {kept} ({kept / truth:.1%}) | "
                  f"{leaked} | {ms:.1f} |")
    print()


class Portal(ThreadingHTTPServer):
    """``/feed``: M summary-only items linking to ``/a/<n>.html`` (GBK article pages)."""

    daemon_threads = True

    def __init__(self, address: str, articles: int) -> None:
        self.pages = 0
        page = portal_article_page().encode("gbk")
        portal = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/feed":
                    base = f"http://{address}:{portal.server_address[1]}"
                    items = "".join(
                        f"<item><title>文章{n}</title><link>{base}/a/{n}.html</link>"
                        f"<guid>{n}</guid><description>摘要{n}</description></item>"
                        for n in range(articles))
                    body, kind = rss_items(items).encode(), "text/xml"
                else:
                    portal.pages += 1
                    body, kind = page, "text/html"
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        super().__init__((address, 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def poll_time(sources: int, articles: int, parse_workers: int) -> None:
    portals = [Portal(f"127.0.0.{i + 1}", articles) for i in range(sources)]
    options = PollOptions(fetch=FetchOptions(allow_private_networks=True),
                          normalize=NormalizeOptions(image_proxy="https://proxy.test/?"))
    print(f"## Poll time: {sources} sources × {articles} new articles (loopback, 8 workers, "
          "host_concurrency 2)\n")
    print("| run | wall s | pages fetched | failed |")
    print("|---|---:|---:|---:|")
    runs = (("full_text off", False, 0), ("full_text on, in-process extraction", True, 0),
            (f"full_text on, {parse_workers} parse workers", True, parse_workers))
    with tempfile.TemporaryDirectory() as tmp:
        for index, (label, full_text, workers) in enumerate(runs):
            listed = [make_source(f"http://{p.server_address[0]}:{p.server_address[1]}/feed",
                                  f"s{n}", full_text=full_text)
                      for n, p in enumerate(portals)]
            pool = WorkerPool(workers=workers, budget=Budget(seconds=30),
                              preload=(PARSE_AND_NORMALIZE.module,
                                       ARTICLE_WITH_FULL_TEXT.module)) if workers else None
            if pool is not None:
                pool.start()
            fetcher = HttpFetcher()
            try:
                with Store.open(f"sqlite:///{tmp}/run{index}.sqlite") as store:
                    for again in (False, True):
                        before = sum(p.pages for p in portals)
                        started = time.perf_counter()
                        results = poll_sources(listed, store, options, fetch=fetcher, workers=8,
                                               host_concurrency=2, parse_pool=pool)
                        wall = time.perf_counter() - started
                        pages = sum(p.pages for p in portals) - before
                        failed = sum(r.pages_failed for r in results)
                        errors = [r.error for r in results if r.result.failed]
                        assert not errors, errors
                        name = label + (" — re-poll, nothing new" if again else "")
                        print(f"| {name} | {wall:.2f} | {pages} | {failed} |")
            finally:
                fetcher.close()
                if pool is not None:
                    pool.close()
    for portal in portals:
        portal.shutdown()
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", type=int, default=20)
    parser.add_argument("--articles", type=int, default=20)
    parser.add_argument("--parse-workers", type=int, default=2)
    args = parser.parse_args()
    quality()
    poll_time(args.sources, args.articles, args.parse_workers)


if __name__ == "__main__":
    main()
