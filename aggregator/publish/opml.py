"""OPML 2.0: the index of every generated feed (``feeds.opml``), and the config's
sources for other readers (``aggregator sources export``).

Why: feed readers import one file to subscribe to every category (newsboat, rss2email),
and operators move their subscriptions between readers.  The bytes depend only on the
categories, the sources and the site, never on the time.  This module must NOT write
files or decide which categories or sources exist.

The JSON Feed of each category is listed too, but so that importing subscribes to
nothing new: readers subscribe to an outline by its ``xmlUrl`` (and newsboat also by a
``url``), so a third subscribable outline per category would give every reader a third
copy of every article, and one it may not even read (newsboat 2.21 finds no items in a
JSON Feed).  The ``JSON Feed 1.1`` group's outlines therefore carry the feed's address
in ``aggregator:jsonFeedUrl`` (OPML 2.0 allows namespaced attributes) with
``type="jsonfeed"``, and neither ``xmlUrl`` nor ``url``: RSS stays the primary, Atom
stays as before, and a JSON-aware tool finds the JSON feeds by the namespace.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from datetime import timedelta

from lxml import etree

from aggregator.publish.paths import category_paths, public_url, site_name, site_root
from aggregator.records import SOURCES_OPML_NAMESPACE, FeedOptions, Source, SourceKind
from aggregator.rules import strip_xml_illegal

__all__ = ["JSON_FEED_URL", "outline_titles", "render_opml", "render_sources_opml"]

# The attribute of a JSON Feed outline of ``feeds.opml`` holding the feed's address.
JSON_FEED_URL = f"{{{SOURCES_OPML_NAMESPACE}}}jsonFeedUrl"

# What rss2email (``r2e opmlimport``) replaces with "-" when it names a feed by its title.
_READER_NAME = re.compile(r"[^\w.-]+")


def outline_titles(categories: Sequence[str]) -> dict[tuple[str, str], str]:
    """(category, "rss" | "atom" | "json") -> the outline's title, e.g. ``科技 (RSS)``,
    ``科技 (Atom)``, ``科技 (JSON Feed)``.

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
        for fmt, kind in (("rss", "RSS"), ("atom", "Atom"), ("json", "JSON Feed")):
            titles[(category, fmt)] = f"{label} ({kind})"
    return titles


def _slug(title: str) -> str:
    return _READER_NAME.sub("-", title).lower()


def render_opml(categories: Sequence[str], options: FeedOptions) -> bytes:
    """OPML 2.0 listing every category's RSS, Atom and JSON feed, in the order given.

    Three grouping outlines, ``RSS 2.0``, ``Atom 1.0`` (feeds to subscribe to) and
    ``JSON Feed 1.1`` (listed, not subscribed on import: see the module docstring);
    each feed's outline is titled with its category and format (``outline_titles``), so
    no two share a title.  No dates, so the same categories always give the same bytes.
    Duplicate names are listed once.
    """
    site = strip_xml_illegal(site_root(options))
    unique = list(dict.fromkeys(categories))
    titles = outline_titles(unique)
    root = etree.Element("opml", {"version": "2.0"},
                         nsmap={"aggregator": SOURCES_OPML_NAMESPACE})
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
    group = etree.SubElement(body, "outline", {"text": "JSON Feed 1.1",
                                               "title": "JSON Feed 1.1"})
    for category in unique:
        text = titles[(category, "json")]
        etree.SubElement(group, "outline", {
            "text": text,
            "title": text,
            "type": "jsonfeed",
            JSON_FEED_URL: strip_xml_illegal(public_url(options, category_paths(category).json)),
            "htmlUrl": site,
        })
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))


def render_sources_opml(sources: Sequence[Source], title: str) -> bytes:
    """The feed sources as OPML 2.0, one folder outline per first category (in the order
    the sources come), each feed an ``outline type="rss"`` with ``text``, ``title``,
    ``xmlUrl``, every category in ``category`` (comma-separated) and its id and interval
    as ``aggregator:`` attributes.  ``kind: html`` sources are not feeds another reader
    could read, and are left out."""
    nsmap = {"aggregator": SOURCES_OPML_NAMESPACE}
    root = etree.Element("opml", {"version": "2.0"}, nsmap=nsmap)
    head = etree.SubElement(root, "head")
    etree.SubElement(head, "title").text = strip_xml_illegal(title)
    body = etree.SubElement(root, "body")
    folders: dict[str, etree._Element] = {}
    for source in sources:
        if source.kind is not SourceKind.FEED:
            continue
        folder_name = strip_xml_illegal(source.categories[0])
        folder = folders.get(folder_name)
        if folder is None:
            folder = folders[folder_name] = etree.SubElement(
                body, "outline", {"text": folder_name, "title": folder_name})
        name = strip_xml_illegal(source.name)
        etree.SubElement(folder, "outline", {
            "type": "rss",
            "text": name,
            "title": name,
            "xmlUrl": strip_xml_illegal(source.url),
            "category": ",".join(strip_xml_illegal(c) for c in source.categories),
            f"{{{SOURCES_OPML_NAMESPACE}}}id": source.id,
            f"{{{SOURCES_OPML_NAMESPACE}}}interval": duration_text(source.interval),
        })
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))


def duration_text(value: timedelta) -> str:
    """A duration the way the config writes it: ``1d``, ``2h``, ``30m``, ``90s``."""
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
