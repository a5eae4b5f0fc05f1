"""The long-lived objects a process builds from its settings, and the rules every
process applies the same way, in one place.

Settings are data (``aggregator.config``); this module turns them into the pieces a
poll needs — options records and the parse worker pool — so that neither the config
nor the stages build processes or sessions themselves.  One rule each, for the CLI, the
scheduler and the workers: which config the database holds (``sync_config``: a process
with an older config file never undoes a newer one), retention with forgetting sources
the config dropped (``prune``), and live reload (``reload_config``, which also checks
``kind: html`` selectors: a bad one keeps the last good config running).  It must not poll,
serve or open the store.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from aggregator.config import Settings, load_config
from aggregator.errors import AggregatorError, StoreError
from aggregator.ingest.poll import ARTICLE_WITH_FULL_TEXT, PARSE_AND_NORMALIZE, PollOptions
from aggregator.ingest.sandbox import Budget, WorkerPool
from aggregator.records import AppliedConfig, ConfigSync, ConfigVersion, PollRules
from aggregator.service.health import ConfigState

if TYPE_CHECKING:  # a CLI ``status`` or ``poll`` imports this module: no prometheus_client
    from aggregator.service.metrics import Metrics
    from aggregator.store import Store

log = logging.getLogger(__name__)


def poll_options(settings: Settings) -> PollOptions:
    return PollOptions(fetch=settings.fetch_options(), normalize=settings.normalize_options(),
                       rules=PollRules(max_backoff=settings.max_backoff),
                       full_text_max_pages=settings.full_text_max_pages,
                       full_text_deadline=settings.full_text_deadline.total_seconds())


def parse_pool(settings: Settings) -> WorkerPool:
    """A (not yet started) pool of parse workers with the settings' budget."""
    budget = Budget(seconds=settings.parse_timeout.total_seconds(),
                    memory_bytes=settings.parse_memory)
    # what the workers run; the extractor only when a source wants full text (it is
    # imported on first use otherwise, e.g. after a reload adds such a source)
    preload = (PARSE_AND_NORMALIZE.module,)
    if any(source.full_text for source in settings.sources):
        preload += (ARTICLE_WITH_FULL_TEXT.module,)
    return WorkerPool(workers=settings.parse_workers, budget=budget, preload=preload)


SYNC_ATTEMPTS = 5  # peers applying configs at the same instant: compare again, then give up


@dataclass(frozen=True, slots=True)
class Synced:
    """How a process's config compares with the database's, and the one the database
    holds afterwards."""

    outcome: ConfigSync
    applied: AppliedConfig

    def describe(self, settings: Settings) -> str:
        """One line for the log (and, when stale, for ``/healthz``)."""
        applied = self.applied
        held = (f"config generation {applied.generation} (written "
                f"{applied.version.written_at:%Y-%m-%d %H:%M:%S}Z, applied by "
                f"{applied.applied_by})")
        if self.outcome is ConfigSync.STALE:
            return (f"the database holds a newer {held} than {settings.config_path or 'this'} "
                    f"config: this process adds and removes no sources, and a worker claims "
                    "none, until its file is as new")
        return f"{self.outcome.value} {held}"


def holder_name() -> str:
    """This process, as the database records who holds a lease or applied a config."""
    return f"{socket.gethostname()}:{os.getpid()}"


def supersedes(offered: ConfigVersion, applied: AppliedConfig | None) -> bool:
    """Whether a process's config replaces the one the database holds: a config with other
    sources replaces it only if its file was written later — so a worker started from an
    old copy of the file (an old image, a host the new file has not reached) cannot bring
    back a removed source, while an operator's edit, even back to an earlier content,
    always wins.  Pure."""
    return applied is None or (offered.digest != applied.version.digest
                               and offered.written_at > applied.version.written_at)


def sync_config(store: Store, settings: Settings, *, holder: str, now: datetime) -> Synced:
    """Apply ``settings``' sources to the database if they supersede the config it holds
    (``supersedes``); otherwise say whether they are the same (current) or older (stale)."""
    offered = settings.config_version(now)
    for _ in range(SYNC_ATTEMPTS):
        applied = store.applied_config()
        if applied is not None and applied.version.digest == offered.digest:
            return Synced(ConfigSync.CURRENT, applied)
        if not supersedes(offered, applied):
            assert applied is not None
            return Synced(ConfigSync.STALE, applied)
        done = store.apply_config(offered, settings.source_list(),
                                  after=applied.generation if applied else 0,
                                  holder=holder, now=now)
        if done is not None:
            return Synced(ConfigSync.APPLIED, done)
    raise StoreError(f"configs kept being applied by peers; tried {SYNC_ATTEMPTS} times")


@dataclass(frozen=True, slots=True)
class Pruned:
    """What retention removed: articles by source, and sources the config dropped long
    enough ago (``removed_source_grace``) to be forgotten with their articles."""

    articles: dict[str, int]
    sources: list[str]


def prune(store: Store, settings: Settings, now: datetime) -> Pruned:
    """Apply ``retention_days`` / ``max_articles_per_source`` and forget the sources the
    database's config has not listed for ``removed_source_grace``."""
    forgotten = store.forget_removed(now=now, grace=settings.removed_source_grace)
    older_than = now - timedelta(days=settings.retention_days) if settings.retention_days else None
    if older_than is None and settings.max_articles_per_source is None:
        return Pruned(articles={}, sources=forgotten)
    articles = store.prune(older_than=older_than,
                           keep_per_source=settings.max_articles_per_source, now=now)
    return Pruned(articles=articles, sources=forgotten)


def reload_config(current: Settings, state: ConfigState, metrics: Metrics,
                  apply: Callable[[Settings], None], keep: Callable[[ConfigState], None],
                  now: datetime) -> bool:
    """Re-read ``current``'s config file and ``apply`` it; on any failure (a bad file, the
    store unreachable while applying) the last good config keeps running and the failure is
    recorded for ``/healthz`` and ``/metrics``.  The new config state goes to ``keep``
    before the outcome is logged (whoever reads the log then finds it in ``/healthz``).
    Whether it worked.
    """
    # scrape's lxml and cssselect only for a reload, not for every command using this module
    from aggregator.ingest.scrape import check_page_sources

    if current.config_path is None:
        return False
    try:
        settings = load_config(current.config_path)
        check_page_sources(settings.source_list(), str(current.config_path))
        apply(settings)
    except AggregatorError as exc:
        keep(state.failed(str(exc), now))
        metrics.config_reload_failed()
        log.error("config reload failed, keeping the last good config: %s", exc)
        return False
    loaded = ConfigState(settings.config_path, now)
    keep(loaded)
    metrics.config_loaded(loaded.loaded_at)
    log.info("config reloaded: %d source(s)", len(settings.sources))
    return True
