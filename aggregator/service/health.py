"""Polling health: what ``/healthz`` and ``aggregator health`` report.

Why: a load balancer or an operator needs one answer — is this instance serving
fresh feeds? — plus, per source, when it last succeeded, what went wrong and when
it is polled next.  ``health_report`` derives that from the configured sources and
the statuses the scheduler stored.

What it owns: the summary rule (``ok`` / ``degraded`` / ``down``, which sources
count as failing, a config file that failed to reload), the report's JSON shape, with
times as ISO 8601 UTC, and ``ConfigState``: the record of which config runs — where
it came from, when it was loaded and the last reload error — that the scheduler
keeps and the report renders.

What this module must NOT do: read the store, the config or the clock itself (the
caller passes sources, statuses, the config state and ``now``; it is a pure
function), poll, or
decide a source's health beyond summarizing the statuses it is given (the
scheduler owns polling and error counts).  It knows nothing of HTTP: the server
only calls the health callback it was given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from aggregator.records import Source, SourceStatus

__all__ = ["ConfigState", "ReloadError", "health_report", "iso_utc"]


@dataclass(frozen=True, slots=True)
class ReloadError:
    """A config reload that failed: the error's message and when it happened."""

    message: str
    at: datetime


@dataclass(frozen=True, slots=True)
class ConfigState:
    """The config that runs: its file, when it was loaded, and the last reload error.

    ``last_error`` is set by a failed reload (the file on disk is then not the
    config that runs) and cleared by the next successful one.
    """

    path: Path | None
    loaded_at: datetime
    last_error: ReloadError | None = None

    def failed(self, message: str, at: datetime) -> ConfigState:
        """The same running config, with a reload that failed at ``at``."""
        return replace(self, last_error=ReloadError(message, at))

    def as_dict(self) -> dict[str, object]:
        """``{"path", "loaded_at", "last_error": null | {"message", "at"}}``."""
        error = self.last_error
        return {
            "path": str(self.path) if self.path is not None else None,
            "loaded_at": iso_utc(self.loaded_at),
            "last_error": None if error is None else {"message": error.message,
                                                      "at": iso_utc(error.at)},
        }


def iso_utc(value: datetime | None) -> str | None:
    """ISO 8601 UTC with a ``Z``, whole seconds; naive values are taken as UTC."""
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _failing(status: SourceStatus | None) -> bool:
    """A source fails while its last polls errored or the portal said the feed is gone."""
    return status is not None and (status.error_count > 0 or status.disabled_reason is not None)


def health_report(
    configured: Sequence[Source], statuses: Sequence[SourceStatus], now: datetime,
    config: ConfigState | None = None,
) -> dict[str, object]:
    """Summarize polling health; pure (``now`` only stamps ``checked_at``).

    ``status`` is ``"ok"`` when no enabled source is failing, ``"degraded"`` when
    some are and ``"down"`` when every enabled source is (and there is at least
    one).  A failed config reload (``config.last_error`` set: the file on disk is
    not the config that runs) makes an ``"ok"`` report ``"degraded"`` — served
    with HTTP 200, since the last good config still polls and serves — until a
    reload succeeds; with ``config`` the report has a ``config`` object
    (``ConfigState.as_dict``).  A source is failing when its ``error_count`` is above 0 or it was
    disabled because the portal said 410 Gone (``disabled_reason``); one never
    polled yet is not.  Sources switched off in the config (``enabled: false``)
    are listed but never counted; statuses of sources no longer configured are
    left out.  Each source lists ``id``, ``enabled``, ``last_success_at``,
    ``last_poll_at``, ``last_result``, ``last_error``, ``error_count``,
    ``next_poll_at`` and ``disabled_reason`` (ISO 8601 UTC strings or null).
    """
    by_id = {status.source_id: status for status in statuses}
    entries: list[dict[str, object]] = []
    enabled = failing = 0
    for source in configured:
        status = by_id.get(source.id)
        if source.enabled:
            enabled += 1
            failing += _failing(status)
        entries.append(
            {
                "id": source.id,
                "enabled": source.enabled,
                "last_success_at": iso_utc(status.last_success_at) if status else None,
                "last_poll_at": iso_utc(status.last_poll_at) if status else None,
                "last_result": status.last_result if status else None,
                "last_error": status.last_error if status else None,
                "error_count": status.error_count if status else 0,
                "next_poll_at": iso_utc(status.next_poll_at) if status else None,
                "disabled_reason": status.disabled_reason if status else None,
            }
        )
    if failing == 0:
        overall = "ok"
    elif failing == enabled:
        overall = "down"
    else:
        overall = "degraded"
    if overall == "ok" and config is not None and config.last_error is not None:
        overall = "degraded"
    report: dict[str, object] = {
        "status": overall,
        "checked_at": iso_utc(now),
        "sources_enabled": enabled,
        "sources_failing": failing,
    }
    if config is not None:
        report["config"] = config.as_dict()
    report["sources"] = entries
    return report
