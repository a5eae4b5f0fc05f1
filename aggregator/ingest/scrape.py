"""Parse stage for pages without a feed (``kind: html``): a list page → ``ParsedFeed``.

Many Chinese portals publish no feed, only list pages ("新闻列表") wrapped in navigation,
sidebars and footers.  An operator names, with CSS selectors (``PageSelectors``, the
config's ``html:`` block), where the entries are: ``item`` matches one element per entry;
``title``, ``link``, ``date``, ``summary`` and ``image`` are looked up inside each item.
``"a"`` is the whitespace-normalized text of the first match; ``"a@href"`` is that
match's attribute; ``"@href"`` the item's own attribute (an empty selector is the item).
``link`` and ``image`` written without ``@`` take the match's ``href`` / ``src``: the text
of a link is never its address.

What comes out is exactly what ``parse.parse`` makes of a feed, so normalize, dedup keys,
the store and publishing need no change: links and images absolute (against the page URL,
or its ``<base href>``), ``summary`` the match's inner HTML as written (normalize sanitizes
it), dates aware UTC or None (normalize then dates the entry when it was first seen).
Pages are decoded by ``parse.decode_feed_bytes`` with the same rules as feeds (override,
BOM, HTTP charset, ``<meta charset>`` / ``http-equiv``, gb2312 → GB18030, big5 → HKSCS /
cp950): one decoder, not two.

Dates without ``date_format`` are read by ``dates.lenient_datetime`` (ISO, RFC 822,
``2021-05-21 08:30``, ``2021/05/21``, ``2021.05.21``, ``2021年5月21日 08:30``), in the
source's ``timezone`` when they carry none.  A date without a year (``05-21 08:30``,
``5月21日``) is in the year of the page's HTTP ``Date`` (else now) in that zone, or the
year before when that would put it more than a day in the future (a December entry read
in January).  A date that cannot be read is None, never a guess.

Must NOT: fetch, sanitize, rewrite URLs inside HTML, or report an empty success.  A
selector that matches nothing (``item`` on the page, ``title`` or ``link`` in every item)
is a ``ParseError`` naming the source and the selector; an item without a title or a link
is skipped and counted in a warning.  The lxml parser reads no network and no DTD, and
at most ``MAX_ITEMS`` items are read; it runs, like feed parsing, in a parse worker with a
time and memory budget.  This module is the only importer of cssselect.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import lxml.html
from cssselect import HTMLTranslator, SelectorError
from lxml import etree

from aggregator.errors import ConfigError, ParseError
from aggregator.ingest.dates import lenient_datetime
from aggregator.ingest.parse import (
    charset_from_content_type,
    declared_html_encoding,
    decode_feed_bytes,
)
from aggregator.records import (
    FetchResult,
    PageSelectors,
    ParsedEntry,
    ParsedFeed,
    Source,
    SourceKind,
)
from aggregator.rules import strip_xml_illegal, web_url

MAX_ITEMS = 1000  # a list page longer than this is read to here (and warned about)
_SELECTOR_FIELDS = ("item", "title", "link", "date", "summary", "image")
_DEFAULT_ATTRIBUTE = {"link": "href", "image": "src"}
# "sel@attr": the last "@" followed by an attribute name (CSS itself never uses "@"
# outside quoted strings, and a quoted "@" is not followed by a name and the end).
_ATTRIBUTE = re.compile(r"^(?P<css>.*?)\s*@(?P<attr>[A-Za-z_:][-\w:.]*)$", re.DOTALL)
_OFFSET = re.compile(r"^(?:UTC|GMT)?\s*([+-])(\d{1,2})(?::?(\d\d))?$", re.IGNORECASE)
# A year-month-day date inside longer text, read then by ``dates.lenient_datetime``.
_DATE_WITHIN = re.compile(
    r"(?<!\d)\d{4}\s*[-/.年]\s*\d{1,2}\s*[-/.月]\s*\d{1,2}(?!\d)\s*日?"
    r"(?:\s*T?\s*\d{1,2}:\d\d(?::\d\d)?)?(?:\s*(?:Z|[+-]\d\d:?\d\d)(?!\d))?"
)
# Dates without a year, as list pages write them: "05-21 08:30", "05/21", "5月21日 08:30";
# never the end of a year-month-day date.
_MONTH_DAY = re.compile(
    r"(?<![\d\-/.年])(\d{1,2})\s*[-/.月]\s*(\d{1,2})(?![\d\-/.])\s*日?"
    r"(?:\s*(\d{1,2}):(\d\d)(?::(\d\d))?)?"
)
_SKIPPED_TAGS = ("script", "style", "noscript", "template")


@dataclass(frozen=True, slots=True)
class _Selector:
    """One compiled field selector: an XPath from the CSS part (None: the item itself)
    and the attribute to read (None: the text)."""

    css: str
    xpath: etree.XPath | None
    attribute: str | None

    def first(self, item: lxml.html.HtmlElement) -> lxml.html.HtmlElement | None:
        if self.xpath is None:
            return item
        matches = self.xpath(item)
        return matches[0] if matches else None

    def value(self, item: lxml.html.HtmlElement) -> str | None:
        """The attribute (stripped) or the text (whitespace-normalized) of the first
        match, None when nothing matches or it is empty."""
        element = self.first(item)
        if element is None:
            return None
        if self.attribute is not None:
            raw = element.get(self.attribute)
            return raw.strip() or None if raw is not None else None
        return " ".join(element.text_content().split()) or None


# --- selectors and settings, checked when the config loads -----------------------------


def check_page_sources(sources: Iterable[Source], path: str | None = None) -> None:
    """Raise ``ConfigError`` naming the source and the field (``html.item``…) for the
    first source whose ``content_selector`` or (``kind: html``) selectors, ``date_format``
    or ``timezone`` cannot be used.  The CLI and the daemon's reload call this after
    loading the config: the config module is data only and does not import cssselect
    (this module is its one home)."""
    for source in sources:
        if source.content_selector is not None:  # full_text's, on article pages: plain CSS
            try:
                _compile("item", source.content_selector)
            except _BadSetting as exc:
                raise ConfigError(exc.reason, path=path, source_id=source.id,
                                  field="content_selector") from None
        if source.kind is not SourceKind.HTML or source.page is None:
            continue
        try:
            compile_selectors(source.page)
            page_timezone(source.page.timezone)
            check_date_format(source.page.date_format)
        except _BadSetting as exc:
            raise ConfigError(exc.reason, path=path, source_id=source.id,
                              field=f"html.{exc.field}") from None


class _BadSetting(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


def compile_selectors(page: PageSelectors) -> dict[str, _Selector]:
    """Every selector of ``page`` compiled, keyed by field; ``_BadSetting`` on a bad one."""
    compiled: dict[str, _Selector] = {}
    for name in _SELECTOR_FIELDS:
        text = getattr(page, name)
        if text is not None:
            compiled[name] = _compile(name, text)
    return compiled


@functools.lru_cache(maxsize=512)
def _compile(field: str, text: str) -> _Selector:
    text = text.strip()
    match = _ATTRIBUTE.match(text) if field != "item" else None
    css, attribute = (match["css"], match["attr"]) if match else (text, None)
    if attribute is None and not css:
        raise _BadSetting(field, "empty selector")
    attribute = attribute or _DEFAULT_ATTRIBUTE.get(field)
    if not css:
        return _Selector(css, None, attribute.lower() if attribute else None)
    try:
        xpath = HTMLTranslator().css_to_xpath(css, prefix="descendant-or-self::")
        compiled = etree.XPath(xpath)
    except SelectorError as exc:
        raise _BadSetting(field, f"invalid CSS selector {text!r}: {exc}") from None
    except etree.XPathError as exc:  # pragma: no cover - cssselect writes valid XPath
        raise _BadSetting(field, f"unusable CSS selector {text!r}: {exc}") from None
    return _Selector(css, compiled, attribute.lower() if attribute else None)


def page_timezone(text: str | None) -> tzinfo:
    """``"+08:00"`` / ``"+0800"`` / ``"UTC+8"`` / ``"Asia/Shanghai"`` → a tzinfo (None:
    UTC); ``_BadSetting`` otherwise."""
    if text is None or text.strip().upper() in ("", "Z", "UTC", "GMT"):
        return UTC
    text = text.strip()
    match = _OFFSET.match(text)
    if match:
        sign, hours, minutes = match.groups()
        offset = timedelta(hours=int(hours), minutes=int(minutes or 0))
        if offset > timedelta(hours=14) or int(minutes or 0) > 59:
            raise _BadSetting("timezone", f"{text!r} is not a UTC offset like +08:00")
        return timezone(-offset if sign == "-" else offset)
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise _BadSetting("timezone", f"{text!r} is neither a UTC offset like +08:00 "
                                      "nor a zone name like Asia/Shanghai") from None


def check_date_format(fmt: str | None) -> None:
    """A strptime format must read back a date it wrote, else ``_BadSetting``."""
    if fmt is None:
        return
    sample = datetime(2021, 5, 21, 8, 30, 15, tzinfo=UTC)
    try:
        datetime.strptime(sample.strftime(fmt), fmt)
    except ValueError as exc:
        raise _BadSetting("date_format", f"{fmt!r} is not a strptime format that reads "
                                         f"dates back: {exc}") from None
    if "%" not in fmt:
        raise _BadSetting("date_format", f"{fmt!r} has no strptime directive such as %Y")


# --- the page ---------------------------------------------------------------------------


def parse_page(fetched: FetchResult, source: Source) -> ParsedFeed:
    """Read one fetched list page with ``source.page``, or raise ``ParseError`` naming
    the source (and the selector, when one matched nothing)."""
    page = source.page
    if page is None:
        raise ParseError("kind html without html: selectors", source_id=source.id)
    try:
        selectors = compile_selectors(page)
        zone = page_timezone(page.timezone)
    except _BadSetting as exc:
        raise ParseError(f"html.{exc.field}: {exc.reason}", source_id=source.id) from None
    if not fetched.content.strip():
        raise ParseError("empty response body", source_id=source.id)
    content_type = fetched.headers.get("content-type", "")
    decoded = decode_feed_bytes(
        fetched.content,
        http_charset=charset_from_content_type(content_type),
        declared=declared_html_encoding(fetched.content),
        override=source.encoding,
    )
    warnings = [decoded.warning] if decoded.warning else []
    if not decoded.exact:
        warnings.append(f"no encoding decoded the page cleanly; used {decoded.encoding} "
                        "with replacement characters")
    document = _document(decoded.text, source)
    base = _base_url(document, fetched.url)
    items = selectors["item"].xpath(document)  # type: ignore[misc]
    if not items:
        raise ParseError(f"html.item selector {page.item!r} matched nothing on the page",
                         source_id=source.id)
    if len(items) > MAX_ITEMS:
        warnings.append(f"html.item matched {len(items)} elements: read the first {MAX_ITEMS}")
        items = items[:MAX_ITEMS]
    reference = _reference_time(fetched)
    reader = _DateReader(page.date_format, zone, reference)
    rows = [_Row.read(item, selectors, base, reader) for item in items]
    entries = tuple(row.entry for row in rows if row.entry is not None)
    for name in ("title", "link"):
        if all(getattr(row, name) is None for row in rows):
            raise ParseError(
                f"html.{name} selector {getattr(page, name)!r} matched nothing in any of "
                f"the {len(rows)} items of html.item {page.item!r}", source_id=source.id)
    if not entries:
        raise ParseError(f"none of the {len(rows)} items of html.item {page.item!r} has "
                         "both a title and a link", source_id=source.id)
    warnings += _item_warnings(rows, page)
    page_title = document.find(".//title")
    return ParsedFeed(
        source_id=source.id,
        url=fetched.url,
        title=" ".join(page_title.text_content().split()) or None
        if page_title is not None else None,
        link=fetched.url,
        encoding=decoded.encoding,
        entries=entries,
        warnings=tuple(warnings),
    )


def _document(text: str, source: Source) -> lxml.html.HtmlElement:
    """The page's tree: parsed from UTF-8 that says so (whatever its meta says, the text
    is decoded already), without network, comments or processing instructions, and
    without the script/style text that would leak into an item's text."""
    parser = lxml.html.HTMLParser(encoding="utf-8", no_network=True, remove_comments=True,
                                  remove_pis=True, huge_tree=False)
    try:
        document = lxml.html.document_fromstring(
            strip_xml_illegal(text.lstrip("\ufeff")).encode("utf-8"), parser=parser)
    except (etree.ParserError, ValueError) as exc:
        raise ParseError(f"not an HTML page: {exc}", source_id=source.id) from None
    etree.strip_elements(document, *_SKIPPED_TAGS, with_tail=False)
    return document


