"""One poll of one source: plan → fetch → parse → normalize → decide → commit.

``poll_source`` reads top to bottom as that sentence:

1. ``decide.plan``: from the config and the state the caller read once, the URL to
   poll (a confirmed move applied), the validators and the known body hash; a source
   a 410 disabled is skipped unless forced;
2. fetch, conditionally, through the injected ``fetch`` (the real one is
   ``ingest.fetch.HttpFetcher``; tests inject others) — a 304 ends the work cheaply;
3. an unchanged body (same bytes, same rules) ends it too, before any parsing;
4. parse and normalize every entry into an ``Article``, in a parse worker process
   (``extract`` under the ``sandbox`` budget) or in this thread; for a ``full_text``
   source, the pages of its new (or changed) articles are fetched one after another
   with the same fetch — inside this poll's host slot, so within the host limit — at
   most ``full_text_max_pages`` within ``full_text_deadline``, and their main content
   (``fulltext``, in a parse worker too) replaces the summary;
5. ``decide.decide``: one pure ``SourceUpdate`` (validators, errors, backoff, next
   poll, redirect, disabling, outcome);
6. ``store.commit_poll``: the update and the articles in ONE transaction (in
   ``poll_sources``, a ``writer.BatchWriter`` commits several polls per transaction,
   and a poll's result exists only once its transaction committed).

Faults of one source (``AggregatorError``, a parse over budget, even a bug) end as an
error outcome that is decided, committed and logged with the source id; they never
reach the other sources.  ``poll_sources`` runs many polls on a thread pool with one
state read for all of them and at most ``host_concurrency`` polls per host, where a
poll waiting for its host holds no thread (``HostSlots``).

This module sequences; it decides nothing itself (``decide`` does), opens no
database (the store is passed in) and imports no HTTP library (fetch is injected).
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import urlsplit

from aggregator.errors import AggregatorError, FetchError, LeaseLost, ParseError
from aggregator.ingest import decide
from aggregator.ingest.sandbox import FunctionRef, SandboxError, WorkerPool
from aggregator.ingest.writer import BatchWriter
from aggregator.records import (
    Article,
    FetchOptions,
    FetchResult,
    Lease,
    NormalizeOptions,
    ParsedFeed,
    PollOutcome,
    PollResult,
    PollRules,
    Source,
    SourceState,
    SourceUpdate,
    StoreCounts,
    Validators,
)

log = logging.getLogger(__name__)

# parse → normalize of one document (``extract.parse_and_normalize``), by name: it runs
# in the parse workers, and this process imports the parser only when it has no pool.
PARSE_AND_NORMALIZE = FunctionRef("aggregator.ingest.extract", "parse_and_normalize")
# an article page → the article with its main content (``full_text`` sources)
ARTICLE_WITH_FULL_TEXT = FunctionRef("aggregator.ingest.fulltext", "article_with_full_text")
# The content hash of an article stored with its feed summary because its page was not
# fetched yet (the per-poll cap or deadline): it never matches what the feed says, so the
# next parsed poll counts the article as changed and fetches its page.
PENDING_PAGE = "pending-page:"

Fetch = Callable[[Source, FetchOptions, Validators], FetchResult]


@dataclass(frozen=True, slots=True)
class PollOptions:
    """What a poll needs besides the source and the store."""

    fetch: FetchOptions
    normalize: NormalizeOptions
    rules: PollRules = field(default_factory=PollRules)
    # full_text sources: article pages one poll fetches at most, and the seconds they
    # may take together; the articles left wait, with their summary, for the next poll
    full_text_max_pages: int = 20
    full_text_deadline: float = 120.0


class PollStore(Protocol):
    """What a poll needs of the store: one read of the states, one commit per poll —
    alone (``poll_source``) or several in one transaction (``poll_sources``'s writer) —
    and, for a ``full_text`` source, one read of which articles it already holds."""

    def source_states(self, source_ids: Iterable[str] | None = None) -> dict[str, SourceState]:
        ...

    def known_keys(self, source_id: str, hashes: Mapping[str, str]) -> set[str]: ...

    def commit_poll(self, update: SourceUpdate, articles: Sequence[Article] | None = None,
                    lease: Lease | None = None) -> StoreCounts: ...

    def commit_polls(self, items: Sequence[tuple[SourceUpdate, Sequence[Article] | None,
                                                 Lease | None]]
                     ) -> list[StoreCounts | AggregatorError]: ...


def utc_now() -> datetime:
    return datetime.now(UTC)


def poll_source(
    configured: Source,
    remembered: SourceState | None,
    store: PollStore,
    options: PollOptions,
    *,
    fetch: Fetch,
    parse_pool: WorkerPool | None = None,
    force: bool = False,
    lease: Lease | None = None,
    now: Callable[[], datetime] = utc_now,
    jitter: Callable[[], float] = random.random,
) -> PollResult:
    """Poll one source whose stored state the caller read (``remembered``); never raises
    for that source's faults.  ``force`` polls a source that a 410 disabled; ``lease``
    (from a claim) fences the commit."""
    prepared = _prepare(configured, remembered, store, options, fetch=fetch,
                        parse_pool=parse_pool, force=force, lease=lease, now=now,
                        jitter=jitter)
    if isinstance(prepared, PollResult):
        return prepared
    try:
        outcome: StoreCounts | AggregatorError = store.commit_poll(
            prepared.update, prepared.articles, lease)
    except AggregatorError as exc:
        outcome = exc
    return prepared.finish(outcome)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A poll done but for its commit: what to commit, and how its outcome becomes the
    poll's result (``finish``, called once the commit ended)."""

    update: SourceUpdate
    articles: list[Article] | None
    finish: Callable[[StoreCounts | AggregatorError], PollResult]


def _prepare(configured: Source, remembered: SourceState | None, store: PollStore,
             options: PollOptions, *, fetch: Fetch, parse_pool: WorkerPool | None,
             force: bool, lease: Lease | None, now: Callable[[], datetime],
             jitter: Callable[[], float]) -> PollResult | Prepared:
    """``poll_source`` up to its commit: the result of a skipped source, or the decision
    to commit."""
    started, at = time.monotonic(), now()
    planned = decide.plan(configured, remembered)
    if planned.disabled is not None and not force:
        log.info("source=%s is disabled (%s); not polling", configured.id, planned.disabled)
        return PollResult(source_id=configured.id, result=PollOutcome.SKIPPED,
                          error=planned.disabled, consecutive_errors=_errors(remembered))

    attempt, articles, parsed, pages = _attempt(planned, options, fetch, parse_pool, at, store)
    update = decide.decide(configured, remembered, planned, attempt, now=at,
                           rules=options.rules, jitter=jitter())
    if attempt.fetched is not None and attempt.fetched.content:
        # the commit may wait (a writer's queue, a store still opening): what the result
        # needs is kept until then, not the body (its hash is in the attempt already)
        attempt = replace(attempt, fetched=replace(attempt.fetched, content=b""))

    def finish(outcome: StoreCounts | AggregatorError) -> PollResult:
        decided, counts = update, outcome
        if isinstance(outcome, LeaseLost):
            log.info("source=%s %s", configured.id, outcome.reason)
            return PollResult(source_id=configured.id, result=PollOutcome.SUPERSEDED,
                              error=outcome.reason, elapsed=time.monotonic() - started,
                              consecutive_errors=_errors(remembered))
        if isinstance(outcome, AggregatorError):
            log.error("source=%s could not store the poll: %s", configured.id, outcome.reason)
            decided = decide.decide(configured, remembered, planned, decide.Attempt(
                fetched=attempt.fetched, error=outcome.reason), now=at, rules=options.rules,
                jitter=jitter())
            counts = StoreCounts()
        assert isinstance(counts, StoreCounts)
        result = _result(decided, attempt, counts, parsed, pages, time.monotonic() - started)
        _log(planned.source, decided, result)
        return result

    return Prepared(update=update, articles=articles, finish=finish)


def poll_sources(
    sources: Sequence[Source],
    store: PollStore,
    options: PollOptions,
    *,
    fetch: Fetch,
    workers: int = 8,
    host_concurrency: int | None = None,
    parse_pool: WorkerPool | None = None,
    force: Collection[str] = (),
    on_result: Callable[[PollResult], None] | None = None,
) -> list[PollResult]:
    """Poll sources concurrently; results come back in the sources' order.

    The sources' states are read in one query; ``force`` names sources to poll even
    if a 410 disabled them; ``host_concurrency`` bounds the polls of one host.  The
    decisions go to one ``BatchWriter``, which commits several per transaction; a
    source's result is recorded (and ``on_result`` called, on the writer's thread)
    only once its commit ended.
    """
    states = store.source_states([s.id for s in sources])
    hosts = HostSlots()
    results: dict[str, PollResult] = {}

    def report(result: PollResult) -> None:
        results[result.source_id] = result
        if on_result is not None:
            on_result(result)

    def run(source: Source, writer: BatchWriter) -> None:
        prepared = _prepare(source, states.get(source.id), store, options, fetch=fetch,
                            parse_pool=parse_pool, force=source.id in force, lease=None,
                            now=utc_now, jitter=random.random)
        if isinstance(prepared, PollResult):
            report(prepared)
            return
        writer.submit(prepared.update, prepared.articles, None,
                      lambda outcome: report(prepared.finish(outcome)))

    def submit(source: Source, writer: BatchWriter) -> None:
        host = host_of(decide.plan(source, states.get(source.id)).source.url)
        hosts.run(host, host_concurrency, lambda: run(source, writer))

    with BatchWriter(store) as writer, ThreadPoolExecutor(
            max_workers=max(1, min(workers, len(sources) or 1)),
            thread_name_prefix="poll") as pool:
        done, _ = wait([pool.submit(submit, source, writer) for source in sources])
        for future in done:
            future.result()  # a bug in the wiring, not in a source, surfaces here
    return [results[source.id] for source in sources]


class HostSlots:
    """At most ``limit`` polls of one host at a time.

    A poll whose host is busy waits in that host's queue without holding a thread: the
    thread that finishes a poll of the host runs the next waiting one.  So one slow
    portal never starves the pool of workers that other hosts' polls need.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, int] = {}
        self._waiting: dict[str, deque[Callable[[], None]]] = {}

    def run(self, host: str, limit: int | None, task: Callable[[], None]) -> bool:
        """Run ``task`` now (True) or queue it behind the host's running polls (False)."""
        with self._lock:
            if limit is not None and self._running.get(host, 0) >= limit:
                self._waiting.setdefault(host, deque()).append(task)
                return False
            self._running[host] = self._running.get(host, 0) + 1
        next_task: Callable[[], None] | None = task
        while next_task is not None:
            try:
                next_task()
            finally:
                with self._lock:
                    queue = self._waiting.get(host)
                    next_task = queue.popleft() if queue else None
                    if next_task is None:
                        self._running[host] -= 1
                        if not self._running[host]:
                            del self._running[host]
                        self._waiting.pop(host, None)
        return True

    def waiting(self) -> int:
        """How many polls wait for their host."""
        with self._lock:
            return sum(len(queue) for queue in self._waiting.values())


def host_of(url: str) -> str:
    return urlsplit(url).hostname or ""


def body_fingerprint(content: bytes, source: Source, options: NormalizeOptions) -> str:
    """Identifies "same bytes under the same rules": a match means nothing to re-parse.

    The rules are part of it so that an edited source (categories, encoding, selectors,
    article rules, full text) or new normalize options (image proxy) re-process an
    otherwise unchanged feed.
    """
    digest = hashlib.sha256(content)
    rules = (source.name, source.categories, source.encoding, source.comments, source.kind,
             source.page, source.rules, source.full_text, source.content_selector, options)
    digest.update(b"\0" + repr(rules).encode("utf-8"))
    return digest.hexdigest()


# -- the steps -------------------------------------------------------------------------


def _attempt(planned: decide.PollPlan, options: PollOptions, fetch: Fetch,
             parse_pool: WorkerPool | None, at: datetime, store: PollStore,
             ) -> tuple[decide.Attempt, list[Article] | None, ParsedFeed | None, Pages]:
    """Fetch, and parse what changed: what happened, the articles, the parsed feed
    (None and None: nothing was parsed) and what full text cost."""
    source = planned.source
    fetched: FetchResult | None = None
    pages = Pages()
    try:
        fetched = fetch(source, options.fetch, planned.validators)
        if fetched.not_modified:
            return decide.Attempt(fetched=fetched), None, None, pages
        body_hash: str | None = body_fingerprint(fetched.content, source, options.normalize)
        if body_hash == planned.known_body:
            return decide.Attempt(fetched=fetched, body_hash=body_hash), None, None, pages
        parsed, articles = _extract(fetched, source, options.normalize, at, parse_pool)
        for warning in parsed.warnings:
            log.warning("source=%s %s", source.id, warning)
        if source.full_text and articles:
            articles, pages = _full_text(source, articles, store, options, fetch, parse_pool)
            if pages.pending:
                # not "this body is done": the next poll must parse it again, even if the
                # portal would answer 304 or the same bytes, to fetch the pages left
                fetched, body_hash = replace(fetched, etag=None, last_modified=None), None
        attempt = decide.Attempt(fetched=fetched, body_hash=body_hash, parsed=True,
                                 warnings=parsed.warnings)
        return attempt, articles, parsed, pages
    except FetchError as exc:
        return decide.Attempt(fetched=None, error=exc.reason, status=exc.status,
                              retry_after=exc.retry_after), None, None, pages
    except AggregatorError as exc:
        return decide.Attempt(fetched=None, error=exc.reason,
                              status=fetched.status if fetched else None), None, None, pages
    except Exception as exc:  # a bug in one source's path must not stop the others
        log.exception("source=%s unexpected error", source.id)
        return decide.Attempt(fetched=None, error=f"internal error: {type(exc).__name__}: {exc}",
                              status=fetched.status if fetched else None), None, None, pages


@dataclass(frozen=True, slots=True)
class Pages:
    """What one poll's full text did: pages asked for, failed (the summary stays) and
    left for a later poll."""

    fetched: int = 0
    failed: int = 0
    pending: int = 0


def _full_text(source: Source, articles: list[Article], store: PollStore,
               options: PollOptions, fetch: Fetch,
               parse_pool: WorkerPool | None) -> tuple[list[Article], Pages]:
    """The articles with their pages' main content where it could be had.

    Only articles the store does not hold as they are (new, or changed in the feed) have
    their page fetched: an unchanged article never costs a request again.  A page that
    fails (HTTP error, timeout, not HTML, no content found) leaves the article with the
    feed's summary and is NOT retried while its entry is unchanged — a page that is
    missing now usually stays missing, and retrying would cost a request every poll.
    Pages beyond the cap or the deadline are stored with the summary under a
    ``PENDING_PAGE`` hash, so a later poll fetches them.  Nothing here fails the poll.

    The hashes are ``full_text_hash``es: a new ``content_selector`` (or turning full text
    on) makes every listed article "changed", so their pages are fetched again under the
    new rule, and turning it off brings the feed's content back.
    """
    articles = [replace(a, content_hash=full_text_hash(a.content_hash, source)) if a.link
                else a for a in articles]
    linked = {a.key: a.content_hash for a in articles if a.link}
    known = store.known_keys(source.id, linked) if linked else set()
    wanted = [a for a in articles if a.key in linked and a.key not in known]
    if not wanted:
        return articles, Pages()
    deadline = time.monotonic() + options.full_text_deadline
    replaced: dict[str, Article] = {}
    fetched = failed = 0
    for article in wanted:
        remaining = deadline - time.monotonic()
        if fetched >= options.full_text_max_pages or remaining <= 0:
            replaced[article.key] = replace(article,
                                            content_hash=PENDING_PAGE + article.content_hash)
            continue
        fetched += 1
        try:
            replaced[article.key] = _with_page(article, source, options, remaining, fetch,
                                               parse_pool)
        except AggregatorError as exc:
            failed += 1
            log.warning("source=%s full text of %s failed: %s", source.id, article.link,
                        exc.reason)
        except Exception as exc:  # a bug on one page must not cost the poll
            failed += 1
            log.exception("source=%s full text of %s failed: internal error: %s: %s",
                          source.id, article.link, type(exc).__name__, exc)
    pending = len(wanted) - fetched
    if pending:
        log.info("source=%s full text: %d page(s) left for the next poll (at most %d per "
                 "poll, %.0fs)", source.id, pending, options.full_text_max_pages,
                 options.full_text_deadline)
    out = [replaced.get(a.key, a) if a.key in linked else a for a in articles]
    return out, Pages(fetched=fetched, failed=failed, pending=pending)


def full_text_hash(content_hash: str, source: Source) -> str:
    """The content hash of an article of a ``full_text`` source: what the FEED said (the
    page's content is not in it, so an unchanged entry stays unchanged) and the rule its
    page is read by."""
    rule = f"{content_hash}\0full_text\0{source.content_selector or ''}"
    return hashlib.sha256(rule.encode("utf-8")).hexdigest()


def _with_page(article: Article, source: Source, options: PollOptions, remaining: float,
               fetch: Fetch, parse_pool: WorkerPool | None) -> Article:
    """Fetch the article's page (within what is left of the deadline) and extract it."""
    assert article.link is not None
    limits = replace(options.fetch, deadline=min(options.fetch.deadline, remaining))
    page = fetch(replace(source, url=article.link), limits, Validators())
    return _in_worker(ARTICLE_WITH_FULL_TEXT, parse_pool, source.id,  # type: ignore[no-any-return]
                      article, page, source, options.normalize)


def _extract(fetched: FetchResult, source: Source, options: NormalizeOptions, at: datetime,
             parse_pool: WorkerPool | None) -> tuple[ParsedFeed, list[Article]]:
    """Parse, then normalize every entry into an Article: in a worker process when there
    is a pool, under its budget."""
    return _in_worker(PARSE_AND_NORMALIZE, parse_pool, source.id,  # type: ignore[no-any-return]
                      fetched, source, options, at)


def _in_worker(function: FunctionRef, parse_pool: WorkerPool | None, source_id: str,
               *args: object) -> object:
    """``function(*args)`` in a parse worker under its budget, or here without a pool; a
    call over budget (or a lost worker) is that source's ``ParseError``."""
    if parse_pool is None:
        return function(*args)
    try:
        return parse_pool.call(function, *args)
    except SandboxError as exc:
        raise ParseError(exc.reason, source_id=source_id) from exc


def _result(update: SourceUpdate, attempt: decide.Attempt, counts: StoreCounts,
            parsed: ParsedFeed | None, pages: Pages, elapsed: float) -> PollResult:
    state = update.state
    fetched = attempt.fetched
    return PollResult(
        source_id=state.source_id,
        result=update.result or PollOutcome.of_counts(counts),
        counts=counts,
        error=state.last_error if update.result in (PollOutcome.ERROR, PollOutcome.DISABLED)
        else None,
        warnings=parsed.warnings if parsed else (),
        elapsed=elapsed,
        status=fetched.status if fetched else attempt.status,
        retry_after=attempt.retry_after,
        permanent_redirect=fetched.permanent_redirect if fetched else None,
        fetch_seconds=fetched.elapsed if fetched else None,
        next_poll_at=state.next_poll_at,
        consecutive_errors=state.error_count,
        parsed=parsed is not None and update.result is None,
        rekeyed=parsed.rekeyed if parsed else 0,
        pages_fetched=pages.fetched,
        pages_failed=pages.failed,
        pages_pending=pages.pending,
        filtered=parsed.filtered if parsed else 0,
        parser=parsed.parser if parsed else None,
    )


def _log(polled: Source, update: SourceUpdate, result: PollResult) -> None:
    state = update.state
    if update.moved:
        log.warning("source=%s moved permanently: now polling %s instead of %s "
                    "(confirmed on %d polls)", polled.id, state.moved_to, polled.url,
                    decide.REDIRECT_CONFIRMATIONS)
    if result.result is PollOutcome.DISABLED:
        log.warning("source=%s is gone (HTTP %s): disabled until its URL changes",
                    polled.id, result.status)
    if result.result.failed:
        log.warning("source=%s result=%s reason=%s errors=%d next=%s", polled.id,
                    result.result.value, result.error, state.error_count,
                    state.next_poll_at.isoformat() if state.next_poll_at else "never")
        return
    c = result.counts
    pages = ""
    if result.pages_fetched or result.pages_pending:
        pages = (f" pages={result.pages_fetched} pages_failed={result.pages_failed}"
                 f" pages_pending={result.pages_pending}")
    parser = f" parser={result.parser.value}" if result.parser else ""
    log.info("source=%s result=%s new=%d updated=%d unchanged=%d filtered=%d%s%s elapsed=%.3fs",
             polled.id, result.result.value, c.new, c.updated, c.unchanged, result.filtered,
             pages, parser, result.elapsed)


def _errors(state: SourceState | None) -> int:
    return state.error_count if state is not None else 0
