"""feedparser's readings of text and URLs, reproduced for the fast parse path.

``fastparse`` must give exactly what the feedparser path gives; these are the places
where feedparser changes what a document says (it strips text, repairs UTF-8 read as
Latin-1, guesses that an RSS title is HTML, splits an email out of an author, fixes
"http:///x") and what ``parse._entry`` then does with it.  Each one is a copy of the
feedparser 6 behaviour it names; this module must not add readings of its own, import
feedparser (``parse`` is its one home) or touch XML.
"""

from __future__ import annotations

import contextlib
import functools
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import urljoin, urlsplit

__all__ = [
    "ACCEPTABLE_URI_SCHEMES",
    "absolute",
    "author_name",
    "clean",
    "common_date",
    "feedparser_uri",
    "first_content",
    "looks_like_html",
    "map_type",
    "popped_text",
    "safe_base",
]

# feedparser's own spelling of an email inside an author string (``_sync_author_detail``)
_EMAIL = re.compile(
    r"(([a-zA-Z0-9\_\-\.\+]+)@((\[[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.)|(([a-zA-Z0-9\-]+\.)+))"
    r"([a-zA-Z]{2,4}|[0-9]{1,3})(\]?))(\?subject=\S+)?"
)
# An absolute web URL that urljoin gives back as written, whatever the base: it splits
# and re-assembles one with a host of its own, and the re-assembly changes only what is
# excluded here (a scheme's case, an empty query or fragment, ";" parameters, whitespace).
_JOINED_AS_WRITTEN = re.compile(
    r"https?://[A-Za-z0-9.-]+(?::[0-9]+)?(?:/[^\s;?#]*)?(?:\?[^\s#]+)?(?:#\S+)?")
