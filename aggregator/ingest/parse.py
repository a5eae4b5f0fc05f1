"""Parse stage: fetched bytes → ``ParsedFeed``.

Chinese portals are this tool's main users, and they are careless with encodings:
``text/xml`` without a charset, ``gb2312`` declared while GBK is sent, ``big5``
declared while Big5-HKSCS or cp950 characters are sent.  feedparser alone falls
back to windows-1252/iso-8859-2 mojibake in those cases, so this module decides the
encoding itself (``decode_document``), hands feedparser UTF-8 that says it is
UTF-8.  That UTF-8 goes first to ``fastparse`` (lxml, ten times faster), which
reads the common well-formed dialects exactly as feedparser would and declines
anything it is not sure of; feedparser reads the rest (every RSS/Atom dialect, and
ill-formed documents).  ``ParsedFeed.parser`` says which path read a document.  JSON
Feed, which feedparser 6 does not read, is parsed here from the standard library.
Dates feedparser does not read (localized weekdays and months, ``13:08:54+0900``,
RFC 822 in JSON Feed) are read leniently (``dates.lenient_datetime``, importable
from here too); one that cannot be read stays None, never a made-up date.

feedparser's own HTML sanitizer is turned off: the normalize stage sanitizes with
nh3.  This module must not sanitize, rewrite URLs or decide what to store; it only
reports what the document says.  It is the only module that imports feedparser.
"""

from __future__ import annotations

import codecs
import functools
import json
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import ModuleType
from typing import Any
from urllib.parse import urljoin

from aggregator.errors import ParseError
from aggregator.ingest.dates import lenient_datetime
from aggregator.ingest.fastparse_text import absolute as _absolute
from aggregator.ingest.fastparse_text import clean as _text
from aggregator.ingest.fastparse_text import common_date
from aggregator.records import (
    FetchResult,
    ParsedEntry,
    ParsedFeed,
    ParserKind,
    Source,
    SourceKind,
)
from aggregator.rules import strip_xml_illegal, web_url

# Encodings that real servers declare while sending a superset: try the declared
# one strictly, then its supersets, before anything else.  Keyed by Python's codec
# name (``canonical_encoding``: "ISO-8859-1" is "iso8859-1", "big5-hkscs" "big5hkscs").
# A chain that contains the declared encoding itself gives the order to try them in.
_SUPERSET_NAMES: dict[str, tuple[str, ...]] = {
    "gb2312": ("gb18030",),
    "gbk": ("gb18030",),
    "gb18030": ("gb18030",),
    "big5": ("big5", "big5hkscs", "cp950"),
    "big5hkscs": ("big5hkscs", "cp950"),
    "cp950": ("cp950", "big5hkscs"),
    # WHATWG: iso-8859-1 means windows-1252 on the web (0x80-0x9F are its quotes, euro
    # sign...; nobody sends C1 controls); Latin-1 proper only for the five bytes
    # windows-1252 leaves undefined.
    "latin-1": ("cp1252", "iso8859-1"),
    "ascii": ("utf-8",),  # "us-ascii" documents are very often UTF-8 in practice
}


def canonical_encoding(name: str) -> str | None:
    """Python's codec name for ``name``, or None when Python has no such codec."""
    try:
        return codecs.lookup(name.strip().strip("\"'")).name
    except LookupError:
        return None


_SUPERSETS: dict[str, tuple[str, ...]] = {
    codecs.lookup(name).name: tuple(codecs.lookup(s).name for s in chain)
    for name, chain in _SUPERSET_NAMES.items()
}
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_XML_DECL = re.compile(rb"^\s*<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._:-]+)[\"']")
_XML_DECL_TEXT = re.compile(r"^(\s*<\?xml[^>]*?encoding\s*=\s*[\"'])([A-Za-z0-9._:-]+)([\"'])")
_CHARSET = re.compile(r"charset\s*=\s*[\"']?([A-Za-z0-9._:-]+)", re.IGNORECASE)
_HTML_PRESCAN = 8192  # bytes of an HTML page searched for its <meta charset>
_HTML_COMMENT = re.compile(rb"<!--.*?-->", re.DOTALL)
_HTML_META = re.compile(rb"<meta\b([^>]*)>", re.IGNORECASE)
# charset="gb2312" as an attribute, or "text/html; charset=gbk" inside http-equiv's content
_META_CHARSET = re.compile(rb"(?<![\w-])charset\s*=\s*[\"']?\s*([A-Za-z0-9._:-]+)",
                           re.IGNORECASE)
