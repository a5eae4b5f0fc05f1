"""WebSub publish pings: after a build, tell the hub which feeds changed.

Why this module exists: with ``hub_url`` set, every RSS/Atom feed links the hub
(``rel="hub"``), and subscribers wait for the hub to push; the hub only fetches a topic
when the publisher says it changed.  The de facto publish protocol (W3C WebSub §7 leaves
it to the hub) is a form POST of ``hub.mode=publish`` and ``hub.url=<topic>``; a 2xx
means accepted.  After each build the service hands ``HubPinger.after_build`` the
build's report: one ping per category feed the build actually rewrote
(``paths.is_category_feed``), never one for an unchanged feed.

A hub is somebody else's server, so pinging must never slow polling or building:
``publish`` only queues (bounded: when full the ping is dropped and logged; a URL
already waiting is not queued twice) and one background thread sends, each POST
bounded by its own timeouts and deadline (``post_form``, with the fetch's SSRF policy),
retried with exponential backoff and jitter up to ``attempts`` when the failure may pass
(network, 5xx, 429), given up at once otherwise (any other 4xx, a redirect).  Backoff
waits on the stop event, so ``stop`` is prompt; an attempt in progress ends at its own
deadline, without a retry.  The hub URL and fetch options travel with each ping, so a
reloaded config's ``hub_url`` applies to the next build.

What it must NOT do: block its callers on the network, sleep, decide which files a build
writes (``publish`` does), or speak HTTP itself (``ingest.fetch.post_form`` does).
"""

from __future__ import annotations

import logging
import random
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING

from aggregator.errors import FetchError
from aggregator.ingest.fetch import post_form
from aggregator.publish.paths import is_category_feed, public_url
from aggregator.records import FeedOptions, FetchOptions

if TYPE_CHECKING:
    from aggregator.publish.feeds import BuildReport
    from aggregator.service.metrics import Metrics

log = logging.getLogger(__name__)

__all__ = ["HubPinger", "PingOutcome", "changed_feed_urls", "retryable"]

PURPOSE = "websub"  # how a failed ping's FetchError names who was posting
QUEUE_SIZE = 1000  # pings waiting; beyond it new ones are dropped (and logged)
ATTEMPTS = 5  # tries per ping, the first included
BACKOFF = 2.0  # seconds before the first retry; doubled for each further one
MAX_BACKOFF = 300.0  # the longest wait between two tries (a Retry-After included)
JITTER = 0.25  # each wait is stretched by up to this fraction, at random
# Each try's own bounds, within the configured fetch ones: a hub is not a portal.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0
DEADLINE = 15.0
STOP_WAIT = 2.0  # seconds ``stop`` waits for the thread by default


class PingOutcome(StrEnum):
    """What became of one try or one ping (the ``result`` label in ``/metrics``)."""

    SENT = "sent"  # the hub accepted it (2xx)
    RETRIED = "retried"  # a try failed and another one follows
    FAILED = "failed"  # given up: not retryable, out of tries, or stopped while waiting
    DROPPED = "dropped"  # never tried: the queue was full or the pinger stopped


@dataclass(frozen=True, slots=True)
class _Ping:
    hub: str
    topic: str
    options: FetchOptions


def changed_feed_urls(written: Iterable[str], options: FeedOptions) -> list[str]:
    """The public URLs of the category feeds among ``written`` (a ``BuildReport``'s)."""
    return [public_url(options, path) for path in written if is_category_feed(path)]


def retryable(error: FetchError) -> bool:
    """Whether a failed try may succeed later: no status (network, deadline), 5xx, 429."""
    status = error.status
    return status is None or status >= 500 or status == 429


def ping_options(options: FetchOptions) -> FetchOptions:
    """The fetch options of one try: the configured ones, bounds capped for a hub."""
    return replace(options, connect_timeout=min(options.connect_timeout, CONNECT_TIMEOUT),
                   read_timeout=min(options.read_timeout, READ_TIMEOUT),
                   deadline=min(options.deadline, DEADLINE), max_redirects=0)


