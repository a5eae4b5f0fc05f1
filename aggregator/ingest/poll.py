"""The orchestrator: one source goes fetch → parse → normalize → store.

``poll_source`` reads top to bottom as the life of one poll:

1. look up what the store remembers (validators, body hash, a confirmed move);
2. fetch, conditionally — a 304 ends the poll cheaply; a permanent redirect is
   tracked and followed once confirmed (``policy``);
3. an unchanged body (same bytes, same rules) ends it too, before any parsing;
4. parse the document into entries and
5. normalize every entry into an Article — both in a parse worker process
   (``worker``), so that sources are parsed in parallel under a budget;
6. store the articles and the new source state in one transaction.

Any ``AggregatorError`` ends that source's poll as an "error" result that is
recorded and logged with its id (a 410 Gone disables the source); it never
reaches the other sources.
``poll_sources`` runs many polls on a thread pool; ``build_feeds`` and
``export_hexo`` turn what is stored into files.  Decisions live in the stages,
in ``policy`` and in small pure helpers here (``body_fingerprint``, ``result_name``); this
module only sequences them and owns no I/O of its own.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime

from aggregator.errors import AggregatorError, FetchError
from aggregator.ingest.decide import effective_source, is_gone, should_move
from aggregator.ingest.fetch import HttpSession, fetch, make_session
from aggregator.ingest.sandbox import FunctionRef, WorkerPool
from aggregator.records import (
    Article,
    FetchOptions,
    FetchResult,
    NormalizeOptions,
    ParsedFeed,
    PollResult,
    Source,
    SourceStatus,
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


# parse → normalize of one document (``worker.parse_and_normalize``), by name: it runs in
# the parse workers, and this process imports the parser only when it has no pool.
PARSE_AND_NORMALIZE = FunctionRef("aggregator.ingest.extract", "parse_and_normalize")
NO_COUNTS = StoreCounts()


def utc_now() -> datetime:
    return datetime.now(UTC)


def poll_source(
    configured: Source,
    store: Store,
    options: PollOptions,
    *,
    session: HttpSession | None = None,
    parse_pool: WorkerPool | None = None,
    now: Callable[[], datetime] = utc_now,
) -> PollResult:
    """Fetch, parse, normalize and store one source; never raises for that source's faults.

    With ``parse_pool`` parse and normalize run in a worker process under a time and
    memory budget (hostile feeds); without it, in this thread.
    """
    poll = _Poll(configured, time.monotonic(), now())
    try:
        remembered = store.source_status(configured.id)
        source = poll.source = effective_source(configured, remembered)
        same_url = remembered is not None and remembered.url == source.url
        validators = remembered.validators if same_url else Validators()

        fetched = fetch(source, options.fetch, validators, session)
        poll.fetched(fetched)
        _track_permanent_redirect(store, configured, source, remembered,
                                  fetched.permanent_redirect)
        if fetched.not_modified:
            store.record_unchanged(source.id, source.url, result="not-modified",
                                   polled_at=poll.at, validators=fetched.validators)
            return poll.done("not-modified")

        body_hash = body_fingerprint(fetched.content, source, options.normalize)
        if same_url and remembered is not None and remembered.body_hash == body_hash:
            store.record_unchanged(source.id, source.url, result="unchanged",
                                   polled_at=poll.at, validators=fetched.validators)
            return poll.done("unchanged")

        # parse, then normalize every entry into an Article: in a worker process
        work = (fetched, source, options.normalize, poll.at)
        parsed: ParsedFeed
        articles: list[Article]
        parsed, articles = (parse_pool.call(PARSE_AND_NORMALIZE, *work, source_id=source.id)
                            if parse_pool else PARSE_AND_NORMALIZE(*work))
        for warning in parsed.warnings:
            log.warning("source=%s %s", source.id, warning)

        counts = store.save_articles(source.id, source.url, articles,
                                     validators=fetched.validators, body_hash=body_hash,
                                     polled_at=poll.at)
        return poll.done(result_name(counts), counts, parsed.warnings)
    except FetchError as exc:
        return poll.failed(store, exc.reason, status=exc.status, retry_after=exc.retry_after)
    except AggregatorError as exc:
        return poll.failed(store, exc.reason)
    except Exception as exc:  # a bug in one source's path must not stop the others
        log.exception("source=%s unexpected error", configured.id)
        return poll.failed(store, f"internal error: {type(exc).__name__}: {exc}")


def poll_sources(
    sources: Sequence[Source],
    store: Store,
    options: PollOptions,
    *,
    workers: int = 8,
    parse_pool: WorkerPool | None = None,
    on_result: Callable[[PollResult], None] | None = None,
) -> list[PollResult]:
    """Poll sources concurrently; results come back in the sources' order."""
    local = threading.local()

    def run(source: Source) -> PollResult:
        if not hasattr(local, "session"):
            local.session = make_session(options.fetch)
        return poll_source(source, store, options, session=local.session, parse_pool=parse_pool)

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


def _track_permanent_redirect(store: Store, configured: Source, polled: Source,
                              remembered: SourceStatus | None, target: str | None) -> None:
    """Follow a 301/308 only once it has been confirmed on consecutive polls."""
    if target is None and (remembered is None or not remembered.redirect_count):
        return  # the common case costs no write
    confirmations = store.note_redirect(configured.id, polled.url, target)
    if target is not None and should_move(confirmations):
        store.move_source(configured.id, configured.url, target)
        log.warning("source=%s moved permanently: now polling %s instead of %s "
                    "(confirmed on %d polls)", configured.id, target, polled.url, confirmations)


class _Poll:
    """The bookkeeping of one poll: timing and the result record."""

    def __init__(self, source: Source, started: float, at: datetime) -> None:
        self.source = source
        self.started = started
        self.at = at
        self.status: int | None = None
        self.fetch_seconds: float | None = None
        self.permanent_redirect: str | None = None

    def fetched(self, result: FetchResult) -> None:
        self.status = result.status
        self.fetch_seconds = result.elapsed
        self.permanent_redirect = result.permanent_redirect

    def done(self, result: str, counts: StoreCounts = NO_COUNTS,
             warnings: tuple[str, ...] = ()) -> PollResult:
        elapsed = time.monotonic() - self.started
        log.info("source=%s result=%s new=%d updated=%d unchanged=%d elapsed=%.3fs",
                 self.source.id, result, counts.new, counts.updated, counts.unchanged, elapsed)
        return PollResult(source_id=self.source.id, result=result, counts=counts,
                          warnings=warnings, elapsed=elapsed, status=self.status,
                          permanent_redirect=self.permanent_redirect,
                          fetch_seconds=self.fetch_seconds)

    def failed(self, store: Store, reason: str, *, status: int | None = None,
               retry_after: float | None = None) -> PollResult:
        result = PollResult(source_id=self.source.id, result="error", error=reason,
                            elapsed=time.monotonic() - self.started, status=status or self.status,
                            retry_after=retry_after, fetch_seconds=self.fetch_seconds)
        log.warning("source=%s result=error reason=%s", self.source.id, reason)
        try:
            if is_gone(result):
                log.warning("source=%s is gone (HTTP %s): disabled until its URL changes",
                            self.source.id, status)
                store.disable_source(self.source.id, self.source.url, reason, polled_at=self.at)
            else:
                store.record_error(self.source.id, self.source.url, reason, polled_at=self.at)
        except AggregatorError as exc:
            log.error("source=%s could not record the error: %s", self.source.id, exc.reason)
        return result
