"""When two portals' articles are one story: the rule, in one place.

Why: several portals republish the same story — one wire report, the same press release —
each under its own link (tracking parameters, ``http`` vs ``https``, a fragment) and with
its own noise in the title (``【独家】``, spacing, full-width punctuation).  Readers want it
once.  The rule has three derived keys, computed from an Article's fields when the store
writes it (``records.Article.link_key`` / ``title_key`` / ``fingerprint``) and compared
here only:

* ``canonical_link``: the link without tracking parameters (``utm_*``, ``spm``, ``from``,
  ``fbclid``, ``gclid``… — the global rules of ClearURLs, Neat URL and AdGuard's URL
  tracking filter, plus the Chinese portals' ``spm``/``scm``/``from``/``wfr``), without the
  fragment, with the scheme and host lower-cased, the default port dropped, ``http`` read
  as ``https`` and the remaining parameters sorted;
* ``title_key``: the title NFKC-normalized and case-folded, leading bracketed tags
  (``【独家】``, ``[快讯]``) dropped, whitespace and punctuation (CJK punctuation too)
  removed;
* ``fingerprint``: a 64-bit SimHash of the plain text's character 3-grams (after the
  same folding as titles), as 16 hex digits.  SimHash rather than MinHash: one 64-bit
  value per article is a plain column and a Hamming distance, where MinHash needs ~100
  values per article to estimate Jaccard as well; the title key already picks the few
  candidates, so SimHash's weaker recall on heavy edits does not matter (bench/stories.py
  measures it).

``same_story``: the same canonical link, or the same title key and fingerprints within
``MAX_DISTANCE`` bits.  Articles without text (under ``MIN_TEXT`` characters) have no
fingerprint: a title alone (``每日早报``) is not evidence of one story.

Standard library only, imports nothing from the project: it sits at the bottom of the
import graph beside ``rules`` so that records, store and publish share it.  It must NOT
fetch anything, touch a database, or decide anything but "same story or not".
"""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

__all__ = [
    "MAX_DISTANCE",
    "MIN_TEXT",
    "TRACKING_PARAMETERS",
    "canonical_link",
    "distance",
    "fingerprint",
    "link_key",
    "plain_text",
    "same_story",
    "text_fingerprint",
    "title_digest",
    "title_key",
]

# Query parameters that only say where a reader came from (lower-cased names).
TRACKING_PARAMETERS = frozenset({
    # Google / Microsoft / Meta / Yandex / others (ClearURLs "globalRules", Neat URL, AdGuard)
    "gclid", "gclsrc", "dclid", "gbraid", "wbraid", "msclkid", "fbclid", "yclid", "ysclid",
    "igshid", "twclid", "ttclid", "li_fat_id", "srsltid", "_ga", "_gl", "_openstat",
    "mc_cid", "mc_eid", "mkt_tok", "_hsenc", "_hsmi", "hsctatracking", "oly_anon_id",
    "oly_enc_id", "vero_id", "wickedid", "rb_clickid", "s_cid", "icid", "cmpid",
    "fb_action_ids", "fb_action_types", "fb_ref", "fb_source", "action_object_map",
    "action_type_map", "action_ref_map", "guccounter", "guce_referrer", "guce_referrer_sig",
    # Chinese portals and apps: Alibaba's spm/scm, "from=timeline", WeChat/Weibo shares
    "spm", "scm", "from", "isappinstalled", "wfr", "share_token", "share_source",
    "share_medium", "share_from", "sharer_shareid", "sharer_sharetime", "tt_from",
    "utm_source_tt", "ivk_sa", "wxfrom", "scene", "clicktime", "enterid",
    "sessionid", "vd_source", "traceid", "track_id", "ref", "referer",
})
# Parameter name prefixes that are tracking whatever follows (utm_source, mtm_campaign…).
_TRACKING_PREFIXES = ("utm_", "ga_", "mtm_", "pk_", "hmb_", "stm_", "__hs", "_hs", "ns_")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# A link ``canonical_link`` would only give the https scheme: a lower-case host name (no
# port, no trailing dot), a path of characters ``quote`` keeps, no query, no fragment.
_PLAIN_LINK = re.compile(r"https?://(?P<host>[a-z0-9-]+(?:\.[a-z0-9-]+)*)"
                         r"(?P<path>/[A-Za-z0-9/%:@!$&'()*+,;=._~-]*)?")