# A DOCTYPE with an internal subset; group 1 keeps "<!DOCTYPE name ..." without the subset.
_INTERNAL_DTD = re.compile(r"(<!DOCTYPE[^\[>]*)\[.*?\]\s*>", re.IGNORECASE | re.DOTALL)
# The root element of a feed document, after the prolog, comments and doctype.
_FEED_ROOT = re.compile(
    r"^\ufeff?\s*(?:<\?.*?\?>\s*|<!--.*?-->\s*|<!DOCTYPE[^>]*>\s*)*"
    r"<(?:[\w.-]+:)?(?:rss|feed|rdf|channel)\b",
    re.IGNORECASE | re.DOTALL,
)
# An xml:base (or bare ``base``) attribute, which feedparser honours on any element.
_DECLARES_BASE = re.compile(r"[\s:]base\s*=", re.IGNORECASE)
# What that regex needs the document to hold, in its UTF-8 lower-cased at C speed: "base"
# (or "baſe": U+017F folds to "s" under Unicode IGNORECASE).  Most feeds hold neither,
# and the regex costs ~10 ns a character (no literal prefix to search for).
_BASE_SPELLINGS = (b"base", "baſe".encode())


@functools.cache
def _feedparser() -> ModuleType:
    """feedparser, imported the first time a document or a date needs it (12 MB and 60 ms
    that a parse worker reading only the common dialects never spends), and adjusted:

    feedparser resolves a permalink ``<guid>`` (and an Atom ``<id>``) against xml:base as
    if it were a URL, which turns ``<guid>123456</guid>`` into "http://portal/123456" only
    in documents that declare a base.  An identifier is reported as written; whether it
    is also a link is decided in ``_entry_link``.
    """
    import feedparser
    import feedparser.datetimes
    import feedparser.mixin

    relative = feedparser.mixin._FeedParserMixin.can_be_relative_uri
    feedparser.mixin._FeedParserMixin.can_be_relative_uri = relative - {"id"}
    return feedparser


def parse(fetched: FetchResult, source: Source, *, fast: bool = True) -> ParsedFeed:
    """Parse one fetched document, or raise ``ParseError`` naming the source.

    An RSS/Atom document is read by ``fastparse`` when it is sure of it, else by
    feedparser (always by feedparser with ``fast=False``: the differential test's
    reference); ``ParsedFeed.parser`` says which.

    A ``kind: html`` source's document is a list page, read by ``scrape.parse_page``
    (imported here, not at the top: it builds on this module's decoding and dates).
    """
    if source.kind is SourceKind.HTML:
        from aggregator.ingest.scrape import parse_page

        return parse_page(fetched, source)
    content = fetched.content
    if not content.strip():
        raise ParseError("empty response body", source_id=source.id)
    content_type = fetched.headers.get("content-type", "")
    try:
        if _looks_like_json(content, content_type):
            return _parse_json_feed(fetched, source)
        return _parse_xml_feed(fetched, source, content_type, fast=fast)
    except ParseError:
        raise
    except Exception as exc:  # feedparser is robust, but a parser bug must not escape
        raise ParseError(
            f"parser failed: {type(exc).__name__}: {exc}", source_id=source.id
        ) from exc


# --- encodings --------------------------------------------------------------------


def _candidates(name: str | None) -> list[str]:
    if not name:
        return []
    canonical = canonical_encoding(name)
    if canonical is None:
        return []
    chain = _SUPERSETS.get(canonical, ())
    return [canonical, *chain] if canonical not in chain else list(chain)


def charset_from_content_type(content_type: str) -> str | None:
    match = _CHARSET.search(content_type or "")
    return match.group(1) if match else None


def declared_xml_encoding(content: bytes) -> str | None:
    match = _XML_DECL.match(content[:1024])
    return match.group(1).decode("ascii") if match else None


