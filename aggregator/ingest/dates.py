"""Dates as real feeds write them, read leniently with the standard library.

Shared by both parse paths (``parse`` through feedparser, ``fastparse`` through lxml)
and by ``scrape`` (list pages), so that a date string reads the same whichever path
parsed the document.  This module must not guess: a date it cannot read is None,
never a made-up one; it knows nothing of feeds, entries or documents.
"""

from __future__ import annotations

import contextlib
import email.utils
import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any

__all__ = ["lenient_datetime"]

# Dates feedparser does not read.
#
# Real feeds write RFC 822 dates with a localized weekday ("mer, 16 nov 2022", "Mi,",
# "星期三,"), localized months ("16 dic 2022", "3 Okt 2022"), no space before the zone
# ("13:08:54+0900"), "GMT+8", and RFC 822 dates in JSON Feed (which wants RFC 3339);
# Chinese portals write "2022-11-16 08:00", "2022/11/16" or "2022年11月16日 08:00".
# The standard library reads all of these once they are normalized.

# Localized month names → the English abbreviations ``email.utils`` reads: Italian,
# French, German, Spanish, Portuguese and Dutch (abbreviated and full; no two
# languages disagree on a spelling), and "11月" (Chinese/Japanese).
_MONTH_SPELLINGS = (
    "gen gennaio janv janvier ene enero janeiro januar jänner jän januari",
    "febbraio févr fév février febr februar febrero fev fevereiro februari",
    "marzo mars märz mär mrz março maart mrt",
    "aprile avr avril abr abril",
    "mag maggio mai mayo maio mei",
    "giu giugno juin juni junio junho",
    "lug luglio juil juillet juli julio julho",
    "ago agosto août aout augustus",
    "set settembre sept septembre septiembre setiembre setembro",
    "ott ottobre octobre okt oktober octubre out outubro",
    "novembre noviembre novembro",
    "dic dicembre déc décembre dez dezember diciembre dezembro",
)
_ENGLISH_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun",
                   "jul", "aug", "sep", "oct", "nov", "dec")
_MONTHS: dict[str, str] = {
    spelling: _ENGLISH_MONTHS[number]
    for number, spellings in enumerate(_MONTH_SPELLINGS)
    for spelling in (*spellings.split(), f"{number + 1}月", _ENGLISH_MONTHS[number])
}
# Zone names ``email.utils`` knows; any other name is not guessed at, except these
# unambiguous ones.
_EMAIL_ZONES = frozenset(
    ("UT", "UTC", "GMT", "Z", "AST", "ADT", "EST", "EDT", "CST", "CDT", "MST", "MDT", "PST", "PDT")
)
_MORE_ZONES = {"CET": "+0100", "CEST": "+0200", "MET": "+0100", "MEST": "+0200",
               "EET": "+0200", "EEST": "+0300", "WET": "+0000", "WEST": "+0100",
               "MSK": "+0300", "HKT": "+0800", "SGT": "+0800", "JST": "+0900",
               "KST": "+0900"}
# A leading word before the day number, with its comma: a weekday in any language
# ("mer", "Mi.", "Mittwoch", "星期三") when it has a comma or is not a month name
# ("mar," is Tuesday in Italian, French and Spanish; "Nov 16 2022" starts with a month).
_LEADING_WORD = re.compile(r"([^\W\d_]+)\.?\s*(,?)\s*(?=\d)")
_GLUED_ZONE = re.compile(r"(\d:\d\d)([+-]\d\d:?\d\d|Z)$", re.IGNORECASE)
_NAMED_OFFSET = re.compile(r"(?:GMT|UTC)([+-])(\d{1,2})(?::?(\d\d))?$", re.IGNORECASE)
_COLON_OFFSET = re.compile(r"([+-]\d\d):(\d\d)$")
_NUMERIC_ZONE = re.compile(r"[+-](\d\d)(\d\d)")
_YMD = re.compile(
    r"(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?"
    r"(?:\s*[(（]?(?:星期|周|週)[一二三四五六日天][)）]?)?"
    r"(?:\s*T?\s*(\d{1,2}):(\d\d)(?::(\d\d)(?:[.,](\d{1,6}))?)?)?"
    r"\s*(Z|UTC|GMT|[+-]\d\d(?::?\d\d)?)?",
    re.IGNORECASE,
)
# Earlier than this is a placeholder ("1970-01-01T00:00:00Z", "0001-01-01") or a
# misreading, not a feed date.
# (Far-future dates are normalize's to refuse: it knows when the entry was seen.)
_EARLIEST_DATE = datetime(1970, 1, 2, tzinfo=UTC)


