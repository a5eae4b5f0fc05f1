"""A real published site for the serving tests: articles -> write_feeds + render_index.

Not a test module (pytest does not collect it): test_serve, test_static,
test_browser and test_newsboat import it to build the same kind of ``output_dir``
the daemon serves; ``raw_get`` sends a request target byte for byte.
"""

from __future__ import annotations

import http.client
import struct
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import builders

from aggregator.publish import feeds, files, index_page
from aggregator.publish.paths import INDEX_FILENAME
from aggregator.records import Article, FeedOptions

BASE = datetime(2024, 3, 1, 8, 30, tzinfo=UTC)
HOSTILE_TITLE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned=2">'
SITE_TITLE = "新闻聚合 Aggregator"
# The configured names of the sample's sources (the index page shows these, not the ids).
SOURCE_NAMES = {"portal": "门户网", "tech": "科技日报", "evil": '<b onmouseover="x">坏</b>'}


def make_article(n: int, **overrides: Any) -> Article:
    """Article number ``n`` of the portal; a higher ``n`` is newer."""
    date, url = BASE + timedelta(hours=n), f"https://portal.example/a/{n}.html"
    return builders.make_article(**{
        "source_id": "portal", "key": url, "guid": f"guid-{n}", "link": url,
        "title": f"工业互联网先锋榜 第{n}期", "author": f"记者{n}", "date": date,
        "categories": ("新闻",), "content": f"<p>正文 {n}</p>",
        "summary": f"这是第{n}篇文章的摘要。", "first_seen": date + timedelta(minutes=5),
        "updated_at": date + timedelta(minutes=5), "content_hash": f"hash-{n}", **overrides,
    })


@dataclass(frozen=True)
class BuiltSite:
    output_dir: Path
    options: FeedOptions
    by_category: dict[str, list[Article]]

    @property
    def categories(self) -> list[str]:
        return sorted(self.by_category)

    @property
    def articles(self) -> list[Article]:
        unique = {(a.source_id, a.key): a for arts in self.by_category.values() for a in arts}
        return sorted(unique.values(), key=lambda a: a.date, reverse=True)


def png(width: int = 8, height: int = 6, rgb: tuple[int, int, int] = (30, 120, 200)) -> bytes:
    """A valid solid-colour PNG, made without an imaging library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(row * height)) + chunk(b"IEND", b""))


def sample_articles(image_base: str = "https://img.example/") -> dict[str, list[Article]]:
    """Three categories (two CJK, one with a space), one hostile article, one very long title."""
    news = [make_article(n) for n in range(1, 5)]
    news.append(make_article(
        10, key="long", title="超长标题" + "Unbreakable" * 30,
        summary="https://portal.example/" + "x" * 300,
    ))
    tech = [
        make_article(
            n, source_id="tech", key=f"t{n}", link=f"https://tech.example/{n}",
            title=f"科技快讯 {n}：芯片", categories=("科技 Tech",),
            headimg=f"{image_base}img/{n}.png",
        )
        for n in range(5, 8)
    ]
    hostile = make_article(
        9, source_id="evil", key="evil", link="javascript:window.__pwned=3",
        title=HOSTILE_TITLE, summary='" onmouseover="window.__pwned=4" x="',
        author="<b>坏人</b>", categories=("财经",), headimg="javascript:alert(1)",
    )
    return {"新闻": news, "科技 Tech": tech, "财经": [hostile, make_article(8, key="f8",
            categories=("财经",), title="财经要闻 8")]}


def build_site(
    root: Path, site_url: str, *, index: bool = True, local_images: bool = False
) -> BuiltSite:
    """Write the feeds, feeds.opml and (unless ``index`` is False) index.html under root/out.

    With ``local_images`` the thumbnails are PNGs under ``out/img/`` served with the
    site (so a browser loads them from 127.0.0.1 and never leaves the machine).
    """
    output_dir = root / "out"
    options = FeedOptions(output_dir=str(output_dir), site_url=site_url, title_prefix="聚合 · ",
                          language="zh-CN", source_names=SOURCE_NAMES)
    base = site_url if site_url.endswith("/") else site_url + "/"
    by_category = sample_articles(base if local_images else "https://img.example/")
    if local_images:
        for n in range(5, 8):
            files.write_atomic(output_dir / f"img/{n}.png", png(rgb=(40 * n % 256, 90, 160)))
    feeds.write_feeds(by_category, options)
    built = BuiltSite(output_dir, options, by_category)
    if index:
        page = index_page.render_index(
            built.categories, built.articles[:30], options, site_title=SITE_TITLE
        )
        files.write_atomic(output_dir / INDEX_FILENAME, page)
    return built


def raw_get(port: int, target: str) -> tuple[int, bytes]:
    """GET ``target`` from 127.0.0.1:``port`` exactly as written: ``http.client`` does no
    dot-segment normalization or re-encoding on the client side (what traversal probes need).
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", target, skip_accept_encoding=True)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()
