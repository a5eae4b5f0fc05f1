"""What nh3's Python ``attribute_filter`` costs in ``normalize.sanitize_html`` (issue 15).

    .venv/bin/python bench/sanitize.py [--sources 40] [--entries 50]

The farm's entries (``bench/farm.py``: 2-4 KB CJK/Latin HTML with images and relative
links) are parsed once, then every entry's HTML is sanitized by: the project's own
``sanitize_html``; the same nh3 cleaner without the filter (the floor: what the Rust side
costs); with a filter that returns every value unchanged (the price of the callback
itself); and the parts around it (the XML-illegal strip, the cleaner cache, the image URL
work per image).  CPU time on one core, best of 3; measures, asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import nh3  # noqa: E402
from farm import Farm  # noqa: E402

from aggregator.ingest import normalize  # noqa: E402
from aggregator.ingest.parse import parse  # noqa: E402
from aggregator.records import FetchResult, NormalizeOptions, Source  # noqa: E402
from aggregator.rules import strip_xml_illegal, web_url  # noqa: E402

BASE = "http://127.0.0.1/feeds/x.xml"
OPTIONS = NormalizeOptions(image_proxy="https://img-proxy.example/?")


def fragments(sources: int, entries: int) -> list[str]:
    farm = Farm(sources, entries, seed=1)
    found: list[str] = []
    for spec in farm.specs:
        source = Source(spec.id, spec.name, f"http://127.0.0.1/feeds/{spec.id}.xml", ("c",))
        feed = parse(FetchResult(spec.id, source.url, 200, farm.render(spec.index).body,
                                 {"content-type": "text/xml"}), source)
        found += [e.content or e.summary or "" for e in feed.entries]
    return found


def per_entry(html: list[str], clean: Callable[[str], object]) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for fragment in html:
            clean(fragment)
        best = min(best, time.process_time() - started)
    return best / len(html) * 1e6


def cleaner(**extra: object) -> nh3.Cleaner:
    return nh3.Cleaner(attributes=normalize._ALLOWED_ATTRIBUTES, url_schemes={"http", "https",
                       "mailto"}, url_relative=("rewrite_with_base", BASE),
                       filter_style_properties=set(normalize._ALLOWED_STYLE_PROPERTIES),
                       set_tag_attribute_values={"img": {"referrerpolicy": "no-referrer"}},
                       strip_comments=True, **extra)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", type=int, default=40)
    parser.add_argument("--entries", type=int, default=50)
    args = parser.parse_args()
    html = fragments(args.sources, args.entries)
    sanitized = [normalize.sanitize_html(f, BASE, OPTIONS) for f in html]
    images = sum(s.count("<img") for s in sanitized) / len(html)
    attributes = sum(s.count('="') for s in sanitized) / len(html)
    print(f"{len(html)} entries; per entry {attributes:.1f} attributes, {images:.1f} images")
    plain, noop = cleaner(), cleaner(attribute_filter=lambda _t, _a, value: value)
    ours = normalize._content_cleaner(BASE, OPTIONS)
    url = "http://img.example.com/a/b/c.jpg"
    image_us = timeit.timeit(lambda: normalize.proxied_image(
        web_url(normalize._absolute_url(url, BASE) or ""), OPTIONS), number=20000) / 20000 * 1e6
    rows = [
        ("sanitize_html (the project's)", per_entry(
            html, lambda f: normalize.sanitize_html(f, BASE, OPTIONS))),
        ("  its cached cleaner's clean() alone", per_entry(html, ours.clean)),
        ("  strip_xml_illegal", per_entry(html, strip_xml_illegal)),
        ("same cleaner, no attribute_filter", per_entry(html, plain.clean)),
        ("same cleaner, a filter returning every value", per_entry(html, noop.clean)),
    ]
    for name, micros in rows:
        print(f"| {name} | {micros:.0f} µs |")
    print(f"| the image URL work, per image | {image_us:.1f} µs |")


if __name__ == "__main__":
    main()
