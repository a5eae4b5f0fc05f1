"""Render stored articles as per-category RSS 2.0 / Atom 1.0 / JSON Feed 1.1 feeds and an
OPML index.

Why: republishing is the aggregator's output.  Every category gets
``categories/<name>/rss.xml``, ``atom.xml`` and ``feed.json`` (``jsonfeed``, from the same
selected entries) under ``FeedOptions.output_dir`` and ``feeds.opml`` lists them all.
This is the only module of the project that imports ``feedgen`` (with ``feedlinks``, its
extension for the WebSub and RFC 5005 links); it wraps feedgen's traps so the rest of the
project never meets them: ``add_entry()`` prepends by default,
naive datetimes are rejected, RSS ``<author>`` demands an e-mail (names go to
``dc:creator``), an Atom entry needs a title and either content or an
alternate link, and the feed dates default to *now*.

Output is a pure function of the input: entries are ordered by date (newest
first) then by ``(source_id, key)``, entry ids are UUID-5s of the article's
identity, an entry's ``updated`` is ``modified_at`` (its own date until its content
changes), and the feed's ``updated`` / ``lastBuildDate`` is the newest entry
``updated`` of the included articles (the Unix epoch for an empty feed),
never the build time.  Identical input therefore gives byte-identical files,
which ``write_atomic`` then leaves untouched so HTTP validators stay stable.

The articles are trusted: an ``Article`` always has aware UTC dates and a title
(``records.Article`` refuses anything else), and the normalize stage has made its
links web URLs.  Two defences remain, for what a record cannot guarantee: one bad
article never fails a build (each entry is rendered on its own first and an
article feedgen or lxml rejects is logged and left out), and characters XML 1.0
cannot carry are stripped from every string with ``rules.strip_xml_illegal``
(config values such as a category name pass through here too).

What this module must NOT do: touch a database or the network, decide which
articles belong to a category (the caller passes them), sanitize or rewrite
article HTML (the normalize stage owns that), or delete files it did not write
(feeds of categories that disappeared are left alone).
"""

from __future__ import annotations

import html
import logging
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from feedgen.entry import FeedEntry
from feedgen.feed import FeedGenerator

from aggregator.errors import AggregatorError
from aggregator.publish import files
from aggregator.publish.feedlinks import CURRENT, FeedLinks, Place, place_links, url_of
from aggregator.publish.feedlinks import NAMESPACE as LINKS
from aggregator.publish.jsonfeed import render_json_feed
from aggregator.publish.language import category_language, feed_description
from aggregator.publish.opml import render_opml
from aggregator.publish.paths import (
    GENERATOR,
    OPML_FILENAME,
    category_paths,
    site_name,
    site_root,
)
from aggregator.records import Article, FeedOptions
from aggregator.rules import strip_xml_illegal

__all__ = [
    "EPOCH",
    "BuildReport",
    "EntryValues",
    "entry_id",
    "render_archive",
    "render_atom",
    "render_rss",
    "write_atomic",
    "write_feeds",
]

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # ``updated`` of a feed with no entries

_RSS_TYPE = "application/rss+xml"
_ATOM_TYPE = "application/atom+xml"


_Format = Literal["rss", "atom"]


@dataclass(frozen=True)
class BuildReport:
    """What ``write_feeds`` did.

    ``written`` and ``unchanged`` are relative paths (feeds and ``feeds.opml``);
    ``skipped_articles`` counts distinct articles (by ``source_id`` and ``key``)
    that were left out of at least one feed because rendering rejected them.
    """

    written: tuple[str, ...]
    unchanged: tuple[str, ...]
    skipped_articles: int


@dataclass(frozen=True)
class EntryValues:
    """One article's values, cleaned and ready for feedgen (and ``publish.jsonfeed``)."""

    id: str
    title: str
    link: str | None
    author: str
    published: datetime
    updated: datetime
    categories: tuple[str, ...]
    content: str
    summary: str
    thumbnail: str | None


# --------------------------------------------------------------------------- values


def _whole_seconds(value: datetime) -> datetime:
    """RSS dates cannot carry fractions of a second (Article dates are aware UTC)."""
    return value.replace(microsecond=0)


def _identity(article: Article) -> tuple[str, str]:
    return (str(article.source_id), str(article.key))


def entry_id(article: Article) -> str:
    """The article's permanent entry id: ``urn:uuid:`` + uuid5 of source id and key."""
    return "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, f"{article.source_id}\n{article.key}"))


def modified_at(article: Article) -> datetime:
    """When the entry last changed, as readers should see it.

    An article never changed since we first saw it was last modified at its own
    date (not at our first poll, which would show a 2021 article as new today);
    one whose content changed later was modified when we stored the change.
    """
    if article.updated_at <= article.first_seen:
        return article.date
    return max(article.date, article.updated_at)