def declared_html_encoding(content: bytes) -> str | None:
    """What an HTML page says it is encoded in: ``<meta charset="gb2312">``, ``<meta
    http-equiv="Content-Type" content="text/html; charset=gbk">``, else an XHTML page's
    XML declaration.  Read from the first ``_HTML_PRESCAN`` bytes (portals put scripts
    and styles before their meta), comments ignored; None when it says nothing."""
    head = _HTML_COMMENT.sub(b"", content[:_HTML_PRESCAN])
    for meta in _HTML_META.finditer(head):
        match = _META_CHARSET.search(meta.group(1))
        if match is not None:
            return match.group(1).decode("ascii")
    return declared_xml_encoding(content)


# What old web servers send by default whatever the document is: an HTTP charset that
# is one of these says little against a document that declares a multibyte CJK
# encoding and decodes cleanly in it.
_SINGLE_BYTE_DEFAULTS = frozenset(
    codecs.lookup(n).name for n in ("iso-8859-1", "us-ascii", "cp1252")
)
_CJK_MULTIBYTE = frozenset(
    codecs.lookup(n).name
    for n in (
        "big5", "big5hkscs", "cp950", "gb2312", "gbk", "gb18030", "hz",
        "shift_jis", "cp932", "shift_jis_2004", "shift_jisx0213",
        "euc_jp", "euc_jis_2004", "euc_jisx0213", "iso2022_jp", "iso2022_jp_1",
        "iso2022_jp_2", "iso2022_jp_2004", "iso2022_jp_3", "iso2022_jp_ext",
        "euc_kr", "cp949", "johab", "iso2022_kr",
    )
)


@dataclass(frozen=True, slots=True)
class Decoded:
    """Decoded feed text; ``warning`` says why the encoding used is not simply the one
    declared (a guess, or what the document says overriding HTTP), else None."""

    text: str
    encoding: str
    exact: bool  # False: nothing decoded strictly, undecodable bytes were replaced
    warning: str | None = None


def decode_document(
    content: bytes,
    *,
    http_charset: str | None = None,
    declared: str | None = None,
    override: str | None = None,
) -> tuple[str, str, bool]:
    """``(text, encoding used, exact)`` of ``decode_feed_bytes``."""
    decoded = decode_feed_bytes(
        content, http_charset=http_charset, declared=declared, override=override
    )
    return decoded.text, decoded.encoding, decoded.exact


def decode_feed_bytes(
    content: bytes,
    *,
    http_charset: str | None = None,
    declared: str | None = None,
    override: str | None = None,
) -> Decoded:
    """Decode feed (or list page) bytes to text.

    Order: a per-source override; a byte-order mark; the HTTP charset; the document's
    declaration (``declared``: the XML declaration, or an HTML page's meta charset) —
    each followed by the supersets servers really send (gb2312 → gb18030, big5 →
    big5hkscs → cp950, iso-8859-1 → windows-1252); then UTF-8; then statistical
    detection.  One exception: when HTTP names a single-byte default
    (ISO-8859-1, US-ASCII, windows-1252) and the document declares a multibyte CJK
    encoding, the declaration is tried first.  ``exact`` is False only when no
    decoding worked strictly and undecodable bytes were replaced.
    """
    bom = None if override else next((e for mark, e in _BOMS if content.startswith(mark)), None)
    believe_document = (
        not override
        and canonical_encoding(http_charset or "") in _SINGLE_BYTE_DEFAULTS
        and canonical_encoding(declared or "") in _CJK_MULTIBYTE
    )
    stages: list[tuple[str, list[str]]] = []
    if override:
        stages.append(("override", _candidates(override)))
    else:
        if bom:
            stages.append(("bom", [bom]))
        http = ("http", _candidates(http_charset))
        document = ("declared", _candidates(declared))
        stages += [document, http] if believe_document else [http, document]
    stages.append(("utf-8", ["utf-8"]))
    said = _Said(http_charset, declared, override, believe_document)
    tried: set[str] = set()
    for origin, encodings in stages:
        for encoding in encodings:
            if encoding in tried:
                continue
            tried.add(encoding)
            try:
                text = content.decode(encoding)
            except (UnicodeDecodeError, LookupError):
                continue
            return Decoded(text, encoding, True, said.warning(origin, encoding, content, text))
    detected = _detect(content)
    for encoding in _candidates(detected):
        try:
            text = content.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            continue
        return Decoded(text, encoding, True, said.warning("detected", encoding, content, text))
    named = [e for origin, encodings in stages if origin != "utf-8" for e in encodings]
    fallback = (named or _candidates(detected) or ["utf-8"])[0]
    return Decoded(content.decode(fallback, errors="replace"), fallback, False)


