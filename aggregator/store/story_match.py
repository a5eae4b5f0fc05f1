"""Story matching at commit: which stored story each of a poll's new articles joins.

Why: a story is assigned once, when an article is first stored, and never changes; the
match has to see the other sources' stored articles inside the commit's own write
transaction (so two workers committing one story cannot make two).  This module owns
that match — the candidates found by the indexed link and title keys, titles only
within ``STORY_WINDOW``, the PostgreSQL advisory locks on the keys, the stored
fingerprints derived on demand — and the categories of the stories a commit touched.

The rule itself (when two articles are one story) is ``aggregator.stories.same_story``;
this module must NOT decide it, must not commit or open transactions (the caller's
session holds the write), and must not import the ``facade``
(the ``Store`` facade imports this module, never the other way).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import and_, bindparam, or_, select, text, update
from sqlalchemy.orm import Session

from aggregator.records import Article
from aggregator.store import rows
from aggregator.store.models import ArticleRow, CategoryRow, UTCDateTime
from aggregator.stories import same_story, text_fingerprint

# How far apart two articles' dates may be for a matching title and text to make them one
# story (a link match needs no window): a story is news for days, a title recurs for years.
STORY_WINDOW = timedelta(days=3)


_CANDIDATE_COLUMNS = (ArticleRow.id, ArticleRow.story_id, ArticleRow.story_link,
                      ArticleRow.story_title, ArticleRow.story_print, ArticleRow.date,
                      ArticleRow.first_seen, ArticleRow.source_id)
_OTHER_STORIES = (ArticleRow.source_id != bindparam("source_id"),
                  ArticleRow.story_id.is_not(None))
_BY_LINK = ArticleRow.story_link.in_(bindparam("links", expanding=True))
_BY_TITLE = and_(ArticleRow.story_title.in_(bindparam("titles", expanding=True)),
                 ArticleRow.date.between(bindparam("earliest", type_=UTCDateTime()),
                                         bindparam("latest", type_=UTCDateTime())))
# The candidates of a chunk of link keys, of title keys, or of both: (links?, titles?) →
# the statement, built once (an unused key's parameter is ignored).
_CANDIDATES = {
    (True, False): select(*_CANDIDATE_COLUMNS).where(*_OTHER_STORIES, _BY_LINK),
    (False, True): select(*_CANDIDATE_COLUMNS).where(*_OTHER_STORIES, _BY_TITLE),
    (True, True): select(*_CANDIDATE_COLUMNS).where(*_OTHER_STORIES, or_(_BY_LINK, _BY_TITLE)),
}
_LOCK_KEYS = text("SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:keys AS bigint[])) AS k")


def stories_of(session: Session, source_id: str, fresh: Sequence[Article]
                ) -> tuple[dict[str, int], dict[str, str]]:
    """key → story id, for each of a source's new articles that is a story another
    source's stored article already tells (``stories.same_story`` on their stored keys;
    titles only within ``STORY_WINDOW`` of the date); the others start stories of their own.
    Also key → stored ``story_print`` of the new articles whose fingerprint was derived.

    Fingerprints are derived here, and only for a title that another source's article has
    too: the new article's from its record, a stored one's from its row (then kept).
    On PostgreSQL the keys are locked first (transaction advisory locks, in one order), so
    two workers committing the same story at once queue and the second finds the first's
    article; SQLite's write lock serializes commits already.
    """
    links = {a.story_link for a in fresh} - {None}
    titles = {a.story_title for a in fresh} - {None}
    if not links and not titles:
        return {}, {}
    if session.get_bind().dialect.name == "postgresql":
        # One statement for all the keys (it was one round trip per key: 100 for a new
        # source of 50 articles); unnest yields the sorted array in order, so every
        # transaction takes its locks in one global order.
        session.execute(_LOCK_KEYS, {"keys": sorted({int(key[:15], 16)
                                                     for key in links | titles})})
    earliest = min(a.date for a in fresh) - STORY_WINDOW
    latest = max(a.date for a in fresh) + STORY_WINDOW
    candidates = set()
    by_link, by_title = sorted(links), sorted(titles)
    # one statement for both keys (an OR of two indexed lookups), per IN_CHUNK of each
    for start in range(0, max(len(by_link), len(by_title)), rows.IN_CHUNK):
        some_links = by_link[start:start + rows.IN_CHUNK]
        some_titles = by_title[start:start + rows.IN_CHUNK]
        candidates.update(session.execute(_CANDIDATES[bool(some_links), bool(some_titles)], {
            "source_id": source_id, "links": some_links, "titles": some_titles,
            "earliest": earliest, "latest": latest}))
    ordered = sorted(candidates, key=lambda c: (c.first_seen, c.source_id, c.story_id))
    theirs = {c.id: rows.derived_print(c.story_print)
              for c in ordered if c.story_print is not None}
    joined: dict[str, int] = {}
    prints: dict[str, str] = {}
    for article in fresh:
        link, title = article.story_link, article.story_title
        for candidate in ordered:
            if link is not None and candidate.story_link == link:
                joined[article.key] = candidate.story_id
                break
            if (title is None or candidate.story_title != title
                    or abs(candidate.date - article.date) > STORY_WINDOW):
                continue
            prints[article.key] = rows.stored_print(article.story_print)
            if candidate.id not in theirs:
                theirs[candidate.id] = _derive_print(session, candidate.id)
            if same_story(None, title, article.story_print,
                          None, candidate.story_title, theirs[candidate.id]):
                joined[article.key] = candidate.story_id
                break
    return joined, prints


def _derive_print(session: Session, article_id: int) -> str | None:
    """A stored article's fingerprint, derived from its row the first time a match needs
    it, and kept in the row."""
    content, summary = session.execute(select(ArticleRow.content, ArticleRow.summary)
                                       .where(ArticleRow.id == article_id)).one()
    derived = text_fingerprint(content, summary)
    session.execute(update(ArticleRow).where(ArticleRow.id == article_id)
                    .values(story_print=rows.stored_print(derived)))
    return derived


def categories_of(session: Session, story_ids: set[int]) -> tuple[str, ...]:
    """The distinct categories of these stories' articles, sorted."""
    found: set[str] = set()
    ids = sorted(story_ids)
    for start in range(0, len(ids), rows.IN_CHUNK):
        found.update(session.scalars(
            select(CategoryRow.category).distinct()
            .join(ArticleRow, ArticleRow.id == CategoryRow.article_id)
            .where(ArticleRow.story_id.in_(ids[start:start + rows.IN_CHUNK]))))
    return tuple(sorted(found))
