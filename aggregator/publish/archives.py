"""RFC 5005 archived feeds: every stored article of a category stays reachable.

Why: a category's current feeds carry only its newest ``feed_size`` articles; a reader
that polls rarely, or starts late, follows ``rel="prev-archive"`` from the current feed
through Atom archive pages ``categories/<c>/archive/<n>.xml`` (``n = 1`` the oldest) to
every older article.  Pages are immutable: written once and rewritten only when one of
their articles changed (content updated, or retention or the config removed it — a page
emptied that way stays, as an empty archive document, so links keep working).

Page membership is this module's own state, kept beside the pages in
``categories/<c>/archive/pages.json``: per page, the identities (source_id, key) of its
articles and a digest of their stored version.  Membership is stable, never recomputed by
rank (retention deleting the oldest must not shift every page).  On each build:

* articles already in a page stay there (minus those no longer stored);
* the category's other articles are *pending*, ordered by (first_seen, source_id, key);
  a new page closes with the ``feed_size`` oldest pending whenever at least that many
  are pending; and if a pending article is not in the current feed (the newest
  ``feed_size`` by date — a back-dated arrival), the remaining pending close into a
  partial page, so every article is always in the current feed or in a page;
* pages are disjoint; the newest page may overlap the current feed (RFC 5005 consumers
  dedupe by entry id, the current feed's ``feeds.entry_id``).

A build reads the category's index (``ArticleStamp``: identities and dates, no content)
and loads full articles only for the pages it must write.  Without a manifest (a wiped
``output_dir``) the pages are rebuilt deterministically from the store.  A changed
rendering setting (site URL, titles, language, description) rewrites every page.

This module must NOT merge stories (an archive page has one entry per stored article of
the category, even where the current feed shows one entry for a story several sources
tell), import feedgen (``feeds`` renders), link a page to the next one (``next-archive``
would force rewriting a closed page), touch a database directly (it reads through
``ArchiveReader``) or write outside the category's ``archive`` directory.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from aggregator.errors import AggregatorError
from aggregator.publish import feeds
from aggregator.publish.language import category_language
from aggregator.publish.paths import GENERATOR, category_paths, site_name, site_root
from aggregator.records import Article, ArticleStamp, FeedOptions

__all__ = ["ArchiveReader", "ArchiveReport", "Plan", "archive_path", "manifest_path", "plan",
           "update_archives"]

_MANIFEST_VERSION = 1
LOAD_CHUNK = 500  # full articles loaded per read while writing pages

Identity = tuple[str, str]
Member = tuple[str, str, str]  # source_id, key, version digest


class ArchiveReader(Protocol):
    """What archiving reads from the store (see ``Store.category_index``)."""

    def category_index(self, category: str,
                       source_ids: Collection[str] | None = None) -> list[ArticleStamp]: ...

    def articles_by_identity(self, identities: Iterable[tuple[str, str]]
                             ) -> Mapping[tuple[str, str], Article]: ...


@dataclass(frozen=True)
class ArchiveReport:
    """What one category's archive update did: page paths (relative to ``output_dir``)
    written and left alone, and the newest page (None: the category has none)."""

    written: tuple[str, ...]
    unchanged: tuple[str, ...]
    newest: str | None


@dataclass(frozen=True)
class Plan:
    """The category's pages after a build (index 0 is page 1) and which must be written."""

    pages: tuple[tuple[Member, ...], ...]
    dirty: frozenset[int]


def _archive_dir(category: str) -> str:
    return category_paths(category).atom.rsplit("/", 1)[0] + "/archive"


def archive_path(category: str, number: int) -> str:
    """Archive page ``number`` (1: the oldest) of ``category``, relative to ``output_dir``."""
    return f"{_archive_dir(category)}/{number}.xml"


def manifest_path(category: str) -> str:
    """The category's page membership (this module's state), relative to ``output_dir``."""
    return f"{_archive_dir(category)}/pages.json"


