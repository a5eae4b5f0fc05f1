"""Tests for aggregator.service.http against a real waitress FeedServer on 127.0.0.1.

Requests go through ``requests``; the path-traversal probes go through
``http.client`` because it sends the request target byte for byte (no dot-segment
normalization on the client side).
"""

from __future__ import annotations

import gzip
import http.client
import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, formatdate
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from lxml import etree
from prometheus_client.parser import text_string_to_metric_families
from served_site import BuiltSite, build_site

from aggregator.publish import files
from aggregator.publish.feeds import OPML_FILENAME, category_paths
from aggregator.records import PollResult, Source, SourceStatus, StoreCounts
from aggregator.service import http as serve
from aggregator.service.health import health_report
from aggregator.service.http import FeedServer, make_app
from aggregator.service.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from aggregator.service.metrics import Metrics

NOW = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
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


def raw_get(server: FeedServer, target: str) -> tuple[int, bytes]:
    """GET ``target`` exactly as written (no client-side normalization)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.putrequest("GET", target, skip_accept_encoding=True)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        (category_paths("新闻").rss, "application/rss+xml; charset=utf-8"),
        (category_paths("新闻").atom, "application/atom+xml; charset=utf-8"),
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


def test_validators_and_cache_headers(site: BuiltSite, server: FeedServer) -> None:
    relative = category_paths("新闻").rss
    path = site.output_dir / relative
    first = requests.get(server.url + quote(relative), headers=IDENTITY, timeout=10)
    second = requests.get(server.url + quote(relative), headers=IDENTITY, timeout=10)
    etag = first.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")
    assert second.headers["ETag"] == etag
    assert first.headers["Last-Modified"] == formatdate(path.stat().st_mtime, usegmt=True)
    assert first.headers["Cache-Control"] == f"public, max-age={serve.FEED_MAX_AGE}"
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


def test_large_files_are_streamed(
    site: BuiltSite, server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serve, "MAX_INLINE_BYTES", 1024)
    data = os.urandom(300_000)
    files.write_atomic(site.output_dir / "big.bin", data)
    response = requests.get(server.url + "big.bin", headers=GZIP, timeout=10)
    assert response.status_code == 200
    assert response.content == data
    assert "Content-Encoding" not in response.headers
    etag = response.headers["ETag"]
    head = requests.head(server.url + "big.bin", timeout=10)
    assert head.headers["Content-Length"] == str(len(data)) and head.content == b""
    cached = requests.get(server.url + "big.bin", headers={"If-None-Match": etag}, timeout=10)
    assert cached.status_code == 304


def test_not_found_and_method_not_allowed(server: FeedServer) -> None:
    missing = requests.get(server.url + "categories/nope/rss.xml", timeout=10)
    assert missing.status_code == 404
    assert requests.get(server.url + "categories", timeout=10).status_code == 404
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        response = requests.request(method, server.url + OPML_FILENAME, timeout=10)
        assert response.status_code == 405, method
        assert response.headers["Allow"] == "GET, HEAD"


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
    status, body = raw_get(server, target)
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
    status, body = raw_get(server, "/" + OPML_FILENAME)
    assert status == 404 and SECRET not in body


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
    cache = serve._VersionCache(entries=10, max_bytes=3600)  # three of 900 + 256

    def version(size: int) -> serve._Version:
        return serve._Version("d", None, b"x" * size, "text/plain", 0.0, "date")

    for name in "abc":
        cache.put(name, (1, 2, 3, 4), version(900))
    assert all(cache.get(name, (1, 2, 3, 4)) for name in "abc")
    cache.get("a", (1, 2, 3, 4))  # most recently used now
    cache.put("d", (1, 2, 3, 4), version(900))  # over budget: the least recently used goes
    assert cache.get("b", (1, 2, 3, 4)) is None
    assert cache.get("a", (1, 2, 3, 4)) and cache.get("d", (1, 2, 3, 4))
    assert cache.get("a", (1, 2, 3, 5)) is None  # another stat: another version


def test_cjk_percent_encoded_path(site: BuiltSite, server: FeedServer) -> None:
    assert category_paths("新闻").rss == "categories/新闻/rss.xml"
    status, body = raw_get(server, "/categories/%E6%96%B0%E9%97%BB/rss.xml")
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


def test_site_url_with_a_sub_path(site: BuiltSite) -> None:
    app = make_app(site.output_dir, "http://news.example.org/feeds/")
    with FeedServer(app) as running:
        base = running.url
        opml = requests.get(base + "feeds/" + OPML_FILENAME, timeout=10)
        assert opml.status_code == 200
        assert opml.content == (site.output_dir / OPML_FILENAME).read_bytes()
        cjk = requests.get(base + "feeds/" + quote(category_paths("新闻").rss), timeout=10)
        assert cjk.status_code == 200
        assert requests.get(base + OPML_FILENAME, timeout=10).status_code == 404
        assert requests.get(base + "other/" + OPML_FILENAME, timeout=10).status_code == 404
        assert requests.get(base + "feedsx/" + OPML_FILENAME, timeout=10).status_code == 404
        assert raw_get(running, "/feeds/../feeds/secret.txt")[0] == 404
        moved = requests.get(base + "feeds", allow_redirects=False, timeout=10)
        assert moved.status_code == 301
        assert moved.headers["Location"] == "/feeds/"
        index = requests.get(base + "feeds/", timeout=10)
        assert index.status_code == 200
        assert index.content == (site.output_dir / "index.html").read_bytes()
        assert requests.get(base + "healthz", timeout=10).status_code == 200
        assert requests.get(base + "feeds/healthz", timeout=10).status_code == 404


def test_cjk_site_path(site: BuiltSite) -> None:
    app = make_app(site.output_dir, "http://news.example.org/%E8%81%9A%E5%90%88/")
    with FeedServer(app) as running:
        response = requests.get(running.url + quote("聚合/" + OPML_FILENAME), timeout=10)
        assert response.status_code == 200


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


# --------------------------------------------------------------------------- health


def _source(source_id: str, *, enabled: bool = True) -> Source:
    return Source(id=source_id, name=source_id, url=f"https://{source_id}.example/rss",
                  categories=("新闻",), enabled=enabled)


def _ok(source_id: str) -> SourceStatus:
    return SourceStatus(
        source_id=source_id, last_poll_at=NOW - timedelta(minutes=3),
        last_success_at=NOW - timedelta(minutes=3), last_result="unchanged",
        next_poll_at=NOW + timedelta(minutes=27),
    )


def _failed(source_id: str, count: int = 2) -> SourceStatus:
    return SourceStatus(
        source_id=source_id, last_poll_at=NOW - timedelta(minutes=1),
        last_success_at=NOW - timedelta(days=1), last_result="error",
        last_error="HTTP 500 from portal", error_count=count,
        next_poll_at=NOW + timedelta(minutes=4),
    )


@pytest.mark.parametrize(
    ("statuses", "code", "status"),
    [
        ([_ok("a"), _ok("b")], 200, "ok"),
        ([_ok("a"), _failed("b")], 200, "degraded"),
        ([_failed("a"), _failed("b")], 503, "down"),
    ],
)
def test_healthz_endpoint(
    site: BuiltSite, statuses: list[SourceStatus], code: int, status: str
) -> None:
    def health() -> dict[str, object]:
        return health_report([_source("a"), _source("b")], statuses, NOW)

    # Even with a sub-path site, /healthz is at the server root.
    app = make_app(site.output_dir, "http://127.0.0.1/feeds/", health=health)
    with FeedServer(app) as running:
        response = requests.get(running.url + "healthz", timeout=10)
        assert response.status_code == code
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["Cache-Control"] == "no-store"
        body = response.json()
        assert body["status"] == status
        assert [s["id"] for s in body["sources"]] == ["a", "b"]
        assert set(body["sources"][0]) == {
            "id", "enabled", "last_success_at", "last_poll_at", "last_result", "last_error",
            "error_count", "next_poll_at", "disabled_reason",
        }
        head = requests.head(running.url + "healthz", timeout=10)
        assert head.status_code == code and head.content == b""


def test_healthz_without_callable_and_when_it_raises(site: BuiltSite) -> None:
    with FeedServer(make_app(site.output_dir, "http://127.0.0.1/")) as running:
        response = requests.get(running.url + "healthz", timeout=10)
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}

    def broken() -> dict[str, object]:
        raise RuntimeError("database is locked")

    with FeedServer(make_app(site.output_dir, "http://127.0.0.1/", health=broken)) as running:
        response = requests.get(running.url + "healthz", timeout=10)
        assert response.status_code == 503
        assert response.json()["status"] == "down"
        assert "database is locked" in response.json()["error"]


# --------------------------------------------------------------------------- metrics


def test_metrics_endpoint(site: BuiltSite) -> None:
    metrics = Metrics()
    metrics.record_poll(
        PollResult(source_id="portal", result="new", counts=StoreCounts(new=3),
                   fetch_seconds=0.2),
        consecutive_errors=0,
    )
    metrics.record_poll(PollResult(source_id="tech", result="error", error="boom"), 1)
    app = make_app(site.output_dir, "http://127.0.0.1/feeds/", metrics=metrics)
    with FeedServer(app) as running:
        response = requests.get(running.url + "metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == METRICS_CONTENT_TYPE
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert "aggregator_polls" in families
    polls = {
        (s.labels["source"], s.labels["result"]): s.value
        for s in families["aggregator_polls"].samples
        if s.name == "aggregator_polls_total"
    }
    assert polls == {("portal", "new"): 1.0, ("tech", "error"): 1.0}
    errors = families["aggregator_source_consecutive_errors"].samples
    assert {s.labels["source"]: s.value for s in errors} == {"portal": 0.0, "tech": 1.0}


def test_metrics_absent_is_404(server: FeedServer) -> None:
    assert requests.get(server.url + "metrics", timeout=10).status_code == 404


# --------------------------------------------------------------------------- server lifecycle


def test_feed_server_stops_and_frees_the_port(site: BuiltSite) -> None:
    running = FeedServer(make_app(site.output_dir, "http://127.0.0.1/")).start()
    port = running.port
    assert running.url == f"http://127.0.0.1:{port}/"
    # A keep-alive connection is open while we stop: stop must still return.
    session = requests.Session()
    assert session.get(running.url + OPML_FILENAME, timeout=10).status_code == 200
    running.stop()
    running.stop()  # idempotent
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    session.close()
    with pytest.raises(RuntimeError):
        _ = running.port


def test_concurrent_requests(server: FeedServer, site: BuiltSite) -> None:
    relative = category_paths("新闻").rss
    expected = (site.output_dir / relative).read_bytes()

    def fetch(i: int) -> bytes:
        headers = GZIP if i % 2 else IDENTITY
        return requests.get(server.url + quote(relative), headers=headers, timeout=10).content

    with ThreadPoolExecutor(max_workers=8) as pool:
        bodies = list(pool.map(fetch, range(40)))
    assert all(body == expected for body in bodies)


def test_if_modified_since_in_the_future_and_other_zones(site: BuiltSite,
                                                         server: FeedServer) -> None:
    url = server.url + OPML_FILENAME
    mtime = datetime.fromtimestamp((site.output_dir / OPML_FILENAME).stat().st_mtime, UTC)
    later = format_datetime(mtime + timedelta(days=1), usegmt=True)
    assert requests.get(url, headers={"If-Modified-Since": later}, timeout=10).status_code == 304


def test_stop_lets_an_in_flight_request_finish(site: BuiltSite) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow_health() -> dict[str, object]:
        entered.set()
        release.wait(10)
        return {"status": "ok"}

    running = FeedServer(make_app(site.output_dir, "http://127.0.0.1/", health=slow_health))
    running.start()
    port = running.port
    with ThreadPoolExecutor(max_workers=2) as pool:
        in_flight = pool.submit(requests.get, running.url + "healthz", timeout=10)
        assert entered.wait(10)
        stopping = pool.submit(running.stop)
        # Wait (bounded) until the listener is closed: new connections are refused.
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                break
            assert time.monotonic() < deadline, "listener still open"
        assert not stopping.done()  # still draining the request in flight
        release.set()
        response = in_flight.result(timeout=10)
        stopping.result(timeout=10)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_feed_server_resolves_a_host_name(site: BuiltSite) -> None:
    with FeedServer(make_app(site.output_dir, "http://127.0.0.1/"), host="localhost") as running:
        assert requests.get(running.url + OPML_FILENAME, timeout=10).status_code == 200
