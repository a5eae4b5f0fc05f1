"""How well the "one story, many portals" rule separates stories (bench/README.md, last section).

    .venv/bin/python bench/stories.py [--show N]

Every document of ../shared/corpus (the suites tests/test_corpus.py reads) and of the
project's fixtures (tests/fixtures/encodings, the demo portals' feeds) goes through parse
and normalize, each document as a source of its own.  Then:

* false positives: every pair of articles of DIFFERENT documents that the store's rule
  (``stories.same_story`` on the stored keys, title matches within ``STORY_WINDOW``)
  calls one story — counted by why (the same canonical link; the same title and a near
  fingerprint) and printed, to inspect by hand which are really one story;
* false negatives: each article with a fingerprint is re-published by a fake second
  source, perturbed: tracking parameters, ``http``↔``https`` and a fragment on the link;
  spacing, full-width punctuation and a ``【独家】``-style prefix on the title; a sentence
  added to or removed from the text.  Measured twice: with that (tracked) link, and with
  an unrelated link of the second portal's own, where only title + text can tell.

Standard library and the project only; nothing is stored.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import UTC, datetime
from itertools import combinations
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aggregator.errors import ParseError  # noqa: E402
from aggregator.ingest.normalize import normalize  # noqa: E402
from aggregator.ingest.parse import parse  # noqa: E402
from aggregator.records import Article, FetchResult, NormalizeOptions, Source  # noqa: E402
from aggregator.store import STORY_WINDOW  # noqa: E402
from aggregator.stories import distance, fingerprint, plain_text, same_story  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus"
SUITES = ("feed-rs", "feedparser")
FIXTURES = (ROOT / "tests" / "fixtures" / "encodings", ROOT / "aggregator" / "demo" / "feeds")
SEEN = datetime(2024, 1, 1, tzinfo=UTC)
_HEADER = re.compile(rb"Header:\s*([A-Za-z-]+):\s*([^\r\n]*?)\s*(?:-->|\r?\n)")
PREFIXES = ("【独家】", "【快讯】", "[视频]", "（图）", "〔重磅〕")
LONG = 200  # characters of text: what a real article has at least
ADDED = ("另据报道，相关部门将于近期出台配套措施。", " Officials said more details would follow.")


def documents() -> list[Path]:
    files: list[Path] = []
    for folder in [*(CORPUS / s for s in SUITES), *FIXTURES]:
        files += sorted(p for p in folder.rglob("*")
                        if p.is_file() and p.suffix in (".xml", ".json", ".rdf", ".atom")
                        and not p.name.endswith(".expected.json"))
    return files


def articles_of(path: Path, number: int) -> list[Article]:
    content = path.read_bytes()
    headers = {"content-type": "application/xml"} if path.suffix != ".json" else {}
    for name, value in _HEADER.findall(content[:2048]):
        headers[name.decode().lower()] = value.decode("latin-1")
    source = Source(id=f"doc-{number}", name=path.name, url=f"http://corpus.test/{path.name}",
                    categories=("c",))
    fetched = FetchResult(source_id=source.id, url=source.url, status=200, content=content,
                          headers=headers)
    try:
        feed = parse(fetched, source)
    except ParseError:
        return []
    return [normalize(e, source, NormalizeOptions(), seen_at=SEEN) for e in feed.entries]


def keys(article: Article) -> tuple[str | None, str | None, str | None]:
    return article.story_link, article.story_title, article.story_print


def one_story(a: Article, b: Article) -> bool:
    """The store's rule (``aggregator.store.story_match.stories_of``): keys, and the
    window for titles."""
    same_link = a.story_link is not None and a.story_link == b.story_link
    if not same_link and abs(a.date - b.date) > STORY_WINDOW:
        return False
    return same_story(*keys(a), *keys(b))


def false_positives(articles: list[Article]) -> list[tuple[str, Article, Article]]:
    by_link: dict[str, list[Article]] = defaultdict(list)
    by_title: dict[str, list[Article]] = defaultdict(list)
    for article in articles:
        if article.story_link:
            by_link[article.story_link].append(article)
        if article.story_title and article.story_print:
            by_title[article.story_title].append(article)
    found: dict[tuple[tuple[str, str], tuple[str, str]], tuple[str, Article, Article]] = {}
    for reason, groups in (("link", by_link), ("title+text", by_title)):
        for group in groups.values():
            for a, b in combinations(group, 2):
                if a.source_id == b.source_id or not one_story(a, b):
                    continue
                pair = tuple(sorted(((a.source_id, a.key), (b.source_id, b.key))))
                found.setdefault(pair, (reason, a, b))  # type: ignore[arg-type]
    return list(found.values())


def perturbed_link(link: str | None, rng: random.Random) -> str | None:
    if not link:
        return link
    swapped = (link.replace("https://", "http://", 1) if link.startswith("https://")
               else link.replace("http://", "https://", 1))
    joiner = "&" if "?" in swapped else "?"
    tracking = rng.choice(("utm_source=weibo&utm_medium=social", "spm=a2c4g.11186623.0.0",
                           "from=timeline&isappinstalled=0", "fbclid=IwAR0abc", "gclid=xyz"))
    return f"{swapped}{joiner}{tracking}#comments"


def perturbed_title(title: str, rng: random.Random) -> str:
    spaced = title.replace("，", ", ").replace("：", ":").replace(" ", "  ")
    return f"{rng.choice(PREFIXES)} {spaced} "


def perturbed_content(content: str, rng: random.Random) -> tuple[str, str]:
    sentences = re.split(r"(?<=[。！？.!?])", content)
    if len(sentences) > 3 and rng.random() < 0.5:
        drop = rng.randrange(1, len(sentences) - 1)
        return "".join(sentences[:drop] + sentences[drop + 1:]), "sentence removed"
    return content + rng.choice(ADDED), "sentence added"


def detection(articles: list[Article], *, own_link: bool,
              longer: bool | None = None) -> tuple[int, int, Counter[str]]:
    """Perturbed copies detected, of how many, and why the others were missed; ``longer``:
    only articles of at least (True) or under (False) ``LONG`` characters of text."""
    detected = total = 0
    missed: Counter[str] = Counter()
    for article in articles:
        if article.story_print is None:
            continue
        if longer is not None and (len(plain_text(article.content)) >= LONG) != longer:
            continue
        rng = random.Random(f"{article.source_id}\n{article.key}")  # same copy in each run
        content, change = perturbed_content(article.content, rng)
        link = (f"https://other-portal.test/{article.key[:12]}.html" if own_link
                else perturbed_link(article.link, rng))
        copy = replace(article, source_id="second", link=link, content=content,
                       title=perturbed_title(article.title, rng), summary=content[:200])
        total += 1
        if one_story(article, copy):
            detected += 1
        else:
            why = change if copy.story_title == article.story_title else "title key differs"
            if copy.story_print is None:
                why = "no fingerprint"
            missed[why] += 1
    return detected, total, missed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--show", type=int, default=40, help="false positives to print")
    args = parser.parse_args()
    paths = documents()
    articles = [a for number, path in enumerate(paths) for a in articles_of(path, number)]
    printed = sum(1 for a in articles if a.story_print)
    print(f"{len(paths)} documents, {len(articles)} articles, {printed} with a fingerprint")
    text = plain_text("".join(a.content for a in articles))[:3000]
    started = time.perf_counter()
    for _ in range(200):
        fingerprint(text)
    print(f"SimHash of {len(text)} characters of corpus text: "
          f"{(time.perf_counter() - started) / 200 * 1000:.2f} ms")

    pairs = false_positives(articles)
    print(f"\npairs of different documents called one story: {len(pairs)}"
          f" ({dict(Counter(reason for reason, _, _ in pairs))})")
    pairs.sort(key=lambda p: p[0] != "title+text")
    for reason, a, b in pairs[:args.show]:
        detail = (f"d={distance(a.story_print, b.story_print)}"
                  if a.story_print and b.story_print else "")
        print(f"  {reason:10} {detail:5} {a.title[:40]!r} | {b.title[:40]!r} | {a.link}")

    distances = Counter()
    for a, b in combinations([a for a in articles if a.story_print][:400], 2):
        if a.source_id != b.source_id:
            distances[min(distance(a.story_print, b.story_print) // 4 * 4, 64)] += 1
    print("fingerprint distance between unrelated articles (first 400), by 4 bits:",
          dict(sorted(distances.items())))

    linked = [a for a in articles if a.story_link]
    rng = random.Random(13)
    by_link = sum(1 for a in linked
                  if replace(a, link=perturbed_link(a.link, rng)).story_link == a.story_link)
    print(f"articles with a story link: {len(linked)}; copies with tracking parameters, the "
          f"other scheme and a fragment found by the link alone: {by_link}/{len(linked)}")
    for own_link in (False, True):
        for longer in (None, False, True):
            detected, total, missed = detection(articles, own_link=own_link, longer=longer)
            label = "its own unrelated link" if own_link else "the tracked link"
            size = {None: "all", False: f"text < {LONG}", True: f"text >= {LONG}"}[longer]
            print(f"perturbed copies with {label}, {size}: {detected}/{total} detected "
                  f"({100 * detected / max(total, 1):.1f}%), missed: {dict(missed)}")


if __name__ == "__main__":
    main()