def _version(stamp: ArticleStamp) -> str:
    """A short digest of what a page shows of the article: its content and its dates."""
    text = (f"{stamp.content_hash}\n{stamp.updated_at.timestamp()}\n{stamp.date.timestamp()}"
            f"\n{stamp.first_seen.timestamp()}")
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def plan(pages: Sequence[Sequence[Member]], stamps: Sequence[ArticleStamp],
         feed_size: int) -> Plan:
    """Place every one of ``stamps`` (the category's stored articles) in a page or leave
    it to the current feed; see the module docstring.  Pure: no I/O."""
    stored = {s.identity: s for s in stamps}
    kept: list[tuple[Member, ...]] = []
    dirty: set[int] = set()
    placed: set[Identity] = set()
    for index, members in enumerate(pages):
        now = tuple((s, k, _version(stored[(s, k)])) for s, k, _ in members
                    if (s, k) in stored and (s, k) not in placed)  # disjoint, whatever it read
        if now != tuple(members):
            dirty.add(index)
        kept.append(now)
        placed.update((s, k) for s, k, _ in now)
    pending = sorted((s for s in stamps if s.identity not in placed),
                     key=lambda s: (s.first_seen, s.source_id, s.key))
    newest = heapq.nsmallest(feed_size, stamps,
                             key=lambda s: (-s.date.timestamp(), s.key, s.source_id))
    current = {s.identity for s in newest}
    start = 0
    while start < len(pending) and (len(pending) - start >= feed_size or any(
            s.identity not in current for s in pending[start:])):
        closed, start = pending[start:start + feed_size], start + feed_size
        dirty.add(len(kept))
        kept.append(tuple((s.source_id, s.key, _version(s)) for s in closed))
    return Plan(pages=tuple(kept), dirty=frozenset(dirty))


def _render_key(options: FeedOptions, category: str) -> str:
    """What the pages' bytes depend on besides their articles."""
    values = [GENERATOR, site_root(options), options.title_prefix, site_name(options),
              category_language(options, category), options.feed_description]
    return hashlib.sha1(json.dumps(values).encode("utf-8", "surrogatepass")).hexdigest()


def _read_manifest(path: Path) -> tuple[list[list[Member]], str | None]:
    """The pages and render key a previous build left; none when absent or unreadable
    (the pages are then rebuilt from the store)."""
    try:
        data = json.loads(path.read_bytes())
        if data.get("version") != _MANIFEST_VERSION:
            return [], None
        pages = [[(str(s), str(k), str(v)) for s, k, v in page] for page in data["pages"]]
        return pages, str(data["render"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return [], None


def _manifest(pages: Sequence[Sequence[Member]], render: str) -> bytes:
    data = {"version": _MANIFEST_VERSION, "render": render,
            "pages": [[list(member) for member in page] for page in pages]}
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8", "surrogatepass") + b"\n"


def _batches(indices: Sequence[int], pages: Sequence[Sequence[Member]]) -> Iterator[list[int]]:
    """Pages to write, grouped so that one read loads about ``LOAD_CHUNK`` articles: a
    first build (or a wiped tree) of a large category never holds all of them at once."""
    batch: list[int] = []
    size = 0
    for index in indices:
        if batch and size + len(pages[index]) > LOAD_CHUNK:
            yield batch
            batch, size = [], 0
        batch.append(index)
        size += len(pages[index])
    if batch:
        yield batch


def update_archives(reader: ArchiveReader, category: str, source_ids: Collection[str] | None,
                    options: FeedOptions) -> ArchiveReport:
    """Bring ``category``'s archive pages up to date with what is stored (of these
    sources) and return which were written; pages with nothing new are not touched."""
    if options.feed_size <= 0:
        return ArchiveReport(written=(), unchanged=(), newest=None)
    out = Path(options.output_dir)
    manifest = out / manifest_path(category)
    previous, render = _read_manifest(manifest)
    decided = plan(previous, reader.category_index(category, source_ids), options.feed_size)
    if not decided.pages:
        return ArchiveReport(written=(), unchanged=(), newest=None)
    key = _render_key(options, category)
    paths = [archive_path(category, n) for n in range(1, len(decided.pages) + 1)]
    dirty = {i for i in range(len(paths))
             if i in decided.dirty or render != key or not (out / paths[i]).is_file()}
    written: list[str] = []
    for batch in _batches(sorted(dirty), decided.pages):
        loaded = reader.articles_by_identity((s, k) for i in batch for s, k, _ in decided.pages[i])
        for index in batch:
            articles = [loaded[(s, k)] for s, k, _ in decided.pages[index] if (s, k) in loaded]
            data = feeds.render_archive(category, index + 1, paths[index], articles, options,
                                        paths[index - 1] if index else None)
            if feeds.write_atomic(out / paths[index], data):
                written.append(paths[index])
    try:
        feeds.write_atomic(manifest, _manifest(decided.pages, key))
    except AggregatorError as exc:
        raise AggregatorError(f"cannot record the archive pages of category {category!r}: "
                              f"{exc}") from exc
    unchanged = tuple(p for p in paths if p not in written)
    return ArchiveReport(written=tuple(written), unchanged=unchanged, newest=paths[-1])
