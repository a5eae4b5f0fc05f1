"""Third-party feed suites (../shared/corpus) through parse → normalize → store → generate.

Every document must either ingest or fail with a clean ParseError, and every feed
generated from what was ingested must parse back without errors (Atom also
validates against the RFC 4287 RELAX NG schema).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import feedparser
import pytest
from lxml import etree

from aggregator.errors import ParseError
from aggregator.ingest.normalize import normalize
from aggregator.ingest.parse import parse
from aggregator.publish.feeds import render_atom, render_rss
from aggregator.records import (
    Article,
    FeedOptions,
    FetchResult,
    NormalizeOptions,
    Source,
    Validators,
)
from aggregator.store import Store

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
SEEN = datetime(2024, 1, 1, tzinfo=UTC)
OPTIONS = NormalizeOptions(image_proxy="https://proxy.test/?")
FEED_OPTIONS = FeedOptions(output_dir="unused", site_url="http://feeds.test/")
_HEADER = re.compile(rb"Header:\s*([A-Za-z-]+):\s*([^\r\n]*?)\s*(?:-->|\r?\n)")

pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is not present")


@cache
def atom_schema() -> etree.RelaxNG:
    return etree.RelaxNG(etree.parse(str(CORPUS / "schemas" / "atom-rfc4287.rng")))


def corpus_files(*folders: str) -> list[Path]:
    if not CORPUS.is_dir():
        return []
    files: list[Path] = []
    for folder in folders:
        files += sorted(
            p
            for p in (CORPUS / folder).rglob("*")
            if p.is_file() and p.suffix in (".xml", ".json", ".rdf", ".atom")
        )
    return files


def fetched_from_file(path: Path) -> FetchResult:
    content = path.read_bytes()
    headers = {"content-type": "application/xml"} if path.suffix != ".json" else {}
    for name, value in _HEADER.findall(content[:2048]):
        headers[name.decode().lower()] = value.decode("latin-1")
    return FetchResult(
        source_id="corpus",
        url=f"http://corpus.test/{path.name}",
        status=200,
        content=content,
        headers=headers,
    )


def ingest(path: Path, store: Store) -> tuple[list[Article], bool]:
    source = Source(
        id="corpus",
        name="Corpus",
        url=f"http://corpus.test/{path.name}",
        categories=("语料", "corpus"),
    )
    try:
        feed = parse(fetched_from_file(path), source)
    except ParseError:
        return [], True
    articles = [normalize(entry, source, OPTIONS, seen_at=SEEN) for entry in feed.entries]
    store.save_articles(
        source.id, source.url, articles, validators=Validators(), body_hash=None, polled_at=SEEN
    )
    return articles, False


def check_generated(articles: list[Article], label: str) -> None:
    rss = feedparser.parse(render_rss("corpus", articles, FEED_OPTIONS))
    assert not rss.bozo, f"{label}: generated RSS: {rss.get('bozo_exception')}"
    assert len(rss.entries) == min(len(articles), FEED_OPTIONS.feed_size)
    atom_bytes = render_atom("corpus", articles, FEED_OPTIONS)
    atom = feedparser.parse(atom_bytes)
    assert not atom.bozo, f"{label}: generated Atom: {atom.get('bozo_exception')}"
    document = etree.fromstring(atom_bytes)
    assert atom_schema().validate(document), f"{label}: {atom_schema().error_log}"


# Documents each suite may refuse (with a clean ParseError): feed-rs' two plain XML
# samples are not feeds; the ill-formed, entity and encoding suites probe broken input, so
# a clean refusal is a right answer there — anything but ParseError escaping is not.
MAY_REFUSE = {
    "feed-rs": lambda name: name.startswith("feed-rs/xml/xml_sample_"),
    "feedparser/wellformed": lambda name: False,
    "feedparser/illformed": lambda name: True,
    "feedparser/entities": lambda name: True,
    "feedparser/encoding": lambda name: True,
}


@pytest.mark.parametrize("suite", list(MAY_REFUSE))
def test_corpus_ingests_and_regenerates(suite: str, tmp_path: Path) -> None:
    files = corpus_files(suite)
    assert len(files) >= 15
    ingested = 0
    refused: list[str] = []
    with Store.open(f"sqlite:///{tmp_path / 'corpus.db'}") as store:
        for path in files:
            articles, failed = ingest(path, store)
            if failed:
                refused.append(str(path.relative_to(CORPUS)))
            if articles:
                ingested += 1
                unique = list({a.key: a for a in reversed(articles)}.values())  # store: first wins
                check_generated(unique, str(path.relative_to(CORPUS)))
        stored = store.count_articles()
    assert ingested > 0
    assert len(refused) <= 0.1 * len(files), refused
    assert [name for name in refused if not MAY_REFUSE[suite](name)] == []
    assert stored > 0
