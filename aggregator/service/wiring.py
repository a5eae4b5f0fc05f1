"""The long-lived objects a process builds from its settings, in one place.

Settings are data (``aggregator.config``); this module turns them into the pieces a
poll needs — options records and the parse worker pool — so that neither the config
nor the stages build processes or sessions themselves, and retention (with forgetting
sources the config dropped) is applied by one rule for the CLI and the scheduler.  It
must not poll, serve or open the store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from aggregator.config import Settings, load_config
from aggregator.errors import AggregatorError
from aggregator.ingest.poll import PARSE_AND_NORMALIZE, PollOptions
from aggregator.ingest.sandbox import Budget, WorkerPool
from aggregator.records import PollRules
from aggregator.service.health import ConfigState
from aggregator.service.metrics import Metrics
from aggregator.store import Store

log = logging.getLogger(__name__)


def poll_options(settings: Settings) -> PollOptions:
    return PollOptions(fetch=settings.fetch_options(), normalize=settings.normalize_options(),
                       rules=PollRules(max_backoff=settings.max_backoff))


def parse_pool(settings: Settings) -> WorkerPool:
    """A (not yet started) pool of parse workers with the settings' budget."""
    budget = Budget(seconds=settings.parse_timeout.total_seconds(),
                    memory_bytes=settings.parse_memory)
    return WorkerPool(workers=settings.parse_workers, budget=budget,
                      preload=(PARSE_AND_NORMALIZE.module,))  # what the workers run


@dataclass(frozen=True, slots=True)
class Pruned:
    """What retention removed: articles by source, and sources the config dropped long
    enough ago (``removed_source_grace``) to be forgotten with their articles."""

    articles: dict[str, int]
    sources: list[str]


def prune(store: Store, settings: Settings, now: datetime) -> Pruned:
    """Apply ``retention_days`` / ``max_articles_per_source`` and forget removed sources."""
    forgotten = store.forget_unconfigured([s.id for s in settings.sources], now=now,
                                          grace=settings.removed_source_grace)
    older_than = now - timedelta(days=settings.retention_days) if settings.retention_days else None
    if older_than is None and settings.max_articles_per_source is None:
        return Pruned(articles={}, sources=forgotten)
    articles = store.prune(older_than=older_than,
                           keep_per_source=settings.max_articles_per_source, now=now)
    return Pruned(articles=articles, sources=forgotten)


def reload_config(current: Settings, state: ConfigState, metrics: Metrics,
                  apply: Callable[[Settings], None], now: datetime) -> tuple[ConfigState, bool]:
    """Re-read ``current``'s config file and ``apply`` it; on any failure (a bad file, the
    store unreachable while applying) the last good config keeps running and the failure is
    recorded for ``/healthz`` and ``/metrics``.  The new config state, and whether it worked.
    """
    if current.config_path is None:
        return state, False
    try:
        settings = load_config(current.config_path)
        apply(settings)
    except AggregatorError as exc:
        metrics.config_reload_failed()
        log.error("config reload failed, keeping the last good config: %s", exc)
        return state.failed(str(exc), now), False
    loaded = ConfigState(settings.config_path, now)
    metrics.config_loaded(loaded.loaded_at)
    log.info("config reloaded: %d source(s)", len(settings.sources))
    return loaded, True
