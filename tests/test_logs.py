from __future__ import annotations

import json
import logging

from aggregator.service.logs import TEXT_FORMAT, JsonFormatter


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
