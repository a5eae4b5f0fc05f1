"""Tests for the builtin image proxy's endpoint (aggregator.service.http.images) and its
fetch (aggregator.ingest.fetch.image), end to end.

The origin is a real pytest-httpserver on 127.0.0.1 serving a PNG; the endpoint is the
project's own waitress ``FeedServer`` running ``make_app`` on 127.0.0.1, reached with
requests.  What the origin received (``httpserver.log``) is the evidence that a request
was — or was not — made, and with which headers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import pytest
import requests
from builders import LogWatcher, write_config_file
from prometheus_client.parser import text_string_to_metric_families
from pytest_httpserver import HTTPServer
from served_site import png
from werkzeug import Request, Response

from aggregator import imageproxy
from aggregator.records import BuiltinImageProxy, FetchOptions
from aggregator.service.http import FeedServer, make_app
from aggregator.service.http.images import (
    CACHE_CONTROL,
    CONTENT_SECURITY_POLICY,
    ImageProxySettings,
)
from aggregator.service.metrics import Metrics

SITE = "http://127.0.0.1/feeds/"
PROXY = BuiltinImageProxy(site_url=SITE, secret=b"image-key")
PNG = png(16, 9)
LOCAL = FetchOptions(deadline=10.0, allow_private_networks=True)


class Proxy:
    """A running app with the image proxy on, and how to reach an image through it."""

    def __init__(self, server: FeedServer, metrics: Metrics, cache_dir: Path) -> None:
        self.server = server
        self.metrics = metrics
        self.cache_dir = cache_dir

    def url(self, image_url: str, proxy: BuiltinImageProxy = PROXY) -> str:
        return self.server.url + imageproxy.signed_url(image_url, proxy).removeprefix(
            "http://127.0.0.1/")

    def get(self, image_url: str, **kwargs: object) -> requests.Response:
        return requests.get(self.url(image_url), timeout=15, **kwargs)  # type: ignore[arg-type]

    def count(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels or None) or 0.0


ProxyFactory = Callable[..., Proxy]


@pytest.fixture
def start_proxy(tmp_path: Path) -> Iterator[ProxyFactory]:
    servers: list[FeedServer] = []
    (tmp_path / "public").mkdir()

    def start(fetch: FetchOptions = LOCAL, cache_bytes: int = 1024 * 1024,
              wrap: Callable[[WSGIApplication], WSGIApplication] | None = None) -> Proxy:
        metrics = Metrics()
        cache_dir = tmp_path / f"cache{len(servers)}"
        app = make_app(tmp_path / "public", SITE, metrics=metrics, images=ImageProxySettings(
            proxy=PROXY, fetch=fetch, cache_dir=cache_dir, cache_bytes=cache_bytes))
        server = FeedServer(wrap(app) if wrap else app).start()
        servers.append(server)
        return Proxy(server, metrics, cache_dir)

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def proxy(start_proxy: ProxyFactory) -> Proxy:
    return start_proxy()


def serve_png(httpserver: HTTPServer, path: str = "/a.png", body: bytes = PNG,
              **headers: str) -> str:
    httpserver.expect_request(path).respond_with_data(body, content_type="image/png",
                                                      headers=headers)
    return httpserver.url_for(path)


def requests_to(httpserver: HTTPServer, path: str) -> list[Request]:
    return [request for request, _response in httpserver.log if request.path == path]


def test_image_is_served_with_safe_headers_and_no_referer_or_cookie(
    httpserver: HTTPServer, proxy: Proxy
) -> None:
    # The origin sets a cookie on a redirect: it must not come back on the next hop.
    httpserver.expect_request("/start").respond_with_response(Response(
        status=302, headers={"Location": "/a.png", "Set-Cookie": "track=1; Path=/"}))
    serve_png(httpserver)
    response = proxy.get(httpserver.url_for("/start"),
                         headers={"Referer": "https://reader.example/article",
                                  "Cookie": "session=reader-secret"})
    assert response.status_code == 200
    assert response.content == PNG
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == CACHE_CONTROL
    assert "max-age=31536000" in CACHE_CONTROL and CACHE_CONTROL.startswith("public")
    assert response.headers["ETag"].startswith('"')
    assert "Set-Cookie" not in response.headers
    [start] = requests_to(httpserver, "/start")
    [image] = requests_to(httpserver, "/a.png")
    for received in (start, image):
        assert "Referer" not in received.headers
        assert "Cookie" not in received.headers
        assert received.headers["Accept"] == "image/*"


def test_head_answers_the_headers_without_a_body(httpserver: HTTPServer, proxy: Proxy) -> None:
    response = requests.head(proxy.url(serve_png(httpserver)), timeout=15)
    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(len(PNG))
    assert response.content == b""


def test_tampered_or_malformed_signatures_are_refused_without_fetching(
    httpserver: HTTPServer, proxy: Proxy
) -> None:
    image = serve_png(httpserver)
    good = proxy.url(image)
    head, signature, encoded = good.rsplit("/", 2)
    flipped = ("B" if signature[0] == "A" else "A") + signature[1:]
    wrong_key = proxy.url(image, BuiltinImageProxy(SITE, b"not-our-key"))
    for url in (f"{head}/{flipped}/{encoded}", wrong_key, f"{head}/{signature}/{encoded}x",
                f"{head}/%2B%2B%2B/{encoded}", f"{head}/{signature}/{encoded}===",
                f"{head}/{signature}/%C3%A9t%C3%A9"):
        response = requests.get(url, timeout=15)
        assert response.status_code == 403, url
        assert response.headers["Cache-Control"] == "no-store"
    for url in (f"{head}/{signature}", f"{head}/{signature}/{encoded}/more", f"{head}/"):
        assert requests.get(url, timeout=15).status_code == 404, url
    assert httpserver.log == []
    assert proxy.count("aggregator_image_proxy_refusals_total", reason="signature") == 6


def test_private_address_refused_when_private_networks_are_not_allowed(
    httpserver: HTTPServer, start_proxy: ProxyFactory
) -> None:
    guarded = start_proxy(FetchOptions(deadline=10.0, allow_private_networks=False))
    response = guarded.get(serve_png(httpserver))
    assert response.status_code == 403
    assert httpserver.log == []
    assert guarded.count("aggregator_image_proxy_refusals_total", reason="blocked") == 1
    assert guarded.count("aggregator_image_proxy_misses_total") == 0


@pytest.mark.parametrize("content_type,body", [
    ("text/html; charset=utf-8", b"<html><script>alert(1)</script></html>"),
    ("image/svg+xml", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'),
    ("application/octet-stream", PNG),
    ("", PNG),
])
def test_only_raster_images_pass(httpserver: HTTPServer, proxy: Proxy, content_type: str,
                                 body: bytes) -> None:
    httpserver.expect_request("/x").respond_with_data(body, content_type=content_type)
    response = proxy.get(httpserver.url_for("/x"))
    assert response.status_code == 502
    assert body not in response.content
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert proxy.count("aggregator_image_proxy_refusals_total", reason="type") == 1


def test_origin_failure_is_a_bad_gateway_remembered_for_a_while(
    httpserver: HTTPServer, proxy: Proxy
) -> None:
    httpserver.expect_request("/gone").respond_with_data(b"nope", status=404)
    for _ in range(3):
        assert proxy.get(httpserver.url_for("/gone")).status_code == 502
    assert len(requests_to(httpserver, "/gone")) == 1
    assert proxy.count("aggregator_image_proxy_refusals_total", reason="upstream") == 3
    assert proxy.count("aggregator_image_proxy_misses_total") == 0


def test_conditional_requests_get_304(httpserver: HTTPServer, proxy: Proxy) -> None:
    image = serve_png(httpserver, etag='"origin-v1"',
                      **{"Last-Modified": "Tue, 01 Dec 2026 10:00:00 GMT"})
    first = proxy.get(image)
    assert first.headers["ETag"] == '"origin-v1"'
    assert first.headers["Last-Modified"] == "Tue, 01 Dec 2026 10:00:00 GMT"
    again = proxy.get(image, headers={"If-None-Match": '"origin-v1"'})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["ETag"] == '"origin-v1"'
    since = proxy.get(image, headers={"If-Modified-Since": "Wed, 02 Dec 2026 00:00:00 GMT"})
    assert since.status_code == 304
    stale = proxy.get(image, headers={"If-None-Match": '"other"'})
    assert stale.status_code == 200 and stale.content == PNG
    assert len(requests_to(httpserver, "/a.png")) == 1


def test_without_an_origin_etag_a_content_hash_validates(httpserver: HTTPServer,
                                                         proxy: Proxy) -> None:
    image = serve_png(httpserver)
    etag = proxy.get(image).headers["ETag"]
    assert proxy.get(image, headers={"If-None-Match": etag}).status_code == 304
    other = serve_png(httpserver, "/b.png", png(3, 3))
    assert proxy.get(other).headers["ETag"] != etag


def test_repeated_hits_are_served_from_the_cache(httpserver: HTTPServer,
                                                 proxy: Proxy) -> None:
    image = serve_png(httpserver)
    for _ in range(5):
        response = proxy.get(image)
        assert response.status_code == 200 and response.content == PNG
    assert len(requests_to(httpserver, "/a.png")) == 1
    exposition = requests.get(proxy.server.url + "metrics", timeout=15).text
    samples = {sample.name: sample.value
               for family in text_string_to_metric_families(exposition)
               for sample in family.samples}
    assert samples["aggregator_image_proxy_misses_total"] == 1
    assert samples["aggregator_image_proxy_hits_total"] == 4


def test_the_cache_survives_a_restart(httpserver: HTTPServer, tmp_path: Path) -> None:
    image = serve_png(httpserver)
    settings = ImageProxySettings(proxy=PROXY, fetch=LOCAL, cache_dir=tmp_path / "c",
                                  cache_bytes=1024 * 1024)
    for _ in range(2):
        metrics = Metrics()
        app = make_app(tmp_path, SITE, metrics=metrics, images=settings)
        with FeedServer(app) as server:
            path = imageproxy.signed_url(image, PROXY).removeprefix("http://127.0.0.1/")
            assert requests.get(server.url + path, timeout=15).content == PNG
    assert len(requests_to(httpserver, "/a.png")) == 1
    assert metrics.registry.get_sample_value("aggregator_image_proxy_hits_total") == 1


def test_the_cache_bound_evicts_the_least_recently_served(
    httpserver: HTTPServer, start_proxy: ProxyFactory
) -> None:
    images = {name: png(40, 40, (n * 60, 10, 10)) for n, name in enumerate("abc")}
    size = max(map(len, images.values()))
    bounded = start_proxy(cache_bytes=2 * size + 400)  # two entries and their headers
    url = {name: serve_png(httpserver, f"/{name}.png", body) for name, body in images.items()}
    for name in ("a", "b", "a", "c"):  # a is served again after b: b is the oldest
        assert bounded.get(url[name]).content == images[name]
    held = sum(entry.stat().st_size for entry in bounded.cache_dir.iterdir())
    assert held <= 2 * size + 400
    assert len(list(bounded.cache_dir.glob("*.img"))) == 2
    assert bounded.get(url["a"]).content == images["a"]
    assert bounded.get(url["b"]).content == images["b"]
    assert [len(requests_to(httpserver, f"/{n}.png")) for n in "abc"] == [1, 2, 1]


def test_an_image_larger_than_the_cache_is_served_not_kept(
    httpserver: HTTPServer, start_proxy: ProxyFactory
) -> None:
    tiny = start_proxy(cache_bytes=100)
    image = serve_png(httpserver)
    assert tiny.get(image).content == PNG
    assert tiny.get(image).content == PNG
    assert len(requests_to(httpserver, "/a.png")) == 2
    assert not tiny.cache_dir.exists() or not list(tiny.cache_dir.glob("*.img"))


def test_a_slow_origin_is_fetched_once_for_concurrent_requests(
    httpserver: HTTPServer, start_proxy: ProxyFactory
) -> None:
    release, arrived = threading.Event(), threading.Event()
    entered = threading.Semaphore(0)

    def slow(_request: Request) -> Response:
        arrived.set()
        release.wait(timeout=15)
        return Response(PNG, content_type="image/png")

    def counting(app: WSGIApplication) -> WSGIApplication:
        def wrapped(environ: WSGIEnvironment, start: StartResponse) -> Iterable[bytes]:
            if "/img/" in environ.get("PATH_INFO", ""):
                entered.release()
            return app(environ, start)
        return wrapped

    httpserver.expect_request("/slow.png").respond_with_handler(slow)
    concurrent = start_proxy(wrap=counting)
    url = concurrent.url(httpserver.url_for("/slow.png"))
    results: list[requests.Response] = []

    def get() -> None:
        results.append(requests.get(url, timeout=30))

    threads = [threading.Thread(target=get) for _ in range(3)]
    for thread in threads:
        thread.start()
    assert arrived.wait(timeout=15)  # the first request is at the origin
    for _ in threads:
        assert entered.acquire(timeout=15)  # every request is inside the app
    release.set()
    for thread in threads:
        thread.join(timeout=30)
    assert [r.content == PNG for r in results] == [True] * 3
    assert len(requests_to(httpserver, "/slow.png")) == 1
    assert concurrent.count("aggregator_image_proxy_misses_total") == 1
    assert concurrent.count("aggregator_image_proxy_hits_total") == 2


def test_without_the_builtin_proxy_img_is_a_static_path(tmp_path: Path,
                                                        httpserver: HTTPServer) -> None:
    url = imageproxy.signed_url(serve_png(httpserver), PROXY).removeprefix("http://127.0.0.1/")
    with FeedServer(make_app(tmp_path, SITE)) as server:
        assert requests.get(server.url + url, timeout=15).status_code == 404
    assert httpserver.log == []


@pytest.mark.parametrize("command", [["run", "--role", "web"], ["serve"]])
def test_run_and_serve_serve_signed_images_with_builtin(
    httpserver: HTTPServer, tmp_path: Path, command: list[str]
) -> None:
    """The wiring: ``aggregator run`` and ``aggregator serve`` hand the config's image
    settings to the app; the cache goes to ``image_cache_dir`` below the config's folder."""
    image = serve_png(httpserver)
    config = write_config_file(tmp_path / "aggregator.yaml", [
        "database_url: sqlite:///data/aggregator.db", "output_dir: public",
        f"site_url: {SITE}", "image_proxy: builtin", "allow_private_networks: true",
        "image_cache_dir: cache/images"], {"portal": httpserver.url_for("/feed.xml")})
    process = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "--config", str(config), *command, "--port", "0"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "AGGREGATOR_IMAGE_SECRET": "image-key"})
    try:
        log = LogWatcher(process)
        url = log.wait_for(r"listening on (http://127\.0\.0\.1:\d+)").group(1)
        path = imageproxy.signed_url(image, PROXY).removeprefix("http://127.0.0.1")
        for _ in range(2):
            response = requests.get(url + path, timeout=15)
            assert response.status_code == 200 and response.content == PNG
        assert len(requests_to(httpserver, "/a.png")) == 1
        assert len(list((tmp_path / "cache" / "images").glob("*.img"))) == 1
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
