"""The store's side of a cold poll: committing the farm's new articles, on SQLite or
PostgreSQL (issue 15).

    .venv/bin/python bench/commits.py [--sources 200] [--entries 50] [--batch 20]
                                      [--database-url URL] [--profile]

The farm's documents (``bench/farm.py``) are parsed and normalized once, in this process;
then ``Store.commit_polls`` writes them in batches of ``--batch`` polls, as the writer
thread of ``aggregator poll`` does, into a fresh database: a temporary SQLite file, or
the PostgreSQL database ``--database-url`` names, which must exist and be empty (e.g.
``createdb -h 127.0.0.1 -U postgres bench_commits``; drop it afterwards).  Prints the
CPU and wall seconds of the commits alone; ``--profile`` adds cProfile's top functions.
Measures, asserts nothing; touches no database but the one it is given or creates.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from normalize import farm_entries  # noqa: E402  (bench/normalize.py)

from aggregator.ingest.normalize import normalize  # noqa: E402
from aggregator.records import Article, NormalizeOptions, SourceState, SourceUpdate  # noqa: E402
from aggregator.store import Store  # noqa: E402


def polls(sources: int, entries: int) -> list[tuple[SourceState, list[Article]]]:
    """The farm's parsed entries (``normalize.farm_entries``), normalized, by source."""
    now = datetime.now(UTC)
    by_source: dict[str, tuple[SourceState, list[Article]]] = {}
    for entry, source in farm_entries(sources, entries):
        _state, articles = by_source.setdefault(source.id, (SourceState(
            source_id=source.id, url=source.url, last_poll_at=now, last_success_at=now), []))
        articles.append(normalize(entry, source, NormalizeOptions(), seen_at=now))
    return list(by_source.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", type=int, default=200)
    parser.add_argument("--entries", type=int, default=50)
    parser.add_argument("--batch", type=int, default=20, help="polls per commit_polls")
    parser.add_argument("--database-url", help="an empty PostgreSQL database (default: "
                        "a temporary SQLite file)")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    work = polls(args.sources, args.entries)
    with tempfile.TemporaryDirectory(prefix="commits-") as folder:
        url = args.database_url or f"sqlite:///{folder}/commits.db"
        with Store.open(url) as store:
            profile = cProfile.Profile() if args.profile else None
            cpu, wall = time.process_time(), time.perf_counter()
            if profile:
                profile.enable()
            for start in range(0, len(work), args.batch):
                store.commit_polls([(SourceUpdate(state=state, result=None), articles, None)
                                    for state, articles in work[start:start + args.batch]])
            if profile:
                profile.disable()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    count = sum(len(articles) for _, articles in work)
    print(f"{url.split(':')[0]}: {count} articles of {len(work)} sources in batches of "
          f"{args.batch}: {cpu:.2f} s CPU, {wall:.2f} s wall")
    if profile:
        pstats.Stats(profile).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
