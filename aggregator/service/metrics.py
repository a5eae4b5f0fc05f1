"""Prometheus metrics of one running aggregator (``/metrics``).

One ``Metrics`` object per process, created by whoever runs the daemon and passed
to the scheduler (which records) and to the HTTP app (which exposes).  Each
instance has its own ``CollectorRegistry`` so tests can run several daemons in
one process without the global registry's duplicate-name errors.  This module
must not decide anything: it only counts what it is told.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from aggregator.records import Claim, PollOutcome, PollResult

if TYPE_CHECKING:
    from aggregator.service.websub import PingOutcome

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """The collectors; names follow Prometheus conventions (``aggregator_`` prefix)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.polls = Counter(
            "aggregator_polls", "Polls by source and result.", ["source", "result"],
            registry=self.registry,
        )
        self.parsed_documents = Counter(
            "aggregator_parsed_documents", "RSS/Atom documents parsed, by the parse path "
            "that read them (fast, or feedparser where the fast path declined).", ["parser"],
            registry=self.registry,
        )
        # The distribution over every fetch, and each source's last one: a histogram per
        # source was 13 series (and 15 locked values) a source, 6 MB at 1,000 sources.
        self.fetch_seconds = Histogram(
            "aggregator_fetch_seconds", "Time spent fetching one source, over every fetch.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=self.registry,
        )
        self.source_fetch_seconds = Gauge(
            "aggregator_source_last_fetch_seconds", "How long the last fetch took, per source.",
            ["source"], registry=self.registry,
        )
        self.articles_stored = Counter(
            "aggregator_articles_stored", "Articles inserted or updated.", ["source", "kind"],
            registry=self.registry,
        )
        self.articles_total = Gauge(
            "aggregator_articles", "Articles in the database.", registry=self.registry,
        )
        self.build_seconds = Histogram(
            "aggregator_build_seconds", "Time spent regenerating feeds.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=self.registry,
        )
        self.consecutive_errors = Gauge(
            "aggregator_source_consecutive_errors", "Failed polls in a row, per source.",
            ["source"], registry=self.registry,
        )
        self.config_last_reload_success = Gauge(
            "aggregator_config_last_reload_success",
            "1 while the config file on disk is the config that runs, 0 after a failed reload.",
            registry=self.registry,
        )
        self.config_loaded_timestamp = Gauge(
            "aggregator_config_loaded_timestamp_seconds",
            "When the running config was loaded (Unix time).", registry=self.registry,
        )
        self.config_reload_failures = Counter(
            "aggregator_config_reload_failures", "Config reloads that failed.",
            registry=self.registry,
        )
        self.websub_pings = Counter(
            "aggregator_websub_pings",
            "WebSub publish pings and tries by result: sent (the hub accepted), retried "
            "(a try failed, another follows), failed (given up), dropped (never tried).",
            ["result"], registry=self.registry,
        )

        # --role worker: sharing the sources through the database
        self.claims = Counter(
            "aggregator_claims", "Sources this worker claimed.", registry=self.registry,
        )
        self.lease_takeovers = Counter(
            "aggregator_lease_takeovers",
            "Claims of sources whose previous lease had expired (a peer died or stalled).",
            registry=self.registry,
        )
        self.leases_lost = Counter(
            "aggregator_leases_lost",
            "Polls whose commit was refused: a peer took the source over past the lease.",
            registry=self.registry,
        )
        self.claim_lateness_seconds = Histogram(
            "aggregator_claim_lateness_seconds",
            "How long after its due time a source was claimed (how far the cluster is behind).",
            buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
            registry=self.registry,
        )
        self.build_lock_busy = Counter(
            "aggregator_build_lock_busy",
            "Category builds left to the next round because a peer was building it.",
            registry=self.registry,
        )

        # the builtin image proxy (``/img/``): served from its cache, fetched, refused
        self.image_hits = Counter(
            "aggregator_image_proxy_hits", "Images served from the image cache.",
            registry=self.registry,
        )
        self.image_misses = Counter(
            "aggregator_image_proxy_misses", "Images fetched from their origin.",
            registry=self.registry,
        )
        self.image_refusals = Counter(
            "aggregator_image_proxy_refusals", "Image requests refused, by reason.",
            ["reason"], registry=self.registry,
        )

    def record_claims(self, claims: Sequence[Claim], now: datetime) -> None:
        self.claims.inc(len(claims))
        self.lease_takeovers.inc(sum(claim.taken_over for claim in claims))
        for claim in claims:
            due = claim.state.next_poll_at
            self.claim_lateness_seconds.observe(
                0.0 if due is None else max(0.0, (now - due).total_seconds()))

    def config_loaded(self, at: datetime) -> None:
        """A config was loaded (at start or by a reload) and now runs."""
        self.config_last_reload_success.set(1)
        self.config_loaded_timestamp.set(at.timestamp())

    def config_reload_failed(self) -> None:
        """A reload failed; the last good config keeps running."""
        self.config_last_reload_success.set(0)
        self.config_reload_failures.inc()

    def record_poll(self, result: PollResult) -> None:
        """Count one poll; the error gauge is the poll's own count, the number the store
        and ``/healthz`` see (a 410 counts as a failed poll)."""
        self.polls.labels(result.source_id, result.result.value).inc()
        if result.result is PollOutcome.SUPERSEDED:
            self.leases_lost.inc()
        if result.fetch_seconds is not None:
            self.fetch_seconds.observe(result.fetch_seconds)
            self.source_fetch_seconds.labels(result.source_id).set(result.fetch_seconds)
        if result.parser is not None:
            self.parsed_documents.labels(result.parser.value).inc()
        if result.counts.new:
            self.articles_stored.labels(result.source_id, "new").inc(result.counts.new)
        if result.counts.updated:
            self.articles_stored.labels(result.source_id, "updated").inc(result.counts.updated)
        self.consecutive_errors.labels(result.source_id).set(result.consecutive_errors)

    def record_ping(self, outcome: PingOutcome) -> None:
        """Count one WebSub ping's outcome (or one retried try of it)."""
        self.websub_pings.labels(outcome.value).inc()

    def exposition(self) -> bytes:
        """The Prometheus text format of every collector."""
        return generate_latest(self.registry)
