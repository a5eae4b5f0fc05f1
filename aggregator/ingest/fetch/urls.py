"""URL spelling: what is requested, as ``requests`` spelled it, and a redirect's Location.

Why this module exists: the URL a fetch ends at is kept (``FetchResult.url``) and is the
base every relative link of the feed is resolved against, and it was spelled by
``requests``' ``PreparedRequest.prepare_url`` (IDNA hosts, non-ASCII and unsafe
characters requoted, already-present escapes kept) for years.  The fetch now speaks
urllib3 directly, so the same steps are taken here, with the same libraries (urllib3's
``parse_url``, ``idna``, ``urllib.parse``): the same URL in, the same spelling out
(tests/test_fetch_urls.py compares the two over tricky URLs).  ``target`` splits a
prepared URL into what the connection pool and the request line need, once per URL.

What must not happen: a spelling that differs from ``prepare_url``'s (stored URLs and
links would change), a DNS lookup (names are resolved once, when connecting), or an
exception other than ``ValueError`` (``InvalidURL``) for a URL that cannot be prepared.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlparse, urlsplit, urlunparse

import idna
from urllib3.exceptions import LocationParseError
from urllib3.util import make_headers, parse_url

__all__ = ["InvalidURL", "Target", "prepare_url", "redirect_location", "target"]

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


class InvalidURL(ValueError):
    """The URL cannot be prepared (the reasons read as ``requests``' did)."""


@functools.lru_cache(maxsize=4096)
def prepare_url(url: str) -> str:
    """``url`` as ``requests.PreparedRequest.prepare_url(url, None)`` spells it.

    A URL of another scheme (``mailto:``, ``file:``) is returned as it is, as requests
    did: the guard refuses it afterwards, with its own reason.
    """
    url = url.lstrip()
    if ":" in url and not url.lower().startswith("http"):
        return url
    try:
        scheme, auth, host, port, path, query, fragment = parse_url(url)
    except LocationParseError as exc:
        raise InvalidURL(*exc.args) from exc
    if not scheme:
        raise InvalidURL(f"Invalid URL {url!r}: No scheme supplied. "
                         f"Perhaps you meant https://{url}?")
    if not host:
        raise InvalidURL(f"Invalid URL {url!r}: No host supplied")
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True).decode("utf-8")
        except (idna.IDNAError, UnicodeError) as exc:
            raise InvalidURL("URL has an invalid label.") from exc
    elif host.startswith(("*", ".")):
        raise InvalidURL("URL has an invalid label.")
    netloc = f"{auth}@{host}" if auth else host
    if port:
        netloc += f":{port}"
    return _requote(urlunparse((scheme, netloc, path or "/", "", query, fragment)))


def _requote(uri: str) -> str:
    """Unquote only the unreserved characters, then quote only the illegal ones."""
    parts = uri.split("%")
    try:
        for index in range(1, len(parts)):
            code = parts[index][:2]
            if len(code) == 2 and code.isalnum():
                try:
                    char = chr(int(code, 16))
                except ValueError as exc:
                    raise InvalidURL(f"Invalid percent-escape sequence: '{code}'") from exc
                parts[index] = (char + parts[index][2:] if char in _UNRESERVED
                                else f"%{parts[index]}")
            else:
                parts[index] = f"%{parts[index]}"
    except InvalidURL:  # a stray '%': quote it too
        return quote(uri, safe="!#$&'()*+,/:;=?@[]~")
    return quote("".join(parts), safe="!#$%&'()*+,/:;=?@[]~")


@dataclass(frozen=True, slots=True)
class Target:
    """Where a prepared URL is requested: the pool's key parts and the request line.

    ``authorization`` is the Basic credentials of the URL's userinfo (``user:pass@``),
    sent as requests sent them (only when both parts are present), or None.
    """

    scheme: str
    host: str
    port: int | None
    path: str  # path and query, as sent on the request line (never the fragment)
    authorization: str | None


@functools.lru_cache(maxsize=4096)
def target(prepared: str) -> Target:
    """The ``Target`` of a URL ``prepare_url`` returned (raises ``ValueError``)."""
    parsed = urlparse(prepared)
    split = urlsplit(prepared)
    path = split.path or "/"
    if split.query:
        path = f"{path}?{split.query}"
    authorization = None
    if parsed.username is not None and parsed.password is not None:
        user, password = unquote(parsed.username), unquote(parsed.password)
        if user or password:  # latin-1, as requests' HTTPBasicAuth (UnicodeEncodeError)
            credentials = f"{user}:{password}"
            credentials.encode("latin-1")
            authorization = make_headers(basic_auth=credentials)["authorization"]
    return Target(scheme=parsed.scheme.lower(), host=parsed.hostname or "", port=parsed.port,
                  path=path, authorization=authorization)


def redirect_location(header: str) -> str:
    """A Location header's text as ``requests`` read it: latin-1 re-decoded as UTF-8.

    ``http.client`` decodes header bytes as latin-1, but servers send UTF-8 far more often;
    requests re-encoded and decoded them (``Session.get_redirect_target``).  Bytes that
    are not UTF-8 raise ``InvalidURL`` (with requests, the fetch failed on them too).
    """
    raw = header.encode("latin-1")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidURL(f"the Location is not UTF-8: {exc}") from exc