@dataclass(frozen=True, slots=True)
class _Said:
    """What declared an encoding, to explain a choice that is not simply that."""

    http: str | None
    declared: str | None
    override: str | None
    believe_document: bool

    def warning(self, origin: str, encoding: str, content: bytes, text: str) -> str | None:
        if origin == "override":
            return None  # configured for this source
        if self.believe_document:
            if origin == "declared":
                if _strict_text(content, _candidates(self.http)) == text:
                    return None  # e.g. ASCII only: HTTP's charset reads the same text
                return (
                    f"charset: HTTP said {self.http}, the document says {self.declared} and "
                    f"decodes as {encoding}: used {encoding}"
                )
            if origin == "http":
                return (
                    f"charset: HTTP said {self.http}, the document says {self.declared} but "
                    f"does not decode as {self.declared}: used {encoding}"
                )
        if origin == "bom":
            http = canonical_encoding(self.http or "")
            if self.http and (http is None or _unicode_family(http) != _unicode_family(encoding)):
                return (
                    f"charset: HTTP said {self.http}, the byte-order mark says {encoding}: "
                    f"used {encoding}"
                )
            return None
        authority = (
            "override" if self.override else "http" if self.http
            else "declared" if self.declared else "utf-8"
        )
        if origin == authority:
            name = self.http if origin == "http" else self.declared
            if name and canonical_encoding(name) == "ascii" and encoding != "ascii":
                who = "HTTP said" if origin == "http" else "the document says"
                return (
                    f"charset: {who} {name} but the bytes are not ASCII; "
                    f"they decode as {encoding}: used {encoding}"
                )
            return None
        failed = [
            f"{who} {name}, which "
            + ("is no encoding Python knows" if canonical_encoding(name) is None
               else "does not decode the bytes")
            for who, name, stage in (
                ("the source's encoding setting says", self.override, "override"),
                ("HTTP said", None if self.override else self.http, "http"),
                ("the document says", None if self.override else self.declared, "declared"),
            )
            if name and stage != origin
        ]
        if origin == "declared":
            failed.append(f"the document says {self.declared}")
        reasons = "; ".join(failed) or "no encoding declared and the bytes are not utf-8"
        if origin == "detected":
            return f"charset: {reasons}: guessed {encoding} from the bytes"
        return f"charset: {reasons}: used {encoding}"


def _strict_text(content: bytes, encodings: Iterable[str]) -> str | None:
    for encoding in encodings:
        try:
            return content.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            continue
    return None


def _unicode_family(name: str) -> str:
    """"utf-8" for utf-8-sig, "utf-16" for utf-16-le...: what a byte-order mark decides."""
    return "-".join(name.split("-")[:2])


def _detect(content: bytes) -> str | None:
    from charset_normalizer import from_bytes

    best = from_bytes(content[: 256 * 1024]).best()
    return best.encoding if best is not None else None


def _utf8_document(text: str) -> bytes:
    text = text.lstrip("\ufeff")
    text = _XML_DECL_TEXT.sub(r"\1utf-8\3", text, count=1)
    # expat rejects them and feedparser would then fall back to its loose parser
    return strip_xml_illegal(text).encode("utf-8")


def _declares_base(text: str, document: bytes) -> bool:
    """Whether ``text`` has an attribute that may be an xml:base (``document``: its UTF-8,
    which holds every "base" the text holds)."""
    lowered = document.lower()  # ASCII only
    return (any(spelling in lowered for spelling in _BASE_SPELLINGS)
            and _DECLARES_BASE.search(text) is not None)


