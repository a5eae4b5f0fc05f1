"""The orchestrator: one source goes fetch → parse → normalize → store.

``poll_source`` reads top to bottom as the life of one poll:

1. look up what the store remembers (validators, body hash);
2. fetch, conditionally — a 304 ends the poll cheaply;
3. an unchanged body (same bytes, same rules) ends it too, before any parsing;
4. parse the document into entries;
5. normalize every entry into an Article;
6. store the articles and the new source state in one transaction.

Any ``AggregatorError`` ends that source's poll as an "error" result that is
recorded and logged with its id; it never reaches the other sources.
``poll_sources`` runs many polls on a thread pool; ``build_feeds`` and
``export_hexo`` turn what is stored into files.  Decisions live in the stages
and in small pure helpers here (``body_fingerprint``, ``result_name``); this
module only sequences them and owns no I/O of its own.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aggregator import export, generate
from aggregator.errors import AggregatorError
from aggregator.fetch import HttpSession, fetch, make_session
from aggregator.normalize import normalize
from aggregator.parse import parse
from aggregator.records import (
    FeedOptions,
    FetchOptions,
    NormalizeOptions,
    PollResult,
    Source,
    StoreCounts,
    Validators,
)
from aggregator.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PollOptions:
    """What a poll needs besides the source and the store."""

    fetch: FetchOptions
    normalize: NormalizeOptions


NO_COUNTS = StoreCounts()


def utc_now() -> datetime:
    return datetime.now(UTC)


def poll_source(
    source: Source,
    store: Store,
    options: PollOptions,
    *,
    session: HttpSession | None = None,
    now: Callable[[], datetime] = utc_now,
) -> PollResult:
    """Fetch, parse, normalize and store one source; never raises for that source's faults."""
    started = time.monotonic()
    polled_at = now()
    try:
        remembered = store.source_status(source.id)
        same_url = remembered is not None and remembered.url == source.url
        validators = remembered.validators if same_url else Validators()

        fetched = fetch(source, options.fetch, validators, session)
        if fetched.not_modified:
            store.record_unchanged(
                source.id,
                source.url,
                result="not-modified",
                polled_at=polled_at,
                validators=fetched.validators,
            )
            return _done(source, "not-modified", started)

        body_hash = body_fingerprint(fetched.content, source, options.normalize)
        if same_url and remembered is not None and remembered.body_hash == body_hash:
            store.record_unchanged(
                source.id,
                source.url,
                result="unchanged",
                polled_at=polled_at,
                validators=fetched.validators,
            )
            return _done(source, "unchanged", started)

        parsed = parse(fetched, source)
        for warning in parsed.warnings:
            log.warning("source=%s %s", source.id, warning)

        articles = [
            normalize(entry, source, options.normalize, seen_at=polled_at)
            for entry in parsed.entries
        ]

        counts = store.save_articles(
            source.id,
            source.url,
            articles,
            validators=fetched.validators,
            body_hash=body_hash,
            polled_at=polled_at,
        )
        return _done(source, result_name(counts), started, counts, parsed.warnings)
    except AggregatorError as exc:
        return _failed(source, store, exc.reason, polled_at, started)
    except Exception as exc:  # a bug in one source's path must not stop the others
        log.exception("source=%s unexpected error", source.id)
        return _failed(
            source, store, f"internal error: {type(exc).__name__}: {exc}", polled_at, started
        )


def poll_sources(
    sources: Sequence[Source],
    store: Store,
    options: PollOptions,
    *,
    workers: int = 8,
    on_result: Callable[[PollResult], None] | None = None,
) -> list[PollResult]:
    """Poll sources concurrently; results come back in the sources' order."""
    local = threading.local()

    def run(source: Source) -> PollResult:
        if not hasattr(local, "session"):
            local.session = make_session(options.fetch)
        return poll_source(source, store, options, session=local.session)

    results: dict[str, PollResult] = {}
    with ThreadPoolExecutor(
        max_workers=max(1, min(workers, len(sources) or 1)), thread_name_prefix="poll"
    ) as pool:
        futures = {pool.submit(run, source): source for source in sources}
        for future in as_completed(futures):
            result = future.result()
            results[result.source_id] = result
            if on_result is not None:
                on_result(result)
    return [results[source.id] for source in sources]


def build_feeds(
    store: Store, options: FeedOptions, configured_categories: Iterable[str] = ()
) -> generate.BuildReport:
    """Regenerate every category's RSS and Atom feed and the OPML index."""
    categories = sorted(set(store.categories()) | set(configured_categories))
    articles = {c: store.latest_articles(c, options.feed_size) for c in categories}
    return generate.build_feeds(articles, options, all_categories=categories)


def export_hexo(store: Store, out_dir: Path) -> export.ExportReport:
    """Write every stored article as a Hexo post."""
    return export.export_hexo(store.iter_articles(), out_dir)


def body_fingerprint(content: bytes, source: Source, options: NormalizeOptions) -> str:
    """Identifies "same bytes under the same rules": a match means nothing to re-parse.

    The rules are part of it so that an edited source (categories, encoding) or
    new normalize options (image proxy) re-process an otherwise unchanged feed.
    """
    digest = hashlib.sha256(content)
    digest.update(
        b"\0"
        + repr((source.name, source.categories, source.encoding, source.comments, options)).encode(
            "utf-8"
        )
    )
    return digest.hexdigest()


def result_name(counts: StoreCounts) -> str:
    if counts.new:
        return "new"
    if counts.updated:
        return "updated"
    return "unchanged"


def _done(
    source: Source,
    result: str,
    started: float,
    counts: StoreCounts = NO_COUNTS,
    warnings: tuple[str, ...] = (),
) -> PollResult:
    elapsed = time.monotonic() - started
    log.info(
        "source=%s result=%s new=%d updated=%d unchanged=%d elapsed=%.3fs",
        source.id,
        result,
        counts.new,
        counts.updated,
        counts.unchanged,
        elapsed,
    )
    return PollResult(
        source_id=source.id, result=result, counts=counts, warnings=warnings, elapsed=elapsed
    )


def _failed(
    source: Source, store: Store, reason: str, polled_at: datetime, started: float
) -> PollResult:
    log.warning("source=%s result=error reason=%s", source.id, reason)
    try:
        store.record_error(source.id, source.url, reason, polled_at=polled_at)
    except AggregatorError as exc:
        log.error("source=%s could not record the error: %s", source.id, exc.reason)
    return PollResult(
        source_id=source.id, result="error", error=reason, elapsed=time.monotonic() - started
    )
