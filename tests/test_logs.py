from __future__ import annotations

import json
import logging
import re

from aggregator.service.logs import (
    ACCESS_LOGGER,
    TEXT_FORMAT,
    AccessEntry,
    JsonFormatter,
    TextFormatter,
    combined_line,
)


def record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("aggregator.ingest.poll", logging.WARNING, __file__, 1, message, args,
                             None)


def test_json_lines_lift_the_source_id_into_a_field() -> None:
    line = JsonFormatter().format(record("source=%s result=error reason=%s", "ofweek", "HTTP 500"))
    entry = json.loads(line)
    assert entry["source"] == "ofweek"
    assert entry["message"] == "result=error reason=HTTP 500"
    assert entry["level"] == "warning" and entry["logger"] == "aggregator.ingest.poll"
    assert entry["ts"].endswith("+00:00")


def test_json_lines_without_a_source_and_with_cjk() -> None:
    entry = json.loads(JsonFormatter().format(record("built 新闻: %d file(s)", 2)))
    assert "source" not in entry and entry["message"] == "built 新闻: 2 file(s)"


def test_text_lines_are_key_value() -> None:
    text = logging.Formatter(TEXT_FORMAT).format(record("source=%s result=new", "hk"))
    assert " level=WARNING logger=aggregator.ingest.poll source=hk result=new" in text


def access_record(entry: AccessEntry) -> logging.LogRecord:
    made = logging.LogRecord(ACCESS_LOGGER, logging.INFO, __file__, 1, "%s %s %d %d",
                             (entry.method, entry.uri, entry.status, entry.bytes), None)
    made.access = entry
    return made


# a raw (latin-1 decoded) byte, a quote and a backslash in the target; a tab in the agent
ENTRY = AccessEntry(remote="10.0.0.7", method="GET", uri='/\xe6"x\\y', protocol="HTTP/1.1",
                    status=304, bytes=0, started=1_764_000_000.25, duration=0.0015,
                    referer=None, user_agent='agent\t"q"')


def test_access_lines_are_combined_log_format_with_microseconds() -> None:
    line = TextFormatter().format(access_record(ENTRY))
    assert line == combined_line(ENTRY)
    match = re.fullmatch(r"10\.0\.0\.7 - - \[(.+?)\] (.*)", line)
    assert match is not None
    assert re.fullmatch(r"\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}", match.group(1))
    # quotes and backslashes escaped, other bytes as \xhh; no body is "-"; 1.5 ms is 1500
    assert match.group(2) == r'"GET /\xe6\"x\\y HTTP/1.1" 304 - "-" "agent\x09\"q\"" 1500'
    # other records keep the key=value form
    text = TextFormatter().format(record("source=%s result=new", "hk"))
    assert " level=WARNING logger=aggregator.ingest.poll source=hk result=new" in text


def test_access_json_lines_have_one_field_per_item() -> None:
    entry = json.loads(JsonFormatter().format(access_record(ENTRY)))
    assert entry["logger"] == ACCESS_LOGGER and entry["level"] == "info"
    assert entry["message"] == '/\xe6"x\\y'.join(["GET ", " 304 0"])
    assert {k: entry[k] for k in ("remote", "method", "path", "protocol", "status", "bytes",
                                  "duration_ms", "referer", "user_agent")} == {
        "remote": "10.0.0.7", "method": "GET", "path": '/\xe6"x\\y', "protocol": "HTTP/1.1",
        "status": 304, "bytes": 0, "duration_ms": 1.5, "referer": None,
        "user_agent": 'agent\t"q"',
    }