def strip_internal_dtd(text: str) -> tuple[str, bool]:
    """Remove a DOCTYPE's internal subset (``<!DOCTYPE rss [ ... ]>``), if any.

    Feeds have no business declaring entities: an internal subset is how the
    billion-laughs expansion and external entities (XXE, ``file:///etc/passwd``)
    arrive.  expat refuses some of them, and feedparser then falls back to its
    loose parser, so whether anything expands would depend on library internals;
    dropping the declarations first makes every reference to them inert text.
    Returns the text and whether something was removed.
    """
    start = text[:4096].upper().find("<!DOCTYPE")  # only in the prolog
    match = _INTERNAL_DTD.match(text, start) if start >= 0 else None
    if match is None:
        return text, False
    return text[: match.start()] + match.group(1) + ">" + text[match.end():], True


# --- RSS / Atom through feedparser --------------------------------------------------


def _read_date(raw: str | None) -> datetime | None:
    """A date string as the feedparser path reads it: feedparser's reading, else ours."""
    if raw is None:
        return None
    return (common_date(raw)  # feedparser's reading of the usual shapes, without it
            or _struct_to_datetime(_feedparser().datetimes._parse_date(raw))
            or lenient_datetime(raw))


def _parse_xml_feed(
    fetched: FetchResult, source: Source, content_type: str, *, fast: bool = True
) -> ParsedFeed:
    content = fetched.content
    decoded = decode_feed_bytes(
        content,
        http_charset=charset_from_content_type(content_type),
        declared=declared_xml_encoding(content),
        override=source.encoding,
    )
    text, encoding = decoded.text, decoded.encoding
    media_type = (content_type.split(";", 1)[0].strip() or "application/xml").lower()
    text, had_dtd = strip_internal_dtd(text)
    document_url = _absolute(fetched.headers.get("content-location"), fetched.url) or fetched.url
    document = _utf8_document(text)
    declares_base = _declares_base(text, document)
    warnings = [decoded.warning] if decoded.warning else []
    if had_dtd:
        warnings.append("ignored the document's entity declarations (internal DTD subset)")
    if not decoded.exact:
        warnings.append(
            f"no encoding decoded the document cleanly; used {encoding} with replacement characters"
        )
    if fast and not had_dtd:
        from aggregator.ingest.fastparse import parse_fast  # lxml: not for a warm poll

        quick = parse_fast(document, text, document_url, _read_date,
                           media_type=media_type, declares_base=declares_base)
        if quick is not None:
            return ParsedFeed(
                source_id=source.id,
                url=fetched.url,
                title=quick.title,
                link=quick.link,
                encoding=encoding,
                entries=quick.entries,
                warnings=tuple(warnings),
                parser=ParserKind.FAST,
            )
    # feedparser reads only lower-case header keys
    headers = {"content-type": f"{media_type}; charset=utf-8"}
    if declares_base:
        # Only then: given a document URL, feedparser joins URLs on every element it
        # opens (a fifth of its time).  Without xml:base, it reports URLs as written
        # and ``_entry`` resolves the few it keeps against the document URL.
        headers["content-location"] = document_url
    feedparser = _feedparser()
    result = feedparser.parse(
        document,
        response_headers=headers,
        # Relative URLs inside HTML are resolved by normalize (nh3, against
        # ``ParsedEntry.base``), which is 1.8x cheaper than feedparser's HTML pass.
        resolve_relative_uris=False,
        sanitize_html=False,
    )
    feed = result.get("feed", {})
    feed_base = _absolute(_detail_base(feed), document_url) or document_url
    entries = tuple(_entry(e, feed_base) for e in result.get("entries", []))
    if not result.get("version") and not entries and not _is_empty_feed(result, text):
        raise ParseError(_not_a_feed_reason(result, text), source_id=source.id)
    if result.get("bozo") and not isinstance(
        result.get("bozo_exception"), feedparser.CharacterEncodingOverride
    ):
        warnings.append(f"feed is not well-formed ({_bozo_reason(result)}); read leniently")
    return ParsedFeed(
        source_id=source.id,
        url=fetched.url,
        title=_text(feed.get("title")),
        link=_absolute(feed.get("link"), feed_base),
        encoding=encoding,
        entries=entries,
        warnings=tuple(warnings),
        parser=ParserKind.FEEDPARSER,
    )


