"""Feed autodiscovery: the URL an operator gives → the feed to subscribe to.

Why: people copy a portal's home page, not its feed.  ``find_feed`` fetches the URL
through the injected fetch (so the SSRF guard, deadline and size limits hold), takes it
as the feed if it parses, and otherwise reads the page's ``<link rel="alternate">``
elements of an RSS, Atom or JSON Feed type, trying each in document order until one
parses with the project's ``parse`` (in a parse worker, under the parse budget, when
given a pool).  A page is decoded with the feeds' encoding rules
(HTTP charset, ``<meta charset>``, GBK for gb2312...).

This module must NOT write the config, touch the store or follow anything but the
page's declared alternates (no guessing of ``/feed`` or ``/rss.xml`` URLs); lxml reads
the page with the network off.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from urllib.parse import urljoin

from lxml import etree, html

from aggregator.errors import FetchError, ParseError
from aggregator.ingest.parse import (
    charset_from_content_type,
    declared_html_encoding,
    decode_feed_bytes,
    parse,
)
from aggregator.ingest.sandbox import SandboxError, WorkerPool
from aggregator.records import FetchOptions, FetchResult, Source, Validators
from aggregator.rules import web_url

__all__ = ["FEED_TYPES", "FeedLink", "FoundFeed", "feed_links", "find_feed", "looks_like_html"]

# The media types of feeds a page may link as alternates (JSON Feed's own and plain JSON).
FEED_TYPES = ("application/rss+xml", "application/atom+xml", "application/feed+json",
              "application/json")
PROBE_ID = "new-source"  # the source id errors name while the source has none yet

Fetch = Callable[[Source, FetchOptions, Validators], FetchResult]


@dataclass(frozen=True, slots=True)
class FeedLink:
    """One ``<link rel="alternate">`` of a feed type, its href made absolute."""

    url: str
    type: str
    title: str | None = None


@dataclass(frozen=True, slots=True)
class FoundFeed:
    """A feed that parsed: its URL, its title, and the page it was found on (None: the
    URL given was the feed itself)."""

    url: str
    title: str | None
    link: str | None  # the feed's own site link, when it names one
    page: str | None
    entries: int


def looks_like_html(content: bytes) -> bool:
    """Whether a body is an HTML page rather than a feed (sniffed, not trusted from the
    Content-Type: portals serve feeds as text/html and pages as text/xml)."""
    head = content[:2048].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith(b"<!doctype html") or b"<html" in head


def feed_links(fetched: FetchResult) -> list[FeedLink]:
    """The page's feed alternates in document order, hrefs resolved against the page's
    ``<base href>`` or its (final) URL; links that are not web URLs are dropped."""
    decoded = decode_feed_bytes(
        fetched.content,
        http_charset=charset_from_content_type(fetched.headers.get("content-type", "")),
        declared=declared_html_encoding(fetched.content),
    )
    parser = html.HTMLParser(no_network=True, remove_comments=True, remove_pis=True)
    try:
        root = html.document_fromstring(decoded.text, parser=parser)
    except (etree.ParserError, ValueError):
        return []
    base = fetched.url
    for element in root.iter("base"):
        href = (element.get("href") or "").strip()
        if href:
            base = urljoin(fetched.url, href)
            break
    found: list[FeedLink] = []
    seen: set[str] = set()
    for element in root.iter("link"):
        rel = (element.get("rel") or "").lower().split()
        kind = (element.get("type") or "").split(";", 1)[0].strip().lower()
        href = (element.get("href") or "").strip()
        if "alternate" not in rel or kind not in FEED_TYPES or not href:
            continue
        url = web_url(urljoin(base, href))
        if url is None or url in seen:
            continue
        seen.add(url)
        title = (element.get("title") or "").strip() or None
        found.append(FeedLink(url=url, type=kind, title=title))
    return found


def find_feed(url: str, fetch: Fetch, options: FetchOptions,
              pool: WorkerPool | None = None) -> FoundFeed:
    """Fetch ``url``; the feed it is, or the first feed its page links that parses
    (parsed in ``pool``'s workers, within its budget; without a pool, in this process).

    Raises ``FetchError`` when the URL cannot be fetched, ``ParseError`` when it is
    neither a feed nor a page linking a readable one (the message says which links
    were tried and why each failed).
    """
    probe = Source(id=PROBE_ID, name=PROBE_ID, url=url, categories=("-",))
    fetched = fetch(probe, options, Validators())
    if not looks_like_html(fetched.content):
        return _found(url, fetched, probe, pool, page=None)
    links = feed_links(fetched)
    if not links:
        raise ParseError(
            "not a feed, and the page links none (no <link rel=\"alternate\"> of type "
            + ", ".join(FEED_TYPES) + ")", source_id=PROBE_ID)
    failures = []
    for link in links:
        candidate = replace(probe, url=link.url)
        try:
            return _found(link.url, fetch(candidate, options, Validators()), candidate,
                          pool, page=fetched.url, title=link.title)
        except (FetchError, ParseError) as exc:
            failures.append(f"{link.url}: {exc.reason}")
    raise ParseError("the page links no feed that can be read: " + "; ".join(failures),
                     source_id=PROBE_ID)


def _found(url: str, fetched: FetchResult, source: Source, pool: WorkerPool | None, *,
           page: str | None, title: str | None = None) -> FoundFeed:
    try:
        parsed = parse(fetched, source) if pool is None else pool.call(parse, fetched, source)
    except SandboxError as exc:
        raise ParseError(f"parse failed: {exc.reason}", source_id=source.id) from exc
    return FoundFeed(url=url, title=parsed.title or title, link=parsed.link, page=page,
                     entries=len(parsed.entries))
