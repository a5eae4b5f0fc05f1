"""The naive baseline: sequential ``requests.get`` + ``feedparser.parse`` + one INSERT per entry.

    .venv/bin/python bench/naive_run.py DB URLS_FILE

No conditional GET, no threads, no change detection: every poll downloads and parses
every feed and offers every entry to SQLite (``INSERT OR IGNORE``, one statement per
entry, one commit per feed).  Prints one JSON line: entries inserted, total stored,
feeds that failed.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path

import feedparser
import requests

SCHEMA = """CREATE TABLE IF NOT EXISTS entries (
    feed TEXT NOT NULL, id TEXT NOT NULL, title TEXT, link TEXT, author TEXT,
    published TEXT, content TEXT, PRIMARY KEY (feed, id))"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db")
    parser.add_argument("urls_file")
    args = parser.parse_args()

    db = sqlite3.connect(args.db)
    db.execute(SCHEMA)
    inserted = failed = 0
    for url in Path(args.urls_file).read_text(encoding="utf-8").split():
        try:
            response = requests.get(url, timeout=30)
            response.raise_for_status()
        except requests.RequestException:
            failed += 1
            continue
        parsed = feedparser.parse(response.content, response_headers=dict(response.headers))
        for entry in parsed.entries:
            content = entry.get("content")
            body = content[0].get("value") if content else entry.get("summary")
            cursor = db.execute(
                "INSERT OR IGNORE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)",
                (url, entry.get("id") or entry.get("link") or entry.get("title"),
                 entry.get("title"), entry.get("link"), entry.get("author"),
                 entry.get("published") or entry.get("updated"), body))
            inserted += cursor.rowcount
        db.commit()
    total = db.execute("SELECT count(*) FROM entries").fetchone()[0]
    db.close()
    print(json.dumps({"entries": total, "inserted": inserted, "failed": failed}))


if __name__ == "__main__":
    main()
