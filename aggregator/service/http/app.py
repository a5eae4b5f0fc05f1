"""The WSGI app: routing between the published files, ``/healthz`` and ``/metrics``.

Layout: the files of ``output_dir`` live at the *path* of ``site_url`` (site
``http://x/feeds/`` -> ``/feeds/categories/…/rss.xml``, and ``/feeds`` redirects
to ``/feeds/``); anything outside that prefix is 404.  ``/healthz`` and
``/metrics`` are always at the server root.  ``/healthz`` answers 200 while the
status is ``ok`` or ``degraded`` (the site still serves, some sources fail) and
503 only when it is ``down`` (every enabled source is failing) or the health
callable itself failed, so a load balancer takes the instance out only when it
has nothing fresh to serve.

Only GET and HEAD (others: 405); request paths are decoded as UTF-8 (otherwise
404).  The files themselves are ``static.StaticFiles``' business.  With the builtin
image proxy (``images``), ``<site path>img/…`` goes to ``images.ImageEndpoint``
before the files; without it, ``img/`` is just a path of the static tree.

What this module must NOT do: build health itself (it calls the ``health``
callable it is given and renders the mapping), read files other than through
``StaticFiles``, or write anything.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from aggregator.imageproxy import PATH_SEGMENT as IMAGE_PATH_SEGMENT
from aggregator.service.health import iso_utc
from aggregator.service.http.images import ImageEndpoint, ImageProxySettings
from aggregator.service.http.static import StaticFiles
from aggregator.service.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from aggregator.service.metrics import Metrics

__all__ = ["HEALTH_PATH", "METRICS_PATH", "make_app"]

log = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"

_TEXT = "text/plain; charset=utf-8"
_ALLOW = "GET, HEAD"

_Headers = list[tuple[str, str]]


def make_app(
    output_dir: Path,
    site_url: str,
    *,
    health: Callable[[], Mapping[str, object]] | None = None,
    metrics: Metrics | None = None,
    images: ImageProxySettings | None = None,
) -> WSGIApplication:
    """The WSGI app serving ``output_dir`` at ``site_url``'s path, plus /healthz and /metrics.

    ``health`` is called on every ``/healthz`` request and should return
    ``health_report(...)`` (any JSON-able mapping with a ``status`` works);
    without it ``/healthz`` answers ``{"status": "ok"}``.  Without ``metrics``,
    ``/metrics`` is 404.  ``images`` (``images.image_settings``) turns the builtin
    image proxy on at ``<site path>img/``; its counters go to ``metrics``.
    """
    endpoint = ImageEndpoint(images, metrics) if images is not None else None
    return _App(Path(output_dir), site_url, health, metrics, endpoint)


def _simple(
    start_response: StartResponse,
    status: str,
    body: bytes,
    content_type: str = _TEXT,
    extra: _Headers | None = None,
    head: bool = False,
) -> Iterable[bytes]:
    headers: _Headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
        ("X-Content-Type-Options", "nosniff"),
        *(extra or []),
    ]
    start_response(status, headers)
    return [] if head else [body]


def _not_found(start_response: StartResponse, head: bool) -> Iterable[bytes]:
    return _simple(start_response, "404 Not Found", b"not found\n", head=head)


class _App:
    """The WSGI callable ``make_app`` returns."""

    def __init__(
        self,
        output_dir: Path,
        site_url: str,
        health: Callable[[], Mapping[str, object]] | None,
        metrics: Metrics | None,
        images: ImageEndpoint | None = None,
    ) -> None:
        prefix = unquote(urlsplit(site_url.strip()).path or "/")
        if not prefix.startswith("/"):
            prefix = "/" + prefix
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.files = StaticFiles(output_dir)
        self.health = health
        self.metrics = metrics
        self.images = images
        self.images_prefix = self.prefix + IMAGE_PATH_SEGMENT

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        head = method == "HEAD"
        if method not in ("GET", "HEAD"):
            return _simple(
                start_response, "405 Method Not Allowed", b"method not allowed\n",
                extra=[("Allow", _ALLOW)],
            )
        raw = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        try:
            # PEP 3333: the server un-percent-encoded the path and decoded it as latin-1.
            path = raw.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return _not_found(start_response, head)
        if not path.startswith("/"):
            path = "/" + path
        if path == HEALTH_PATH:
            return self._health(start_response, head)
        if path == METRICS_PATH:
            return self._metrics(start_response, head)
        if self.prefix != "/" and path == self.prefix[:-1]:
            # Relative links in index.html only work below the trailing slash.
            location = quote(self.prefix)
            query = environ.get("QUERY_STRING")
            if query:
                location += "?" + query
            return _simple(
                start_response, "301 Moved Permanently", b"moved\n",
                extra=[("Location", location)], head=head,
            )
        if not path.startswith(self.prefix):
            return _not_found(start_response, head)
        if self.images is not None and path.startswith(self.images_prefix):
            return self.images(environ, start_response, path[len(self.images_prefix):], head)
        try:
            served = self.files.serve(environ, start_response, path[len(self.prefix):], head)
        except OSError as exc:
            log.warning("cannot serve %r: %s", path, exc)
            return _not_found(start_response, head)
        return _not_found(start_response, head) if served is None else served

    def _health(self, start_response: StartResponse, head: bool) -> Iterable[bytes]:
        report: Mapping[str, object]
        if self.health is None:
            report = {"status": "ok"}
        else:
            try:
                report = self.health()
            except Exception as exc:
                log.exception("health check failed")
                report = {"status": "down", "error": f"{type(exc).__name__}: {exc}"}
        status = report.get("status")
        code = "200 OK" if status in ("ok", "degraded") else "503 Service Unavailable"
        body = json.dumps(report, ensure_ascii=False, default=_json_default, indent=2)
        return _simple(
            start_response, code, body.encode("utf-8") + b"\n", "application/json", head=head
        )

    def _metrics(self, start_response: StartResponse, head: bool) -> Iterable[bytes]:
        if self.metrics is None:
            return _not_found(start_response, head)
        return _simple(
            start_response, "200 OK", self.metrics.exposition(), METRICS_CONTENT_TYPE, head=head
        )


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)
