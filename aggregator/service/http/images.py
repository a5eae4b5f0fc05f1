"""The builtin image proxy's endpoint: ``<site path>img/<signature>/<encoded URL>``.

Why: with ``image_proxy: builtin`` the published feeds point their images here instead
of at a public CORS proxy; readers then fetch images from us, with no Referer reaching
the portal and no third party in between.  Because this endpoint fetches URLs for
anyone who asks, every rule below is about not becoming an open proxy or an SSRF hole:

- the signature is checked first, in constant time (``imageproxy.verify``), before any
  file or network access: 403 otherwise (``/img/`` paths of another shape are 404);
- the origin is fetched through the sources' fetch guard (``fetch_image``: deadline,
  size limit, redirects re-checked, private addresses refused unless
  ``allow_private_networks`` — 403), with no cookies and no Referer;
- only raster ``image/*`` types pass; SVG (it can carry scripts), HTML and anything
  else are refused with 502 Bad Gateway — the origin answered something a gateway for
  images must not relay (415 would blame the reader's request, which was fine); an
  origin that fails otherwise is 502 too;
- every image answer carries ``Content-Security-Policy: default-src 'none'; sandbox``
  and ``nosniff``, and a long ``Cache-Control`` (a signed URL never changes);
- what was fetched is kept in ``ImageCache`` (bounded); repeated requests are served
  from it without touching the network, and ``If-None-Match``/``If-Modified-Since``
  are answered with 304 (``httpsemantics``); one URL is never fetched twice at once
  (a per-URL lock: waitress runs requests in several threads), and a URL whose fetch
  was refused is answered the same way for ``FAILURE_TTL`` seconds without fetching
  again (readers of one article ask for its broken image together).

Hits, misses and refusals (by reason) are counted in ``Metrics``.

What this module must NOT do: serve without a valid signature, fetch other than through
``fetch_image``, relay an origin's headers (only the content type and validators), or
write anywhere but the cache folder.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from enum import StrEnum
from pathlib import Path
from wsgiref.types import StartResponse, WSGIEnvironment

from aggregator import imageproxy
from aggregator.config import Settings
from aggregator.errors import FetchError
from aggregator.httpsemantics import is_not_modified
from aggregator.ingest.fetch import ImageResponse, fetch_image
from aggregator.ingest.fetch.image import AddressRefused
from aggregator.records import BuiltinImageProxy, FetchOptions
from aggregator.service.http.imagecache import CachedImage, ImageCache
from aggregator.service.metrics import Metrics

__all__ = ["CACHE_CONTROL", "CONTENT_SECURITY_POLICY", "ImageEndpoint", "ImageProxySettings",
           "Refusal", "image_settings"]

log = logging.getLogger(__name__)

CACHE_CONTROL = "public, max-age=31536000, immutable"
CONTENT_SECURITY_POLICY = "default-src 'none'; sandbox"
FAILURE_TTL = 60.0  # seconds a refused fetch is remembered
_MAX_FAILURES = 4096  # remembered refusals, at most (then forgotten all at once)
_REFUSED_TYPES = frozenset({"image/svg+xml", "image/svg"})

ImageFetch = Callable[[str, FetchOptions], ImageResponse]


class Refusal(StrEnum):
    """Why an image request was refused (the ``reason`` label of the metric)."""

    SIGNATURE = "signature"  # 403: not a URL we signed
    BLOCKED = "blocked"  # 403: the guard refused the address
    TYPE = "type"  # 502: not a raster image
    UPSTREAM = "upstream"  # 502: the origin failed, was too slow or too large


_STATUS = {Refusal.SIGNATURE: "403 Forbidden", Refusal.BLOCKED: "403 Forbidden",
           Refusal.TYPE: "502 Bad Gateway", Refusal.UPSTREAM: "502 Bad Gateway"}


@dataclass(frozen=True, slots=True)
class ImageProxySettings:
    """What the endpoint needs: the key, how to fetch, where and how much to cache."""

    proxy: BuiltinImageProxy
    fetch: FetchOptions
    cache_dir: Path
    cache_bytes: int


def image_settings(settings: Settings) -> ImageProxySettings | None:
    """The endpoint's settings with ``image_proxy: builtin``, else None (no endpoint)."""
    proxy = settings.builtin_image_proxy()
    if proxy is None:
        return None
    return ImageProxySettings(proxy=proxy, fetch=settings.fetch_options(),
                              cache_dir=settings.image_cache_dir,
                              cache_bytes=settings.image_cache_bytes)


