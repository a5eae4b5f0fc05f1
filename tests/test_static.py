"""Tests for aggregator.service.http.static: the files of output_dir over real HTTP.

Every request goes to a real waitress ``FeedServer`` on 127.0.0.1 serving
``make_app``; requests go through ``requests``, and the path-traversal probes
through ``served_site.raw_get`` (byte-for-byte request targets).  The version
cache is also tested on its own, through its public class.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, formatdate
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from lxml import etree
from served_site import BuiltSite, build_site, raw_get

from aggregator.publish import files
from aggregator.publish.paths import OPML_FILENAME, category_paths
from aggregator.service.http import FeedServer, make_app
from aggregator.service.http.static import (
    MAX_INLINE_BYTES,
    FileVersion,
    VersionCache,
    content_type_for,
)

SECRET = b"TOP-SECRET-NOT-FOR-THE-WEB"
IDENTITY = {"Accept-Encoding": "identity"}
GZIP = {"Accept-Encoding": "gzip"}


@pytest.fixture
def site(tmp_path: Path) -> BuiltSite:
    built = build_site(tmp_path, "http://127.0.0.1/")
    (tmp_path / "secret.txt").write_bytes(SECRET)  # beside output_dir, never served
    return built


@pytest.fixture
def server(site: BuiltSite) -> Iterator[FeedServer]:
    with FeedServer(make_app(site.output_dir, "http://127.0.0.1/")) as running:
        yield running


# --------------------------------------------------------------------------- content types


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        (category_paths("新闻").rss, "application/rss+xml; charset=utf-8"),
        (category_paths("新闻").atom, "application/atom+xml; charset=utf-8"),
        (category_paths("新闻").json, "application/feed+json; charset=utf-8"),
        (OPML_FILENAME, "text/x-opml; charset=utf-8"),
        ("index.html", "text/html; charset=utf-8"),
        ("extra/style.css", "text/css; charset=utf-8"),
        ("extra/data.json", "application/json; charset=utf-8"),
        ("extra/pixel.png", "image/png"),
        ("extra/all.rss.xml", "application/rss+xml; charset=utf-8"),
        ("extra/blob.unknownext", "application/octet-stream"),
    ],
)
def test_content_types(
    site: BuiltSite, server: FeedServer, relative: str, expected: str
) -> None:
    path = site.output_dir / relative
    if not path.exists():
        files.write_atomic(path, b"x" * 10)
    response = requests.get(server.url + quote(relative), headers=IDENTITY, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == expected
    assert response.content == path.read_bytes()
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("FEED.RSS.XML", "application/rss+xml; charset=utf-8"),
        ("Feed.JSON", "application/feed+json; charset=utf-8"),
        ("news.feed.json", "application/feed+json; charset=utf-8"),
        ("feeds.json", "application/json; charset=utf-8"),  # not a JSON Feed's name
        ("page.HTM", "text/html; charset=utf-8"),
        ("icon.svg", "image/svg+xml; charset=utf-8"),
        ("archive.xml.gz", "application/octet-stream"),  # a gzip file, not XML
        ("noextension", "application/octet-stream"),
    ],
)
def test_content_type_for(name: str, expected: str) -> None:
    assert content_type_for(name) == expected


# --------------------------------------------------------------------------- validators


def test_validators_and_cache_headers(site: BuiltSite, server: FeedServer) -> None:
    relative = category_paths("新闻").rss
    path = site.output_dir / relative
    first = requests.get(server.url + quote(relative), headers=IDENTITY, timeout=10)
    second = requests.get(server.url + quote(relative), headers=IDENTITY, timeout=10)
    etag = first.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")
    assert second.headers["ETag"] == etag
    assert first.headers["Last-Modified"] == formatdate(path.stat().st_mtime, usegmt=True)
    assert first.headers["Cache-Control"] == "public, max-age=300"
    assert first.headers["Content-Length"] == str(path.stat().st_size)
    assert first.headers["Vary"] == "Accept-Encoding"


def test_etag_changes_when_the_file_is_replaced(site: BuiltSite, server: FeedServer) -> None:
    path = site.output_dir / OPML_FILENAME
    before = requests.get(server.url + OPML_FILENAME, headers=IDENTITY, timeout=10)
    files.write_atomic(path, path.read_bytes().replace(b"feeds", b"FEEDS"))
    after = requests.get(server.url + OPML_FILENAME, headers=IDENTITY, timeout=10)
    assert after.content == path.read_bytes() != before.content
    assert after.headers["ETag"] != before.headers["ETag"]
    stale = requests.get(
        server.url + OPML_FILENAME,
        headers={**IDENTITY, "If-None-Match": before.headers["ETag"]},
        timeout=10,
    )
    assert stale.status_code == 200
    assert stale.content == path.read_bytes()


def test_if_none_match_gives_304(server: FeedServer) -> None:
    url = server.url + quote(category_paths("科技 Tech").atom)
    etag = requests.get(url, headers=IDENTITY, timeout=10).headers["ETag"]
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        response = requests.get(url, headers={**IDENTITY, "If-None-Match": header}, timeout=10)
        assert response.status_code == 304, header
        assert response.content == b""
        assert response.headers["ETag"] == etag
    changed = requests.get(url, headers={**IDENTITY, "If-None-Match": '"nope"'}, timeout=10)
    assert changed.status_code == 200


def test_if_modified_since(site: BuiltSite, server: FeedServer) -> None:
    url = server.url + OPML_FILENAME
    mtime = (site.output_dir / OPML_FILENAME).stat().st_mtime
    last_modified = requests.get(url, headers=IDENTITY, timeout=10).headers["Last-Modified"]
    same = requests.get(url, headers={**IDENTITY, "If-Modified-Since": last_modified}, timeout=10)
    assert same.status_code == 304
    earlier = formatdate(mtime - 3600, usegmt=True)
    older = requests.get(url, headers={**IDENTITY, "If-Modified-Since": earlier}, timeout=10)
    assert older.status_code == 200
    garbage = requests.get(url, headers={**IDENTITY, "If-Modified-Since": "yesterday"}, timeout=10)
    assert garbage.status_code == 200
    # If-None-Match wins: a stale ETag means 200 even with a matching date.
    both = requests.get(
        url,
        headers={**IDENTITY, "If-Modified-Since": last_modified, "If-None-Match": '"stale"'},
        timeout=10,
    )
    assert both.status_code == 200


def test_if_modified_since_in_the_future_and_other_zones(site: BuiltSite,
                                                         server: FeedServer) -> None:
    url = server.url + OPML_FILENAME
    mtime = datetime.fromtimestamp((site.output_dir / OPML_FILENAME).stat().st_mtime, UTC)
    later = format_datetime(mtime + timedelta(days=1), usegmt=True)
    assert requests.get(url, headers={"If-Modified-Since": later}, timeout=10).status_code == 304


# --------------------------------------------------------------------------- gzip and HEAD


def test_gzip(site: BuiltSite, server: FeedServer) -> None:
    relative = category_paths("新闻").rss
    url = server.url + quote(relative)
    original = (site.output_dir / relative).read_bytes()
    plain = requests.get(url, headers=IDENTITY, timeout=10)
    assert "Content-Encoding" not in plain.headers
    with requests.get(url, headers=GZIP, stream=True, timeout=10) as zipped:
        assert zipped.headers["Content-Encoding"] == "gzip"
        assert zipped.headers["Vary"] == "Accept-Encoding"
        raw = zipped.raw.read(decode_content=False)
        assert int(zipped.headers["Content-Length"]) == len(raw) < len(original)
    assert gzip.decompress(raw) == original
    gz_etag = zipped.headers["ETag"]
    assert gz_etag != plain.headers["ETag"]
    assert gz_etag == plain.headers["ETag"][:-1] + '-gz"'
    # 304 for the gzip variant's ETag, and only when gzip is what would be sent.
    again = requests.get(url, headers={**GZIP, "If-None-Match": gz_etag}, timeout=10)
    assert again.status_code == 304
    assert again.headers["ETag"] == gz_etag
    other = requests.get(url, headers={**IDENTITY, "If-None-Match": gz_etag}, timeout=10)
    assert other.status_code == 200
    assert other.content == original
    # q=0 refuses gzip; * accepts it.
    refused = requests.get(url, headers={"Accept-Encoding": "gzip;q=0, br"}, timeout=10)
    assert "Content-Encoding" not in refused.headers
    star = requests.get(url, headers={"Accept-Encoding": "*"}, timeout=10)
    assert star.headers["Content-Encoding"] == "gzip"
    assert star.content == original  # requests decodes it


def test_small_and_binary_files_are_not_gzipped(site: BuiltSite, server: FeedServer) -> None:
    files.write_atomic(site.output_dir / "tiny.txt", b"short text\n")
    files.write_atomic(site.output_dir / "blob.png", b"\x89PNG" + b"\x00" * 4000)
    for name in ("tiny.txt", "blob.png"):
        response = requests.get(server.url + name, headers=GZIP, timeout=10)
        assert response.status_code == 200, name
        assert "Content-Encoding" not in response.headers, name
        assert response.content == (site.output_dir / name).read_bytes()
    assert "Vary" not in requests.get(server.url + "blob.png", timeout=10).headers


def test_gzip_of_a_replaced_file_is_fresh(site: BuiltSite, server: FeedServer) -> None:
    path = site.output_dir / OPML_FILENAME
    url = server.url + OPML_FILENAME
    assert requests.get(url, headers=GZIP, timeout=10).content == path.read_bytes()
    files.write_atomic(path, path.read_bytes() + b"<!-- v2 -->\n")
    assert requests.get(url, headers=GZIP, timeout=10).content == path.read_bytes()


def test_head(site: BuiltSite, server: FeedServer) -> None:
    relative = category_paths("财经").atom
    url = server.url + quote(relative)
    get = requests.get(url, headers=IDENTITY, timeout=10)
    head = requests.head(url, headers=IDENTITY, timeout=10)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["Content-Length"] == str((site.output_dir / relative).stat().st_size)
    for name in ("ETag", "Last-Modified", "Content-Type", "Cache-Control"):
        assert head.headers[name] == get.headers[name]
    head_gz = requests.head(url, headers=GZIP, timeout=10)
    assert head_gz.headers["Content-Encoding"] == "gzip"
    assert head_gz.content == b""


def test_files_above_the_inline_limit_are_streamed(site: BuiltSite, server: FeedServer) -> None:
    """Up to MAX_INLINE_BYTES a text file is kept and gzipped; above it, streamed as is."""
    line = b"<item>streamed line of a very large text file</item>\n"
    at_limit = (line * (MAX_INLINE_BYTES // len(line) + 1))[:MAX_INLINE_BYTES]
    above = at_limit + b"\n"
    files.write_atomic(site.output_dir / "at-limit.txt", at_limit)
    files.write_atomic(site.output_dir / "big.txt", above)
    kept = requests.get(server.url + "at-limit.txt", headers=GZIP, timeout=10)
    assert kept.headers["Content-Encoding"] == "gzip"
    assert kept.content == at_limit
    streamed = requests.get(server.url + "big.txt", headers=GZIP, timeout=10)
    assert streamed.status_code == 200
    assert "Content-Encoding" not in streamed.headers
    assert streamed.headers["Content-Length"] == str(len(above))
    assert streamed.content == above
    etag = streamed.headers["ETag"]
    head = requests.head(server.url + "big.txt", timeout=10)
    assert head.headers["Content-Length"] == str(len(above)) and head.content == b""
    assert head.headers["ETag"] == etag
    cached = requests.get(server.url + "big.txt", headers={"If-None-Match": etag}, timeout=10)
    assert cached.status_code == 304
    # The chunked digest covers every byte: one changed byte at the end, another ETag.
    files.write_atomic(site.output_dir / "big.txt", at_limit + b"!")
    changed = requests.get(server.url + "big.txt", headers={"If-None-Match": etag}, timeout=10)
    assert changed.status_code == 200
    assert changed.headers["ETag"] != etag
    assert changed.content == at_limit + b"!"


# --------------------------------------------------------------------------- paths


def test_not_found(server: FeedServer) -> None:
    missing = requests.get(server.url + "categories/nope/rss.xml", timeout=10)
    assert missing.status_code == 404
    assert requests.get(server.url + "categories", timeout=10).status_code == 404


@pytest.mark.parametrize(
    "target",
    [
        "/../secret.txt",
        "/../../../../etc/passwd",
        "/%2e%2e/secret.txt",
        "/%2E%2E/%2e%2e/etc/passwd",
        "/categories/..%2f..%2fsecret.txt",
        "/categories/%2e%2e%2f%2e%2e%2fsecret.txt",
        "/categories/../../secret.txt",
        "/..%5csecret.txt",
        "//etc/passwd",
        "/%2Fetc%2Fpasswd",
        "/feeds.opml%00.html",
        "/%00",
        "/link-out/secret.txt",
        "/secret-link",
        "/.hidden",
        "/categories/%E6%96%B0%E9%97%BB/.rss.xml.0123.tmp",
        "/%ff%fe",
    ],
)
def test_no_path_traversal(site: BuiltSite, server: FeedServer, target: str) -> None:
    (site.output_dir / "link-out").symlink_to(site.output_dir.parent, target_is_directory=True)
    (site.output_dir / "secret-link").symlink_to(site.output_dir.parent / "secret.txt")
    (site.output_dir / ".hidden").write_bytes(SECRET)
    files.write_atomic(site.output_dir / "categories/新闻/.rss.xml.0123.tmp", SECRET)
    status, body = raw_get(server.port, target)
    assert status in (400, 404), (target, status)
    assert SECRET not in body
    assert b"root:" not in body


def test_symlink_inside_output_dir_is_served(site: BuiltSite, server: FeedServer) -> None:
    (site.output_dir / "latest.xml").symlink_to(site.output_dir / category_paths("新闻").rss)
    response = requests.get(server.url + "latest.xml", timeout=10)
    assert response.status_code == 200
    assert response.content == (site.output_dir / category_paths("新闻").rss).read_bytes()


def test_a_served_file_replaced_by_an_escaping_symlink_is_refused(site: BuiltSite,
                                                                  server: FeedServer) -> None:
    path = site.output_dir / OPML_FILENAME
    assert requests.get(server.url + OPML_FILENAME, timeout=10).status_code == 200
    path.unlink()
    path.symlink_to(site.output_dir.parent / "secret.txt")  # remembered, then swapped
    status, body = raw_get(server.port, "/" + OPML_FILENAME)
    assert status == 404 and SECRET not in body


def test_cjk_percent_encoded_path(site: BuiltSite, server: FeedServer) -> None:
    assert category_paths("新闻").rss == "categories/新闻/rss.xml"
    status, body = raw_get(server.port, "/categories/%E6%96%B0%E9%97%BB/rss.xml")
    assert status == 200
    assert body == (site.output_dir / "categories/新闻/rss.xml").read_bytes()
    spaced = requests.get(server.url + quote(category_paths("科技 Tech").atom), timeout=10)
    assert spaced.status_code == 200
    assert "科技 Tech".encode() in spaced.content


def test_opml_links_resolve_on_the_server(tmp_path: Path) -> None:
    """Every xmlUrl in feeds.opml (percent-encoded by generate) is served by this app."""
    with FeedServer(make_app(tmp_path / "out", "http://placeholder/")) as running:
        built = build_site(tmp_path, running.url)
        tree = etree.fromstring((built.output_dir / OPML_FILENAME).read_bytes())
        urls = [node.get("xmlUrl") for node in tree.iter("outline") if node.get("xmlUrl")]
        assert len(urls) == 2 * len(built.categories)
        for url in urls:
            response = requests.get(url, timeout=10)
            assert response.status_code == 200, url
            assert response.headers["Content-Type"].startswith(("application/rss+xml",
                                                                "application/atom+xml"))


# --------------------------------------------------------------------------- the root


def test_root_serves_index_html(site: BuiltSite, server: FeedServer) -> None:
    response = requests.get(server.url, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.content == (site.output_dir / "index.html").read_bytes()
    assert "ETag" in response.headers


def test_root_listing_without_index(tmp_path: Path) -> None:
    built = build_site(tmp_path, "http://127.0.0.1/", index=False)
    (built.output_dir / ".tmp-hidden").write_bytes(b"x")
    with FeedServer(make_app(built.output_dir, "http://127.0.0.1/")) as running:
        response = requests.get(running.url, timeout=10)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert response.headers["Cache-Control"] == "no-cache"
        assert "Last-Modified" not in response.headers
        page = etree.HTML(response.content)
        hrefs = page.xpath("//a/@href")
        assert OPML_FILENAME in hrefs
        assert quote(category_paths("新闻").rss) in hrefs
        assert not any(h.startswith(".") for h in hrefs)
        for href in hrefs:
            assert requests.get(running.url + href, timeout=10).status_code == 200
        etag = response.headers["ETag"]
        again = requests.get(running.url, headers={"If-None-Match": etag}, timeout=10)
        assert again.status_code == 304


def test_missing_output_dir_is_404(tmp_path: Path) -> None:
    with FeedServer(make_app(tmp_path / "absent", "http://127.0.0.1/")) as running:
        assert requests.get(running.url, timeout=10).status_code == 404
        assert requests.get(running.url + OPML_FILENAME, timeout=10).status_code == 404


# --------------------------------------------------------------------------- the version cache


def test_a_replacement_with_the_same_size_and_mtime_is_served_fresh(site: BuiltSite,
                                                                   server: FeedServer) -> None:
    path = site.output_dir / OPML_FILENAME
    old = path.read_bytes()
    assert requests.get(server.url + OPML_FILENAME, headers=IDENTITY, timeout=10).content == old
    info = path.stat()
    new = old.replace(b"feeds", b"FEEDS")
    assert len(new) == len(old) and new != old
    files.write_atomic(path, new)  # a new inode under the same name
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    response = requests.get(server.url + OPML_FILENAME, headers=IDENTITY, timeout=10)
    assert response.content == new


def test_version_cache_keeps_within_its_byte_budget() -> None:
    cache = VersionCache(entries=10, max_bytes=3600)  # three of 900 + 256

    def version(size: int) -> FileVersion:
        return FileVersion("d", None, b"x" * size, "text/plain", 0.0, "date")

    assert version(900).cost == 900 + 256
    for name in "abc":
        cache.put(name, (1, 2, 3, 4), version(900))
    assert all(cache.get(name, (1, 2, 3, 4)) for name in "abc")
    cache.get("a", (1, 2, 3, 4))  # most recently used now
    cache.put("d", (1, 2, 3, 4), version(900))  # over budget: the least recently used goes
    assert cache.get("b", (1, 2, 3, 4)) is None
    assert cache.get("a", (1, 2, 3, 4)) and cache.get("d", (1, 2, 3, 4))
    assert cache.get("a", (1, 2, 3, 5)) is None  # another stat: another version


def test_version_cache_keeps_within_its_entry_count() -> None:
    cache = VersionCache(entries=2, max_bytes=10**9)
    small = FileVersion("d", None, b"x", "text/plain", 0.0, "date")
    for name in "abc":
        cache.put(name, (1, 2, 3, 4), small)
    assert cache.get("a", (1, 2, 3, 4)) is None
    assert cache.get("b", (1, 2, 3, 4)) is small and cache.get("c", (1, 2, 3, 4)) is small
    cache.put("c", (9, 9, 9, 9), small)  # the same path again replaces, it does not add
    assert cache.get("b", (1, 2, 3, 4)) is small
    assert cache.get("c", (1, 2, 3, 4)) is None and cache.get("c", (9, 9, 9, 9)) is small


def test_concurrent_requests(server: FeedServer, site: BuiltSite) -> None:
    relative = category_paths("新闻").rss
    expected = (site.output_dir / relative).read_bytes()

    def fetch(i: int) -> bytes:
        headers = GZIP if i % 2 else IDENTITY
        return requests.get(server.url + quote(relative), headers=headers, timeout=10).content

    with ThreadPoolExecutor(max_workers=8) as pool:
        bodies = list(pool.map(fetch, range(40)))
    assert all(body == expected for body in bodies)
