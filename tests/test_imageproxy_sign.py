"""Tests for aggregator.imageproxy (the signed ``/img/`` URLs), normalize's use of it with
``image_proxy: builtin``, the Hexo posts that carry the result, and the image settings.

The endpoint that serves these URLs is tested in test_image_proxy.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from builders import make_article, write_config_file

from aggregator import imageproxy
from aggregator.config import load_config
from aggregator.ingest.normalize import normalize, proxied_image
from aggregator.publish.hexo import render_hexo
from aggregator.records import BuiltinImageProxy, NormalizeOptions, ParsedEntry, Source
from aggregator.service.http.images import image_settings

SITE = "https://news.example/feeds/"
PROXY = BuiltinImageProxy(site_url=SITE, secret=b"s3cret-key")
IMAGE = "http://images.portal.example/2021/05/1.jpg?w=640&h=480"
SECURE = "https://cdn.portal.example/a/b.png"
SOURCE = Source(id="portal", name="门户", url="http://portal.example/rss.xml",
                categories=("新闻",))


def parts(url: str) -> tuple[str, str]:
    signature, encoded = url.removeprefix(imageproxy.endpoint(SITE)).split("/")
    return signature, encoded


def test_signed_url_has_the_documented_shape_and_verifies_back() -> None:
    url = imageproxy.signed_url(IMAGE, PROXY)
    assert url.startswith("https://news.example/feeds/img/")
    signature, encoded = parts(url)
    assert len(signature) == 24 and "=" not in signature + encoded
    assert set(signature + encoded) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert imageproxy.verify(signature, encoded, PROXY.secret) == IMAGE
    assert imageproxy.signed_url(IMAGE, PROXY) == url  # immutable: cacheable forever


def test_unicode_urls_round_trip() -> None:
    image = "http://图片.example/新闻/一.jpg"
    assert imageproxy.verify(*parts(imageproxy.signed_url(image, PROXY)), PROXY.secret) == image


def test_site_url_without_trailing_slash_still_gets_one() -> None:
    url = imageproxy.signed_url(IMAGE, BuiltinImageProxy("https://news.example/feeds", b"k"))
    assert url.startswith("https://news.example/feeds/img/")


def test_a_tampered_signature_url_or_key_is_refused() -> None:
    signature, encoded = parts(imageproxy.signed_url(IMAGE, PROXY))
    flipped = ("B" if signature[0] == "A" else "A") + signature[1:]
    other = parts(imageproxy.signed_url(SECURE, PROXY))[1]
    assert imageproxy.verify(flipped, encoded, PROXY.secret) is None
    assert imageproxy.verify(signature, other, PROXY.secret) is None
    assert imageproxy.verify(signature, encoded, b"another key") is None
    assert imageproxy.verify(signature[:-2], encoded, PROXY.secret) is None  # truncated


@pytest.mark.parametrize("signature,encoded", [
    ("++++", "aHR0cDovL3g"), ("AAAA", "aHR0cDovL3g="), ("AAAA", "a"), ("ÄÄÄÄ", "aHR0cDovL3g"),
    ("", ""), ("AAAA", "aHR0c/DovL3g"),
])
def test_malformed_base64_is_refused_not_raised(signature: str, encoded: str) -> None:
    assert imageproxy.verify(signature, encoded, PROXY.secret) is None


def test_a_validly_signed_non_web_url_is_still_refused() -> None:
    # Only normalize signs, and only web URLs; a key leak must not open file: or data:.
    for url in ("file:///etc/passwd", "javascript:alert(1)", "ftp://x/y"):
        assert imageproxy.verify(*parts(imageproxy.signed_url(url, PROXY)), PROXY.secret) is None


# ------------------------------------------------------------------------- normalize


def test_builtin_scope_http_signs_http_images_only() -> None:
    options = NormalizeOptions(builtin_image_proxy=PROXY)
    assert proxied_image(IMAGE, options) == imageproxy.signed_url(IMAGE, PROXY)
    assert proxied_image(SECURE, options) == SECURE


def test_builtin_scope_all_signs_https_too_and_never_twice() -> None:
    options = NormalizeOptions(builtin_image_proxy=PROXY, image_proxy_scope="all")
    signed = proxied_image(SECURE, options)
    assert signed == imageproxy.signed_url(SECURE, PROXY)
    assert proxied_image(signed, options) == signed
    assert proxied_image("data:image/png;base64,AAAA", options) == "data:image/png;base64,AAAA"


def test_prefix_proxy_is_unchanged() -> None:
    options = NormalizeOptions(image_proxy="https://cors.zfour.workers.dev/?")
    assert proxied_image(IMAGE, options) == "https://cors.zfour.workers.dev/?" + IMAGE


def test_normalized_article_and_its_hexo_post_carry_the_signed_url() -> None:
    entry = ParsedEntry(guid="g1", link="http://portal.example/1.html", title="标题",
                        content=f'<p>正文<img src="{IMAGE}"></p><img src="/rel.gif">')
    article = normalize(entry, SOURCE, NormalizeOptions(builtin_image_proxy=PROXY),
                        seen_at=make_article().first_seen)
    signed = imageproxy.signed_url(IMAGE, PROXY)
    assert article.headimg == article.thumbnail == signed
    assert f'<img src="{signed.replace("&", "&amp;")}"' in article.content
    # the relative image, made absolute (http), is signed too
    assert imageproxy.signed_url("http://portal.example/rel.gif", PROXY) in article.content
    post = render_hexo(article)
    assert f"headimg: '{signed}'" in post and f"thumbnail: '{signed}'" in post


def test_thumbnail_only_entry_gets_a_signed_headimg() -> None:
    entry = ParsedEntry(guid="g2", link="http://portal.example/2.html", title="无图",
                        content="<p>正文</p>", thumbnails=(IMAGE,))
    article = normalize(entry, SOURCE, NormalizeOptions(builtin_image_proxy=PROXY),
                        seen_at=make_article().first_seen)
    assert article.headimg == imageproxy.signed_url(IMAGE, PROXY)


# -------------------------------------------------------------------------- settings


def test_image_settings_of_a_builtin_config(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    path = write_config_file(folder / "aggregator.yaml", [
        "image_proxy: builtin", "image_proxy_secret: k3y", f"site_url: {SITE}",
        "image_cache_bytes: 2MB", "allow_private_networks: true"],
                             {"portal": "http://portal.example/rss.xml"})
    settings = image_settings(load_config(path))
    assert settings is not None
    assert settings.proxy == BuiltinImageProxy(site_url=SITE, secret=b"k3y")
    assert settings.cache_dir == folder / "data" / "image-cache"  # against the config folder
    assert settings.cache_bytes == 2 * 1024 * 1024
    assert settings.fetch.allow_private_networks is True


def test_no_image_settings_without_builtin(tmp_path: Path) -> None:
    path = write_config_file(tmp_path / "a.yaml", ["image_proxy: https://p.example/?",
                                                   "image_cache_dir: /var/cache/img"],
                             {"portal": "http://portal.example/rss.xml"})
    settings = load_config(path)
    assert image_settings(settings) is None
    assert settings.image_cache_dir == Path("/var/cache/img")
    assert settings.image_cache_bytes == 256 * 1024 * 1024
