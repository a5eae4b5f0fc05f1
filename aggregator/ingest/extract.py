"""What a parse worker process runs: parse → normalize of one fetched document.

The CPU-bound middle of a poll.  ``poll`` sends it to a ``sandbox.WorkerPool``
(the ``parse_workers`` setting) as one call, so that both stages run in the worker,
under its time and memory budget and in parallel with other sources, while the main
process only fetches and stores.  Without a pool the poll calls it in-process.

The source's article rules (``filters``) run here too, once every article has its key:
what they drop never reaches the store, and what they change keeps the key it had.

This module must import nothing but those stages: the fork server preloads it, and
every worker shares what it imports (no SQLAlchemy, requests or feedgen here).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from aggregator.ingest.filters import apply_rules
from aggregator.ingest.normalize import distinct_keys, normalize
from aggregator.ingest.parse import parse
from aggregator.records import Article, FetchResult, NormalizeOptions, ParsedFeed, Source


def parse_and_normalize(fetched: FetchResult, source: Source, options: NormalizeOptions,
                        seen_at: datetime) -> tuple[ParsedFeed, list[Article]]:
    """The parsed feed (without its entries, which became the articles) and its articles
    as the source's rules leave them, one key each.

    ``ParsedFeed.filtered`` counts the articles the rules dropped, ``rekeyed`` the entries
    that needed a key of their own; a rule that timed out is one more of its ``warnings``.
    Raises ``ParseError`` naming the source, as ``parse`` does.
    """
    parsed = parse(fetched, source)
    articles, rekeyed = distinct_keys(
        [normalize(entry, source, options, seen_at=seen_at) for entry in parsed.entries])
    # The rules after the keys: an article's key must not depend on them (an edited rule,
    # or a sibling it drops, would otherwise rekey it into a new, duplicate article).
    filtered = apply_rules(articles, source)
    return replace(parsed, entries=(), rekeyed=rekeyed, filtered=filtered.dropped,
                   warnings=parsed.warnings + filtered.warnings), filtered.articles
