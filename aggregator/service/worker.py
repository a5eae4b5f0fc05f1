"""``aggregator run --role worker``: poll what the database says is due, with many peers.

Where ``Scheduler`` keeps one process's schedule in memory, a worker keeps none: the
``sources`` table is the queue.  The loop claims a batch of due sources that nobody
holds (``Store.claim_due``: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, a lease per
source and a fencing token bumped per claim), polls them on its thread pool with the
per-host slots of this worker, and each poll's commit (``commit_poll`` with the lease)
writes the next due time and releases the lease — or is refused when a peer took the
source over after the lease expired (a worker paused past its lease cannot overwrite
the newer poll).  A worker that dies loses its leases at expiry; the others take over.

A worker polls at most ``host_concurrency`` sources of one host at a time: a claimed
source whose host is full is given back at once, due a few seconds later, rather than
queued behind a slow portal until its lease runs out.

Builds of the categories its polls changed are debounced and serialized across workers
with an advisory lock per category (``Store.exclusive``); every worker writes the same
bytes, so a shared ``output_dir`` stays consistent.

The config file stays the operator's interface: on start and on reload a worker applies
its config's sources to the table unless the database holds a newer config
(``wiring.sync_config``); every few seconds it checks whether a peer applied one and then
re-reads its file.  A worker whose file is older than the database's claims nothing (and
says so in ``/healthz``) until the file is as new: it must not poll removed sources or
old URLs.

This module must not decide a poll (``ingest.decide`` does), keep a schedule of its own,
or serve HTTP (``service.process`` wires the optional health endpoint).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from aggregator import publish
from aggregator.config import Settings
from aggregator.errors import AggregatorError
from aggregator.ingest import decide
from aggregator.ingest.fetch import HttpFetcher
from aggregator.ingest.poll import host_of, poll_source, utc_now
from aggregator.records import Claim, ConfigSync, PollResult, Source
from aggregator.service import wiring
from aggregator.service.health import ConfigState, ReloadError
from aggregator.service.memory import release_freed_memory
from aggregator.service.metrics import Metrics
from aggregator.service.websub import HubPinger
from aggregator.store import Store

log = logging.getLogger(__name__)

LEASE_MARGIN = timedelta(seconds=5)  # beyond the fetch deadline and the parse budget
IDLE_WAIT = 1.0  # seconds between claims when nothing is due
MAINTENANCE_EVERY = timedelta(hours=1)
# A claimed source this worker's config does not list is given back, due again after this.
UNKNOWN_RETRY = timedelta(minutes=1)
# A claimed source whose host has all its slots busy in this worker: due again after this.
HOST_BUSY_RETRY = timedelta(seconds=2)
INDEX_LOCK = "index:build"  # category locks are "build:<category>"
CONFIG_CHECK_EVERY = 10.0  # seconds between looks at the database's config generation


def lease_for(settings: Settings) -> timedelta:
    """How long a claim lasts: longer than one poll may take."""
    return settings.fetch_deadline + settings.parse_timeout + LEASE_MARGIN


class ClaimWorker:
    """Claims due sources from the store and polls them until stopped."""

    def __init__(self, settings: Settings, store: Store, metrics: Metrics, *,
                 holder: str | None = None, now: Callable[[], datetime] = utc_now,
                 rng: random.Random | None = None) -> None:
        self._settings = settings
        self._source_list = settings.source_list()
        self._sources = {s.id: s for s in self._source_list if s.enabled}
        self._store = store
        self._metrics = metrics
        self._holder = holder or wiring.holder_name()
        self._now = now
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)
        self._changed: set[str] = set()
        self._changed_since: float | None = None
        self._per_host: dict[str, int] = {}  # polls in flight by host
        self._fetch = HttpFetcher()
        self._parse_pool = wiring.parse_pool(settings)
        self._pinger = HubPinger(metrics)  # WebSub pings after builds, off the build's path
        self._pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="poll")
        self._thread: threading.Thread | None = None
        self._next_maintenance = 0.0
        self._next_config_check = 0.0
        self._generation = 0  # of the database's config this worker last compared with
        self._stale: ReloadError | None = None  # why this worker claims nothing, if it does not
        self._config_state = ConfigState(settings.config_path, now())

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def holder(self) -> str:
        return self._holder

    @property
    def config_state(self) -> ConfigState:
        """The running config; a stale one shows as a failure (``/healthz`` degraded)."""
        stale = self._stale
        state = self._config_state
        return state if stale is None else state.failed(stale.message, stale.at)

    @property
    def stale(self) -> bool:
        """Whether the database holds a newer config than this worker's file."""
        return self._stale is not None

    def start(self) -> None:
        self._apply(self._settings)
        self._thread = threading.Thread(target=self._loop, name="claims", daemon=True)
        self._thread.start()
        log.info("worker %s started with %d source(s)", self._holder, len(self._settings.sources))

    def stop(self, timeout: float | None = None) -> bool:
        """Stop claiming; wait up to ``timeout`` for the polls in flight.  True if all ended."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
        bound = self._settings.shutdown_timeout.total_seconds() if timeout is None else timeout
        with self._idle:
            finished = self._idle.wait_for(lambda: self._in_flight == 0, timeout=bound)
        self._pool.shutdown(wait=finished, cancel_futures=True)
        self._pinger.stop()
        self._parse_pool.close()
        self._fetch.close()
        log.info("worker %s stopped", self._holder)
        return finished

    def reload(self) -> bool:
        """Re-read the config file; add its new sources and run it if valid."""
        return wiring.reload_config(self._settings, self._config_state, self._metrics,
                                    self._apply, self._keep_config_state, self._now())

    def _keep_config_state(self, state: ConfigState) -> None:
        self._config_state = state

    def _apply(self, settings: Settings) -> None:
        now = self._now()
        synced = wiring.sync_config(self._store, settings, holder=self._holder, now=now)
        stale = None
        if synced.outcome is ConfigSync.STALE:
            stale = ReloadError(synced.describe(settings), now)
            log.error("%s", stale.message)
        else:
            log.info("%s", synced.describe(settings))
        source_list = settings.source_list()  # once per config: 100,000 records cost
        sources = {s.id: s for s in source_list if s.enabled}
        with self._lock:
            self._settings, self._sources, self._source_list = settings, sources, source_list
            self._generation, self._stale = synced.applied.generation, stale

    def claim_once(self) -> int:
        """Claim what is due and fits the free threads, and start polling it; how many
        polls started."""
        with self._lock:
            settings, sources = self._settings, self._sources
            free = settings.workers - self._in_flight
        if free <= 0 or self._stale is not None:
            return 0
        now = self._now()
        claims = self._store.claim_due(self._holder, limit=free, lease_for=lease_for(settings),
                                       now=now)
        self._metrics.record_claims(claims, now)
        return sum(self._start(claim, settings, sources) for claim in claims)

    def wait_idle(self, timeout: float) -> bool:
        """Block until no poll is in flight (for tests and tools)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout=timeout)

    def build_now(self) -> None:
        """Build the categories polls changed, once across the workers (see ``_build``)."""
        self._build(force=True)

    # -- the loop --------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._check_config()
                claimed = self.claim_once()
                self._build(force=False)
                self._maintain()
            except AggregatorError as exc:
                log.error("claiming failed: %s", exc)
                claimed = 0
            except Exception:  # the loop must go on: one bad round is not the worker's end
                log.exception("claim loop failed")
                claimed = 0
            if not claimed:
                self._wake.wait(IDLE_WAIT)
                self._wake.clear()

    def _start(self, claim: Claim, settings: Settings, sources: dict[str, Source]) -> bool:
        source = sources.get(claim.lease.source_id)
        if source is None:  # not in this worker's config: a peer's newer one, or removed
            self._store.release(claim.lease, due_at=self._now() + UNKNOWN_RETRY)
            return False
        host = host_of(decide.plan(source, claim.state).source.url)
        with self._lock:
            busy = self._per_host.get(host, 0) >= settings.host_concurrency
            if not busy:
                self._in_flight += 1
                self._per_host[host] = self._per_host.get(host, 0) + 1
        if busy:  # queued, it could outlive its lease behind a slow portal: a peer may take it
            self._store.release(claim.lease, due_at=self._now() + HOST_BUSY_RETRY)
            return False

        def poll() -> None:
            try:
                result = poll_source(source, claim.state, self._store,
                                     wiring.poll_options(settings), fetch=self._fetch,
                                     parse_pool=self._parse_pool, lease=claim.lease,
                                     now=self._now, jitter=self._rng.random)
                # and the categories of stories its new articles joined (others' feeds)
                self._after((*source.all_categories, *result.counts.story_categories), result)
            except Exception:  # a bug in one poll must not stop the worker
                log.exception("source=%s poll failed", source.id)
            finally:
                with self._idle:
                    self._in_flight -= 1
                    self._per_host[host] -= 1
                    if not self._per_host[host]:
                        del self._per_host[host]
                    self._idle.notify_all()
                self._wake.set()

        self._pool.submit(poll)
        return True

    def _after(self, categories: tuple[str, ...], result: PollResult) -> None:
        self._metrics.record_poll(result)
        if result.counts.new or result.counts.updated:
            with self._lock:
                self._changed.update(categories)
                if self._changed_since is None:
                    self._changed_since = time.monotonic()

    def _build(self, *, force: bool) -> None:
        """Build the changed categories and the index page once ``build_debounce`` has
        passed.  A category a peer is building right now stays pending for the next round;
        so does the index page, which shows every category's newest articles: built from
        a snapshot read before a peer's, it would overwrite a newer page — the index lock
        makes index builds one at a time, each reading after the last one wrote."""
        with self._lock:
            settings, source_list = self._settings, self._source_list
            due = self._changed_since is not None and (
                force or time.monotonic() - self._changed_since
                >= settings.build_debounce.total_seconds())
            if not due:
                return
            pending, self._changed, self._changed_since = self._changed, set(), None
        names = {f"build:{category}": category for category in pending}
        try:
            with self._store.exclusive([*names, INDEX_LOCK]) as held:
                built = {names[name] for name in held if name in names}
                index = INDEX_LOCK in held
                if built or index:  # one build of everything this worker may build now
                    with self._metrics.build_seconds.time():
                        report = publish.build(self._store, options := settings.feed_options(),
                                               source_list, only=built, index=index)
                    self._pinger.after_build(report, options, settings.fetch_options())
                    release_freed_memory()  # what the polls before it and the build freed
        except (AggregatorError, OSError) as exc:  # the categories stay pending: next round
            log.error("build of %s failed: %s", ", ".join(sorted(pending)) or "the index",
                      exc)
            self._requeue(pending)
            return
        busy = pending - built
        if busy or not index:  # left for the next round (an empty set: the index only)
            self._metrics.build_lock_busy.inc(len(busy) + (not index))
            self._requeue(busy)
        if built:
            log.info("built %s", ", ".join(sorted(built)))

    def _requeue(self, categories: set[str]) -> None:
        with self._lock:
            self._changed |= categories
            self._changed_since = self._changed_since or time.monotonic()

    def _maintain(self) -> None:
        """Retention and forgetting removed sources, hourly, by one worker of all: whoever
        holds the maintenance lock (PostgreSQL frees it if that worker dies)."""
        if time.monotonic() < self._next_maintenance:
            return
        self._next_maintenance = time.monotonic() + MAINTENANCE_EVERY.total_seconds()
        with self._store.exclusive(["maintenance"]) as held:
            if not held:
                return
            pruned = wiring.prune(self._store, self._settings, self._now())
        if pruned.articles or pruned.sources:
            log.info("retention deleted %d article(s), forgot %d removed source(s)",
                     sum(pruned.articles.values()), len(pruned.sources))

    def _check_config(self) -> None:
        """When a peer applied a config since this worker last compared, re-read the file
        (a shared folder may not tell this host's file watcher that it changed)."""
        if time.monotonic() < self._next_config_check:
            return
        self._next_config_check = time.monotonic() + CONFIG_CHECK_EVERY
        applied = self._store.applied_config()
        if applied is None or applied.generation == self._generation:
            return
        log.info("config generation %d was applied by %s: re-reading the config",
                 applied.generation, applied.applied_by)
        if self._settings.config_path is None:  # nothing to re-read
            with self._lock:
                self._generation = applied.generation
        elif not self.reload():  # the file does not load: compare the config that runs
            self._apply(self._settings)

