"""A source's article rules (``rules:`` in the config): which articles are kept, what
their titles lose and which categories they gain.

Run by ``extract`` in the parse worker, on the normalized articles of one document once
each has its own key (``normalize.distinct_keys``): the rules never change a key, so
editing a rule updates articles instead of adding them again.  The rules, in the order they apply:

- ``exclude``: an article whose title or plain-text content matches any pattern is
  dropped;
- ``include`` (when given): an article that matches none of them is dropped;
- ``categories``: each pattern that matches adds its category (config order, each once,
  after the source's own);
- ``strip_title``: its matches are removed from the title; a title left showing
  nothing gets the project's fallback (``rules.fallback_title``: the summary's start,
  else the link, else ``UNTITLED``).

The patterns read the title as the feed gave it, before ``strip_title``: a label such as
``【广告】`` that the title loses can still decide that the article is dropped.  The content
is read as plain text (``normalize.plain_text``: what a reader sees, not the markup).

Every pattern runs with a time bound (``regexes.MATCH_TIMEOUT``).  A rule that times
out counts as "no match" — the article is not dropped by an ``exclude`` that timed out,
nor kept by an ``include`` that did, its title stays as it was — and it is not run
again on the rest of the document, so a catastrophic pattern costs a poll at most one
timeout per rule; each timeout comes back as a warning naming the rule, which the poll
logs with the source id.  What must NOT happen: a rule stalling a poll, a rule's
failure ending a poll, or an article leaving here breaking the ``Article`` invariants.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aggregator.ingest.normalize import clean_text, plain_text, revised
from aggregator.records import Article, Source, SourceRules
from aggregator.regexes import MATCH_TIMEOUT, remove, search
from aggregator.rules import fallback_title, has_text

__all__ = ["FilteredArticles", "apply_rules"]


@dataclass(frozen=True, slots=True)
class FilteredArticles:
    """What a source's rules left of one document's articles."""

    articles: list[Article]  # the kept ones, in document order
    dropped: int = 0  # articles that ``exclude`` or ``include`` left out
    warnings: tuple[str, ...] = ()  # rules that timed out, one line each


def apply_rules(articles: Sequence[Article], source: Source, *,
                timeout: float = MATCH_TIMEOUT) -> FilteredArticles:
    """``articles`` after ``source.rules`` (see the module docstring); a source without
    rules gets its articles back untouched."""
    rules = source.rules
    if not rules:
        return FilteredArticles(list(articles))
    run = _Run(rules, timeout)
    kept = [changed for article in articles if (changed := run.article(article)) is not None]
    return FilteredArticles(kept, len(articles) - len(kept), tuple(run.warnings))


class _Run:
    """The rules over one document: remembers which rules timed out, so they are not
    run again on it."""

    def __init__(self, rules: SourceRules, timeout: float) -> None:
        self.rules = rules
        self.timeout = timeout
        # the name a warning gives a pattern: its first place in the config
        self.names = {pattern: f"rules.{name}" for name, pattern in reversed(rules.patterns())}
        self.timed_out: set[str] = set()
        self.warnings: list[str] = []

    def article(self, article: Article) -> Article | None:
        """The article as the rules leave it, or None when they drop it."""
        rules = self.rules
        text = _Text(article)
        if any(self._matches(p, text, article) for p in rules.exclude):
            return None
        if rules.include and not any(self._matches(p, text, article) for p in rules.include):
            return None
        categories = list(article.categories)
        for pattern, category in rules.categories:
            if category not in categories and self._matches(pattern, text, article):
                categories.append(category)
        title = self._stripped(article)
        if title == article.title and len(categories) == len(article.categories):
            return article
        return revised(article, title=title, categories=tuple(categories))

    def _matches(self, pattern: str, text: _Text, article: Article) -> bool:
        if pattern in self.timed_out:
            return False
        try:
            return (search(pattern, article.title, timeout=self.timeout)
                    or search(pattern, text.content, timeout=self.timeout))
        except TimeoutError:
            self._timed_out(pattern, article)
            return False

    def _stripped(self, article: Article) -> str:
        pattern = self.rules.strip_title
        if not pattern or pattern in self.timed_out:
            return article.title
        try:
            title = clean_text(remove(pattern, article.title, timeout=self.timeout))
        except TimeoutError:
            self._timed_out(pattern, article)
            return article.title
        if title == article.title:
            return title
        return title if has_text(title) else fallback_title(article.summary, article.link)

    def _timed_out(self, pattern: str, article: Article) -> None:
        self.timed_out.add(pattern)
        self.warnings.append(
            f"{self.names[pattern]} {pattern!r} timed out after {self.timeout:g}s on "
            f"{article.link or article.key}: treated as no match there and not run on the "
            "rest of this document")


class _Text:
    """An article's plain-text content, made only when a rule gets to read it."""

    def __init__(self, article: Article) -> None:
        self._content = article.content
        self._text: str | None = None

    @property
    def content(self) -> str:
        if self._text is None:
            self._text = plain_text(self._content)
        return self._text
