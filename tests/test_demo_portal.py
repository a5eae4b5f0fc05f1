"""The demo portal and its bundled data: what it serves, how, and that the bytes are what
the demo claims (GBK behind gb2312, Big5-HKSCS / cp950 behind big5, ...).

The seed comparison reads ``../shared/seed`` (a sibling of the repo) and is skipped when it
is absent.  No test sleeps: every request is answered by the portal's own thread.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
import yaml

from aggregator.demo import (
    CONTENT_TYPES,
    LAST_MODIFIED,
    DemoPortal,
    content_type_for,
    demo_config_template,
    demo_config_text,
    feed_bytes,
    feed_names,
)

REPO = Path(__file__).resolve().parents[1]
SEED = REPO.parent / "shared" / "seed" / "000_08ef3d22c0e5d0f0.txt"
ENCODINGS = REPO / "tests" / "fixtures" / "encodings"
SEED_TITLE = "来了！2021工业互联网先锋TOP100榜单出炉！"
SEED_IMAGE = "http://images.ofweek.com/Upload/News/2021-05/21/jingwei/1621582693914051820.jpg"
ATOM = "{http://www.w3.org/2005/Atom}"
RSS_FEEDS = ["ofweek-news.xml", "hk-news-big5.xml", "tw-news-cp950.xml"]
EXPECTED_CONTENT_TYPES = {
    "ofweek-news.xml": "text/xml",
    "hk-news-big5.xml": "application/rss+xml; charset=big5",
    "tw-news-cp950.xml": "application/rss+xml; charset=big5",
    "juejin-atom.xml": "application/atom+xml; charset=utf-8",
    "oschina.json": "application/feed+json",
}
# How each file's bytes must decode: (codec that works, codecs that must fail).
CODECS = {
    "ofweek-news.xml": ("gb18030", ("gb2312",)),
    "hk-news-big5.xml": ("big5hkscs", ("big5", "cp950")),
    "tw-news-cp950.xml": ("cp950", ("big5", "big5hkscs")),
    "juejin-atom.xml": ("utf-8", ()),
    "oschina.json": ("utf-8", ()),
}


@pytest.fixture(scope="module")
def portal() -> Iterator[DemoPortal]:
    with DemoPortal() as running:
        yield running


def sha1_etag(data: bytes) -> str:
    return '"' + hashlib.sha1(data).hexdigest() + '"'


def decoded(name: str) -> str:
    return feed_bytes(name).decode(CODECS[name][0])


def rss_items(name: str) -> list[ET.Element]:
    text = re.sub(r"^<\?xml[^>]*\?>", "", decoded(name))
    return ET.fromstring(text).findall("./channel/item")


# --- the portal over HTTP -------------------------------------------------------------


def test_feed_names_are_the_bundled_feeds() -> None:
    assert feed_names() == sorted(EXPECTED_CONTENT_TYPES)
    assert dict(CONTENT_TYPES) == EXPECTED_CONTENT_TYPES


def test_base_url_is_loopback_with_an_ephemeral_port(portal: DemoPortal) -> None:
    parts = urlsplit(portal.base_url)
    assert (parts.scheme, parts.hostname, parts.path) == ("http", "127.0.0.1", "/")
    assert parts.port == portal.port and parts.port > 0
    assert portal.url("oschina.json") == portal.base_url + "oschina.json"
    with pytest.raises(KeyError):
        portal.url("missing.xml")


@pytest.mark.parametrize("name", sorted(EXPECTED_CONTENT_TYPES))
def test_serves_every_feed_like_its_portal(portal: DemoPortal, name: str) -> None:
    response = requests.get(portal.url(name), timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == EXPECTED_CONTENT_TYPES[name]
    assert response.headers["Content-Type"] == content_type_for(name)
    assert response.content == feed_bytes(name)
    assert response.headers["ETag"] == sha1_etag(feed_bytes(name))
    assert response.headers["Last-Modified"] == LAST_MODIFIED


def test_ofweek_is_served_without_a_charset(portal: DemoPortal) -> None:
    response = requests.get(portal.url("ofweek-news.xml"), timeout=10)
    assert "charset" not in response.headers["Content-Type"]


def test_if_none_match_gives_304(portal: DemoPortal) -> None:
    url = portal.url("ofweek-news.xml")
    etag = requests.get(url, timeout=10).headers["ETag"]
    again = requests.get(url, headers={"If-None-Match": etag}, timeout=10)
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["ETag"] == etag
    weak = requests.get(url, headers={"If-None-Match": f'"other", W/{etag}'}, timeout=10)
    assert weak.status_code == 304
    assert requests.get(url, headers={"If-None-Match": "*"}, timeout=10).status_code == 304
    other = requests.get(url, headers={"If-None-Match": '"stale"'}, timeout=10)
    assert other.status_code == 200 and other.content == feed_bytes("ofweek-news.xml")


def test_if_modified_since_gives_304_unless_if_none_match_differs(portal: DemoPortal) -> None:
    url = portal.url("juejin-atom.xml")
    same = requests.get(url, headers={"If-Modified-Since": LAST_MODIFIED}, timeout=10)
    assert same.status_code == 304
    later = requests.get(url, headers={"If-Modified-Since": "Fri, 01 Jan 2038 00:00:00 GMT"},
                         timeout=10)
    assert later.status_code == 304
    earlier = requests.get(url, headers={"If-Modified-Since": "Fri, 01 Jan 2021 00:00:00 GMT"},
                           timeout=10)
    assert earlier.status_code == 200
    garbage = requests.get(url, headers={"If-Modified-Since": "yesterday"}, timeout=10)
    assert garbage.status_code == 200
    # If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2).
    both = requests.get(url, headers={"If-None-Match": '"stale"',
                                      "If-Modified-Since": LAST_MODIFIED}, timeout=10)
    assert both.status_code == 200


def test_gzip_when_the_client_accepts_it(portal: DemoPortal) -> None:
    url = portal.url("hk-news-big5.xml")
    zipped = requests.get(url, headers={"Accept-Encoding": "gzip, deflate"}, stream=True,
                          timeout=10)
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in zipped.headers["Vary"]
    raw = zipped.raw.read(decode_content=False)
    assert int(zipped.headers["Content-Length"]) == len(raw)
    assert gzip.decompress(raw) == feed_bytes("hk-news-big5.xml")
    for refused in ("identity", "gzip;q=0, identity", "br"):
        plain = requests.get(url, headers={"Accept-Encoding": refused}, timeout=10)
        assert "Content-Encoding" not in plain.headers, refused
        assert plain.content == feed_bytes("hk-news-big5.xml")
    star = requests.get(url, headers={"Accept-Encoding": "*"}, stream=True, timeout=10)
    assert star.headers["Content-Encoding"] == "gzip"
    star.close()


def test_head_has_headers_and_no_body(portal: DemoPortal) -> None:
    response = requests.head(portal.url("oschina.json"), headers={"Accept-Encoding": "identity"},
                             timeout=10)
    assert response.status_code == 200
    assert response.content == b""
    assert int(response.headers["Content-Length"]) == len(feed_bytes("oschina.json"))


def test_unknown_paths_are_404(portal: DemoPortal) -> None:
    host, port = "127.0.0.1", portal.port
    for path in ("/missing.xml", "/", "/feeds/ofweek-news.xml", "/../demo.yaml",
                 "/..%2Fdemo.yaml", "/__init__.py"):
        conn = http.client.HTTPConnection(host, port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            assert response.status == 404, path
        finally:
            conn.close()


def test_query_strings_are_ignored(portal: DemoPortal) -> None:
    response = requests.get(portal.url("tw-news-cp950.xml") + "?limit=10", timeout=10)
    assert response.status_code == 200
    assert response.content == feed_bytes("tw-news-cp950.xml")


def test_set_feed_changes_validators_and_hits_record_requests() -> None:
    with DemoPortal() as own:
        url = own.url("oschina.json")
        first = requests.get(url, headers={"User-Agent": "probe/1"}, timeout=10)
        own.set_feed("oschina.json", b'{"version": "https://jsonfeed.org/version/1.1"}')
        second = requests.get(url, headers={"If-None-Match": first.headers["ETag"]}, timeout=10)
        assert second.status_code == 200
        assert second.headers["ETag"] != first.headers["ETag"]
        assert second.headers["Content-Type"] == "application/feed+json"
        assert (parsedate_to_datetime(second.headers["Last-Modified"])
                > parsedate_to_datetime(LAST_MODIFIED))
        own.set_feed("extra.xml", b"<rss/>", "text/xml; charset=utf-8")
        assert own.names == sorted([*EXPECTED_CONTENT_TYPES, "extra.xml"])
        extra = requests.get(own.url("extra.xml"), timeout=10)
        assert extra.headers["Content-Type"] == "text/xml; charset=utf-8"
        hits = own.hits
        assert [(h.method, h.path, h.status) for h in hits] == [
            ("GET", "/oschina.json", 200), ("GET", "/oschina.json", 200),
            ("GET", "/extra.xml", 200)]
        assert hits[0].headers["user-agent"] == "probe/1"
        assert hits[1].headers["if-none-match"] == first.headers["ETag"]
    # The module's other portal still serves the bundled bytes.
    assert feed_bytes("oschina.json").startswith(b"{")


def test_lifecycle() -> None:
    idle = DemoPortal()
    with pytest.raises(RuntimeError):
        _ = idle.base_url
    idle.start()
    try:
        with pytest.raises(RuntimeError):
            idle.start()
        url = idle.url("ofweek-news.xml")
        session = requests.Session()  # keep-alive: close() must end it too
        assert session.get(url, timeout=10).status_code == 200
    finally:
        idle.close()
    idle.close()  # idempotent
    with pytest.raises(requests.ConnectionError):
        session.get(url, timeout=10)
    session.close()


# --- the bundled bytes ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CODECS))
def test_feed_bytes_decode_as_stated(name: str) -> None:
    data = feed_bytes(name)
    good, bad = CODECS[name]
    text = data.decode(good)
    assert "\ufffd" not in text
    for codec in bad:
        with pytest.raises(UnicodeDecodeError):
            data.decode(codec)
    if name.endswith(".xml"):
        declared = re.match(r'<\?xml version="1.0" encoding="([^"]+)"\?>', text)
        assert declared is not None
        assert declared.group(1) == {"ofweek-news.xml": "gb2312", "juejin-atom.xml": "utf-8"
                                     }.get(name, "big5")
    assert not data.startswith(b"\xef\xbb\xbf")


def test_ofweek_is_gbk_behind_gb2312_and_holds_the_seed() -> None:
    text = decoded("ofweek-news.xml")
    assert feed_bytes("ofweek-news.xml").decode("gbk") == text
    assert "喆" in text and "堃" in text
    for char in "喆堃":
        with pytest.raises(UnicodeEncodeError):
            char.encode("gb2312")
    assert "OFweek 高科技行业门户 - 新闻" in text
    seed = next(i for i in rss_items("ofweek-news.xml") if i.findtext("title") == SEED_TITLE)
    assert seed.findtext("pubDate") == "Fri, 21 May 2021 07:25:00 GMT"
    assert seed.find("author") is None
    description = seed.findtext("description") or ""
    assert f'<img src="{SEED_IMAGE}">' in description
    assert "cors.zfour" not in description and "referrerpolicy" not in description


@pytest.mark.skipif(not SEED.is_file(), reason="../shared/seed is not present")
def test_seed_description_is_the_seed_body_with_the_original_image() -> None:
    body = SEED.read_text(encoding="utf-8").split("\n---\n", 1)[1]
    match = re.search(r"<div>   \n(.*) \n  \n</div>", body, re.S)
    assert match is not None
    expected = match.group(1).replace(
        f'<img src="https://cors.zfour.workers.dev/?{SEED_IMAGE}" referrerpolicy="no-referrer">',
        f'<img src="{SEED_IMAGE}">')
    seed = next(i for i in rss_items("ofweek-news.xml") if i.findtext("title") == SEED_TITLE)
    assert seed.findtext("description") == expected


def test_big5_feeds_need_their_supersets() -> None:
    hk = decoded("hk-news-big5.xml")
    assert "㗎" in hk
    with pytest.raises(UnicodeEncodeError):
        "㗎".encode("cp950")
    tw = decoded("tw-news-cp950.xml")
    assert "€" in tw
    with pytest.raises(UnicodeEncodeError):
        "€".encode("big5hkscs")
    # Apart from the euro sign the Taiwan feed is plain Big5.
    tw.replace("€", "").encode("big5")


@pytest.mark.parametrize("name", RSS_FEEDS)
def test_rss_feeds_have_2021_items_with_absolute_links_and_images(name: str) -> None:
    items = rss_items(name)
    assert 4 <= len(items) <= 6
    for item in items:
        assert (item.findtext("title") or "").strip()
        assert re.match(r"https?://[a-z0-9.-]+\.[a-z]+/", item.findtext("link") or "")
        assert parsedate_to_datetime(item.findtext("pubDate") or "").year == 2021
        images = re.findall(r'<img src="([^"]+)"', item.findtext("description") or "")
        assert images and all(re.match(r"https?://", src) for src in images)


def test_juejin_atom_has_authors_dates_and_a_relative_entry() -> None:
    root = ET.fromstring(feed_bytes("juejin-atom.xml"))
    assert root.tag == f"{ATOM}feed"
    assert root.get("{http://www.w3.org/XML/1998/namespace}base") == "https://juejin.cn/"
    entries = root.findall(f"{ATOM}entry")
    assert 4 <= len(entries) <= 6
    for entry in entries:
        assert entry.findtext(f"{ATOM}author/{ATOM}name")
        assert entry.findtext(f"{ATOM}updated", "").startswith("2021-")
        content = entry.find(f"{ATOM}content")
        assert content is not None and content.get("type") == "html"
    assert sum(e.find(f"{ATOM}published") is None for e in entries) == 1
    links = [e.find(f"{ATOM}link") for e in entries]
    relative = [e for e, link in zip(entries, links, strict=True)
                if link is not None and not link.get("href", "").startswith("http")]
    assert len(relative) == 1
    assert '<img src="/' in (relative[0].findtext(f"{ATOM}content") or "")


def test_oschina_is_a_json_feed_1_1() -> None:
    feed = json.loads(feed_bytes("oschina.json"))
    assert feed["version"] == "https://jsonfeed.org/version/1.1"
    assert feed["title"] and feed["home_page_url"].startswith("https://")
    assert len(feed["items"]) == 3
    for item in feed["items"]:
        assert item["id"] and item["url"].startswith("https://") and item["title"]
        assert "<img " in item["content_html"]
        assert item["image"].startswith("https://")
        assert item["date_published"].startswith("2021-")
        assert item["authors"] and item["authors"][0]["name"]


# --- demo.yaml ----------------------------------------------------------------------------


def test_demo_yaml_is_valid_and_points_every_source_at_the_portal() -> None:
    raw = yaml.safe_load(demo_config_template())
    assert raw["allow_private_networks"] is True
    assert raw["image_proxy"] == "https://cors.zfour.workers.dev/?"
    sources = raw["sources"]
    assert all("{portal}" in source["url"] for source in sources)
    assert all(re.fullmatch(r"[a-z0-9-]+", source["id"]) for source in sources)
    served = {source["url"].removeprefix("{portal}") for source in sources}
    assert served == set(feed_names())
    assert {source["categories"][0] for source in sources} == {"新媒体", "编程"}
    ofweek = next(source for source in sources if source["id"] == "ofweek-news")
    assert ofweek["name"] == "高科技行业门户"
    assert ofweek["categories"] == ["新媒体", "高科技行业门户", "新闻"]


def test_demo_config_text_substitutes_the_portal(tmp_path: Path, portal: DemoPortal) -> None:
    from aggregator.config import parse_config

    text = demo_config_text(portal.base_url)
    assert "{portal}" not in text
    settings = parse_config(text, tmp_path / "aggregator.yaml")
    assert settings.allow_private_networks
    for source in settings.sources:
        assert str(source.url).startswith(portal.base_url)
        assert requests.head(str(source.url), timeout=10).status_code == 200
    with pytest.raises(ValueError):
        demo_config_text("http://127.0.0.1:1")


# --- the parser's encoding fixtures ------------------------------------------------------


@pytest.mark.parametrize("path", sorted(ENCODINGS.glob("*.xml")), ids=lambda p: p.name)
def test_encoding_fixtures_match_their_expectations(path: Path) -> None:
    expected = json.loads(path.with_suffix(".expected.json").read_text(encoding="utf-8"))
    data = path.read_bytes()
    text = data.decode(expected["codec"])
    assert "\ufffd" not in text
    for title in [expected["feed_title"], *expected["item_titles"]]:
        assert f"<title>{title}</title>" in text
    assert expected["content_type"]


def test_encoding_fixtures_need_what_the_readme_says() -> None:
    def raw(stem: str) -> bytes:
        return (ENCODINGS / f"{stem}.xml").read_bytes()

    cases = {
        "a-gb2312-declared-gbk-bytes": ("gb2312",),
        "b-big5-declared-hkscs-bytes": ("big5", "cp950"),
        "c-big5-declared-cp950-bytes": ("big5", "big5hkscs"),
        "d-undeclared-gbk-bytes": ("utf-8",),
        "f-gbk-declared-uppercase": ("gb2312",),
    }
    for stem, failing in cases.items():
        for codec in failing:
            with pytest.raises(UnicodeDecodeError):
                raw(stem).decode(codec)
    assert b"encoding=" not in raw("d-undeclared-gbk-bytes")[:100]
    assert len(re.findall("[\u4e00-\u9fff]", raw("d-undeclared-gbk-bytes").decode("gbk"))) >= 300
    assert raw("e-utf8-bom").startswith(b"\xef\xbb\xbf<?xml")
    assert b'encoding="GBK"' in raw("f-gbk-declared-uppercase")
    raw("g-big5-plain").decode("big5")
