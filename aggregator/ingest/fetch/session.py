"""``HttpSession``: the connection pools (and the cookie jar) a fetch reuses.

Why this module exists: a session is what a polling thread keeps between fetches —
idle keep-alive connections per host and the cookies portals set — and nothing else
(every setting comes from each fetch's ``FetchOptions``).  It is a urllib3
``PoolManager`` whose pools make only guarded, watched connections
(``connection.WatchedHTTPPool``), which trusts certifi's CA bundle (as requests did) and
keeps a stdlib ``http.cookiejar.CookieJar`` as ``cookies``; the two small adapters the
jar needs (a ``urllib.request.Request`` for the request, an ``info().get_all()`` view of
the reply headers) are here too.

What must not happen: a connection made by anything but the watched pools, a proxy or
any setting read from the environment (urllib3 reads none: no ``*_PROXY``, no
``.netrc``, no ``SSL_CERT_FILE``), a cookie jar walked for a request when it is empty or
for a reply that sets no cookie (both on every 304), or — used directly, outside
``fetch`` — a request without an SSRF policy (the session's own is installed).
"""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping
from http.cookiejar import CookieJar
from typing import Any

import certifi
from urllib3 import BaseHTTPResponse, PoolManager, Retry
from urllib3._collections import HTTPHeaderDict

from aggregator.ingest.fetch.connection import (
    CURRENT_POLICY,
    Policy,
    WatchedHTTPPool,
    WatchedHTTPSPool,
)

__all__ = ["POOLED_HOSTS", "HttpSession", "cookie_header", "extract_cookies"]

# How many hosts' idle keep-alive connections a session (one per poll thread) keeps;
# portals with many feeds on one host reuse theirs.
POOLED_HOSTS = 32
_PER_HOST = 10  # idle connections kept per host (requests' default pool size)
_DIRECT_REDIRECTS = 30  # used directly: requests' default redirect limit


class HttpSession(PoolManager):
    """A urllib3 ``PoolManager`` of watched pools, with a ``CookieJar`` as ``cookies``.

    ``fetch`` takes pools from it (``connection_from_host``) and applies its own options
    and policy to each request.  Used directly (``session.request("GET", url)``), it
    sends its default ``headers``, follows up to ``max_redirects`` redirects (urllib3's
    own, each new connection still guarded) and applies the SSRF policy it was built
    with.  ``ca_certs`` replaces certifi's bundle (tests: a private CA).  ``close()``
    drops every pooled connection; it is also a context manager.
    """

    def __init__(self, *, allow_private_networks: bool = False,
                 headers: Mapping[str, str] | None = None,
                 max_redirects: int = _DIRECT_REDIRECTS, ca_certs: str | None = None) -> None:
        super().__init__(num_pools=POOLED_HOSTS, headers=headers, maxsize=_PER_HOST,
                         cert_reqs="CERT_REQUIRED", ca_certs=ca_certs or certifi.where())
        self.pool_classes_by_scheme = {"http": WatchedHTTPPool, "https": WatchedHTTPSPool}
        self.cookies = CookieJar()
        self._policy = Policy(source_id=None, allow_private=allow_private_networks)
        self._retries = Retry(total=None, connect=0, read=0, status=0, other=0,
                              redirect=max_redirects)

    def urlopen(self, method: str, url: str, redirect: bool = True,
                **kw: Any) -> BaseHTTPResponse:
        """Direct use: urllib3's ``urlopen`` under this session's policy (unless a fetch's
        is already running), no retries, at most ``max_redirects`` redirects."""
        kw.setdefault("retries", self._retries)
        if CURRENT_POLICY.get() is not None:
            return super().urlopen(method, url, redirect, **kw)
        token = CURRENT_POLICY.set(self._policy)
        try:
            return super().urlopen(method, url, redirect, **kw)
        finally:
            CURRENT_POLICY.reset(token)

    def close(self) -> None:
        self.clear()


def cookie_header(jar: CookieJar, url: str) -> str | None:
    """The ``Cookie`` header ``jar`` sends to ``url``, or None (an empty jar is not walked)."""
    if not len(jar):
        return None
    request = urllib.request.Request(url)
    jar.add_cookie_header(request)
    return request.get_header("Cookie")


def extract_cookies(jar: CookieJar, url: str, headers: HTTPHeaderDict) -> None:
    """Store the cookies a reply to ``url`` sets (the caller checked it has Set-Cookie)."""
    jar.extract_cookies(_Reply(headers), urllib.request.Request(url))  # type: ignore[arg-type]


class _Reply:
    """The reply as ``CookieJar.extract_cookies`` reads it: ``info().get_all(name)``."""

    def __init__(self, headers: HTTPHeaderDict) -> None:
        self._headers = headers

    def info(self) -> _Reply:
        return self

    def get_all(self, name: str, default: list[str] | None = None) -> list[str] | None:
        return self._headers.getlist(name) or default