MIN_TEXT = 40  # characters of folded text below which an article has no fingerprint
MAX_DISTANCE = 12  # bits; unrelated texts differ in ~32 of 64 (bench/stories.py measures it)

_TAG = re.compile(r"<[^>]*>")
_SKIPPED_ELEMENTS = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
# Tags a title starts with: 【独家】, [快讯], 〔视频〕, (图), （图）, ［组图］, 〖…〗.
_TITLE_TAGS = re.compile(r"^(?:\s*(?:【[^】]{0,20}】|\[[^\]]{0,20}\]|〔[^〕]{0,20}〕|"
                         r"〖[^〗]{0,20}〗|［[^］]{0,20}］|\([^)]{0,8}\)|（[^）]{0,8}）))+")


def canonical_link(url: str) -> str:
    """``url`` as one story's address: tracking parameters and fragment gone, scheme
    and host lower-cased, default port dropped, ``http`` read as ``https``, remaining
    parameters sorted.  Something that is not an absolute web URL comes back stripped
    of surrounding whitespace only."""
    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return text
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if scheme not in _DEFAULT_PORTS or not host:
        return text
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    query = sorted((name, value) for name, value in parse_qsl(parts.query, keep_blank_values=True)
                   if not _is_tracking(name))
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    return urlunsplit(("https", netloc, path, urlencode(query), ""))


def link_key(url: str | None) -> str | None:
    """What the store indexes a link by: a digest of its canonical form (canonical links
    can outgrow an index entry); None without a link, and None for a site's front page
    (no path, no query): feeds that link every entry to their home page would otherwise
    make all their articles one story."""
    if not url or not url.strip():
        return None
    plain = _PLAIN_LINK.fullmatch(url)
    if plain is not None:  # most links: already canonical but for the scheme
        if not plain["path"] or plain["path"] == "/":
            return None
        return _digest(f"https://{plain['host']}{plain['path']}")
    canonical = canonical_link(url)
    try:
        parts = urlsplit(canonical)
    except ValueError:  # not a URL ("http://["): no front page either
        return _digest(canonical)
    if parts.scheme == "https" and parts.path in ("", "/") and not parts.query:
        return None
    return _digest(canonical)


def _digest(canonical: str) -> str:
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def title_key(title: str) -> str:
    """The title with what differs between portals removed: NFKC, case folded, leading
    bracketed tags (``【独家】``) dropped, no whitespace, punctuation or symbols."""
    folded = unicodedata.normalize("NFKC", title).casefold()
    untagged = _TITLE_TAGS.sub("", folded)
    return _letters(untagged or folded)


def title_digest(title: str) -> str | None:
    """What the store indexes a title by: a digest of ``title_key``; None when nothing
    of the title is left (a title of punctuation only)."""
    key = title_key(title)
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32] if key else None


def plain_text(content_html: str) -> str:
    """The text of sanitized article HTML (tags dropped, entities decoded)."""
    return html.unescape(_TAG.sub(" ", _SKIPPED_ELEMENTS.sub(" ", content_html)))


def text_fingerprint(content_html: str, summary: str) -> str | None:
    """An article's fingerprint: of its content's text, else of its summary (the rule the
    records and the migrations that recompute stored fingerprints share)."""
    return fingerprint(plain_text(content_html) or summary)