def _entry_values(article: Article) -> EntryValues:
    link = strip_xml_illegal(article.link) if article.link else None
    title = strip_xml_illegal(article.title).strip()  # an Article's title shows something
    summary = strip_xml_illegal(article.summary)
    content = strip_xml_illegal(article.content)
    if not content.strip() and not link:
        # Atom wants content or an alternate link; say what little we know.
        content = html.escape(summary.strip() or title, quote=False)
    categories: list[str] = []
    for raw in article.categories:
        term = strip_xml_illegal(raw).strip()
        if term and term not in categories:
            categories.append(term)
    return EntryValues(
        id=entry_id(article),
        title=title,
        link=link,
        author=strip_xml_illegal(article.author).strip(),
        published=_whole_seconds(article.date),
        updated=_whole_seconds(modified_at(article)),
        categories=tuple(categories),
        content=content if content.strip() else "",
        summary=summary if summary.strip() else "",
        thumbnail=strip_xml_illegal(article.headimg) if article.headimg else None,
    )


# --------------------------------------------------------------------------- feedgen


def _new_generator() -> FeedGenerator:
    fg = FeedGenerator()
    fg.load_extension("dc", atom=False, rss=True)  # dc:creator: RSS author names
    fg.load_extension("media", atom=True, rss=True)  # media:thumbnail
    fg.register_extension(LINKS, FeedLinks, None)  # hub / archive links, fh:archive
    return fg


def _fill(entry: FeedEntry, values: EntryValues) -> None:
    entry.id(values.id)  # also the RSS guid, isPermaLink="false"
    entry.title(values.title)
    entry.updated(values.updated)
    entry.published(values.published)
    if values.link:
        entry.link(href=values.link, rel="alternate")
    if values.author:
        entry.author(name=values.author)
        entry.dc.dc_creator(values.author)
    if values.categories:
        entry.category([{"term": term} for term in values.categories])
    if values.content:
        entry.content(values.content, type="html")
    if values.summary:
        # Plain text, but RSS <description> is HTML by convention: escape it and
        # say so in Atom too, so both formats display exactly the same text.
        entry.summary(html.escape(values.summary, quote=False), type="html")
    if values.thumbnail:
        entry.media.thumbnail(url=values.thumbnail, group=None)


def _order(articles: Iterable[Article]) -> list[Article]:
    """Newest first; equal dates by (source_id, key), whatever order they came in."""
    by_identity = sorted(
        articles, key=lambda a: (*_identity(a), -a.updated_at.timestamp(), str(a.content_hash))
    )
    return sorted(by_identity, key=lambda a: a.date, reverse=True)


def _select(
    category: str, articles: Sequence[Article], options: FeedOptions,
    formats: tuple[_Format, ...] = ("atom", "rss"),
) -> tuple[list[EntryValues], set[tuple[str, str]]]:
    """The newest ``feed_size`` articles that render, and the identities of those that don't.

    Each candidate is rendered alone, in every one of ``formats``, before it is accepted,
    so the RSS and Atom files always hold the same entries (an archive page, Atom only,
    probes Atom only: the probe is most of a page's rendering cost).
    """
    limit = max(0, options.feed_size)
    probe = _new_generator()
    chosen: list[EntryValues] = []
    seen: set[tuple[str, str]] = set()
    skipped: set[tuple[str, str]] = set()
    for article in _order(articles):
        if len(chosen) >= limit:
            break
        identity = _identity(article)
        if identity in seen:
            continue
        seen.add(identity)
        entry = probe.add_entry(order="append")
        try:
            values = _entry_values(article)
            _fill(entry, values)
            if "atom" in formats:
                entry.atom_entry()
            if "rss" in formats:
                entry.rss_entry()
        except Exception as exc:  # feedgen and lxml raise ValueError, TypeError, ...
            log.warning(
                "feed %r: skipping article source_id=%r key=%r: %s: %s",
                category, identity[0], identity[1], type(exc).__name__, exc,
            )
            skipped.add(identity)
            continue
        finally:
            probe.remove_entry(entry)
        chosen.append(values)
    return chosen, skipped