class ImageEndpoint:
    """The WSGI handler of ``img/…`` paths (called by the app with the rest of the path)."""

    def __init__(self, settings: ImageProxySettings, metrics: Metrics | None = None,
                 fetch: ImageFetch = fetch_image) -> None:
        self.settings = settings
        self.metrics = metrics
        self.cache = ImageCache(settings.cache_dir, settings.cache_bytes)
        self._fetch = fetch
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}
        self._failures: dict[str, tuple[Refusal, float]] = {}  # key -> (why, until)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse, rest: str,
                 head: bool) -> Iterable[bytes]:
        signature, slash, encoded = rest.partition("/")
        if not slash or not signature or not encoded or "/" in encoded:
            return _plain(start_response, "404 Not Found", b"not found\n", head)
        url = imageproxy.verify(signature, encoded, self.settings.proxy.secret)
        if url is None:
            return self._refuse(start_response, Refusal.SIGNATURE, head)
        key = hashlib.sha256(url.encode("utf-8")).hexdigest()
        image = self.cache.get(key)
        if image is None:
            with self._key_lock(key):
                image = self.cache.get(key)  # filled while this request waited
                if image is None:
                    outcome = self._recent_failure(key) or self._fill(key, url)
                    if isinstance(outcome, Refusal):
                        return self._refuse(start_response, outcome, head)
                    image = outcome
                    self._count_miss()
                else:
                    self._count_hit()
        else:
            self._count_hit()
        return _answer(environ, start_response, image, head)

    def _recent_failure(self, key: str) -> Refusal | None:
        with self._guard:
            failure = self._failures.get(key)
        if failure is None or failure[1] <= time.monotonic():
            return None
        return failure[0]

    def _fill(self, key: str, url: str) -> CachedImage | Refusal:
        outcome = self._fetch_image(key, url)
        if isinstance(outcome, Refusal):
            with self._guard:
                if len(self._failures) >= _MAX_FAILURES:
                    self._failures.clear()
                self._failures[key] = (outcome, time.monotonic() + FAILURE_TTL)
        return outcome

    def _fetch_image(self, key: str, url: str) -> CachedImage | Refusal:
        try:
            response = self._fetch(url, self.settings.fetch)
        except AddressRefused as exc:
            log.info("image proxy refused %s: %s", url, exc.reason)
            return Refusal.BLOCKED
        except FetchError as exc:
            log.info("image proxy could not fetch %s: %s", url, exc.reason)
            return Refusal.UPSTREAM
        media = response.content_type.split(";", 1)[0].strip().lower()
        if not media.startswith("image/") or media in _REFUSED_TYPES or "svg" in media:
            log.info("image proxy refused %s: content type %r", url, response.content_type)
            return Refusal.TYPE
        etag = response.etag or f'"{hashlib.sha256(response.body).hexdigest()[:32]}"'
        image = CachedImage(content_type=media, etag=etag,
                            last_modified=response.last_modified, body=response.body)
        try:
            self.cache.put(key, image)
        except OSError as exc:  # a full disk costs the cache, not the answer
            log.warning("image cache %s: cannot write: %s", self.cache.folder, exc)
        return image

    @contextmanager
    def _key_lock(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key) or (threading.Lock(), 0)
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)

    def _refuse(self, start_response: StartResponse, reason: Refusal,
                head: bool) -> Iterable[bytes]:
        if self.metrics is not None:
            self.metrics.image_refusals.labels(reason.value).inc()
        status = _STATUS[reason]
        return _plain(start_response, status, f"{status[4:].lower()}: {reason}\n".encode(), head)

    def _count_hit(self) -> None:
        if self.metrics is not None:
            self.metrics.image_hits.inc()

    def _count_miss(self) -> None:
        if self.metrics is not None:
            self.metrics.image_misses.inc()


def _answer(environ: WSGIEnvironment, start_response: StartResponse, image: CachedImage,
            head: bool) -> Iterable[bytes]:
    headers = [("Cache-Control", CACHE_CONTROL), ("ETag", image.etag),
               ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
               ("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer")]
    if image.last_modified:
        headers.append(("Last-Modified", image.last_modified))
    if is_not_modified(environ.get("HTTP_IF_NONE_MATCH"), environ.get("HTTP_IF_MODIFIED_SINCE"),
                       image.etag, _timestamp(image.last_modified)):
        start_response("304 Not Modified", headers)
        return []
    headers += [("Content-Type", image.content_type), ("Content-Length", str(len(image.body)))]
    start_response("200 OK", headers)
    return [] if head else [image.body]


def _plain(start_response: StartResponse, status: str, body: bytes,
           head: bool) -> Iterable[bytes]:
    start_response(status, [
        ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
        ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ])
    return [] if head else [body]


def _timestamp(http_date: str | None) -> float | None:
    if not http_date:
        return None
    try:
        when = parsedate_to_datetime(http_date)
    except (TypeError, ValueError, IndexError):
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
