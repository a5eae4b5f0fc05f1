"""Entries per second of the two parse paths on the benchmark farm's documents.

``parse(..., fast=True)`` (lxml, ``ingest.fastparse``, feedparser when it declines)
against ``parse(..., fast=False)`` (feedparser always), in this one process on one
core, each timed over the same documents after the same encoding decision; also the
share of farm documents the fast path takes.  A benchmark, not a test: it asserts
nothing but that both paths read the same entries.

    python bench/parse_paths.py [--sources 100] [--entries 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from farm import Farm

from aggregator.ingest import parse as parse_module
from aggregator.ingest.fastparse import parse_fast
from aggregator.ingest.parse import parse
from aggregator.records import FetchResult, ParserKind, Source


def documents(farm: Farm) -> list[tuple[FetchResult, Source]]:
    out = []
    for spec in farm.specs:
        url = f"http://farm.test{spec.path}"
        fetched = FetchResult(source_id=spec.id, url=url, status=200,
                              content=farm.render(spec.index).body,
                              headers={"content-type": spec.content_type})
        out.append((fetched, Source(id=spec.id, url=url, name=spec.name,
                                    categories=(spec.category,))))
    return out


def timed(docs: list[tuple[FetchResult, Source]], *, fast: bool, rounds: int) -> tuple[float, int]:
    best = float("inf")
    entries = 0
    for _ in range(rounds):
        started = time.process_time()
        entries = sum(len(parse(f, s, fast=fast).entries) for f, s in docs)
        best = min(best, time.process_time() - started)
    return best, entries


def prelude(docs: list[tuple[FetchResult, Source]]) -> list[tuple[bytes, str, str]]:
    """What both paths share: the encoding decision and the transcoding to UTF-8."""
    out = []
    for fetched, _source in docs:
        content_type = fetched.headers["content-type"]
        decoded = parse_module.decode_feed_bytes(
            fetched.content, http_charset=parse_module.charset_from_content_type(content_type),
            declared=parse_module.declared_xml_encoding(fetched.content))
        text, _ = parse_module.strip_internal_dtd(decoded.text)
        out.append((parse_module._utf8_document(text), text, fetched.url))
    return out


def timed_extraction(prepared: list[tuple[bytes, str, str]], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for document, text, url in prepared:
            parse_fast(document, text, url, parse_module._read_date,
                       media_type="application/xml", declares_base=False)
        best = min(best, time.process_time() - started)
    return best


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--sources", type=int, default=100)
    args.add_argument("--entries", type=int, default=50)
    args.add_argument("--rounds", type=int, default=3)
    options = args.parse_args()
    docs = documents(Farm(sources=options.sources, entries=options.entries))
    taken = sum(parse(f, s).parser is ParserKind.FAST for f, s in docs)
    for f, s in docs[:20]:
        assert parse(f, s).entries == parse(f, s, fast=False).entries, s.id
    slow, n = timed(docs, fast=False, rounds=options.rounds)
    quick, m = timed(docs, fast=True, rounds=options.rounds)
    assert n == m
    started = time.process_time()
    prepared = prelude(docs)
    shared = time.process_time() - started
    extraction = timed_extraction(prepared, options.rounds)
    print(f"{len(docs)} farm documents, {n} entries; fast path took {taken}/{len(docs)}")
    print(f"feedparser path: {n / slow:9,.0f} entries/s  ({slow:.2f} s CPU)")
    print(f"fast path:       {n / quick:9,.0f} entries/s  ({quick:.2f} s CPU)  "
          f"{slow / quick:.1f}x")
    print(f"of which the shared decoding/transcoding: {n / shared:9,.0f} entries/s "
          f"({shared:.2f} s); lxml extraction alone: {n / extraction:9,.0f} entries/s "
          f"({extraction:.2f} s)")


if __name__ == "__main__":
    main()
