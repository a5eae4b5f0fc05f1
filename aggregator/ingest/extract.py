"""What a parse worker process runs: parse → normalize of one fetched document.

The CPU-bound middle of a poll.  ``poll`` sends it to a ``sandbox.WorkerPool``
(the ``parse_workers`` setting) as one call, so that both stages run in the worker,
under its time and memory budget and in parallel with other sources, while the main
process only fetches and stores.  Without a pool the poll calls it in-process.

This module must import nothing but those two stages: the fork server preloads it,
and every worker shares what it imports (no SQLAlchemy, requests or feedgen here).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from aggregator.ingest.normalize import distinct_keys, normalize
from aggregator.ingest.parse import parse
from aggregator.records import Article, FetchResult, NormalizeOptions, ParsedFeed, Source


def parse_and_normalize(fetched: FetchResult, source: Source, options: NormalizeOptions,
                        seen_at: datetime) -> tuple[ParsedFeed, list[Article]]:
    """The parsed feed (without its entries, which became the articles) and its articles,
    one key each (``ParsedFeed.rekeyed`` counts the entries that needed their own).

    Raises ``ParseError`` naming the source, as ``parse`` does.
    """
    parsed = parse(fetched, source)
    articles, rekeyed = distinct_keys(
        [normalize(entry, source, options, seen_at=seen_at) for entry in parsed.entries])
    return replace(parsed, entries=(), rekeyed=rekeyed), articles
