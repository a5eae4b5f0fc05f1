"""The rules about article values, each in one place.

Why one module: the same rule written twice drifts (four regexes for "characters XML
cannot carry", an untitled fallback in two languages, three URL checks of which one
forgot the host).  Each rule lives here once; the normalize stage applies them when it
builds an ``Article`` from a feed entry, ``Article`` itself refuses a record that breaks
the cheap invariants (aware UTC datetimes, a title that shows something), and the
writers trust the record.  A writer that must still defend itself against something the
record cannot guarantee calls the function here, never a copy of it.

Standard library only; imports nothing from the project, so ``aggregator.records`` can
use it: this is the bottom of the import graph.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from urllib.parse import urlsplit

__all__ = [
    "FALLBACK_TITLE_LENGTH",
    "UNTITLED",
    "as_utc",
    "check_title",
    "fallback_title",
    "has_text",
    "strip_xml_illegal",
    "web_url",
]

# --- characters ------------------------------------------------------------------------

# XML 1.0 cannot carry C0 controls other than tab, LF and CR, lone surrogates, U+FFFE and
# U+FFFF (lxml refuses them, readers reject the feed).  DEL and the C1 controls are allowed
# by XML 1.0 but never meant as text, must be escaped in XML 1.1, and YAML (the Hexo front
# matter) cannot carry them at all, so they go too.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def strip_xml_illegal(text: str) -> str:
    """``text`` without the characters no published format can carry.

    Why: one such character makes a whole generated feed ill-formed (lxml refuses it,
    feed readers drop the feed), breaks a Hexo build, and some of them are invisible
    tricks in titles.  Tab, LF and CR stay (they are whitespace, not garbage).
    """
    return _XML_ILLEGAL.sub("", text)


def has_text(text: str) -> bool:
    """True when ``text`` shows something once illegal characters and blanks are gone."""
    return bool(strip_xml_illegal(text).strip())


# --- titles ----------------------------------------------------------------------------

# Shown for an entry with no title, no text and no link.  The site is read in Chinese.
UNTITLED = "(无标题)"
FALLBACK_TITLE_LENGTH = 50  # characters of the summary used as a stand-in title


def fallback_title(summary: str, link: str | None) -> str:
    """The title of an entry that has none: its summary's start, else its link, else
    ``UNTITLED``.

    Why: every writer needs a title (an Atom entry must have one, a Hexo post and an
    index-page heading are unusable without one), and a reader recognizes an article by
    its first words or its address far better than by a generic placeholder.
    """
    summary = summary.strip()
    if summary:
        if len(summary) <= FALLBACK_TITLE_LENGTH:
            return summary
        return summary[: FALLBACK_TITLE_LENGTH - 1].rstrip() + "…"
    return link or UNTITLED


def check_title(title: object) -> str:
    """``title`` when it is a string that shows something, else ``TypeError``/``ValueError``.

    Why: an article's title is what every writer displays and Atom requires; it is
    decided once (see ``fallback_title``), so a record without one is a bug upstream.
    """
    if not isinstance(title, str):
        raise TypeError(f"article title must be a string, got {type(title).__name__}")
    if not has_text(title):
        raise ValueError(f"article title shows nothing: {title!r}")
    return title


# --- URLs ------------------------------------------------------------------------------

_WEB_SCHEMES = frozenset({"http", "https"})
# Browsers remove tab and newlines anywhere in a URL before parsing it (WHATWG URL).
_TAB_OR_NEWLINE = str.maketrans("", "", "\t\n\r")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# The common web URL, judged without urlsplit (5 µs a URL, several URLs an article):
# scheme, an ASCII host name (so urlsplit finds that host), an optional port, then
# anything but whitespace and controls (so stripping and the control check change nothing).
_PLAIN_WEB_URL = re.compile(r"https?://[A-Za-z0-9.-]+(?::[0-9]*)?(?:[/?#][^\s\x00-\x1f\x7f-\x9f]*)?")


def web_url(value: str | None) -> str | None:
    """``value`` as an absolute ``http``/``https`` URL with a host, else None.

    Why: every URL an article carries (link, head image, thumbnail, image sources in its
    content) ends up in an ``href`` or ``src`` of a page or a feed reader; anything but a
    web URL is at best dead (``/relative``, ``//host``, ``https://``) and at worst
    executable (``javascript:``, ``data:``, ``vbscript:``).

    Like a browser, surrounding whitespace is dropped and tab/CR/LF inside are removed
    (so ``java\\tscript:`` is judged as the ``javascript:`` it is); any other control
    character makes the URL garbage.  Spaces inside are kept: they are harmless, and a
    browser encodes them.
    """
    if not value:
        return None
    if _PLAIN_WEB_URL.fullmatch(value):  # most URLs: what the full check would return
        return value
    url = value.strip().translate(_TAB_OR_NEWLINE)
    if not url or _CONTROL.search(url):
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # e.g. "https://[::1"
        return None
    if parts.scheme.lower() not in _WEB_SCHEMES or not host:
        return None
    return url


# --- datetimes -------------------------------------------------------------------------


def as_utc(value: object) -> datetime:
    """``value`` converted to UTC; a naive datetime (or no datetime) is refused.

    Why: a naive datetime has no meaning (the portal's local time?  the server's?), so
    guessing would silently shift articles by hours; feedgen and the database refuse them
    too.  Every date is decided aware when it is read from a feed, and converted to UTC
    once so that writers, sorting and comparisons never meet an offset again.
    """
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}")
    if value.tzinfo is UTC:
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()} (articles need aware UTC)")
    return value.astimezone(UTC)
