"""The daemon's scheduler: every source polled on its own clock, forever.

``Daemon`` owns an APScheduler ``BackgroundScheduler`` and turns the pipeline
into a long-running service:

- one job per enabled source.  Each poll schedules the source's next one
  (``policy.poll_delay``: the interval on success, exponential backoff after
  errors, a portal's Retry-After when longer), and the due time is stored, so a
  restarted daemon keeps its backoff; first polls after a start are spread by a
  random jitter so a restart does not fire every source at once;
- a bounded thread pool (``workers``), ``max_instances=1`` and coalescing per
  job, and a per-host semaphore (``host_concurrency``) so one portal is never
  hammered;
- polls that added or changed articles queue their categories for a debounced
  build: many sources finishing together cause one build of just those
  categories;
- a valid config edit (``reload``, called on file change or SIGHUP) adds,
  removes and reschedules sources; an invalid one is logged and the last good
  config keeps running;
- ``stop`` stops scheduling and waits a bounded time for in-flight polls.

It must not fetch, parse or write anything itself (the pipeline does), nor
install signal handlers or serve HTTP (the CLI wires those).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from aggregator import publish
from aggregator.config import Settings, load_config
from aggregator.errors import AggregatorError, ConfigError
from aggregator.ingest import poll as pipeline
from aggregator.ingest.decide import (
    effective_source,
    first_poll_at,
    is_disabled,
    is_gone,
    poll_delay,
)
from aggregator.ingest.fetch import HttpSession, make_session
from aggregator.records import PollResult, Source
from aggregator.service.metrics import Metrics
from aggregator.store import Store

log = logging.getLogger(__name__)

BUILD_JOB = "build"
RETENTION_JOB = "retention"
RETENTION_EVERY = timedelta(hours=1)


def _job_id(source_id: str) -> str:
    return f"poll:{source_id}"


class Daemon:
    """Schedules polls, builds and retention for one config file."""

    def __init__(self, settings: Settings, store: Store, metrics: Metrics, *,
                 config_path: Path | None = None,
                 now: Callable[[], datetime] = pipeline.utc_now,
                 rng: random.Random | None = None,
                 on_build: Callable[[], None] | None = None) -> None:
        self._settings = settings  # the last good config
        self._config_path = config_path or settings.config_path
        self._store = store
        self._metrics = metrics
        self._now = now
        self._rng = rng or random.Random()
        self._on_build = on_build
        self._sources: dict[str, Source] = {}
        self._lock = threading.RLock()
        self._pending_categories: set[str] = set()
        self._full_build_pending = False
        self._host_limits: dict[str, threading.BoundedSemaphore] = {}
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._sessions = threading.local()
        self._parse_pool = settings.parse_pool()  # budget and size fixed for the process
        self._scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(settings.workers)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        return self._settings

    def start(self) -> None:
        self._scheduler.start()
        self.apply(self._settings)
        self._request_build(None)  # the output reflects the current config from the start
        if self._settings.retention_days or self._settings.max_articles_per_source:
            every = RETENTION_EVERY.total_seconds()
            self._scheduler.add_job(self._retain, "interval", seconds=every,
                                    id=RETENTION_JOB, next_run_time=self._now(),
                                    replace_existing=True)
        log.info("daemon started with %d source(s)", len(self._sources))

    def stop(self, timeout: float | None = None) -> bool:
        """Stop scheduling; wait up to ``timeout`` for in-flight polls.  True if all ended."""
        self._stopping.set()
        if not self._scheduler.running:
            self._parse_pool.close()
            return True
        self._scheduler.pause()
        bound = self._settings.shutdown_timeout.total_seconds() if timeout is None else timeout
        with self._idle:
            finished = self._idle.wait_for(lambda: self._in_flight == 0, timeout=bound)
        self._scheduler.shutdown(wait=False)
        self._parse_pool.close()
        if not finished:
            log.warning("stopping with %d poll(s) still running after %.0fs",
                        self._in_flight, bound)
        log.info("daemon stopped")
        return finished

    # -- configuration -----------------------------------------------------------------

    def reload(self) -> bool:
        """Re-read the config file; apply it if valid, else keep the last good one."""
        if self._config_path is None:
            return False
        try:
            settings = load_config(self._config_path)
        except ConfigError as exc:
            log.error("config reload failed, keeping the last good config: %s", exc)
            return False
        self.apply(settings)
        log.info("config reloaded: %d source(s)", len(self._sources))
        return True

    def apply(self, settings: Settings) -> None:
        """Make the schedule match ``settings``: add, remove and reschedule sources."""
        wanted = {s.id: s for s in settings.source_list() if s.enabled}
        with self._lock:
            old = self._sources
            self._settings = settings
            self._sources = dict(wanted)
        for source_id in old.keys() - wanted.keys():
            self._unschedule(source_id)
            log.info("source=%s removed from the schedule", source_id)
        statuses = {s.source_id: s for s in self._store.statuses()}
        now = self._now()
        for source_id, source in wanted.items():
            if old.get(source_id) == source:
                continue
            jitter = timedelta(seconds=self._rng.uniform(
                0, min(settings.start_jitter, source.interval).total_seconds()))
            when = first_poll_at(now, statuses.get(source_id), jitter)
            if source_id in old:  # an edited source is polled soon, under its new rules
                when = now + jitter
            self._schedule(source_id, when)
            log.info("source=%s %s; first poll at %s", source_id,
                     "rescheduled" if source_id in old else "scheduled", when.isoformat())
        if old and {c for s in old.values() for c in s.categories} != {
                c for s in wanted.values() for c in s.categories}:
            self._request_build(None)  # the set of categories changed: rebuild the index

    # -- polls ---------------------------------------------------------------------------

    def poll_now(self, source_id: str) -> PollResult | None:
        """Run one scheduled poll synchronously (what the job does); for tests and tools."""
        return self._poll(source_id)

    def _poll(self, source_id: str) -> PollResult | None:
        with self._lock:
            source = self._sources.get(source_id)
            if source is None or self._stopping.is_set():
                return None
            settings = self._settings
            self._in_flight += 1
        try:
            return self._poll_source(source, settings)
        except Exception:  # the job must always reschedule; never kill the daemon
            log.exception("source=%s poll job failed", source_id)
            self._schedule(source_id, self._now() + source.interval)
            return None
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def _poll_source(self, source: Source, settings: Settings) -> PollResult | None:
        status = self._store.source_status(source.id)
        if is_disabled(source, status):
            log.info("source=%s is disabled (%s); not polling", source.id,
                     status.disabled_reason if status else "")
            return None
        options = pipeline.PollOptions(fetch=settings.fetch_options(),
                                       normalize=settings.normalize_options())
        host = urlsplit(effective_source(source, status).url).hostname or ""
        with self._host_slot(host, settings.host_concurrency):
            result = pipeline.poll_source(source, self._store, options,
                                          session=self._session(settings),
                                          parse_pool=self._parse_pool)
        after = self._store.source_status(source.id)
        errors = after.error_count if after else 0
        self._metrics.record_poll(result, errors)
        if result.counts.new or result.counts.updated:
            self._request_build(set(source.categories))
        if is_gone(result):
            self._unschedule(source.id)
            return result
        delay = poll_delay(source.interval, errors if result.result == "error" else 0,
                           max_backoff=settings.max_backoff, retry_after=result.retry_after)
        due = self._now() + delay
        try:
            self._store.schedule_next(source.id, source.url, due)
        except AggregatorError as exc:
            log.error("source=%s could not store the next poll time: %s", source.id, exc)
        self._schedule(source.id, due)
        if result.result == "error":
            log.warning("source=%s next poll in %s after %d consecutive error(s)", source.id,
                        delay, errors)
        return result

    @contextmanager
    def _host_slot(self, host: str, limit: int) -> Iterator[None]:
        with self._lock:
            semaphore = self._host_limits.get(host)
            if semaphore is None:
                semaphore = self._host_limits[host] = threading.BoundedSemaphore(limit)
        with semaphore:
            yield

    def _session(self, settings: Settings) -> HttpSession:
        session = getattr(self._sessions, "session", None)
        if session is None:
            session = self._sessions.session = make_session(settings.fetch_options())
        return session

    def _schedule(self, source_id: str, when: datetime) -> None:
        with self._lock:
            if self._stopping.is_set() or source_id not in self._sources:
                return
            self._scheduler.add_job(self._poll, "date", run_date=when, args=[source_id],
                                    id=_job_id(source_id), replace_existing=True)

    def _unschedule(self, source_id: str) -> None:
        job = self._scheduler.get_job(_job_id(source_id))
        if job is not None:
            job.remove()

    def next_poll_at(self, source_id: str) -> datetime | None:
        job = self._scheduler.get_job(_job_id(source_id))
        return job.next_run_time if job is not None else None

    # -- builds and retention ----------------------------------------------------------------

    def _request_build(self, categories: set[str] | None) -> None:
        """Queue categories (None: everything) for one debounced build."""
        with self._lock:
            if categories is None:
                self._full_build_pending = True
            else:
                self._pending_categories |= categories
            if self._stopping.is_set() or self._scheduler.get_job(BUILD_JOB) is not None:
                return  # a build is already due and will include these
            when = self._now() + self._settings.build_debounce
            self._scheduler.add_job(self._build, "date", run_date=when, id=BUILD_JOB)

    def _build(self) -> None:
        with self._lock:
            only = None if self._full_build_pending else set(self._pending_categories)
            self._pending_categories.clear()
            self._full_build_pending = False
            settings = self._settings
        configured = [c for s in settings.sources for c in s.categories]
        try:
            with self._metrics.build_seconds.time():
                report = publish.build(self._store, settings.feed_options(), configured,
                                              only=only)
            self._metrics.articles_total.set(self._store.count_articles())
        except AggregatorError as exc:
            log.error("build failed: %s", exc)
            return
        log.info("built %s: %d file(s) written, %d unchanged",
                 "everything" if only is None else ", ".join(sorted(only)),
                 len(report.written), len(report.unchanged))
        if self._on_build is not None:
            self._on_build()

    def _retain(self) -> None:
        settings = self._settings
        older_than = (self._now() - timedelta(days=settings.retention_days)
                      if settings.retention_days else None)
        try:
            deleted = self._store.prune(older_than=older_than,
                                        keep_per_source=settings.max_articles_per_source)
        except AggregatorError as exc:
            log.error("retention failed: %s", exc)
            return
        if deleted:
            log.info("retention deleted %d article(s)", deleted)
            self._request_build(None)
