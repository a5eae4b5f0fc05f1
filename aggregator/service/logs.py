"""Log output for people (key=value text) or for log collectors (one JSON object a line).

Messages about a source start with ``source=ID`` by convention (the pipeline and
scheduler write them that way); the JSON form lifts that into a ``source`` field
so a collector can filter by source without parsing text.  This module only
formats; it decides nothing about what is logged.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

_SOURCE = re.compile(r"^source=(\S+)\s*")
TEXT_FORMAT = "%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"


class JsonFormatter(logging.Formatter):
    """``{"ts": ..., "level": ..., "logger": ..., "source": ..., "message": ...}``."""

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
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: int, fmt: str = "text") -> None:
    """Send the process's logs to stderr in ``fmt`` ("text" or "json")."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # third-party chatter stays at warning unless debugging
    for noisy in ("apscheduler", "waitress", "urllib3", "watchfiles"):
        logging.getLogger(noisy).setLevel(logging.WARNING if level > logging.DEBUG else level)
    # waitress warns "Task queue depth is N" whenever a request waits for a free thread,
    # which under keep-alive load from many readers is nearly every request: a log line
    # each, and an eighth of the server's CPU.  A queue is normal; errors still show.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR if level > logging.DEBUG
                                                 else level)
