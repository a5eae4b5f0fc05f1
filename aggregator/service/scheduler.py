"""The service's scheduler: every source polled on its own clock, forever.

``Scheduler`` owns an APScheduler ``BackgroundScheduler`` and turns polls into a
long-running service:

- one date job per enabled source.  A job reads the source's state once, runs
  ``ingest.poll.poll_source`` (which decides and commits) and reschedules the source
  from the ``next_poll_at`` the poll returned — nothing else: backoff, Retry-After,
  jitter, 410 disabling and moves are the poll's decision.  First polls after a
  start keep a remembered due time and are spread by a random jitter;
- a bounded thread pool (``workers``); at most ``host_concurrency`` polls per host,
  and a poll waiting for its host holds no pool thread (``HostSlots``), so one slow
  portal cannot starve the others;
- polls that added or changed articles queue their categories for a debounced
  build: many sources finishing together cause one build of just those categories;
- a valid config edit (``reload``, called on file change or SIGHUP) adds, removes
  and reschedules sources; an invalid one is logged and the last good config keeps
  running.  Either way it is recorded in ``config_state`` (and the config metrics)
  for ``/healthz`` and ``/metrics``;
- ``stop`` stops scheduling and waits a bounded time for in-flight polls.

It must not fetch, parse, decide or write anything itself (the poll and the store
do), nor install signal handlers or serve HTTP (``service.process`` wires those).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from aggregator import publish
from aggregator.config import Settings
from aggregator.errors import AggregatorError
from aggregator.ingest import decide
from aggregator.ingest.fetch import HttpFetcher
from aggregator.ingest.poll import HostSlots, host_of, poll_source, utc_now
from aggregator.records import ConfigSync, PollResult, Source, SourceState
from aggregator.service import wiring
from aggregator.service.health import ConfigState
from aggregator.service.memory import release_freed_memory
from aggregator.service.metrics import Metrics
from aggregator.service.websub import HubPinger
from aggregator.store import Store

log = logging.getLogger(__name__)

BUILD_JOB = "build"
RETENTION_JOB = "retention"
RETENTION_EVERY = timedelta(hours=1)


def _job_id(source_id: str) -> str:
    return f"poll:{source_id}"


class Scheduler:
    """Schedules polls, builds and retention for one config."""

    def __init__(self, settings: Settings, store: Store, metrics: Metrics, *,
                 now: Callable[[], datetime] = utc_now,
                 rng: random.Random | None = None,
                 on_build: Callable[[], None] | None = None) -> None:
        self._settings = settings  # the last good config
        self._store = store
        self._metrics = metrics
        self._now = now
        self._rng = rng or random.Random()
        self._on_build = on_build
        self._config_state = ConfigState(settings.config_path, now())
        metrics.config_loaded(self._config_state.loaded_at)
        self._sources: dict[str, Source] = {}
        self._lock = threading.RLock()
        self._pending_categories: set[str] = set()
        self._full_build_pending = False
        self._hosts = HostSlots()
        self._busy: set[str] = set()  # sources whose poll runs or waits for its host
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._fetch = HttpFetcher()
        self._parse_pool = wiring.parse_pool(settings)  # budget and size fixed for the process
        self._pinger = HubPinger(metrics)  # WebSub pings after builds, off the build's path
        self._scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(settings.workers)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def config_state(self) -> ConfigState:
        """The running config's file and load time, and the last reload error."""
        return self._config_state

    def start(self) -> None:
        self._scheduler.start()
        self.apply(self._settings)
        self._request_build(None)  # the output reflects the current config from the start
        every = RETENTION_EVERY.total_seconds()  # also forgets sources the config dropped
        self._scheduler.add_job(self.prune_now, "interval", seconds=every, id=RETENTION_JOB,
                                next_run_time=self._now(), replace_existing=True)
        log.info("scheduler started with %d source(s)", len(self._sources))

    def stop(self, timeout: float | None = None) -> bool:
        """Stop scheduling; wait up to ``timeout`` for in-flight polls.  True if all ended."""
        self._stopping.set()
        if not self._scheduler.running:
            self._close()
            return True
        self._scheduler.pause()
        bound = self._settings.shutdown_timeout.total_seconds() if timeout is None else timeout
        with self._idle:
            finished = self._idle.wait_for(lambda: self._in_flight == 0, timeout=bound)
        self._scheduler.shutdown(wait=False)
        self._close()
        if not finished:
            log.warning("stopping with %d poll(s) still running after %.0fs",
                        self._in_flight, bound)
        log.info("scheduler stopped")
        return finished

    def _close(self) -> None:
        self._pinger.stop()
        self._parse_pool.close()
        self._fetch.close()

    # -- configuration -----------------------------------------------------------------

    def reload(self) -> bool:
        """Re-read the config file; apply it if valid, else keep the last good one."""
        return wiring.reload_config(self._settings, self._config_state, self._metrics,
                                    self.apply, self._keep_config_state, self._now())

    def _keep_config_state(self, state: ConfigState) -> None:
        self._config_state = state

    def apply(self, settings: Settings) -> None:
        """Make the schedule match ``settings``: add, remove and reschedule sources.

        The config is compared with the database's first (``wiring.sync_config``: its
        sources are applied there unless a newer config was), then the stored states are
        read: if either fails, nothing has changed."""
        synced = wiring.sync_config(self._store, settings, holder=wiring.holder_name(),
                                    now=self._now())
        if synced.outcome is ConfigSync.STALE:
            log.warning("%s", synced.describe(settings))
        wanted = {s.id: s for s in settings.source_list() if s.enabled}
        states = self._store.source_states(wanted)
        with self._lock:
            old, previous = self._sources, self._settings
            self._settings = settings
            self._sources = dict(wanted)
        for source_id in old.keys() - wanted.keys():
            self._unschedule(source_id)
            log.info("source=%s removed from the schedule", source_id)
        now = self._now()
        for source_id, source in wanted.items():
            if old.get(source_id) == source:
                continue
            jitter = timedelta(seconds=self._rng.uniform(
                0, min(settings.start_jitter, source.interval).total_seconds()))
            when = decide.first_poll_at(now, states.get(source_id), jitter)
            if source_id in old:  # an edited source is polled soon, under its new rules
                when = now + jitter
            self._schedule(source_id, when)
            log.info("source=%s %s; first poll at %s", source_id,
                     "rescheduled" if source_id in old else "scheduled", when.isoformat())
        if old and {c for s in old.values() for c in s.all_categories} != {
                c for s in wanted.values() for c in s.all_categories}:
            self._request_build(None)  # the set of categories changed: rebuild the index
        elif old and previous.hub_url != settings.hub_url:
            self._request_build(None)  # every feed links the new hub, which is then told

    # -- polls ---------------------------------------------------------------------------

    def poll_now(self, source_id: str) -> PollResult | None:
        """Run one scheduled poll synchronously (what the job does); for tests and tools.

        None when the source is not scheduled, or its poll waits for its host.
        """
        return self._poll(source_id)

    def _poll(self, source_id: str) -> PollResult | None:
        """The job: read the source's state once, then poll it now or when its host has
        a free slot (the waiting poll holds no thread)."""
        with self._lock:
            source = self._sources.get(source_id)
            if source is None or self._stopping.is_set() or source_id in self._busy:
                return None
            self._busy.add(source_id)
            limit = self._settings.host_concurrency
        try:
            remembered = self._store.source_state(source_id)
        except AggregatorError as exc:
            log.error("source=%s cannot read its state: %s", source_id, exc.reason)
            self._release(source_id)
            self._schedule(source_id, self._now() + source.interval)
            return None
        ran: list[PollResult | None] = []
        host = host_of(decide.plan(source, remembered).source.url)
        self._hosts.run(host, limit, lambda: ran.append(self._run(source.id, remembered)))
        return ran[0] if ran else None

    def _run(self, source_id: str, remembered: SourceState | None) -> PollResult | None:
        """The poll itself, under the config current when it starts (a poll may have
        waited for its host across a reload)."""
        with self._lock:
            source = self._sources.get(source_id)
            if source is None or self._stopping.is_set():
                self._busy.discard(source_id)
                return None
            settings = self._settings
            self._in_flight += 1
        try:
            result = poll_source(source, remembered, self._store, wiring.poll_options(settings),
                                 fetch=self._fetch, parse_pool=self._parse_pool,
                                 now=self._now, jitter=self._rng.random)
            self._after(source, result)
            return result
        except Exception:  # the job must always reschedule; never kill the daemon
            log.exception("source=%s poll job failed", source.id)
            self._schedule(source.id, self._now() + source.interval)
            return None
        finally:
            self._release(source.id)
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def _after(self, source: Source, result: PollResult) -> None:
        """Count the poll, queue a build if articles changed, and reschedule from the
        poll's own decision."""
        self._metrics.record_poll(result)
        if result.counts.new or result.counts.updated:
            # and the categories of stories its new articles joined (other sources' feeds)
            self._request_build({*source.all_categories, *result.counts.story_categories})
        if result.next_poll_at is None:
            self._unschedule(source.id)  # disabled (410) until the URL is edited
        else:
            self._schedule(source.id, result.next_poll_at)

    def _release(self, source_id: str) -> None:
        with self._lock:
            self._busy.discard(source_id)

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
        try:
            with self._metrics.build_seconds.time():
                report = publish.build(self._store, feed_options := settings.feed_options(),
                                       settings.source_list(), only=only)
            self._metrics.articles_total.set(self._store.count_articles())
        except AggregatorError as exc:
            log.error("build failed: %s", exc)
            return
        log.info("built %s: %d file(s) written, %d unchanged",
                 "everything" if only is None else ", ".join(sorted(only)),
                 len(report.written), len(report.unchanged))
        self._pinger.after_build(report, feed_options, settings.fetch_options())
        release_freed_memory()  # what the polls before this build and the build freed
        if self._on_build is not None:
            self._on_build()

    def prune_now(self) -> wiring.Pruned:
        """Apply retention (the hourly job): what went.  A build follows."""
        try:
            pruned = wiring.prune(self._store, self._settings, self._now())
        except AggregatorError as exc:
            log.error("retention failed: %s", exc)
            return wiring.Pruned(articles={}, sources=[])
        if pruned.articles:
            log.info("retention deleted %d article(s): %s", sum(pruned.articles.values()),
                     ", ".join(f"{source} {count}" for source, count in pruned.articles.items()))
        for source_id in pruned.sources:
            log.info("source=%s removed from the config long ago: forgotten with its articles",
                     source_id)
        if pruned.articles or pruned.sources:
            self._request_build(None)
        return pruned
