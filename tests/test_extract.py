from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from aggregator.config import parse_config
from aggregator.ingest.extract import parse_and_normalize
from aggregator.ingest.normalize import normalize
from aggregator.ingest.parse import parse
from aggregator.ingest.poll import PARSE_AND_NORMALIZE
from aggregator.records import FetchResult, NormalizeOptions, Source
from aggregator.service.wiring import parse_pool

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


def test_a_feed_cannot_make_links_executable_through_xml_base() -> None:
    doc = b"""<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>
<item xml:base="javascript://x/%0aalert(1)/"><title>x</title><link>/a/1.html</link>
<description>&lt;a href="b.html"&gt;b&lt;/a&gt;&lt;img src="i.jpg"&gt;</description>
</item></channel></rss>"""
    hostile = FetchResult(source_id=SOURCE.id, url=SOURCE.url, status=200, content=doc,
                          headers={"content-type": "application/rss+xml"})
    _parsed, [article] = parse_and_normalize(hostile, SOURCE, OPTIONS, SEEN)
    assert "javascript" not in article.content + (article.link or "") + article.headimg
    assert article.link == "http://portal.test/a/1.html"  # the unsafe xml:base is ignored
    assert 'href="http://portal.test/' in article.content


def test_worker_processes_import_no_database_http_or_feed_writer_library() -> None:
    code = ("import sys, aggregator.ingest.extract; "
            "print(sorted(m for m in ('sqlalchemy', 'requests', 'feedgen', 'alembic') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_the_parse_pool_preloads_the_module_the_poll_sends_work_to() -> None:
    settings = parse_config("sources: []\n", Path("aggregator.yaml"))
    assert parse_pool(settings).preload == (PARSE_AND_NORMALIZE.module,)


def test_neither_the_cli_nor_its_workers_import_more_than_they_use(tmp_path: Path) -> None:
    # Shaped like the console script pip writes (imports on top, work under the guard):
    # multiprocessing makes every worker import the main module as ``__mp_main__``.
    script = tmp_path / "aggregator"
    script.write_text(
        "import sys\n"
        "from aggregator.cli import cli, main\n"
        "if __name__ == '__main__':\n"
        "    try:  # main() itself would end the process (os._exit) after its help\n"
        "        cli(['--help'], prog_name='aggregator')\n"
        "    except SystemExit:\n"
        "        pass\n"
        "    heavy = ('pydantic', 'sqlalchemy', 'feedparser', 'requests', 'feedgen')\n"
        "    print(sorted(m for m in heavy if m in sys.modules))\n"
        "    from aggregator.ingest.sandbox import WorkerPool\n"
        "    with WorkerPool(1, preload=('aggregator.ingest.extract',)) as pool:\n"
        "        probe = 'sorted(m for m in %r if m in __import__(\"sys\").modules)' % (heavy,)\n"
        "        print(pool.call(eval, probe))\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         check=True, cwd=tmp_path)
    cli_modules, worker_modules = out.stdout.strip().splitlines()[-2:]
    assert cli_modules == "[]"
    assert worker_modules == "[]"  # feedparser too: only once a document needs it


SHARED_LINK = """<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>
<item><link>http://portal.test/board.html</link><description>第一帖</description></item>
<item><link>http://portal.test/board.html</link><description>第二帖</description></item>
<item><link>http://portal.test/board.html</link><description>第三帖</description></item>
<item><link>http://portal.test/board.html</link><description>第三帖</description></item>
</channel></rss>""".encode()


def test_entries_sharing_a_link_stay_distinct_articles_with_stable_keys() -> None:
    shared = FetchResult(source_id=SOURCE.id, url=SOURCE.url, status=200, content=SHARED_LINK,
                         headers={"content-type": "application/rss+xml"})
    parsed, articles = parse_and_normalize(shared, SOURCE, OPTIONS, SEEN)
    keys = [a.key for a in articles]
    assert keys[0] == "http://portal.test/board.html"
    assert len(set(keys)) == 3 and keys[2] == keys[3]  # the exact repeat stays one article
    assert {a.summary for a in articles} == {"第一帖", "第二帖", "第三帖"}
    assert parsed.rekeyed == 2
    _again, repeat = parse_and_normalize(shared, SOURCE, OPTIONS, SEEN)
    assert [a.key for a in repeat] == keys
