"""One story, many portals: the articles of one story published as ONE article.

Why: the store puts the articles several sources carry of the same story into one story
(``aggregator.stories`` says when; ``Store.story_members`` reads a story's articles).  A
reader subscribed to two of those sources' categories must see the story once, under
every category any of its sources gives it, with the other portals named.  This module
turns the articles a feed, the index page or the Hexo export would list, and their
stories' members, into that one article:

* the representative is the story's first article (earliest ``first_seen``, ties by
  source id, then key) among the sources still published: its identity (source id and
  key: the feed entry id, the Hexo file name), title, link, author and date are the
  story's, so a second portal reporting it later never makes readers see it twice, and a
  removed representative hands the story over to the next member;
* its categories are the union of the members' (the representative's first, in order);
* its content ends with an "also reported by" paragraph (``ALSO_REPORTED_CLASS``): the
  other sources' configured names, each linked to its own article.

Pure functions over records: it must NOT read the store (the caller passes the members),
judge whether two articles are one story (the store did), or touch files.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from aggregator.records import Article
from aggregator.rules import web_url

__all__ = ["ALSO_REPORTED_CLASS", "ALSO_REPORTED_LABEL", "also_reported", "merge_stories"]

ALSO_REPORTED_CLASS = "also-reported"
ALSO_REPORTED_LABEL = "也见于："
_SEPARATOR = "、"

Identity = tuple[str, str]


def merge_stories(articles: Iterable[Article],
                  members: Mapping[Identity, Sequence[Article]],
                  source_names: Mapping[str, str]) -> list[Article]:
    """One article per story among ``articles``, in the order its first listed member
    comes: the representative with the union of the members' categories and the "also
    reported by" paragraph appended to its content.

    ``members``: (source id, key) → the story's published articles, representative first
    (``Store.story_members``); an article missing there is a story of its own.  A story
    whose members are all unpublished (the listed article among them) is left out.
    """
    merged: list[Article] = []
    seen: set[Identity] = set()
    for article in articles:
        identity = (article.source_id, article.key)
        story = members.get(identity, (article,))
        if not story:
            continue
        representative = story[0]
        story_id = (representative.source_id, representative.key)
        if story_id in seen:
            continue
        seen.add(story_id)
        merged.append(_one_article(story, source_names))
    return merged


def also_reported(others: Sequence[Article], source_names: Mapping[str, str]) -> str:
    """The paragraph naming the other sources of a story, each linked to its article (the
    first of its articles in the story), HTML-escaped; "" when there are none."""
    links: list[str] = []
    named: set[str] = set()
    for article in others:
        if article.source_id in named:
            continue
        named.add(article.source_id)
        name = html.escape(source_names.get(article.source_id, "").strip()
                           or article.source_id, quote=False)
        link = web_url(article.link or "")
        links.append(f'<a href="{html.escape(link)}">{name}</a>' if link else name)
    if not links:
        return ""
    return (f'<p class="{ALSO_REPORTED_CLASS}">{ALSO_REPORTED_LABEL}'
            f"{_SEPARATOR.join(links)}</p>")


def _one_article(story: Sequence[Article], source_names: Mapping[str, str]) -> Article:
    representative = story[0]
    if len(story) == 1:
        return representative
    categories = tuple(dict.fromkeys(c for member in story for c in member.categories))
    others = [m for m in story[1:] if m.source_id != representative.source_id]
    block = also_reported(others, source_names)
    content = representative.content
    if block:
        content = f"{content}\n{block}" if content.strip() else block
    return replace(representative, categories=categories, content=content,
                   updated_at=max(m.first_seen if m is not representative else m.updated_at
                                  for m in story))