def _render(category: str, entries: Sequence[EntryValues], options: FeedOptions,
            fmt: _Format, place: Place = CURRENT) -> bytes:
    paths = category_paths(category)
    site = strip_xml_illegal(site_root(options))
    own = place.page_path if place.page is not None else (
        paths.rss if fmt == "rss" else paths.atom)
    name = strip_xml_illegal(category).strip() or paths.rss.split("/")[1]
    title = strip_xml_illegal(options.title_prefix) + name
    if place.page is not None:
        title += f" #{place.page}"
    try:
        fg = _new_generator()
        fg.id(url_of(options, own if place.page is not None else paths.atom))
        fg.title(title)
        fg.author(name=site_name(options))
        fg.link(href=url_of(options, own), rel="self",
                type=_RSS_TYPE if fmt == "rss" else _ATOM_TYPE)
        for rel, href, kind in place_links(options, paths.atom, place):
            fg.link(href=href, rel=rel, **({"type": kind} if kind else {}))
            fg.links.rss_link(rel, href, kind)  # feedgen's RSS writes only rel="self"
        if place.page is not None:
            fg.links.mark_archive()
        fg.link(href=site, rel="alternate", type="text/html")  # the last link is RSS <link>
        language = category_language(options, category)
        fg.description(strip_xml_illegal(
            feed_description(options, language, name, site_name(options))))
        if language:  # RSS <language> and Atom xml:lang; none when the sources differ
            fg.language(language)
        fg.generator(GENERATOR)
        fg.updated(max((e.updated for e in entries), default=EPOCH))
        for values in entries:
            _fill(fg.add_entry(order="append"), values)
        if fmt == "rss":
            data = fg.rss_str(pretty=True, encoding="UTF-8", xml_declaration=True)
        else:
            data = fg.atom_str(pretty=True, encoding="UTF-8", xml_declaration=True)
    except Exception as exc:
        raise AggregatorError(f"cannot render the {fmt} feed of category {category!r}: {exc}") \
            from exc
    return bytes(data)


def render_rss(category: str, articles: Sequence[Article], options: FeedOptions) -> bytes:
    """RSS 2.0 feed of the newest ``options.feed_size`` articles of ``category``."""
    entries, _ = _select(category, articles, options)
    return _render(category, entries, options, "rss")


def render_atom(category: str, articles: Sequence[Article], options: FeedOptions) -> bytes:
    """Atom 1.0 feed (valid against RFC 4287's RELAX NG schema) of ``category``."""
    entries, _ = _select(category, articles, options)
    return _render(category, entries, options, "atom")


def render_archive(category: str, page: int, path: str, articles: Sequence[Article],
                   options: FeedOptions, prev_path: str | None) -> bytes:
    """RFC 5005 archive page ``page`` of ``category`` (Atom, at ``path``): ``fh:archive``,
    ``rel="current"`` (the category's Atom feed), ``rel="self"`` and ``rel="prev-archive"``
    (``prev_path``, the page before; None on page 1).  Every one of ``articles`` (at most
    ``feed_size``) is an entry, with the current feed's entry id; no story merging."""
    entries, _ = _select(category, articles, options, ("atom",))
    return _render(category, entries, options, "atom",
                   Place(prev_archive=prev_path, page=page, page_path=path))


# --------------------------------------------------------------------------- files


def write_atomic(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` unless it already holds exactly these bytes.

    Creates missing parent directories, writes a hidden temp file in the same
    directory and ``os.replace``s it over ``path`` (readers see the old or the
    new file, never a partial one).  Returns True when the file changed.
    """
    try:
        return files.write_atomic(path, data)
    except OSError as exc:
        raise AggregatorError(f"cannot write {path}: {exc}") from exc


def write_feeds(
    articles_by_category: Mapping[str, Sequence[Article]],
    options: FeedOptions,
    all_categories: Sequence[str] | None = None,
    only: Collection[str] | None = None,
    prev_archives: Mapping[str, str] | None = None,
) -> BuildReport:
    """Render and write the feeds of every category (RSS, Atom and, from the same selected
    entries, JSON Feed: ``publish.jsonfeed``), then ``feeds.opml``.

    Categories are those of ``articles_by_category`` plus ``all_categories``
    (the latter get empty feeds when they have no articles); they are processed
    and listed in sorted order.  Files whose bytes would not change are left
    alone and reported as unchanged.  With ``only``, just those categories' feeds
    are rendered (the daemon rebuilds what a poll changed); the OPML index still
    lists every category.  ``prev_archives`` maps a category to its newest archive page
    (``archives``), which both its feeds link as ``rel="prev-archive"``.
    """
    out_dir = Path(options.output_dir)
    names = sorted(set(articles_by_category) | set(all_categories or ()))
    written: list[str] = []
    unchanged: list[str] = []
    skipped: set[tuple[str, str]] = set()

    def emit(relative: str, data: bytes) -> None:
        (written if write_atomic(out_dir / relative, data) else unchanged).append(relative)

    for name in names:
        if only is not None and name not in only:
            continue
        entries, bad = _select(name, articles_by_category.get(name, ()), options)
        skipped |= bad
        paths = category_paths(name)
        place = Place(prev_archive=(prev_archives or {}).get(name))
        emit(paths.rss, _render(name, entries, options, "rss", place))
        emit(paths.atom, _render(name, entries, options, "atom", place))
        emit(paths.json, render_json_feed(name, entries, options))
    emit(OPML_FILENAME, render_opml(names, options))
    return BuildReport(
        written=tuple(written), unchanged=tuple(unchanged), skipped_articles=len(skipped)
    )
