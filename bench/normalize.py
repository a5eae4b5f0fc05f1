"""Microseconds per entry of the normalize stage, and what its nh3 calls cost.

``normalize()`` over the entries of the benchmark farm's documents (parsed once,
beforehand; parsing is not timed) and, with ``--corpus``, of ../shared/corpus too, in
this one process pinned to one core; best of ``--rounds`` in CPU time.  Then the parts:
``sanitize_html`` (the content cleaner with its Python ``attribute_filter``), the same
nh3 options without the filter (what the filter costs) and with one that returns every
value (what the callback itself costs), the XML-illegal strip before them, the filter's
work for one image URL, ``excerpt`` of the raw HTML
(the second nh3 call ``normalize`` used to make) and, when the code has it,
``sanitized_excerpt`` (the excerpt read from the sanitized output instead).

Run it once against each tree to compare; the printed digest of every Article field
must be the same for both (that is the "nothing changed" check):

    PYTHONPATH=/work/main   python bench/normalize.py [--sources 100] [--entries 50]
    PYTHONPATH=$PWD         python bench/normalize.py --corpus

A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import nh3
from farm import Farm

from aggregator.errors import ParseError
from aggregator.ingest import normalize as normalize_module
from aggregator.ingest.parse import parse
from aggregator.records import FetchResult, NormalizeOptions, ParsedEntry, Source
from aggregator.rules import strip_xml_illegal, web_url

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
SEEN = datetime(2024, 1, 1, tzinfo=UTC)
OPTIONS = NormalizeOptions(image_proxy="https://proxy.test/?")

Work = list[tuple[ParsedEntry, Source]]


def farm_entries(sources: int, entries: int) -> Work:
    farm = Farm(sources=sources, entries=entries)
    out: Work = []
    for spec in farm.specs:
        url = f"http://farm.test{spec.path}"
        fetched = FetchResult(source_id=spec.id, url=url, status=200,
                              content=farm.render(spec.index).body,
                              headers={"content-type": spec.content_type})
        source = Source(id=spec.id, url=url, name=spec.name, categories=(spec.category,))
        out += [(entry, source) for entry in parse(fetched, source).entries]
    return out


def corpus_entries() -> Work:
    out: Work = []
    paths = sorted(p for p in CORPUS.rglob("*") if p.is_file()
                   and p.suffix in (".xml", ".rdf", ".atom", ".json"))
    for number, path in enumerate(paths):
        url = f"http://corpus.test/{path.name}"
        fetched = FetchResult(source_id="corpus", url=url, status=200,
                              content=path.read_bytes(),
                              headers={} if path.suffix == ".json"
                              else {"content-type": "application/xml"})
        source = Source(id=f"corpus-{number}", url=url, name="Corpus", categories=("c",))
        try:
            out += [(entry, source) for entry in parse(fetched, source).entries]
        except ParseError:
            continue
    return out


def best_of(rounds: int, run: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        run()
        best = min(best, time.process_time() - started)
    return best


def unfiltered_cleaner(base: str, attribute_filter: Callable[[str, str, str], str | None]
                       | None = None) -> nh3.Cleaner:
    """The content cleaner's options without its ``attribute_filter`` (or with this one)."""
    n = normalize_module
    return nh3.Cleaner(attributes=n._ALLOWED_ATTRIBUTES, url_schemes=n._URL_SCHEMES,
                       url_relative=("rewrite_with_base", base), attribute_filter=attribute_filter,
                       filter_style_properties=set(n._ALLOWED_STYLE_PROPERTIES),
                       set_tag_attribute_values={"img": {"referrerpolicy": "no-referrer"}},
                       strip_comments=True)


def image_url_seconds(base: str, rounds: int = 20000) -> float:
    """What the filter does for one image ``src``: absolute, a web URL, the proxy prefix."""
    n = normalize_module
    url = "http://img.example.com/a/b/c.jpg"
    started = time.process_time()
    for _ in range(rounds):
        n.proxied_image(web_url(n._absolute_url(url, base) or ""), OPTIONS)
    return (time.process_time() - started) / rounds


def measure(label: str, work: Work, rounds: int) -> None:
    n = normalize_module
    length = OPTIONS.summary_length
    fragments = [(e.content or e.summary or "", s.url) for e, s in work]
    same_html = sum((e.summary or e.content or "") == f for (e, _), (f, _) in
                    zip(work, fragments, strict=True))
    articles = [n.normalize(e, s, OPTIONS, seen_at=SEEN) for e, s in work]
    digest = hashlib.sha256(repr(articles).encode("utf-8", "surrogatepass")).hexdigest()
    cleaners = {base: unfiltered_cleaner(base) for _, base in fragments}
    noop = {base: unfiltered_cleaner(base, lambda _tag, _name, value: value)
            for _, base in fragments}
    sanitized = [n.sanitize_html(f, base, OPTIONS) for f, base in fragments]
    count = len(work)
    parts: dict[str, float] = {
        "normalize()": best_of(rounds, lambda: [n.normalize(e, s, OPTIONS, seen_at=SEEN)
                                                for e, s in work]),
        "sanitize_html (with attribute_filter)": best_of(
            rounds, lambda: [n.sanitize_html(f, base, OPTIONS) for f, base in fragments]),
        "  the same nh3 options, no filter": best_of(
            rounds, lambda: [cleaners[base].clean(strip_xml_illegal(f)).strip()
                             for f, base in fragments]),
        "  the same, a filter returning every value": best_of(
            rounds, lambda: [noop[base].clean(strip_xml_illegal(f)).strip()
                             for f, base in fragments]),
        "  strip_xml_illegal alone": best_of(
            rounds, lambda: [strip_xml_illegal(f) for f, _ in fragments]),
        "excerpt(raw HTML) (a 2nd nh3 call)": best_of(
            rounds, lambda: [n.excerpt(f, length) for f, _ in fragments]),
    }
    if hasattr(n, "sanitized_excerpt"):
        parts["sanitized_excerpt(nh3 output)"] = best_of(
            rounds, lambda: [n.sanitized_excerpt(s, length) for s in sanitized])
    attributes = sum(x.count('="') for x in sanitized) / count
    images = sum(x.count("<img") for x in sanitized) / count
    print(f"{label}: {count} entries ({same_html} with one HTML for content and summary; "
          f"{attributes:.1f} attributes and {images:.1f} images each, sanitized)")
    for name, seconds in parts.items():
        print(f"  {name:<40} {seconds / count * 1e6:8.1f} µs/entry")
    print(f"  {'the image URL work, per image':<40} "
          f"{image_url_seconds(fragments[0][1]) * 1e6:8.1f} µs")
    print(f"  Article digest: {digest[:16]}")


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--sources", type=int, default=100)
    args.add_argument("--entries", type=int, default=50)
    args.add_argument("--rounds", type=int, default=3)
    args.add_argument("--corpus", action="store_true", help="also ../shared/corpus")
    options = args.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    print(f"code: {normalize_module.__file__}")
    measure(f"farm {options.sources}×{options.entries}",
            farm_entries(options.sources, options.entries), options.rounds)
    if options.corpus and CORPUS.is_dir():
        measure("corpus", corpus_entries(), options.rounds)


if __name__ == "__main__":
    main()
