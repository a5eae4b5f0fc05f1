"""Feed-level links feedgen cannot write itself, as a feedgen extension.

Why: feedgen writes any registered ``rel`` as an Atom ``<link>``, but in RSS it emits
only the first ``rel="self"`` link; WebSub (``rel="hub"``) and RFC 5005 archives
(``rel="prev-archive"``) need ``<atom:link>`` elements in the RSS channel too, and an
archive page needs RFC 5005's ``<fh:archive/>`` marker.  ``FeedLinks`` adds them while
feedgen builds the document (its extension hook), so nothing post-processes bytes.

Load it with ``fg.register_extension(NAMESPACE, FeedLinks, None)`` and fill
``fg.links``; ``place_links`` says which links a document has, from where it sits
(``Place``: the current feed, or an archive page).  This module must NOT render anything
else or decide which articles a document holds (``feeds`` and ``archives`` do); from
feedgen it imports only the extension base — it is feedgen's second home
(tests/test_architecture.py HOMES).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from feedgen.ext.base import BaseExtension

from aggregator.publish.paths import public_url
from aggregator.records import FeedOptions
from aggregator.rules import strip_xml_illegal

__all__ = ["ATOM_NS", "CURRENT", "HISTORY_NS", "NAMESPACE", "FeedLinks", "Place", "place_links",
           "url_of"]

NAMESPACE = "links"  # the attribute feedgen gives the loaded extension: ``fg.links``
ATOM_NS = "http://www.w3.org/2005/Atom"
HISTORY_NS = "http://purl.org/syndication/history/1.0"  # RFC 5005 "fh"
_ATOM_TYPE = "application/atom+xml"


@dataclass(frozen=True)
class Place:
    """Where a document sits among a category's RFC 5005 documents (paths relative to
    ``output_dir``): the current feed (``page`` None) or archive page ``page``."""

    prev_archive: str | None = None  # the newest archive page / the page before this one
    page: int | None = None
    page_path: str = ""


CURRENT = Place()  # a category's current feed without archive pages


def url_of(options: FeedOptions, relative: str) -> str:
    return strip_xml_illegal(public_url(options, relative))


def place_links(options: FeedOptions, current: str, place: Place
                ) -> list[tuple[str, str, str | None]]:
    """(rel, href, type) of the links besides self and alternate: an archive page's
    ``current`` (``current``: the category's Atom feed), a current feed's WebSub ``hub``
    (an archive page never changes: no hub), and ``prev-archive`` where there is one."""
    links: list[tuple[str, str, str | None]] = []
    if place.page is not None:
        links.append(("current", url_of(options, current), _ATOM_TYPE))
    elif options.hub_url:
        links.append(("hub", strip_xml_illegal(options.hub_url.strip()), None))
    if place.prev_archive:
        links.append(("prev-archive", url_of(options, place.prev_archive), _ATOM_TYPE))
    return links


class FeedLinks(BaseExtension):  # type: ignore[misc]  # feedgen has no type hints
    """Extra ``<atom:link rel=… href=…>`` of an RSS channel and the ``<fh:archive/>``
    marker of an Atom archive document (Atom links go through ``FeedGenerator.link``)."""

    def __init__(self) -> None:
        self.rss_links: list[tuple[str, str, str | None]] = []
        self.archive = False

    def rss_link(self, rel: str, href: str, kind: str | None = None) -> None:
        """One more ``<atom:link>`` of the RSS channel (``kind``: its ``type``)."""
        self.rss_links.append((rel, href, kind))

    def mark_archive(self) -> None:
        """Make the Atom document an RFC 5005 archive page (``<fh:archive/>``)."""
        self.archive = True

    def extend_ns(self) -> dict[str, str]:
        return {"fh": HISTORY_NS} if self.archive else {}

    def extend_rss(self, feed: Any) -> Any:
        channel = feed.find("channel")
        # After feedgen's own atom:link (self), before the items feedgen appends later.
        anchor = channel.find(f"{{{ATOM_NS}}}link")
        at = list(channel).index(anchor) + 1 if anchor is not None else len(channel)
        for offset, (rel, href, kind) in enumerate(self.rss_links):
            attributes = {"href": href, "rel": rel, **({"type": kind} if kind else {})}
            channel.insert(at + offset, channel.makeelement(f"{{{ATOM_NS}}}link", attributes))
        return feed

    def extend_atom(self, feed: Any) -> Any:
        if self.archive:
            feed.append(feed.makeelement(f"{{{HISTORY_NS}}}archive", {}))
        return feed
