"""The project's error hierarchy.

Every error a stage raises on purpose is an ``AggregatorError`` whose message
names the source (when there is one) and the cause, so a log line or a CLI
summary is useful without a traceback.  Stages never let a third-party
exception (urllib3, feedparser, SQLAlchemy, YAML) escape: they wrap it in one
of these, keeping the original as ``__cause__``.
"""

from __future__ import annotations


class AggregatorError(Exception):
    """Base class: ``source_id`` is the source the error is about, if any."""

    def __init__(self, message: str, *, source_id: str | None = None) -> None:
        self.source_id = source_id
        self.reason = message
        super().__init__(f"[{source_id}] {message}" if source_id else message)


class ConfigError(AggregatorError):
    """The config file cannot be used; names the file, the source and the field."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        source_id: str | None = None,
        field: str | None = None,
    ) -> None:
        self.path = path
        self.field = field
        where = [part for part in (path, f"source {source_id!r}" if source_id else None,
                                   f"field {field!r}" if field else None) if part]
        self.source_id = source_id
        self.reason = message
        Exception.__init__(self, f"{': '.join(where)}: {message}" if where else message)


class FetchError(AggregatorError):
    """The portal could not be fetched (network, HTTP status, limits)."""

    def __init__(self, message: str, *, source_id: str | None = None,
                 status: int | None = None, retry_after: float | None = None) -> None:
        self.status = status
        self.retry_after = retry_after
        super().__init__(message, source_id=source_id)


class ParseError(AggregatorError):
    """The fetched document is not a feed we can read."""


class StoreError(AggregatorError):
    """The database refused or failed an operation."""


class LeaseLost(StoreError):
    """A poll's commit was refused: another worker's claim took the source over after this
    one's lease expired (fencing), so nothing of this poll was written."""
