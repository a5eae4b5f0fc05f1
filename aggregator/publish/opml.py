"""The OPML 2.0 index of every generated feed (``feeds.opml``).

Why: feed readers import one file to subscribe to every category (newsboat, rss2email).
Its bytes depend only on the categories and the site, never on the time.  This module
must NOT write files or decide which categories exist.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from lxml import etree

from aggregator.publish.paths import category_paths, public_url, site_name, site_root
from aggregator.records import FeedOptions
from aggregator.rules import strip_xml_illegal

__all__ = ["outline_titles", "render_opml"]

# What rss2email (``r2e opmlimport``) replaces with "-" when it names a feed by its title.
_READER_NAME = re.compile(r"[^\w.-]+")


def outline_titles(categories: Sequence[str]) -> dict[tuple[str, str], str]:
    """(category, "rss" | "atom") -> the outline's title, e.g. ``科技 (RSS)``, ``科技 (Atom)``.

    Every title is distinct, also once a reader has turned it into a name: rss2email
    names a feed by its title with each run of characters other than letters, digits,
    ``.``, ``-`` made one ``-`` and refuses a second feed of the same name, so categories
    that differ only in punctuation (``a b``, ``a/b``) get a short hash of the category.
    """
    unique = list(dict.fromkeys(categories))
    labels = {c: strip_xml_illegal(c).strip() or category_paths(c).rss.split("/")[1]
              for c in unique}
    slugs: dict[str, list[str]] = {}
    for category, label in labels.items():
        slugs.setdefault(_slug(f"{label} (RSS)"), []).append(category)
    titles: dict[tuple[str, str], str] = {}
    for category, label in labels.items():
        if len(slugs[_slug(f"{label} (RSS)")]) > 1:
            digest = hashlib.sha1(category.encode("utf-8", "surrogatepass")).hexdigest()[:6]
            label = f"{label} #{digest}"
        for fmt, kind in (("rss", "RSS"), ("atom", "Atom")):
            titles[(category, fmt)] = f"{label} ({kind})"
    return titles


def _slug(title: str) -> str:
    return _READER_NAME.sub("-", title).lower()


def render_opml(categories: Sequence[str], options: FeedOptions) -> bytes:
    """OPML 2.0 listing every category's RSS and Atom feed, in the order given.

    Two grouping outlines, ``RSS 2.0`` and ``Atom 1.0``; each feed's outline is titled
    with its category and format (``outline_titles``), so no two share a title.  No
    dates, so the same categories always give the same bytes.  Duplicate names are
    listed once.
    """
    site = strip_xml_illegal(site_root(options))
    unique = list(dict.fromkeys(categories))
    titles = outline_titles(unique)
    root = etree.Element("opml", {"version": "2.0"})
    head = etree.SubElement(root, "head")
    etree.SubElement(head, "title").text = f"{site_name(options)} feeds"
    body = etree.SubElement(root, "body")
    for label, fmt in (("RSS 2.0", "rss"), ("Atom 1.0", "atom")):
        group = etree.SubElement(body, "outline", {"text": label, "title": label})
        for category in unique:
            paths = category_paths(category)
            text = titles[(category, fmt)]
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
