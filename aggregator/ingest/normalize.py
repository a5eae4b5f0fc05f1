"""Normalize stage: ``ParsedEntry`` → ``Article``, the one schema (shared/seed).

Pure functions, no I/O: given the same entry, source, options and ``seen_at`` the
result is the same, which is what makes "did this article change?" a hash
comparison.  Here happen all the decisions about an article's content:

- HTML is sanitized with nh3 against an allowlist (harmless inline styles such
  as ``text-indent``/``text-align`` survive, as in the seed; scripts, handlers,
  ``javascript:`` URLs, iframes do not), every URL is made absolute, images are
  routed through the configured image proxy (a prefix, or our own signed ``/img/``
  endpoint: ``aggregator.imageproxy``) and get ``referrerpolicy``;
- the title becomes plain text (falling back to the summary, the link, then
  ``rules.UNTITLED``), the author falls back to the source's name, the date falls
  back published → updated → first seen (always aware UTC);
- every URL kept (link, images, headimg/thumbnail) is a web URL (``rules.web_url``)
  and no text keeps a character XML cannot carry (``rules.strip_xml_illegal``);
- headimg/thumbnail = first image of the rewritten content, else a media
  thumbnail or image enclosure, else the configured default image.

The rules themselves live in ``aggregator.rules``; this is where they are applied to
every article made from a feed entry, so the writers can trust the record.  This
module must not fetch, parse XML or touch the database.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import html
import json
import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from urllib.parse import urljoin

import nh3

from aggregator import imageproxy
from aggregator.records import Article, NormalizeOptions, ParsedEntry, Source
from aggregator.rules import as_utc, fallback_title, strip_xml_illegal, web_url

# A feed date further in the future than this is not believed (clock skew is fine,
# a 9999 date pinned to the top of every generated feed is not).
FUTURE_TOLERANCE = timedelta(days=1)
MAX_KEY_LENGTH = 512

_ALLOWED_STYLE_PROPERTIES = frozenset(
    {
        "text-indent",
        "text-align",
        "text-decoration",
        "color",
        "background-color",
        "font-weight",
        "font-style",
        "font-size",
        "line-height",
        "vertical-align",
        "white-space",
        "width",
        "height",
        "max-width",
        "float",
        "clear",
        "margin",
        "margin-top",
        "margin-bottom",
        "margin-left",
        "margin-right",
        "padding",
        "padding-top",
        "padding-bottom",
        "padding-left",
        "padding-right",
        "border",
        "border-collapse",
    }
)
# URL attributes nh3 does not resolve itself (it does href and src).
_OTHER_URL_ATTRIBUTES = frozenset({"cite", "longdesc", "action"})
_ALLOWED_ATTRIBUTES: dict[str, set[str]] = {
    tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()
}
_ALLOWED_ATTRIBUTES.setdefault("*", set()).update({"style", "class", "title", "lang", "dir"})
_ALLOWED_ATTRIBUTES.setdefault("a", set()).update({"href", "target", "title"})
_ALLOWED_ATTRIBUTES.setdefault("img", set()).update({"src", "alt", "width", "height", "title"})
_URL_SCHEMES = {"http", "https", "mailto"}
_FIRST_IMG_SRC = re.compile(r"<img\b[^>]*?\ssrc=\"([^\"]+)\"", re.IGNORECASE)
_ENTITY = re.compile(r"&(?:#\d+|#x[0-9a-f]+|[a-z][a-z0-9]*);", re.IGNORECASE)
_TEXT_CLEANER = nh3.Cleaner(tags=set(), clean_content_tags={"script", "style"})
# nh3 output: a tag (attribute values always double-quoted), an entity cut at the end.
_SERIALIZED_TAG = re.compile(r'<(?:[^">]|"[^"]*")*>')
_CUT_ENTITY = re.compile(r"&[#0-9A-Za-z]*$")
_EXCERPT_SOURCE_FACTOR = 8  # HTML characters read per excerpt character, at first
_SANITIZED_SOURCE_FACTOR = 4  # the same for nh3 output (no comments, scripts or styles)
_EXCERPT_CUT_MARGIN = 32  # text characters a cut tag or entity may spoil


def normalize(
    entry: ParsedEntry, source: Source, options: NormalizeOptions, *, seen_at: datetime
) -> Article:
    """Build the stored article for one entry (links in ``entry`` are already absolute)."""
    link = web_url(clean_text(entry.link or ""))
    guid = clean_text(entry.guid or "") or None
    # The document's xml:base only when it is a web URL: it comes from the feed, and
    # relative links resolved against "javascript:…" would be executable.
    base = web_url(entry.base or "") or link or source.url
    content_html = entry.content or entry.summary or ""
    content = sanitize_html(content_html, base, options)
    summary_html = entry.summary or entry.content or ""
    summary = (sanitized_excerpt(content, options.summary_length)  # one nh3 call, not two
               if summary_html == content_html
               else excerpt(summary_html, options.summary_length))
    title = plain_title(entry.title, entry.title_is_html) or fallback_title(summary, link)
    date, date_from_feed = choose_date(entry.published, entry.updated, seen_at)
    date, seen_at = as_utc(date), as_utc(seen_at)  # as the Article holds them, before hashing
    key = article_key(guid, link, title, content)
    headimg = (
        first_image(content)
        or _first_proxied(tuple(map(clean_text, (*entry.thumbnails, *entry.image_enclosures))),
                          options)
        or default_image(options, source.id, key)
    )
    author = clean_text(entry.author or "") or source.name
    content_hash = _content_hash(
        title=title, link=link, author=author, date=date, date_from_feed=date_from_feed,
        categories=source.categories, content=content, summary=summary, headimg=headimg,
        comments=source.comments)
    return Article(
        source_id=source.id,
        key=key,
        guid=guid,
        link=link,
        title=title,
        author=author,
        date=date,
        date_from_feed=date_from_feed,
        categories=source.categories,
        content=content,
        summary=summary,
        headimg=headimg,
        thumbnail=headimg,
        comments=source.comments,
        first_seen=seen_at,
        updated_at=seen_at,
        content_hash=content_hash,
    ).with_story_keys()  # here, in the parse worker (pickled with the record)


def with_content(article: Article, fragment: str, base_url: str,
                 options: NormalizeOptions) -> Article:
    """``article`` showing ``fragment`` — the main content of its page at ``base_url``
    (``full_text``) — instead of what the feed carried: sanitized, made absolute and
    image-proxied as feed content is; headimg/thumbnail its first image, else the
    feed's; the summary stays the feed's (an excerpt of the page when the feed had none).

    ``key`` and ``content_hash`` are kept: the hash says what the FEED said, so the next
    poll of an unchanged entry (normalized from the summary again) matches the stored
    article and leaves its full text alone.
    """
    base = web_url(base_url) or article.link or ""
    content = sanitize_html(fragment, base, options)
    headimg = first_image(content) or article.headimg
    summary = article.summary or excerpt(content, options.summary_length)
    return replace(article, content=content, summary=summary, headimg=headimg,
                   thumbnail=headimg)


def revised(article: Article, *, title: str, categories: tuple[str, ...]) -> Article:
    """``article`` with another title and categories (what a source's rules made of it),
    its ``content_hash`` computed again over what it now shows.

    Why the hash: it is how the store tells a changed article; a title that a new
    ``strip_title`` shortened must update the stored one.  The key stays: it is the
    entry's identity, and editing a rule must not turn every article into a new one.
    """
    return replace(article, title=title, categories=categories, content_hash=_content_hash(
        title=title, link=article.link, author=article.author, date=article.date,
        date_from_feed=article.date_from_feed, categories=categories,
        content=article.content, summary=article.summary, headimg=article.headimg,
        comments=article.comments))


def _content_hash(*, title: str, link: str | None, author: str, date: datetime,
                  date_from_feed: bool, categories: Sequence[str], content: str, summary: str,
                  headimg: str | None, comments: bool) -> str:
    """What an article shows, hashed: equal hashes mean nothing to update."""
    fields = {
        "title": title,
        "link": link,
        "author": author,
        "date": date.isoformat() if date_from_feed else None,
        "categories": list(categories),
        "content": content,
        "summary": summary,
        "headimg": headimg,
        "comments": comments,
    }
    return hashlib.sha256(
        json.dumps(fields, ensure_ascii=False, sort_keys=True).encode("utf-8")
    ).hexdigest()


def sanitize_html(fragment: str, base_url: str, options: NormalizeOptions) -> str:
    """Allowlist-sanitize ``fragment``; absolute URLs; proxied, no-referrer images.

    The illegal characters go before nh3 (it cannot take lone surrogates) and, when the
    fragment has numeric character references, after it too: nh3 decodes ``&#1;`` or
    ``&#x81;`` into the control character itself (HTML's rules), which no published
    format can carry.  Without a reference its output has no character its input lacked.
    """
    cleaned = _content_cleaner(base_url, options).clean(strip_xml_illegal(fragment))
    if "&#" in fragment:
        cleaned = strip_xml_illegal(cleaned)
    return cleaned.strip()


@functools.lru_cache(maxsize=16)
def _content_cleaner(base_url: str, options: NormalizeOptions) -> nh3.Cleaner:
    """The sanitizer for content relative to ``base_url``; built once per feed, not per
    entry (building one costs as much as cleaning a 3 KB fragment).  A worker reads one
    document at a time, whose entries share a base or a few: 16 are plenty, where each
    kept cleaner is ~18 KB (256 of them were 4.7 MB of every daemon's parse worker)."""

    def rewrite(tag: str, attribute: str, value: str) -> str | None:
        # nh3 calls this first, with the value as written and already checked against
        # ``url_schemes``; what it returns is not checked again.  nh3 then resolves
        # relative href/src itself (``url_relative``): only the rest is done here.
        if tag == "img" and attribute == "src":
            absolute = web_url(_absolute_url(value, base_url) or "")
            return proxied_image(absolute, options) if absolute else None
        if attribute in _OTHER_URL_ATTRIBUTES:
            return web_url(_absolute_url(value, base_url) or "")
        return value

    def cleaner(relative: tuple[str, str] | str) -> nh3.Cleaner:
        return nh3.Cleaner(
            attributes=_ALLOWED_ATTRIBUTES,
            attribute_filter=rewrite,
            url_schemes=_URL_SCHEMES,
            url_relative=relative,
            filter_style_properties=set(_ALLOWED_STYLE_PROPERTIES),
            set_tag_attribute_values={"img": {"referrerpolicy": "no-referrer"}},
            strip_comments=True,
        )

    # Relative URLs resolved by nh3 skip its scheme check: only ever against a web URL.
    if web_url(base_url):
        with contextlib.suppress(ValueError):  # a URL nh3's parser refuses
            return cleaner(("rewrite_with_base", base_url))
    return cleaner("deny")  # relative links are dropped


def proxied_image(url: str, options: NormalizeOptions) -> str:
    """Route an image URL through ``image_proxy`` (http only, or all with scope "all"),
    or with ``builtin_image_proxy`` through our own signed endpoint; never twice."""
    builtin = options.builtin_image_proxy
    proxy = options.image_proxy
    if builtin is not None:
        if url.startswith(imageproxy.endpoint(builtin.site_url)):
            return url
    elif not proxy or url.startswith(proxy):
        return url
    scheme = url[:6].lower()
    if scheme.startswith("http:") or (scheme == "https:" and options.image_proxy_scope == "all"):
        return imageproxy.signed_url(url, builtin) if builtin is not None else f"{proxy}{url}"
    return url


def first_image(sanitized_html: str) -> str | None:
    """The ``src`` of the first ``<img>`` in nh3 output (whose attributes are normalized)."""
    match = _FIRST_IMG_SRC.search(sanitized_html)
    return html.unescape(match.group(1)) if match else None


def plain_title(title: str | None, is_html: bool) -> str:
    """Plain text, entities decoded once, whitespace collapsed."""
    if not title:
        return ""
    text = strip_xml_illegal(title)  # before nh3, which cannot take lone surrogates
    if is_html or ("<" in text and ">" in text):
        text = html.unescape(nh3.clean(text, tags=set()))
    elif _ENTITY.search(text):  # double-escaped titles are common on portals
        text = html.unescape(text)
    return clean_text(text)


def excerpt(fragment: str, length: int) -> str:
    """Plain-text excerpt of an HTML fragment, at most ``length`` characters."""
    if length <= 0 or not fragment:
        return ""
    # The text of an HTML prefix is a prefix of the text, except for a few characters
    # at its very end (a tag or entity cut in half): a prefix that yields comfortably
    # more text than needed gives the same excerpt as the whole fragment, for less.
    prefix = fragment[: _EXCERPT_SOURCE_FACTOR * length]
    text = plain_text(prefix)
    if len(prefix) < len(fragment) and len(text) < length + _EXCERPT_CUT_MARGIN:
        text = plain_text(fragment)
    if len(text) <= length:
        return text
    return text[: length - 1].rstrip() + "…"


def sanitized_excerpt(sanitized: str, length: int) -> str:
    """``excerpt`` of the fragment that ``sanitize_html`` made ``sanitized``, read from
    that output without a second nh3 call (the same text: nh3 drops scripts and styles as
    ``plain_text`` does, and its serialization is regular enough to strip with a regex).

    Only for nh3 output: there every ``<`` starts a tag (text and attribute values have
    ``&lt;``/``&gt;``/``&quot;``), every ``&`` starts a complete entity, and comments are
    gone.  Raw feed HTML is none of that: it goes through ``excerpt``.
    """
    if length <= 0 or not sanitized:
        return ""
    size = _SANITIZED_SOURCE_FACTOR * length
    while True:  # a prefix's text is a prefix of the text: read only what is needed
        text = _serialized_text(sanitized[:size], length)
        if size >= len(sanitized) or len(text) > length:
            break
        size *= 4
    if len(text) <= length:
        return text
    return text[: length - 1].rstrip() + "…"


def _serialized_text(serialized: str, length: int) -> str:
    """The text of (a prefix of) nh3 output, or a prefix of it longer than ``length``; a
    tag or entity cut at its end is dropped."""
    text = _SERIALIZED_TAG.sub("", serialized)
    cut = text.find("<")  # what is left of a tag cut in half
    if cut >= 0:
        text = text[:cut]
    raw = html.unescape(_CUT_ENTITY.sub("", text))
    size = 2 * length + _EXCERPT_CUT_MARGIN
    while size < len(raw):  # clean_text of a prefix is a prefix of clean_text
        cleaned = clean_text(raw[:size])
        if len(cleaned) > length:
            return cleaned
        size *= 4
    return clean_text(raw)


def plain_text(fragment: str) -> str:
    """The text of an HTML fragment (scripts and styles dropped, entities decoded,
    whitespace collapsed): what a reader sees of it."""
    return clean_text(html.unescape(_TEXT_CLEANER.clean(strip_xml_illegal(fragment))))


def choose_date(
    published: datetime | None, updated: datetime | None, seen_at: datetime
) -> tuple[datetime, bool]:
    """published → updated → first seen; a date too far in the future is not believed."""
    for candidate in (published, updated):
        if candidate is not None and candidate <= seen_at + FUTURE_TOLERANCE:
            return candidate, True
    return seen_at, False


def clean_text(text: str) -> str:
    """Text with XML-illegal characters dropped and whitespace runs collapsed to one space."""
    return " ".join(strip_xml_illegal(text).split())  # str.split: the same \s as re, faster


def _absolute_url(value: str, base_url: str) -> str | None:
    if value.startswith(("http://", "https://")) and not value[-1:].isspace():
        return value  # the common case, without urljoin's cost
    value = value.strip()
    if not value:
        return None
    try:
        absolute = urljoin(base_url, value)
    except ValueError:
        return None
    return absolute


def _first_proxied(urls: tuple[str, ...], options: NormalizeOptions) -> str | None:
    for url in urls:
        if absolute := web_url(url):
            return proxied_image(absolute, options)
    return None


def default_image(options: NormalizeOptions, source_id: str, key: str) -> str | None:
    """The configured fallback image of this article: with several, one picked by its
    identity, so a re-poll or a re-export never shows another one."""
    images = options.default_images
    if not images:
        return None
    digest = hashlib.sha256(f"{source_id}\n{key}".encode("utf-8", "surrogatepass")).digest()
    return images[int.from_bytes(digest[:8], "big") % len(images)]


def article_key(guid: str | None, link: str | None, title: str, content: str) -> str:
    """Identity within a source: guid, else link, else a hash of what the entry shows.

    Keys are indexed (UNIQUE with the source id), so absurdly long ones are hashed:
    PostgreSQL refuses index entries over ~2.7 KB.
    """
    key = guid or link or "sha256:" + _sha256(f"{title}\n{content}")
    return key if len(key) <= MAX_KEY_LENGTH else "sha256:" + _sha256(key)


def distinct_keys(articles: Sequence[Article]) -> tuple[list[Article], int]:
    """One document's articles with a key each, and how many had to get their own.

    Entries that share a key (no guid, one link: three untitled posts linking to the same
    page) are different articles when what they show differs: the first keeps the key,
    each later one gets ``key#<content hash>``, stable across polls while it is unchanged.
    Entries that are the same in every way stay one article (the store keeps the first).
    """
    keys: dict[str, dict[str, str]] = {}  # key → content hash → the key it was given
    out: list[Article] = []
    rekeyed = 0
    for article in articles:
        given = keys.setdefault(article.key, {})
        key = given.get(article.content_hash)
        if key is None:
            key = article.key if not given else article_key(
                None, f"{article.key}#{article.content_hash[:16]}", article.title,
                article.content)
            rekeyed += key != article.key
            given[article.content_hash] = key
        out.append(article if key == article.key else replace(article, key=key))
    return out, rekeyed


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
