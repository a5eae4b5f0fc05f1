"""Log output for people (key=value text) or for log collectors (one JSON object a line).

Messages about a source start with ``source=ID`` by convention (the pipeline and
scheduler write them that way); the JSON form lifts that into a ``source`` field
so a collector can filter by source without parsing text.

The HTTP access log (logger ``aggregator.access``, one ``AccessEntry`` a request,
written by ``service.http.access``) is on only when asked (``access_log``).  Its
lines are Apache's combined log format followed by the duration in microseconds
(``%D``) in text mode, and JSON objects with one field per item in JSON mode.  The
request thread only puts the record on a queue (``logging.handlers.QueueHandler``);
a ``QueueListener`` thread formats and writes it, so no request waits for stderr.
The queue is drained when the process exits normally.

This module only formats and routes; it decides nothing about what is logged.
"""

from __future__ import annotations

import atexit
import json
import logging
import queue
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from logging.handlers import QueueHandler, QueueListener

_SOURCE = re.compile(r"^source=(\S+)\s*")
TEXT_FORMAT = "%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"
ACCESS_LOGGER = "aggregator.access"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True, slots=True)
class AccessEntry:
    """One answered request, as the access log shows it.

    ``uri`` is the request target as received (path and query), ``bytes`` the body
    bytes sent (0 for HEAD and 304), ``started`` the Unix time the request reached
    the app and ``duration`` the seconds until its response was handed over.
    """

    remote: str
    method: str
    uri: str
    protocol: str
    status: int
    bytes: int
    started: float
    duration: float
    referer: str | None = None
    user_agent: str | None = None


def _escape(value: str) -> str:
    """As Apache escapes ``%r`` and headers: ``"`` and ``\\`` backslashed, other
    non-printable or non-ASCII characters (bytes, as received) as ``\\xhh``."""
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return value
    out = []
    for char in value:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        else:
            out.append(f"\\u{code:04x}")
    return "".join(out)


def combined_line(entry: AccessEntry) -> str:
    """``host - - [day/Mon/year:H:M:S +zone] "request" status bytes "referer" "agent" µs``."""
    when = datetime.fromtimestamp(entry.started).astimezone()
    stamp = (f"{when.day:02d}/{_MONTHS[when.month - 1]}/{when.year:04d}:"
             f"{when:%H:%M:%S} {when:%z}")
    request = _escape(f"{entry.method} {entry.uri} {entry.protocol}")
    size = str(entry.bytes) if entry.bytes else "-"  # Apache's %b
    referer = _escape(entry.referer) if entry.referer else "-"
    agent = _escape(entry.user_agent) if entry.user_agent else "-"
    return (f'{entry.remote or "-"} - - [{stamp}] "{request}" {entry.status} {size} '
            f'"{referer}" "{agent}" {round(entry.duration * 1_000_000)}')


def _access_fields(entry: AccessEntry) -> dict[str, object]:
    return {
        "remote": entry.remote,
        "method": entry.method,
        "path": entry.uri,
        "protocol": entry.protocol,
        "status": entry.status,
        "bytes": entry.bytes,
        "duration_ms": round(entry.duration * 1000, 3),
        "referer": entry.referer,
        "user_agent": entry.user_agent,
    }


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT`` lines; access records as combined log format lines."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        entry = getattr(record, "access", None)
        if isinstance(entry, AccessEntry):
            return combined_line(entry)
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """``{"ts": ..., "level": ..., "logger": ..., "source": ..., "message": ...}``;
    access records add ``remote``, ``method``, ``path``, ``protocol``, ``status``,
    ``bytes``, ``duration_ms``, ``referer`` and ``user_agent``."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        match = _SOURCE.match(message)
        if match:
            entry["source"] = match.group(1)
            message = message[match.end():]
        entry["message"] = message
        access = getattr(record, "access", None)
        if isinstance(access, AccessEntry):
            entry.update(_access_fields(access))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class _QueueHandler(QueueHandler):
    """Puts records on the queue as they are: access records hold only immutable
    values, so formatting them is left to the listener's thread."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


_listener: QueueListener | None = None


def _stop_listener() -> None:
    """Write what is still queued and stop the listener thread (also at exit)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None


atexit.register(_stop_listener)


def configure(level: int, fmt: str = "text", *, access_log: bool = False) -> None:
    """Send the process's logs to stderr in ``fmt`` ("text" or "json"); with
    ``access_log``, also one access line a request, written by a listener thread."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    _stop_listener()
    access = logging.getLogger(ACCESS_LOGGER)
    if access_log:
        # the same handler as every other line, so lines never interleave mid-line
        records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        global _listener
        _listener = QueueListener(records, handler)
        _listener.start()
        access.handlers[:] = [_QueueHandler(records)]
        access.propagate = False
        access.setLevel(logging.INFO)
    else:
        access.handlers[:] = []
        access.propagate = True
        access.setLevel(logging.WARNING)  # off: the server does not even time requests
    # third-party chatter stays at warning unless debugging
    for noisy in ("apscheduler", "waitress", "urllib3", "watchfiles"):
        logging.getLogger(noisy).setLevel(logging.WARNING if level > logging.DEBUG else level)
    # waitress warns "Task queue depth is N" whenever a request waits for a free thread,
    # which under keep-alive load from many readers is nearly every request: a log line
    # each, and an eighth of the server's CPU.  A queue is normal; errors still show.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR if level > logging.DEBUG
                                                 else level)
