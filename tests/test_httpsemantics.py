"""Tests for aggregator.httpsemantics: conditional requests and Accept-Encoding, as pure
functions, and the module's place at the bottom of the import graph."""

from __future__ import annotations

import ast
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime, formatdate
from pathlib import Path

import pytest

import aggregator.httpsemantics as semantics
from aggregator.httpsemantics import accepts_gzip, etag_matches, is_not_modified

MTIME = 1_700_000_000.75  # a file's mtime, with a fraction HTTP dates cannot carry
LAST_MODIFIED = formatdate(MTIME, usegmt=True)


@pytest.mark.parametrize(
    ("header", "etag", "expected"),
    [
        ('"abc"', '"abc"', True),
        ('W/"abc"', '"abc"', True),  # weak comparison
        ('"abc"', 'W/"abc"', True),
        ('"x", "abc"', '"abc"', True),
        (' "x" ,"abc" ', '"abc"', True),
        ("*", '"abc"', True),
        (" * ", '"anything"', True),
        ('"abcd"', '"abc"', False),
        ('"x", "y"', '"abc"', False),
        ("", '"abc"', False),
        ('abc', '"abc"', False),  # unquoted is another tag
    ],
)
def test_etag_matches(header: str, etag: str, expected: bool) -> None:
    assert etag_matches(header, etag) is expected


def test_if_modified_since() -> None:
    assert is_not_modified(None, LAST_MODIFIED, '"e"', MTIME)
    assert is_not_modified(None, formatdate(MTIME + 86400, usegmt=True), '"e"', MTIME)
    assert not is_not_modified(None, formatdate(MTIME - 1, usegmt=True), '"e"', MTIME)
    # The same instant written in another zone, and with "-0000" (no zone: taken as UTC).
    east = datetime.fromtimestamp(int(MTIME), timezone(timedelta(hours=8)))
    assert is_not_modified(None, format_datetime(east), '"e"', MTIME)
    assert not is_not_modified(None, format_datetime(east - timedelta(seconds=1)), '"e"', MTIME)
    assert formatdate(MTIME).endswith("-0000")
    assert is_not_modified(None, formatdate(MTIME), '"e"', MTIME)


@pytest.mark.parametrize("since", [None, "", "yesterday", "Mon, 99 Foo 2023 25:61:00 GMT"])
def test_if_modified_since_that_cannot_match(since: str | None) -> None:
    assert not is_not_modified(None, since, '"e"', MTIME)


def test_without_a_modification_time_only_the_etag_can_match() -> None:
    assert not is_not_modified(None, LAST_MODIFIED, '"e"', None)
    assert is_not_modified('"e"', None, '"e"', None)


def test_if_none_match_wins_over_if_modified_since() -> None:
    assert not is_not_modified('"stale"', LAST_MODIFIED, '"e"', MTIME)
    old = formatdate(MTIME - 3600, usegmt=True)
    assert is_not_modified('"e"', old, '"e"', MTIME)
    assert not is_not_modified("", LAST_MODIFIED, '"e"', MTIME)  # sent but empty: no match


@pytest.mark.parametrize(
    ("accept_encoding", "expected"),
    [
        ("gzip", True),
        ("GZIP", True),
        ("x-gzip", True),
        ("br, gzip;q=0.5", True),
        ("gzip; q=1.0", True),
        ("*", True),
        ("br, *;q=0.1", True),
        ("", False),
        ("identity", False),
        ("br, deflate", False),
        ("gzip;q=0", False),
        ("gzip;q=0.000", False),
        ("gzip;q=oops", False),  # an unreadable quality counts as 0
        ("*;q=0", False),
        ("gzip;q=0, *", False),  # named gzip wins over *
        ("*, gzip;q=0", False),
        (" , ,gzip", True),
    ],
)
def test_accepts_gzip(accept_encoding: str, expected: bool) -> None:
    assert accepts_gzip(accept_encoding) is expected


def test_httpsemantics_imports_only_the_standard_library() -> None:
    tree = ast.parse(Path(semantics.__file__).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            imported.add((node.module or "").split(".")[0])
    assert imported, "the check found no imports at all"
    assert imported <= sys.stdlib_module_names | {"__future__"}, imported


def test_the_demo_portal_does_not_load_the_service() -> None:
    code = ("import sys, aggregator.demo\n"
            "print(sorted(m for m in sys.modules if m.startswith('aggregator')))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, timeout=60).stdout
    loaded = ast.literal_eval(out.strip())
    assert "aggregator.httpsemantics" in loaded
    assert not [m for m in loaded if m.startswith("aggregator.service")], loaded
