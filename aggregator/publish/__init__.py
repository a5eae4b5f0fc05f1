"""Publishing: stored articles out as files people and feed readers consume.

Owns the output tree under ``output_dir``: per-category RSS/Atom feeds and the OPML
index (``feeds``, with ``feedlinks`` the only importers of feedgen; ``opml``), the JSON
Feed of the same entries (``jsonfeed``), the RFC 5005
archive pages that keep every older article of a category reachable (``archives``; one
entry per stored article there, stories not merged), the index page for people
(``index_page``), the words and declared language of each (``language``), Hexo posts
(``hexo``) and atomic, skip-if-identical file writes (``files``).  Everything a build
needs from the config (languages per category, source names, descriptions) arrives in
``FeedOptions``, which ``config.Settings.feed_options()`` fills.  ``build`` is the one
entry point that turns what is stored into the published tree and returns one
``BuildReport``; ``export_hexo`` writes the posts.  Both publish each story once
(``stories``): the articles several sources carry of one story become one article, listed
in every category of any of them.

Publishing trusts the ``Article`` records it is given (their invariants are enforced
once, when an Article is made) and reads them through the small ``ArticleReader``
protocol.  It must NOT import the intake side (``aggregator.ingest``: fetch, parse,
normalize, polls), the database layer or the service; it never touches the network.
The writers (feedgen, lxml) load only when a build or an export runs.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from aggregator.records import Article, ArticleStamp, FeedOptions, Source

if TYPE_CHECKING:
    from aggregator.publish.feeds import BuildReport
    from aggregator.publish.hexo import ExportReport

__all__ = ["INDEX_ARTICLES", "ArticleReader", "build", "export_hexo"]

INDEX_ARTICLES = 30  # latest articles on the index page
EXPORT_CHUNK = 500  # articles whose stories one read looks up during a Hexo export


class ArticleReader(Protocol):
    """What publishing reads from the store."""

    def categories(self) -> list[str]: ...

    def latest_articles(self, category: str | None, limit: int,
                        source_ids: Collection[str] | None = None) -> list[Article]: ...

    def iter_articles(self, source_id: str | None = None) -> Iterator[Article]: ...

    def story_members(self, articles: Iterable[Article],
                      source_ids: Collection[str] | None = None
                      ) -> Mapping[tuple[str, str], Sequence[Article]]: ...

    def category_index(self, category: str,
                       source_ids: Collection[str] | None = None) -> list[ArticleStamp]: ...

    def articles_by_identity(self, identities: Iterable[tuple[str, str]]
                             ) -> Mapping[tuple[str, str], Article]: ...


def build(reader: ArticleReader, options: FeedOptions, sources: Sequence[Source] | None = None,
          only: Collection[str] | None = None, *, index: bool = True) -> BuildReport:
    """Regenerate the RSS, Atom and JSON feeds of every category (or ``only`` these) with their
    archive pages (``archives``: only pages whose articles changed are rewritten), the OPML
    index and (unless ``index`` is False) the index page.

    With ``sources`` (the configured ones), exactly their categories are published, with
    their articles only: a source removed from the config leaves every output on the next
    build, and a category no source has any more leaves OPML and the index.  None
    publishes everything stored.
    """
    from aggregator.publish import archives, feeds, index_page
    from aggregator.publish.paths import INDEX_FILENAME

    ids = None if sources is None else {s.id for s in sources}
    if sources is None:
        categories = sorted(reader.categories())
    else:
        categories = sorted({c for s in sources for c in s.all_categories})
    selected = [c for c in categories if only is None or c in only]
    listed = {c: reader.latest_articles(c, options.feed_size, ids) for c in selected}
    latest = reader.latest_articles(None, INDEX_ARTICLES, ids) if index else []
    members = reader.story_members([a for found in (*listed.values(), latest) for a in found],
                                   ids)
    articles = {c: _stories(found, members, options, options.feed_size)
                for c, found in listed.items()}
    archived = {c: archives.update_archives(reader, c, ids, options) for c in selected}
    newest = {c: found.newest for c, found in archived.items() if found.newest}
    report = feeds.write_feeds(articles, options, all_categories=categories, only=only,
                               prev_archives=newest)
    report = replace(report,
                     written=(*report.written, *(p for a in archived.values() for p in a.written)),
                     unchanged=(*report.unchanged,
                                *(p for a in archived.values() for p in a.unchanged)))
    if not index:
        return report
    page = index_page.render_index(categories,
                                   _stories(latest, members, options, INDEX_ARTICLES),
                                   options, site_title=options.site_title or "Aggregator")
    if feeds.write_atomic(Path(options.output_dir) / INDEX_FILENAME, page):
        return replace(report, written=(*report.written, INDEX_FILENAME))
    return replace(report, unchanged=(*report.unchanged, INDEX_FILENAME))


def export_hexo(reader: ArticleReader, out_dir: Path,
                sources: Sequence[Source] | None = None, *, prune: bool = False) -> ExportReport:
    """Write every stored story (of these sources, if given) as one Hexo post: its
    representative's, with the union of categories and the "also reported by" paragraph.
    Only new or changed posts are written; ``prune`` deletes the posts an earlier export
    wrote whose story is no longer exported (retention removed it, or its source left)."""
    from aggregator.publish import hexo

    ids = None if sources is None else {s.id for s in sources}
    names = {s.id: s.name for s in sources or ()}
    return hexo.write_posts(_all_stories(reader, ids, names), out_dir, prune=prune)


def _all_stories(reader: ArticleReader, ids: set[str] | None,
                 names: Mapping[str, str]) -> Iterator[Article]:
    """Every stored story of these sources once, read in chunks of ``EXPORT_CHUNK``."""
    from aggregator.publish.stories import merge_stories

    seen: set[tuple[str, str]] = set()
    chunk: list[Article] = []
    for article in reader.iter_articles():
        if ids is None or article.source_id in ids:
            chunk.append(article)
        if len(chunk) >= EXPORT_CHUNK:
            yield from _unseen(merge_stories(chunk, reader.story_members(chunk, ids), names),
                               seen)
            chunk = []
    if chunk:
        yield from _unseen(merge_stories(chunk, reader.story_members(chunk, ids), names), seen)


def _unseen(stories: list[Article], seen: set[tuple[str, str]]) -> Iterator[Article]:
    for story in stories:
        if (story.source_id, story.key) not in seen:
            seen.add((story.source_id, story.key))
            yield story


def _stories(articles: Sequence[Article], members: Mapping[tuple[str, str], Sequence[Article]],
             options: FeedOptions, limit: int) -> list[Article]:
    """One article per story, the representatives' newest first, at most ``limit``."""
    from aggregator.publish.stories import merge_stories

    merged = merge_stories(articles, members, options.source_names)
    merged.sort(key=lambda a: (-a.date.timestamp(), a.key, a.source_id))
    return merged[:limit]