class HubPinger:
    """Sends WebSub publish pings from one background thread, off the caller's path."""

    def __init__(self, metrics: Metrics, *, queue_size: int = QUEUE_SIZE,
                 attempts: int = ATTEMPTS, backoff: float = BACKOFF,
                 max_backoff: float = MAX_BACKOFF, rng: random.Random | None = None) -> None:
        self._metrics = metrics
        self._queue_size = queue_size
        self._attempts = max(1, attempts)
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._pending: OrderedDict[tuple[str, str], _Ping] = OrderedDict()
        self._busy = False  # a ping is being sent or waits for its retry
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the sending thread (``publish`` starts it too, on its first ping)."""
        with self._lock:
            if self._thread is None and not self._stopping.is_set():
                self._thread = threading.Thread(target=self._run, name="websub", daemon=True)
                self._thread.start()

    def after_build(self, report: BuildReport, feed_options: FeedOptions,
                    fetch_options: FetchOptions) -> int:
        """Queue a ping for each category feed ``report`` wrote, when a hub is configured;
        how many were queued."""
        if not feed_options.hub_url:
            return 0
        return self.publish(feed_options.hub_url,
                            changed_feed_urls(report.written, feed_options), fetch_options)

    def publish(self, hub: str, topics: Iterable[str], options: FetchOptions) -> int:
        """Queue one ping to ``hub`` per topic URL; returns at once, how many were queued
        (a topic already waiting for this hub is not queued again)."""
        queued = 0
        dropped: list[str] = []
        with self._changed:
            for topic in topics:
                key = (hub, topic)
                if key in self._pending:
                    continue
                if self._stopping.is_set() or len(self._pending) >= self._queue_size:
                    dropped.append(topic)
                    continue
                self._pending[key] = _Ping(hub, topic, ping_options(options))
                queued += 1
            if queued:
                self._changed.notify_all()
        for topic in dropped:
            self._metrics.record_ping(PingOutcome.DROPPED)
            log.warning("websub ping of %s to %s dropped: %s", topic, hub,
                        "stopping" if self._stopping.is_set()
                        else f"{self._queue_size} ping(s) already waiting")
        if queued:
            self.start()
        return queued

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing waits or is being sent (for tests and tools)."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._pending and not self._busy,
                                          timeout=timeout)

    def stop(self, timeout: float = STOP_WAIT) -> bool:
        """Stop sending: waiting pings are dropped, no retry starts; waits up to
        ``timeout`` for the thread.  True when it ended (a try in progress ends at its
        own deadline, and the thread with it)."""
        with self._changed:
            self._stopping.set()
            left = len(self._pending)
            self._pending.clear()
            self._changed.notify_all()
            thread = self._thread
        if left:
            log.warning("websub: %d ping(s) not sent: stopping", left)
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    # -- the sending thread ----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._changed:
                self._busy = False
                self._changed.notify_all()
                self._changed.wait_for(lambda: self._pending or self._stopping.is_set())
                if self._stopping.is_set():
                    return
                _, ping = self._pending.popitem(last=False)
                self._busy = True
            try:
                self._deliver(ping)
            except Exception:  # a bug in one ping must not end the thread
                log.exception("websub ping of %s to %s failed", ping.topic, ping.hub)

    def _deliver(self, ping: _Ping) -> None:
        fields = {"hub.mode": "publish", "hub.url": ping.topic}
        for attempt in range(1, self._attempts + 1):
            try:
                status = post_form(ping.hub, fields, ping.options, purpose=PURPOSE)
            except FetchError as exc:
                if not retryable(exc) or attempt == self._attempts:
                    self._metrics.record_ping(PingOutcome.FAILED)
                    log.error("websub ping of %s to %s failed after %d tr%s: %s", ping.topic,
                              ping.hub, attempt, "y" if attempt == 1 else "ies", exc.reason)
                    return
                delay = self._delay(attempt, exc.retry_after)
                self._metrics.record_ping(PingOutcome.RETRIED)
                log.warning("websub ping of %s to %s failed (try %d of %d), again in %.1fs: %s",
                            ping.topic, ping.hub, attempt, self._attempts, delay, exc.reason)
                if self._stopping.wait(delay):
                    self._metrics.record_ping(PingOutcome.FAILED)
                    log.error("websub ping of %s to %s not retried: stopping", ping.topic,
                              ping.hub)
                    return
                continue
            self._metrics.record_ping(PingOutcome.SENT)
            log.info("websub ping of %s to %s: HTTP %d", ping.topic, ping.hub, status)
            return

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter; a Retry-After when it asks for longer."""
        delay = self._backoff * 2 ** (attempt - 1)
        delay *= 1 + JITTER * self._rng.random()
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, self._max_backoff)
