"""Coordination alone: how fast workers claim and commit polls through PostgreSQL.

N sources whose portal answers 304 at once (an injected fetch, no HTTP), interval 30 min,
all due: 1, 2, 3 worker processes claim batches (``Store.claim_due``) and commit each poll
fenced by its lease (``poll_source`` → ``Store.commit_poll``) until nothing is due.
Reports claims/s, polls/s and duplicate claims (a source claimed more than once: its
fencing token above 1; must be 0).  Not part of the test suite.

    .venv/bin/python bench/claims.py [--sources 20000] [--workers 1,2,3] [--batch 20]
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg

from aggregator.ingest.poll import PollOptions, poll_source
from aggregator.records import (
    FetchOptions,
    FetchResult,
    NormalizeOptions,
    Source,
    Validators,
)
from aggregator.store import Store

INTERVAL = timedelta(minutes=30)
OPTIONS = PollOptions(fetch=FetchOptions(), normalize=NormalizeOptions())


def sources(count: int) -> list[Source]:
    return [Source(id=f"s{n:06d}", name="S", url=f"http://p{n % 100}.test/{n}.xml",
                   categories=("c",), interval=INTERVAL) for n in range(count)]


def not_modified(src: Source, _options: FetchOptions, _validators: Validators) -> FetchResult:
    return FetchResult(source_id=src.id, url=src.url, status=304)


def work(url: str, count: int, batch: int, holder: str, started: float,
         results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    by_id = {s.id: s for s in sources(count)}
    claims = polls = 0
    with Store.open(url) as store:
        while time.monotonic() < started:
            pass  # every worker starts at the same instant
        while claimed := store.claim_due(holder, limit=batch, lease_for=timedelta(minutes=5),
                                         now=datetime.now(UTC)):
            claims += 1
            for claim in claimed:
                poll_source(by_id[claim.lease.source_id], claim.state, store, OPTIONS,
                            fetch=not_modified, lease=claim.lease)
                polls += 1
    results.put((claims, polls, time.monotonic()))


def run(count: int, workers: int, batch: int, admin: str) -> dict[str, float]:
    name = f"bench_claims_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        with Store.open(url) as store:
            store.add_sources(sources(count), now=datetime.now(UTC) - timedelta(seconds=1))
        context = multiprocessing.get_context("spawn")
        results = context.Queue()
        started = time.monotonic() + 3.0
        processes = [context.Process(target=work, args=(url, count, batch, f"w{n}", started,
                                                        results)) for n in range(workers)]
        for process in processes:
            process.start()
        outcomes = [results.get(timeout=3600) for _ in processes]
        for process in processes:
            process.join()
        elapsed = max(end for _, _, end in outcomes) - started
        with psycopg.connect(admin.replace("dbname=postgres", f"dbname={name}")) as connection:
            tokens = connection.execute("SELECT sum(lease_token), count(*) FROM sources").fetchone()
        duplicates = int(tokens[0]) - int(tokens[1])
        return {"workers": workers, "sources": count, "seconds": round(elapsed, 2),
                "claims_per_s": round(sum(c for c, _, _ in outcomes) / elapsed),
                "polls_per_s": round(sum(p for _, p, _ in outcomes) / elapsed),
                "duplicate_claims": duplicates}
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=20_000)
    parser.add_argument("--workers", default="1,2,3")
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--admin", default="host=127.0.0.1 user=postgres dbname=postgres")
    args = parser.parse_args()
    print("| workers | sources | seconds | claims/s | polls/s | duplicate claims |")
    print("| --- | --- | --- | --- | --- | --- |")
    for workers in (int(w) for w in args.workers.split(",")):
        r = run(args.sources, workers, args.batch, args.admin)
        print(f"| {r['workers']} | {r['sources']} | {r['seconds']} | {r['claims_per_s']} | "
              f"{r['polls_per_s']} | {r['duplicate_claims']} |", flush=True)


if __name__ == "__main__":
    main()