def _base_url(document: lxml.html.HtmlElement, page_url: str) -> str:
    """The page URL, or its first ``<base href>`` resolved against it (a web URL only:
    a ``javascript:`` base must not make every link executable)."""
    for base in document.iterfind(".//base[@href]"):
        with_base = web_url(_join(page_url, base.get("href", "")) or "")
        return with_base or page_url
    return page_url


def _join(base: str, url: str) -> str | None:
    url = url.strip()
    if not url:
        return None
    try:
        return urljoin(base, url)
    except ValueError:
        return None


def _reference_time(fetched: FetchResult) -> datetime:
    """"Now" for dates without a year: the server's ``Date`` header, else this clock."""
    with_date = fetched.headers.get("date")
    if with_date:
        try:
            parsed = parsedate_to_datetime(with_date)
        except (TypeError, ValueError, IndexError):
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed.astimezone(UTC)
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class _Row:
    """What one item gave: its title and link (None: missing), its entry (None:
    skipped), and which optional fields matched."""

    title: str | None
    link: str | None
    entry: ParsedEntry | None
    date_text: str | None
    dated: bool
    summary: bool
    image: bool

    @classmethod
    def read(cls, item: lxml.html.HtmlElement, selectors: dict[str, _Selector], base: str,
             reader: _DateReader) -> _Row:
        title = selectors["title"].value(item)
        raw_link = selectors["link"].value(item)
        link = web_url(_join(base, raw_link) or "") if raw_link else None
        date_text = selectors["date"].value(item) if "date" in selectors else None
        date = reader.read(date_text) if date_text else None
        summary = _summary(item, selectors.get("summary"))
        image = None
        if "image" in selectors and (raw := selectors["image"].value(item)):
            image = web_url(_join(base, raw) or "")
        entry = None
        if title and link:
            entry = ParsedEntry(link=link, title=title, published=date, summary=summary,
                                base=base, thumbnails=(image,) if image else ())
        return cls(title, link, entry, date_text, date is not None, summary is not None,
                   image is not None)