def lenient_datetime(raw: Any, *, zone: tzinfo = UTC) -> datetime | None:
    """A date string as real feeds write it → aware UTC, or None when it cannot be read.

    RFC 822/2822 (``email.utils``) after normalizing the spelling, ISO 8601
    (``datetime.fromisoformat``) and year-month-day forms.  A date without a zone is
    in ``zone`` (UTC unless the caller knows better, as a list page's ``timezone``);
    an unknown zone name is not guessed at (None).  Never invents a date.
    """
    if not isinstance(raw, str):
        return None
    text = " ".join(raw.split())
    if not text:
        return None
    try:
        parsed = _iso_date(text) or _rfc822_date(text)
        if parsed is None:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=zone)
        parsed = parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return parsed if parsed >= _EARLIEST_DATE else None


def _iso_date(text: str) -> datetime | None:
    if text[:4].isdigit():
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(text)
    match = _YMD.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    tz = None
    if zone and zone.upper() not in ("Z", "UTC", "GMT"):
        digits = zone[1:].replace(":", "")
        minutes = int(digits[:2]) * 60 + int(digits[2:] or 0)
        tz = timezone(timedelta(minutes=minutes if zone[0] == "+" else -minutes))
    elif zone:
        tz = UTC
    return datetime(
        int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
        int((fraction or "0").ljust(6, "0")), tzinfo=tz,
    )


def _rfc822_date(text: str) -> datetime | None:
    leading = _LEADING_WORD.match(text)
    if leading and (leading.group(2) or leading.group(1).lower() not in _MONTHS):
        text = text[leading.end():]  # a weekday, whatever its language: it adds nothing
    text = _GLUED_ZONE.sub(r"\1 \2", text)
    text = _NAMED_OFFSET.sub(
        lambda m: f"{m.group(1)}{int(m.group(2)):02d}{m.group(3) or '00'}", text
    )
    text = _COLON_OFFSET.sub(r"\1\2", text)
    tokens = text.split()
    for index, token in enumerate(tokens[:2]):  # "16 nov" or "nov 16"
        word = token.rstrip(".,").lower()
        if word in _MONTHS:
            tokens[index] = _MONTHS[word]
        elif word.isdigit():
            tokens[index] = word  # German "16." day
    if not tokens:
        return None
    zone = tokens[-1]
    if zone[:1] in "+-":
        numeric = _NUMERIC_ZONE.fullmatch(zone)
        if numeric is None or int(numeric.group(1)) > 14 or int(numeric.group(2)) > 59:
            return None
    elif zone.isalpha():
        zone = zone.upper()
        if zone not in _EMAIL_ZONES and zone not in _MORE_ZONES:
            return None  # a zone we would have to guess: not a date we can read
        tokens[-1] = _MORE_ZONES.get(zone, zone)
    try:
        parsed = email.utils.parsedate_to_datetime(" ".join(tokens))
    except (ValueError, TypeError, IndexError):
        return None
    years = [int(token) for token in tokens if len(token) == 4 and token.isdigit()]
    if years and parsed.year != years[0]:
        return None  # email.utils reads "0001" as a two-digit year: 2001
    return parsed
