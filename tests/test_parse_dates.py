"""Dates as real feeds write them: what feedparser does not read, ``parse`` reads leniently
(``lenient_datetime``), and what cannot be read stays None (normalize then dates the
article when it was first seen) — a date is never invented."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from builders import make_source, rss_items
from test_corpus import CORPUS, fetched_from_file

from aggregator.ingest.normalize import normalize
from aggregator.ingest.parse import lenient_datetime, parse
from aggregator.records import FetchResult, NormalizeOptions

SOURCE = make_source()
SEEN = datetime(2024, 1, 1, tzinfo=UTC)
NOV_16 = datetime(2022, 11, 15, 23, 38, 15, tzinfo=UTC)  # 16 Nov 2022 00:38:15 +0100


def fetched(content: bytes, content_type: str = "text/xml") -> FetchResult:
    return FetchResult(source_id="portal", url="http://portal.test/feed.xml", status=200,
                       content=content, headers={"content-type": content_type})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # no space before the zone (a real 2005 capture)
        ("Tue, 27 Dec 2005 13:08:54+0900", datetime(2005, 12, 27, 4, 8, 54, tzinfo=UTC)),
        ("Tue, 27 Dec 2005 13:08:54+09:00", datetime(2005, 12, 27, 4, 8, 54, tzinfo=UTC)),
        # localized weekdays: Italian (feed-rs' ilmessaggero), French, German, Chinese
        ("mer, 16 nov 2022 00:38:15 +0100", NOV_16),
        ("mer., 16 nov. 2022 00:38:15 +0100", NOV_16),
        ("Mi, 16 Nov 2022 00:38:15 +0100", NOV_16),
        ("Mittwoch, 16. Nov. 2022 00:38:15 +0100", NOV_16),
        ("星期三, 16 Nov 2022 07:38:15 +0800", NOV_16),
        ("周三, 16 Nov 2022 07:38:15 +0800", NOV_16),
        # a wrong English weekday is ignored too (16 Nov 2022 was a Wednesday)
        ("Fri, 16 Nov 2022 00:38:15 +0100", NOV_16),
        # localized months (Italian, German, Spanish, French, Dutch)
        ("mar, 13 dic 2022 10:00:00 +0100", datetime(2022, 12, 13, 9, 0, tzinfo=UTC)),
        ("Mo, 3 Okt 2022 10:00:00 +0200", datetime(2022, 10, 3, 8, 0, tzinfo=UTC)),
        ("lun, 3 Mär 2025 10:00:00 +0100", datetime(2025, 3, 3, 9, 0, tzinfo=UTC)),
        ("jue, 5 ene 2023 10:00:00 -0300", datetime(2023, 1, 5, 13, 0, tzinfo=UTC)),
        ("jeu., 3 août 2023 10:00:00 +0200", datetime(2023, 8, 3, 8, 0, tzinfo=UTC)),
        ("wo, 12 mei 2021 10:00:00 +0200", datetime(2021, 5, 12, 8, 0, tzinfo=UTC)),
        # zones: "GMT+8", named ones (email.utils' and a few unambiguous others)
        ("Wed, 16 Nov 2022 07:38:15 GMT+8", NOV_16),
        ("Wed, 16 Nov 2022 07:38:15 UTC+08:00", NOV_16),
        ("Wed, 16 Nov 2022 07:38:15 HKT", NOV_16),
        ("Wed, 16 Nov 2022 00:38:15 CET", NOV_16),
        ("Tue, 15 Nov 2022 18:38:15 EST", NOV_16),
        # RFC 822 as JSON Feeds write it (feed-rs' jsonfeed_elastic_1.1.json)
        ("Fri, 31 May 2019 12:17:58 -0700", datetime(2019, 5, 31, 19, 17, 58, tzinfo=UTC)),
        ("Wed Nov 16 00:38:15 2022", datetime(2022, 11, 16, 0, 38, 15, tzinfo=UTC)),
        # ISO 8601 and the year-month-day forms of Chinese portals; no zone is UTC
        ("2022-11-16T07:38:15+08:00", NOV_16),
        ("2022-11-15T23:38:15Z", NOV_16),
        ("2022-11-16 07:38:15 +0800", NOV_16),
        ("2022-11-15 23:38:15", NOV_16),
        ("2022/11/15 23:38:15", NOV_16),
        ("2022/11/5 8:05", datetime(2022, 11, 5, 8, 5, tzinfo=UTC)),
        ("2022年11月15日 23:38:15", NOV_16),
        ("2022年11月16日 星期三 07:38:15 +08:00", NOV_16),
        ("2022-11-15", datetime(2022, 11, 15, tzinfo=UTC)),
    ],
)
def test_lenient_dates(raw: str, expected: datetime) -> None:
    parsed = lenient_datetime(raw)
    assert parsed == expected
    assert parsed is not None and parsed.utcoffset() == timedelta(0) and parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "raw",
    [
        "", "   ", "yesterday", "N/A", "0",
        "Wed, 16 Nov 2022 00:38:15 XYZ",  # an unknown zone: not guessed at
        "Wed, 16 Nov 2022 00:38:15 +9900",
        "Wed, 32 Nov 2022 00:38:15 +0100",
        "Wed, 16 Foo 2022 00:38:15 +0100",
        "2022-13-01",
        "2022-02-30 10:00",
        "Mon, 01 Jan 0001 00:00:00 +0000",  # email.utils alone would say 2001
        "0001-01-01T00:00:00+01:00",  # a placeholder, and beyond datetime.min in UTC
        "1970-01-01T00:00:00Z",  # the epoch placeholder
    ],
)
def test_unreadable_or_absurd_dates_are_none(raw: str) -> None:
    assert lenient_datetime(raw) is None


def test_non_strings_are_none() -> None:
    assert lenient_datetime(None) is None
    assert lenient_datetime(1668555495) is None  # JSON numbers are not JSON Feed dates


def test_rss_dates_feedparser_cannot_read_are_read_through_parse_and_normalize() -> None:
    doc = rss_items(
        "<item><title>a</title><guid>a</guid><pubDate>Tue, 27 Dec 2005 13:08:54+0900</pubDate>"
        "</item><item><title>b</title><guid>b</guid>"
        "<pubDate>星期三, 16 Nov 2022 07:38:15 +0800</pubDate></item>"
        "<item><title>c</title><guid>c</guid><pubDate>not a date</pubDate>"
        "<dc:date xmlns:dc='http://purl.org/dc/elements/1.1/'>2099-01-01T00:00:00Z</dc:date>"
        "</item><item><title>d</title><guid>d</guid><pubDate>mer, 16 nov 2022 00:38:15 +0100"
        "</pubDate></item>"
    )
    feed = parse(fetched(doc.encode()), SOURCE)
    articles = [normalize(e, SOURCE, NormalizeOptions(), seen_at=SEEN) for e in feed.entries]
    assert [(a.date, a.date_from_feed) for a in articles] == [
        (datetime(2005, 12, 27, 4, 8, 54, tzinfo=UTC), True),
        (NOV_16, True),
        (SEEN, False),  # unreadable, then a far-future date normalize refuses: first seen
        (NOV_16, True),
    ]


def test_an_unreadable_date_is_not_invented() -> None:
    doc = rss_items("<item><title>a</title><pubDate>mer, 99 nov 2022 00:38 +0100</pubDate></item>")
    [entry] = parse(fetched(doc.encode()), SOURCE).entries
    assert entry.published is None and entry.updated is None
    article = normalize(entry, SOURCE, NormalizeOptions(), seen_at=SEEN)
    assert (article.date, article.date_from_feed) == (SEEN, False)


def test_a_date_feedparser_reads_is_feedparsers() -> None:
    doc = rss_items("<item><title>a</title><pubDate>Wed, 16 Nov 2022 00:38:15 +0100</pubDate>"
                    "</item>")
    [entry] = parse(fetched(doc.encode()), SOURCE).entries
    assert entry.published == NOV_16


def test_json_feed_dates_rfc_822_iso_and_zoneless() -> None:
    document = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "t",
        "items": [
            {"id": "1", "date_published": "Fri, 31 May 2019 12:17:58 -0700",
             "date_modified": "Fri, 31 May 2019 12:17:58-0700"},
            {"id": "2", "date_published": "2021-05-21T15:25:00+08:00"},
            {"id": "3", "date_published": "2021-05-21 15:25:00"},
            {"id": "4", "date_published": "soon", "date_modified": 12},
        ],
    }
    feed = parse(fetched(json.dumps(document).encode(), "application/feed+json"), SOURCE)
    rfc822 = datetime(2019, 5, 31, 12, 17, 58, tzinfo=timezone(timedelta(hours=-7)))
    assert [(e.published, e.updated) for e in feed.entries] == [
        (rfc822, rfc822),
        (datetime(2021, 5, 21, 7, 25, tzinfo=UTC), None),
        (datetime(2021, 5, 21, 15, 25, tzinfo=UTC), None),
        (None, None),
    ]
    assert all(d is None or d.tzinfo is UTC for e in feed.entries for d in (e.published, e.updated))


# --- real documents of the third-party corpus ---------------------------------------------

needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is not present")


@needs_corpus
def test_a_real_italian_feed_is_dated_from_its_localized_dates() -> None:
    path = CORPUS / "feed-rs" / "rss2" / "rss_2.0_ilmessaggero.xml"
    assert b"<pubDate>mer, 16 nov 2022 00:38:15 +0100</pubDate>" in path.read_bytes()
    [entry] = parse(fetched_from_file(path), SOURCE).entries
    article = normalize(entry, SOURCE, NormalizeOptions(), seen_at=SEEN)
    assert (article.date, article.date_from_feed) == (NOV_16, True)


@needs_corpus
def test_a_real_json_feed_with_rfc_822_dates_is_dated() -> None:
    path = CORPUS / "feed-rs" / "jsonfeed" / "jsonfeed_elastic_1.1.json"
    feed = parse(fetched_from_file(path), SOURCE)
    articles = [normalize(e, SOURCE, NormalizeOptions(), seen_at=SEEN) for e in feed.entries]
    dated = [(a.title, a.date) for a in articles if a.date_from_feed]
    assert dated == [
        ("InfluxDB vs. Graphite for Time Series Data & Metrics Benchmark",
         datetime(2019, 5, 31, 19, 17, 58, tzinfo=UTC)),
        ("InfluxDB vs. Elasticsearch for Time Series Data & Metrics Benchmark",
         datetime(2018, 2, 6, 13, 34, 12, tzinfo=UTC)),
    ]
    assert len(articles) == 3  # the third item has no date: first seen


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2021-05-21 08:30", datetime(2021, 5, 21, 0, 30, tzinfo=UTC)),
        ("2021.05.21", datetime(2021, 5, 20, 16, 0, tzinfo=UTC)),
        ("2021年5月21日 08:30", datetime(2021, 5, 21, 0, 30, tzinfo=UTC)),
        ("2021-05-21 08:30 +09:00", datetime(2021, 5, 20, 23, 30, tzinfo=UTC)),  # its own
        ("Fri, 21 May 2021 08:30:00 GMT", datetime(2021, 5, 21, 8, 30, tzinfo=UTC)),
    ],
)
def test_a_date_without_a_zone_is_read_in_the_zone_given(raw: str, expected: datetime) -> None:
    """A list page's ``timezone`` (kind html): zone-less dates are in it, others keep
    theirs; without it they stay UTC."""
    assert lenient_datetime(raw, zone=timezone(timedelta(hours=8))) == expected
    assert lenient_datetime("2021.05.21") == datetime(2021, 5, 21, tzinfo=UTC)