def _summary(item: lxml.html.HtmlElement, selector: _Selector | None) -> str | None:
    """The first match's inner HTML as written (an attribute: that text, escaped)."""
    if selector is None:
        return None
    if selector.attribute is not None:
        text = selector.value(item)
        return _escape(text) if text else None
    element = selector.first(item)
    if element is None:
        return None
    inner = _escape(element.text or "") + "".join(
        lxml.html.tostring(child, encoding="unicode", with_tail=True) for child in element)
    return inner.strip() or None


def _escape(text: str) -> str:
    from html import escape

    return escape(text, quote=False)


def _item_warnings(rows: Sequence[_Row], page: PageSelectors) -> list[str]:
    warnings = []
    skipped = [index for index, row in enumerate(rows, 1) if row.entry is None]
    if skipped:
        shown = ", ".join(map(str, skipped[:5])) + (", …" if len(skipped) > 5 else "")
        warnings.append(f"html: skipped {len(skipped)} of {len(rows)} items without a title "
                        f"({page.title!r}) or a web link ({page.link!r}): item {shown}")
    kept = [row for row in rows if row.entry is not None]
    if page.date is not None:
        if not any(row.date_text for row in kept):
            warnings.append(f"html.date selector {page.date!r} matched nothing in any item: "
                            "entries are dated when first seen")
        unread = [row.date_text for row in kept if row.date_text and not row.dated]
        if unread:
            how = f" with date_format {page.date_format!r}" if page.date_format else ""
            warnings.append(f"html.date: {len(unread)} date(s) could not be read{how} "
                            f"(e.g. {unread[0]!r}): those entries are dated when first seen")
    for name in ("summary", "image"):
        if getattr(page, name) is not None and not any(getattr(row, name) for row in kept):
            warnings.append(f"html.{name} selector {getattr(page, name)!r} matched nothing "
                            "in any item")
    return warnings