def _is_empty_feed(result: Mapping[str, Any], text: str) -> bool:
    """A well-formed feed document with no items that feedparser names no version for
    (e.g. a CDF ``<CHANNEL>``): an empty feed, not an error."""
    return not result.get("bozo") and bool(_FEED_ROOT.match(text[:4096]))


def _looks_like_html(text: str) -> bool:
    head = text[:2048].lstrip().lower()
    return head.startswith("<!doctype html") or "<html" in head


def _not_a_feed_reason(result: Mapping[str, Any], text: str) -> str:
    if _looks_like_html(text):
        return "not a feed: the server sent an HTML page"
    if result.get("bozo"):
        return f"not a feed: {_bozo_reason(result)}"
    return "not a feed: no RSS or Atom root element"


def _bozo_reason(result: Mapping[str, Any]) -> str:
    exc = result.get("bozo_exception")
    message = getattr(exc, "getMessage", None)
    return str(message() if callable(message) else exc) or type(exc).__name__


def _entry(parsed: Mapping[str, Any], feed_base: str) -> ParsedEntry:
    # URLs feedparser reports may be relative (see ``_parse_xml_feed``); ``base`` of a
    # detail dict is the xml:base in effect, when there was one.
    # The stored keys as a plain dict: FeedParserDict's lookups (legacy key aliases,
    # ``updated`` falling back to ``published``) cost a sixth of this module's time.
    entry = dict(parsed)
    title_detail = entry.get("title_detail") or {}
    content = _first_content(entry.get("content") or [])
    summary = entry.get("summary")
    detail = content or entry.get("summary_detail") or title_detail
    base = _absolute(detail.get("base"), feed_base) or feed_base
    link = _entry_link(entry, base)
    return ParsedEntry(
        guid=_text(entry.get("id")),
        link=link,
        title=entry.get("title"),
        title_is_html=title_detail.get("type") in ("text/html", "application/xhtml+xml"),
        author=_author(entry),
        published=_entry_date(entry, "published"),
        updated=_entry_date(entry, "updated"),
        content=str(content["value"]) if content is not None else summary,
        summary=summary if content is not None else None,
        base=base,
        thumbnails=tuple(_media_images(entry, base)),
        image_enclosures=tuple(
            url
            for link in entry.get("links") or []  # enclosures are links rel="enclosure"
            if link.get("rel") == "enclosure" and str(link.get("type", "")).startswith("image/")
            and (url := _absolute(link.get("href"), base))
        ),
    )


def _entry_link(entry: Mapping[str, Any], base: str) -> str | None:
    """The entry's link: its link element, or its guid when that is an absolute web URL.

    feedparser copies a permalink guid (RSS ``<guid>`` without ``isPermaLink="false"``,
    Atom ``<id>``) into ``link`` when the entry has no link element; resolving that
    against the document would make ``<guid>123456</guid>`` the made-up link
    "http://portal/123456".  A guid is a link only when it is one already.
    """
    link = entry.get("link")
    from_guid = (
        entry.get("guidislink")
        and link == entry.get("id")
        and not any(item.get("href") == link for item in entry.get("links") or [])
    )
    if from_guid:
        return web_url(_text(link))
    return _absolute(link, base)