# The common date shapes (``common_date``), as strictly as feedparser reads them alike.
_MONTHS = {name: number for number, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
_RFC822_DATE = re.compile(
    r"(?:(?:mon|tue|wed|thu|fri|sat|sun), )?(\d{1,2}) (jan|feb|mar|apr|may|jun|jul|aug|sep|oct"
    r"|nov|dec) (\d{4}) (\d\d):(\d\d):(\d\d) (?:([+-])(\d\d)(\d\d)|gmt|ut|utc|z)",
    re.IGNORECASE)
_W3DTF_DATE = re.compile(  # at most 6 digits of fraction: feedparser reads the seconds
    r"(\d{4})-(\d\d)-(\d\d)t(\d\d):(\d\d):(\d\d)(?:\.\d{1,6})?(?:z|([+-])(\d\d):(\d\d))",
    re.IGNORECASE)  # as a float: more digits can round 59.99… up to 60
# feedparser.urls.ACCEPTABLE_URI_SCHEMES (tests/test_fastparse.py holds them equal)
ACCEPTABLE_URI_SCHEMES = frozenset((
    "file", "ftp", "gopher", "h323", "hdl", "http", "https", "imap", "magnet",
    "mailto", "mms", "news", "nntp", "prospero", "rsync", "rtsp", "rtspu",
    "sftp", "shttp", "sip", "sips", "snews", "svn", "svn+ssh", "telnet", "wais",
    "aim", "callto", "cvs", "facetime", "feed", "git", "gtalk", "irc", "ircs",
    "irc6", "itms", "msnim", "skype", "ssh", "smb", "ymsg",
))
_URI_FIXER = re.compile("^([A-Za-z][A-Za-z0-9+-.]*://)(/*)(.*?)")
_LINK_ENTITY = re.compile("&([A-Za-z0-9_]+);")
# looks_like_html: a close tag or an entity, only HTML elements, only HTML entities
_CLOSE_TAG = re.compile(r"</(\w+)>")
_ANY_ENTITY = re.compile(r"&#?\w+;")
_TAG_NAME = re.compile(r"</?(\w+)")
_ENTITY_NAME = re.compile(r"&(\w+);")


def popped_text(text: str) -> str:
    """feedparser's pop(): strip, then undo UTF-8 read as Latin-1 where that decodes."""
    text = text.strip()
    if not text.isascii():
        with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
            text = text.encode("iso-8859-1").decode("utf-8")
    return text



def feedparser_uri(uri: str, base: str = "") -> str:
    """feedparser's _urljoin: fix "http:///x", join, "" for what urljoin refuses."""
    if ":///" in uri:  # the only case the fixer changes
        uri = _URI_FIXER.sub(r"\1\3", uri)
    if not base:
        return uri  # what urljoin returns for an empty base
    try:
        return urljoin(base, uri)
    except ValueError:
        return ""


def safe_base(base: str, rel: str) -> str:
    """feedparser's make_safe_absolute_uri(base, rel) for a non-empty base and rel: the
    joined URI, or "" when its scheme is not one feedparser accepts."""
    uri = feedparser_uri(rel, base)
    return uri if uri.strip().split(":", 1)[0] in ACCEPTABLE_URI_SCHEMES else ""


def unentity_link(link: str) -> str:
    """feedparser's fix of a link's query ("?a=1&b;=2" read as an entity): "&b;" → "&b"."""
    return _LINK_ENTITY.sub(r"&\1", link) if "&" in link else link


def clean(value: object) -> str | None:
    """A value as stripped text, None when empty; non-strings (a JSON Feed's numeric id)
    as their ``str``.  Both parse paths read text through it."""
    if value is None:
        return None
    return str(value).strip() or None


def absolute(url: object, base: str) -> str | None:
    """``url`` resolved against ``base``; None when empty or not joinable (both paths)."""
    text = clean(url)
    if text is None:
        return None
    if _JOINED_AS_WRITTEN.fullmatch(text) and _joinable(base):
        return text  # what urljoin would return, without its two splits and a join
    try:
        return urljoin(base, text)
    except ValueError:
        return None


@functools.lru_cache(maxsize=64)
def _joinable(base: str) -> bool:
    """Whether urljoin can read ``base`` (one document has a base or a few)."""
    try:
        urlsplit(base)
    except ValueError:
        return False
    return True


def common_date(raw: str) -> datetime | None:
    """feedparser's reading (as ``parse._read_date`` turns it into a datetime) of the two
    date shapes nearly every feed writes — RFC 822 ``Wed, 01 Jan 2025 08:00:00 +0800``
    (or GMT/UT/UTC/Z) and W3DTF ``2025-01-01T08:00:00.123+08:00`` (or Z) — or None when
    ``raw`` is not one of them exactly, or not a real date: the caller asks feedparser.

    What feedparser does with these (``_parse_date_w3dtf``, tried first, declines every
    RFC 822 string; then ``_parse_date_rfc822``): the weekday is not checked, the offset
    is subtracted, fractions of a second are dropped, the result is UTC to the second.
    """
    if (found := _RFC822_DATE.fullmatch(raw)) is not None:
        day, month, year, hour, minute, second, sign, zone_hours, zone_minutes = found.groups()
        month_number = _MONTHS[month.lower()]
    elif (found := _W3DTF_DATE.fullmatch(raw)) is not None:
        year, month, day, hour, minute, second, sign, zone_hours, zone_minutes = found.groups()
        month_number = int(month)
    else:
        return None
    try:
        stamp = datetime(int(year), month_number, int(day), int(hour), int(minute), int(second),
                         tzinfo=UTC)
        if sign is None:
            return stamp
        offset = timedelta(hours=int(zone_hours), minutes=int(zone_minutes))
        return stamp - offset if sign == "+" else stamp + offset
    except (ValueError, OverflowError):
        return None


def looks_like_html(s: str) -> bool:
    from html.entities import entitydefs

    if not (_CLOSE_TAG.search(s) or _ANY_ENTITY.search(s)):
        return False
    if any(t.lower() not in _HTML_ELEMENTS for t in _TAG_NAME.findall(s)):
        return False
    return all(e in entitydefs for e in _ENTITY_NAME.findall(s))



def author_name(raw: str) -> str | None:
    """An RSS ``<author>``/``<dc:creator>`` string as feedparser's author_detail reads it."""
    author = raw
    # The pattern backtracks quadratically over a long run of name characters (feedparser
    # issue #562) and cannot match without an "@": most authors never pay for it.
    match = _EMAIL.search(author) if "@" in author else None
    if match is None:
        return clean(author)
    email = match.group(0)
    author = author.replace(email, "").replace("()", "").replace("<>", "")
    author = author.replace("&lt;&gt;", "").strip()
    if author and author[0] == "(":
        author = author[1:]
    if author and author[-1] == ")":
        author = author[:-1]
    return clean(author.strip() or raw)



def first_content(contents: list[tuple[str, str, str]]) -> tuple[str, str, str] | None:
    """``parse._first_content`` over (type, value, base): the HTML one, else the first
    non-empty one."""
    for wanted in ("text/html", "application/xhtml+xml"):
        for item in contents:
            if item[0] == wanted and item[1]:
                return item
    for item in contents:
        if item[1]:
            return item
    return None


def map_type(kind: str) -> str:
    kind = kind.lower()
    return {"text": "text/plain", "html": "text/html", "xhtml": "application/xhtml+xml"}.get(
        kind, kind
    )


# feedparser's _HTMLSanitizer.acceptable_elements (what looks_like_html accepts)
_HTML_ELEMENT_NAMES = """
    a abbr acronym address area article aside audio b big blockquote br button canvas
    caption center cite code col colgroup command datagrid datalist dd del details dfn
    dialog dir div dl dt em event-source fieldset figcaption figure font footer form h1
    h2 h3 h4 h5 h6 header hr i img input ins kbd keygen label legend li m map menu meter
    multicol nav nextid noscript ol optgroup option output p pre progress q s samp
    section select small sound source spacer span strike strong sub sup table tbody td
    textarea tfoot th thead time tr tt u ul var video"""
_HTML_ELEMENTS = frozenset(_HTML_ELEMENT_NAMES.split())