# --- dates ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _DateReader:
    """Reads one page's dates: ``fmt`` (strptime) or the common forms, in ``zone`` when
    they carry none; ``reference`` is "now" for dates without a year."""

    fmt: str | None
    zone: tzinfo
    reference: datetime

    def read(self, text: str) -> datetime | None:
        text = " ".join(text.split())
        readers: tuple[Callable[[str], datetime | None], ...] = (
            (self._formatted,) if self.fmt else (self._lenient, self._within, self._month_day))
        for reader in readers:
            with_date = reader(text)
            if with_date is not None:
                return with_date
        return None

    def _formatted(self, text: str) -> datetime | None:
        assert self.fmt is not None
        try:
            parsed = datetime.strptime(text, self.fmt)
            if "%Y" not in self.fmt and "%y" not in self.fmt:
                return self._in_reference_year(parsed.month, parsed.day, parsed.hour,
                                               parsed.minute, parsed.second)
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=self.zone)
        return parsed.astimezone(UTC)

    def _lenient(self, text: str) -> datetime | None:
        return lenient_datetime(text, zone=self.zone)

    def _within(self, text: str) -> datetime | None:
        """A year-month-day date inside longer text ("发布时间：2021-05-21 08:30")."""
        match = _DATE_WITHIN.search(text)
        return lenient_datetime(match.group(0), zone=self.zone) if match else None

    def _month_day(self, text: str) -> datetime | None:
        match = _MONTH_DAY.search(text)
        if match is None:
            return None
        month, day, hour, minute, second = (int(g) if g else 0 for g in match.groups())
        try:
            return self._in_reference_year(month, day, hour, minute, second)
        except ValueError:
            return None

    def _in_reference_year(self, month: int, day: int, hour: int, minute: int,
                           second: int) -> datetime:
        year = self.reference.astimezone(self.zone).year
        when = datetime(year, month, day, hour, minute, second, tzinfo=self.zone)
        if when - self.reference > timedelta(days=1):
            when = when.replace(year=year - 1)
        return when.astimezone(UTC)