def _first_content(contents: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The HTML content item if there is one, else the first non-empty one."""
    contents = list(contents)
    for wanted in ("text/html", "application/xhtml+xml"):
        for item in contents:
            if item.get("type") == wanted and item.get("value"):
                return item
    for item in contents:
        if item.get("value"):
            return item
    return None


def _detail_base(feed: Mapping[str, Any]) -> str | None:
    """The xml:base feedparser saw on the feed's own elements, if any."""
    for key in ("title_detail", "subtitle_detail", "rights_detail"):
        detail = feed.get(key)
        if detail and detail.get("base"):
            return str(detail["base"])
    return None


def _author(entry: Mapping[str, Any]) -> str | None:
    detail = entry.get("author_detail") or {}
    name = detail.get("name") or entry.get("author")
    if not name:
        authors = [a.get("name") for a in entry.get("authors") or [] if a.get("name")]
        name = ", ".join(authors) if authors else None
    return _text(name)


def _media_images(entry: Mapping[str, Any], base: str) -> Iterable[str]:
    for thumb in entry.get("media_thumbnail") or []:
        if url := _absolute(thumb.get("url"), base):
            yield url
    for media in entry.get("media_content") or []:
        is_image = media.get("medium") == "image" or str(media.get("type", "")).startswith("image/")
        if is_image and (url := _absolute(media.get("url"), base)):
            yield url


def _struct_to_datetime(value: time.struct_time | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime(*value[:5], min(value[5], 59), tzinfo=UTC)
    except (ValueError, OverflowError, TypeError):
        return None


def _entry_date(entry: Mapping[str, Any], key: str) -> datetime | None:
    """feedparser's reading of the entry's ``key`` date, else a lenient reading of the
    string the document gave (None when it gave none, or one that cannot be read)."""
    return _struct_to_datetime(entry.get(f"{key}_parsed")) or lenient_datetime(entry.get(key))


# --- JSON Feed ----------------------------------------------------------------------


def _looks_like_json(content: bytes, content_type: str) -> bool:
    if "json" in content_type.lower():
        return True
    return content.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{"


def _parse_json_feed(fetched: FetchResult, source: Source) -> ParsedFeed:
    try:
        decoded = decode_feed_bytes(fetched.content, override=source.encoding)
        document = json.loads(decoded.text.lstrip("\ufeff"))
    except ValueError as exc:
        raise ParseError(f"invalid JSON Feed: {exc}", source_id=source.id) from None
    if not isinstance(document, dict) or not str(document.get("version", "")).startswith(
        "https://jsonfeed.org/version/"
    ):
        raise ParseError("not a feed: JSON without a JSON Feed version", source_id=source.id)
    base = _text(document.get("feed_url")) or fetched.url
    base = urljoin(fetched.url, base)
    items = document.get("items")
    if not isinstance(items, list):
        raise ParseError("invalid JSON Feed: 'items' is not a list", source_id=source.id)
    feed_authors = _json_authors(document)
    entries = tuple(
        _json_entry(item, base, feed_authors) for item in items if isinstance(item, dict)
    )
    return ParsedFeed(
        source_id=source.id,
        url=fetched.url,
        title=_text(document.get("title")),
        link=_absolute(document.get("home_page_url"), base),
        encoding=decoded.encoding,
        entries=entries,
        warnings=(decoded.warning,) if decoded.warning else (),
    )


def _json_authors(obj: Mapping[str, Any]) -> str | None:
    authors = obj.get("authors")
    if not isinstance(authors, list):
        single = obj.get("author")
        authors = [single] if isinstance(single, dict) else []
    names = [str(a["name"]).strip() for a in authors if isinstance(a, dict) and a.get("name")]
    return ", ".join(names) or None


def _json_entry(item: Mapping[str, Any], base: str, feed_author: str | None) -> ParsedEntry:
    content = item.get("content_html")
    if not isinstance(content, str):
        plain = item.get("content_text")
        content = _plain_to_html(plain) if isinstance(plain, str) else None
    summary = item.get("summary")
    images = [item.get("image"), item.get("banner_image")]
    enclosures = [
        a.get("url")
        for a in item.get("attachments") or []
        if isinstance(a, dict) and str(a.get("mime_type", "")).startswith("image/")
    ]
    item_id = item.get("id")
    link = _absolute(item.get("url") or item.get("external_url"), base)
    return ParsedEntry(
        guid=_text(item_id) if isinstance(item_id, str | int) else None,
        link=link,
        title=_text(item.get("title")) if isinstance(item.get("title"), str) else None,
        author=_json_authors(item) or feed_author,
        published=lenient_datetime(item.get("date_published")),
        updated=lenient_datetime(item.get("date_modified")),
        content=content,
        summary=_plain_to_html(summary) if isinstance(summary, str) else None,
        base=link or base,  # JSON Feed has no xml:base; content is relative to its page
        thumbnails=tuple(u for i in images if isinstance(i, str) and (u := _absolute(i, base))),
        image_enclosures=tuple(
            u for e in enclosures if isinstance(e, str) and (u := _absolute(e, base))
        ),
    )


def _plain_to_html(text: str) -> str:
    from html import escape

    paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
    return "".join(f"<p>{escape(p)}</p>" for p in paragraphs)
