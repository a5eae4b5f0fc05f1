"""One lemon24/reader update, as a user's script would run it (runs in bench/.venv-reader).

    bench/.venv-reader/bin/python bench/reader_run.py DB URLS_FILE [--add] [--workers 8]

``--add`` adds every URL of URLS_FILE first (the cold poll); then ``update_feeds(workers=N)``
updates every feed.  ``scheduled=False`` is passed when this reader version has the
parameter (3.13+ defaults to only updating feeds whose update interval has elapsed, which
would turn an immediate re-poll into a no-op).  Prints one JSON line: entries stored,
feeds, feeds whose last update failed.
"""

from __future__ import annotations

import argparse
import inspect
import json
from pathlib import Path

from reader import make_reader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db")
    parser.add_argument("urls_file")
    parser.add_argument("--add", action="store_true", help="add the feeds first")
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()

    reader = make_reader(args.db)
    if args.add:
        for url in Path(args.urls_file).read_text(encoding="utf-8").split():
            reader.add_feed(url, exist_ok=True)
    kwargs: dict[str, object] = {"workers": args.workers}
    if "scheduled" in inspect.signature(reader.update_feeds).parameters:
        kwargs["scheduled"] = False
    reader.update_feeds(**kwargs)  # type: ignore[arg-type]
    feeds = list(reader.get_feeds())
    failed = [f for f in feeds if f.last_exception is not None]
    print(json.dumps({
        "entries": reader.get_entry_counts().total,
        "feeds": len(feeds),
        "failed": len(failed),
        "first_error": str(failed[0].last_exception) if failed else None,
    }))
    reader.close()


if __name__ == "__main__":
    main()
