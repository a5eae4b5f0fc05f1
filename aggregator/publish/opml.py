"""The OPML 2.0 index of every generated feed (``feeds.opml``).

Why: feed readers import one file to subscribe to every category (newsboat, rss2email).
Its bytes depend only on the categories and the site, never on the time.  This module
must NOT write files or decide which categories exist.
"""

from __future__ import annotations

from collections.abc import Sequence

from lxml import etree

from aggregator.publish.paths import category_paths, public_url, site_name, site_root
from aggregator.records import FeedOptions
from aggregator.rules import strip_xml_illegal

__all__ = ["render_opml"]


def render_opml(categories: Sequence[str], options: FeedOptions) -> bytes:
    """OPML 2.0 listing every category's RSS and Atom feed, in the order given.

    Two grouping outlines, ``RSS 2.0`` and ``Atom 1.0``; no dates, so the same
    categories always give the same bytes.  Duplicate names are listed once.
    """
    site = strip_xml_illegal(site_root(options))
    unique = list(dict.fromkeys(categories))
    root = etree.Element("opml", {"version": "2.0"})
    head = etree.SubElement(root, "head")
    etree.SubElement(head, "title").text = f"{site_name(options)} feeds"
    body = etree.SubElement(root, "body")
    for label, fmt in (("RSS 2.0", "rss"), ("Atom 1.0", "atom")):
        group = etree.SubElement(body, "outline", {"text": label, "title": label})
        for category in unique:
            paths = category_paths(category)
            text = strip_xml_illegal(category)
            etree.SubElement(
                group,
                "outline",
                {
                    "text": text,
                    "title": text,
                    "type": "rss",
                    "xmlUrl": strip_xml_illegal(
                        public_url(options, paths.rss if fmt == "rss" else paths.atom)
                    ),
                    "htmlUrl": site,
                },
            )
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))