def fingerprint(text: str) -> str | None:
    """A 64-bit SimHash of ``text``'s character 3-grams (folded like titles), as 16 hex
    digits; None when fewer than ``MIN_TEXT`` characters are left.

    Each gram ``abc`` is hashed by simple tabulation (``T0[a] ^ T1[b] ^ T2[c]``, 3-wise
    independent; the three 64-bit table entries of a character are its 24-byte BLAKE2b
    digest, little-endian), and bit *i* of the result is set when more than half of the
    gram occurrences have bit *i* set.  The tables make it bulk work: the text becomes one
    byte string of table entries, the grams' hashes are three big-integer XORs of strided
    views of it, and each bit is counted by ``bytes.translate`` — no Python loop per gram.
    Stored values are compared with new ones, so a change of this function is a new
    migration that drops them (the store derives them again when a match needs them), as
    0007 did for the first, per-gram BLAKE2b version."""
    letters = _letters(unicodedata.normalize("NFKC", text).casefold())
    if len(letters) < MIN_TEXT:
        return None
    entries = memoryview(b"".join(map(_TABLES.__getitem__, letters))).cast("Q")
    grams = len(letters) - 2
    hashes = (int.from_bytes(entries[0:3 * grams:3], "little")
              ^ int.from_bytes(entries[4:3 * grams + 4:3], "little")
              ^ int.from_bytes(entries[8:3 * grams + 8:3], "little")).to_bytes(8 * grams, "little")
    value = 0
    for position in range(7, -1, -1):  # little-endian: byte 7 holds the top 8 bits
        column = hashes[position::8]
        for bit_set in _BIT_SET:  # how many grams have that bit set
            value = value << 1 | (2 * column.translate(bit_set).count(1) > grams)
    return f"{value:016x}"


def distance(a: str, b: str) -> int:
    """How many of 64 bits two fingerprints differ in."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


def same_story(link_a: str | None, title_a: str | None, print_a: str | None,
               link_b: str | None, title_b: str | None, print_b: str | None) -> bool:
    """Whether two articles, given by their keys (``link_key``, ``title_digest``,
    ``fingerprint``), are one story: the same link key, or the same title key and
    fingerprints at most ``MAX_DISTANCE`` bits apart."""
    if link_a is not None and link_a == link_b:
        return True
    if title_a is None or title_a != title_b or print_a is None or print_b is None:
        return False
    return distance(print_a, print_b) <= MAX_DISTANCE


# For each bit of a byte, most significant first: the table mapping a byte to 1 when it
# has that bit set, else to 0.
_BIT_SET = tuple(bytes(byte >> (7 - bit) & 1 for byte in range(256)) for bit in range(8))
_CACHE_LIMIT = 65_536  # distinct characters remembered (a hostile text cannot grow it)


class _Tables(dict[str, bytes]):
    """character → its three 64-bit tabulation entries (24 bytes), computed once."""

    def __missing__(self, char: str) -> bytes:
        if len(self) >= _CACHE_LIMIT:
            self.clear()
        entries = self[char] = hashlib.blake2b(char.encode("utf-8"), digest_size=24).digest()
        return entries


_TABLES = _Tables()


def _is_tracking(name: str) -> bool:
    lowered = name.lower()
    return lowered in TRACKING_PARAMETERS or lowered.startswith(_TRACKING_PREFIXES)


def _letters(text: str) -> str:
    """Letters, digits and marks only (Unicode categories L, N, M): whitespace,
    punctuation (ASCII, full-width, CJK) and symbols removed.

    ``[^\\W_]`` is exactly L and N (tests/test_stories.py checks every code point), so
    only marks need a look: the characters of the text that are not L or N are few and
    mostly the same punctuation, and a text with a mark keeps it through a pattern that
    names it."""
    others = set(_NOT_ALNUM.findall(text))
    marks = "".join(sorted(ch for ch in others if unicodedata.category(ch)[0] == "M"))
    if not marks:
        return _NOT_ALNUM.sub("", text)
    return re.sub(f"[^\\w{re.escape(marks)}]|_", "", text)


_NOT_ALNUM = re.compile(r"[\W_]")
