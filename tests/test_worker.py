from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

from aggregator.normalize import normalize
from aggregator.parse import parse
from aggregator.records import FetchResult, NormalizeOptions, Source
from aggregator.worker import parse_and_normalize

SOURCE = Source(id="portal", name="Portal", url="http://portal.test/feed.xml", categories=("c",))
SEEN = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
OPTIONS = NormalizeOptions(image_proxy="https://proxy.test/?")
FEED = """<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>
<item><title>一</title><link>/a/1.html</link><description>&lt;img src="i/1.jpg"&gt;</description>
</item><item><title>二</title><link>/a/2.html</link><description>x &amp;amp; y</description>
</item></channel></rss>""".encode()
FETCHED = FetchResult(source_id=SOURCE.id, url=SOURCE.url, status=200, content=FEED,
                      headers={"content-type": "application/rss+xml"})


def test_articles_are_the_normalized_entries_and_the_feed_comes_back_without_them() -> None:
    parsed, articles = parse_and_normalize(FETCHED, SOURCE, OPTIONS, SEEN)
    reference = parse(FETCHED, SOURCE)
    assert parsed.entries == () and parsed.title == reference.title == "t"
    assert articles == [normalize(e, SOURCE, OPTIONS, seen_at=SEEN) for e in reference.entries]
    assert [a.link for a in articles] == ["http://portal.test/a/1.html",
                                          "http://portal.test/a/2.html"]
    assert articles[0].headimg == "https://proxy.test/?http://portal.test/i/1.jpg"


def test_worker_processes_import_no_database_http_or_feed_writer_library() -> None:
    code = ("import sys, aggregator.worker; "
            "print(sorted(m for m in ('sqlalchemy', 'requests', 'feedgen', 'alembic') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
