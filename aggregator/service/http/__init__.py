"""The HTTP side: serve the published files, ``/healthz`` and ``/metrics``.

Why: feed readers and people fetch the generated feeds, ``feeds.opml`` and
``index.html`` from ``output_dir``, often; every file gets a strong ETag,
``Last-Modified``, conditional 304 answers and gzip.  The WSGI app is served by
waitress in a background thread for ``aggregator run`` and the tests
(``FeedServer``), or in the foreground for ``aggregator serve``
(``serve_forever``).

What it owns, by module:

- ``app``: ``make_app`` — routing (site path prefix, ``/healthz``, ``/metrics``),
  GET/HEAD only, the JSON health and the metrics responses.
- ``static``: the files of ``output_dir`` — path safety, content types,
  validators, gzip and the in-memory cache of file versions.
- ``server``: ``FeedServer`` and ``serve_forever`` around waitress; both wrap
  the app in ``access.AccessLog``.
- ``images`` and ``imagecache``: the builtin image proxy (``image_proxy: builtin``)
  at ``<site path>img/…`` — signed URLs only, fetched through the sources' fetch
  guard, kept in a bounded disk cache.
- ``access``: the access log's measurements (status, bytes, duration) handed to
  the ``aggregator.access`` logger when it is on (``service.logs`` formats them).

The HTTP rules it shares with the demo portal (conditional requests,
``Accept-Encoding``) live in ``aggregator.httpsemantics``; the health summary
itself in ``aggregator.service.health``.

What this package must NOT do: poll sources, write, delete or generate files in
``output_dir``, touch the store or the network beyond answering requests and
fetching the signed images the image proxy is asked for (the store is reached
only through the ``health`` callback it is given), or decide a source's health.
"""

from __future__ import annotations

from aggregator.service.http.app import make_app
from aggregator.service.http.server import FeedServer, serve_forever
from aggregator.service.http.static import CACHE_CONTROL, content_type_for

__all__ = [
    "CACHE_CONTROL",
    "FeedServer",
    "content_type_for",
    "make_app",
    "serve_forever",
]
