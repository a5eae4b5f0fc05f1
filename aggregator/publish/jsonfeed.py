"""Render a category's entries as JSON Feed 1.1 (``categories/<name>/feed.json``).

Why: some readers (and most scripts) would rather read JSON than XML; JSON Feed 1.1
(https://jsonfeed.org/version/1.1) says the same things as our Atom feed.  The file
carries exactly the entries ``publish.feeds`` selected for the category's RSS and Atom
feeds (same ``feed_size``, same articles left out, same order), with the same values:
an item's ``id`` is the Atom entry id (``feeds.entry_id``), its ``date_published`` /
``date_modified`` are the Atom ``published`` / ``updated`` strings, and the feed's
title, description, language and WebSub hub are the Atom feed's.

Output is a pure function of the input: keys come in one fixed order (``version``
first, for readers that sniff it), nothing reads a clock, and the stdlib ``json``
writes UTF-8 without ASCII escapes, so identical input gives byte-identical files
and stable ETags.  The strings arrive cleaned (``feeds.EntryValues``, category names
through ``rules.strip_xml_illegal``), so none holds a lone surrogate UTF-8 refuses.

What this module must NOT do: choose, order or clean entries (``feeds`` does that
once for every format), write files, or import feedgen, lxml or anything outside
the standard library and the publish layer's own names.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aggregator.errors import AggregatorError
from aggregator.publish.language import category_language, feed_description
from aggregator.publish.paths import category_paths, public_url, site_name, site_root
from aggregator.records import FeedOptions
from aggregator.rules import strip_xml_illegal

if TYPE_CHECKING:  # feeds imports this module to write the files
    from aggregator.publish.feeds import EntryValues

__all__ = ["JSON_FEED_TYPE", "JSON_FEED_VERSION", "render_json_feed"]

JSON_FEED_VERSION = "https://jsonfeed.org/version/1.1"
JSON_FEED_TYPE = "application/feed+json"


def _date(value: datetime) -> str:
    """RFC 3339, written exactly as the Atom feed writes it (``isoformat`` of the value)."""
    return value.isoformat()


def _item(values: EntryValues) -> dict[str, Any]:
    item: dict[str, Any] = {"id": values.id}
    if values.link:
        item["url"] = values.link
    item["title"] = values.title
    if values.content:
        item["content_html"] = values.content
    else:  # JSON Feed wants content_html or content_text; Atom showed the link instead
        item["content_text"] = values.summary or values.title
    if values.summary:
        item["summary"] = values.summary  # plain text, as the spec defines it
    if values.thumbnail:
        item["image"] = values.thumbnail
    item["date_published"] = _date(values.published)
    item["date_modified"] = _date(values.updated)
    if values.author:
        item["authors"] = [{"name": values.author}]
    if values.categories:
        item["tags"] = list(values.categories)
    return item


def render_json_feed(category: str, entries: Sequence[EntryValues],
                     options: FeedOptions) -> bytes:
    """The UTF-8 bytes of ``category``'s JSON Feed 1.1, its items ``entries`` in order."""
    paths = category_paths(category)
    name = strip_xml_illegal(category).strip() or paths.json.split("/")[1]
    site = site_name(options)
    language = category_language(options, category)
    feed: dict[str, Any] = {
        "version": JSON_FEED_VERSION,
        "title": strip_xml_illegal(options.title_prefix) + name,
        "home_page_url": strip_xml_illegal(site_root(options)),
        "feed_url": strip_xml_illegal(public_url(options, paths.json)),
        "description": strip_xml_illegal(feed_description(options, language, name, site)),
    }
    if language:  # none when the category's sources differ, as in RSS and Atom
        feed["language"] = language
    feed["authors"] = [{"name": site}]
    if options.hub_url:
        feed["hubs"] = [{"type": "WebSub", "url": strip_xml_illegal(options.hub_url)}]
    feed["items"] = [_item(values) for values in entries]
    try:
        return (json.dumps(feed, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise AggregatorError(
            f"cannot render the JSON feed of category {category!r}: {exc}") from exc
