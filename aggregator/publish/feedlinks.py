"""Feed-level links feedgen cannot write itself, as a feedgen extension.

Why: feedgen writes any registered ``rel`` as an Atom ``<link>``, but in RSS it emits
only the first ``rel="self"`` link; WebSub (``rel="hub"``) and RFC 5005 archives
(``rel="prev-archive"``) need ``<atom:link>`` elements in the RSS channel too, and an
archive page needs RFC 5005's ``<fh:archive/>`` marker.  ``FeedLinks`` adds them while
feedgen builds the document (its extension hook), so nothing post-processes bytes.

Load it with ``fg.register_extension(NAMESPACE, FeedLinks, None)`` and fill
``fg.links``.  This module must NOT render anything else, decide which links a feed has
(``feeds`` and ``archives`` do) or import anything but feedgen's extension base; it is
the second home of feedgen (tests/test_architecture.py HOMES).
"""

from __future__ import annotations

from typing import Any

from feedgen.ext.base import BaseExtension

__all__ = ["ATOM_NS", "HISTORY_NS", "NAMESPACE", "FeedLinks"]

NAMESPACE = "links"  # the attribute feedgen gives the loaded extension: ``fg.links``
ATOM_NS = "http://www.w3.org/2005/Atom"
HISTORY_NS = "http://purl.org/syndication/history/1.0"  # RFC 5005 "fh"


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
