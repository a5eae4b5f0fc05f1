"""Where published things live: file paths under ``output_dir`` and their public URLs.

Why: the feeds, the OPML index, the index page and the HTTP server must agree on
every name; this module is the one place that says them.  A category's directory
keeps CJK and other printable text, and two categories never share files.

This module must NOT render or write anything; it only names.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from aggregator.records import FeedOptions
from aggregator.rules import strip_xml_illegal

__all__ = ["GENERATOR", "INDEX_FILENAME", "OPML_FILENAME", "CategoryFeedPaths", "category_paths",
           "is_category_feed", "public_url", "site_name", "site_root"]

GENERATOR = "aggregator"
OPML_FILENAME = "feeds.opml"
INDEX_FILENAME = "index.html"

_CATEGORIES_DIR = "categories"
# Longest category directory name, in UTF-8 bytes (file systems stop at 255).
_MAX_NAME_BYTES = 180
# Characters a directory name must not contain: separators, NUL, C0/C1 controls,
# lone surrogates (not encodable as a file name).
_NOT_PATH_CHAR = re.compile("[/\\\\\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# Separators trimmed off ``title_prefix`` when it doubles as the site's name.
_PREFIX_SEPARATORS = " \t-–—|:：·•»>/"


@dataclass(frozen=True)
class CategoryFeedPaths:
    """Where a category's feeds live: '/'-separated paths relative to ``output_dir``
    (RSS 2.0, Atom 1.0 and JSON Feed 1.1, side by side)."""

    category: str
    rss: str
    atom: str
    json: str


def category_paths(category: str) -> CategoryFeedPaths:
    """The feed files of ``category``; CJK and other printable text is kept as is.

    Separators, NUL and control characters become ``_``, leading dots are
    dropped and over-long names are cut.  Whenever the name had to change, a
    short hash of the original is appended so two categories never share files.
    """
    name = _NOT_PATH_CHAR.sub("_", category).lstrip(".")
    if len(name.encode("utf-8")) > _MAX_NAME_BYTES:
        while len(name.encode("utf-8")) > _MAX_NAME_BYTES:
            name = name[:-1]
    if name != category or not name:
        digest = hashlib.sha1(category.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        name = f"{name}-{digest}" if name else f"category-{digest}"
    base = f"{_CATEGORIES_DIR}/{name}"
    return CategoryFeedPaths(category=category, rss=f"{base}/rss.xml", atom=f"{base}/atom.xml",
                             json=f"{base}/feed.json")


# The files of a category directory that are its feeds (what a WebSub hub is told about);
# archive pages (``archive/<n>.xml``) and anything else there are not.
_FEED_FILES = frozenset({"rss.xml", "atom.xml", "feed.json"})


def is_category_feed(relative: str) -> bool:
    """Whether ``relative`` (a '/'-separated path under ``output_dir``, as a
    ``BuildReport`` lists it) is a category's RSS, Atom or JSON feed."""
    parts = relative.split("/")
    return (len(parts) == 3 and parts[0] == _CATEGORIES_DIR and parts[1] != ""
            and parts[2] in _FEED_FILES)


def site_root(options: FeedOptions) -> str:
    root = options.site_url.strip()
    return root if root.endswith("/") else root + "/"


def public_url(options: FeedOptions, relative: str) -> str:
    return site_root(options) + quote(relative)


def site_name(options: FeedOptions) -> str:
    name = (strip_xml_illegal(options.site_title).strip()
            or strip_xml_illegal(options.title_prefix).strip(_PREFIX_SEPARATORS))
    if name:
        return name
    host = urlsplit(strip_xml_illegal(options.site_url).strip()).hostname
    return host or GENERATOR
