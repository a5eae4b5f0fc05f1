"""Start-up costs: what a short CLI command imports, and how many queries ``status`` makes.

Why: ``aggregator status`` and a ``poll`` with nothing to fetch run from cron and shells
many times a day; importing lxml, feedparser, feedgen, nh3 or Alembic for them is most
of their time.  The commands run in a fresh interpreter (a subprocess) so that the
modules the test process already holds do not hide an import.  No timings here: those
are measured in bench/README.md ("Start-up").
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy import Engine, event

from aggregator.records import PollOutcome, SourceState, SourceUpdate
from aggregator.store import Store
from tests.builders import make_article, write_config_file

# Libraries that neither a status nor an empty poll needs.
HEAVY = ("feedgen", "lxml", "feedparser", "alembic", "nh3", "cssselect", "requests",
         "prometheus_client")

# Runs the CLI in this interpreter, then writes the top-level modules it imported.
_PROBE = """
import json, sys
from aggregator.cli import cli
try:
    code = cli(sys.argv[2:], prog_name="aggregator", standalone_mode=False) or 0
except SystemExit as exc:
    code = exc.code or 0
with open(sys.argv[1], "w", encoding="utf-8") as out:
    json.dump({"code": code, "modules": sorted({m.split(".")[0] for m in sys.modules})}, out)
"""


def _imported(tmp_path: Path, *args: str) -> tuple[set[str], str]:
    """The top-level modules a CLI command imported, and what it printed."""
    report = tmp_path / "modules.json"
    done = subprocess.run([sys.executable, "-c", _PROBE, str(report), *args],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(report.read_text(encoding="utf-8"))
    assert result["code"] == 0, done.stderr
    return set(result["modules"]), done.stdout


@pytest.fixture()
def polled(tmp_path: Path) -> Iterator[Path]:
    """A config of two sources and an up-to-date database that remembers one of them."""
    config = write_config_file(tmp_path / "aggregator.yaml",
                               ['database_url: "sqlite:///db.sqlite"', "output_dir: public"],
                               {"alpha": "http://127.0.0.1:9/a.xml",
                                "beta": "http://127.0.0.1:9/b.xml"})
    with Store.open(f"sqlite:///{tmp_path / 'db.sqlite'}") as store:
        _remember(store, "alpha", articles=2)
    yield config


def _remember(store: Store, source_id: str, *, articles: int) -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    state = SourceState(source_id=source_id, url=f"http://127.0.0.1:9/{source_id}.xml",
                        last_poll_at=now, last_success_at=now)
    store.commit_poll(SourceUpdate(state=state, result=None),
                      [make_article(f"k{i}", source_id=source_id) for i in range(articles)])


def test_status_of_an_up_to_date_file_imports_no_sqlalchemy(tmp_path: Path,
                                                             polled: Path) -> None:
    modules, printed = _imported(tmp_path, "--config", str(polled), "status")
    assert "alpha" in printed and "beta" in printed  # it did read the database
    assert modules.isdisjoint(HEAVY), sorted(modules.intersection(HEAVY))
    assert "sqlalchemy" not in modules  # store.quick read it through sqlite3
    assert "pydantic" in modules  # the probe sees what the command imported (the config)


def test_status_of_a_database_to_create_goes_through_the_store(tmp_path: Path) -> None:
    config = write_config_file(tmp_path / "new.yaml",
                               ['database_url: "sqlite:///new.sqlite"', "output_dir: public"],
                               {"alpha": "http://127.0.0.1:9/a.xml"})
    modules, printed = _imported(tmp_path, "--config", str(config), "status")
    assert "alpha" in printed and "never" in printed
    assert "sqlalchemy" in modules and (tmp_path / "new.sqlite").is_file()
    assert modules.isdisjoint(HEAVY), sorted(modules.intersection(HEAVY))


def test_poll_with_nothing_to_fetch_imports_no_feed_or_http_library(tmp_path: Path) -> None:
    config = tmp_path / "empty.yaml"
    config.write_text('database_url: "sqlite:///e.db"\noutput_dir: public\nsources: []\n',
                      encoding="utf-8")
    first, printed = _imported(tmp_path, "--config", str(config), "poll")
    assert "polled 0 source(s)" in printed
    assert (tmp_path / "e.db").is_file()  # the store was opened (and created)
    again, _ = _imported(tmp_path, "--config", str(config), "poll")  # up-to-date database
    for modules in (first, again):
        assert modules.isdisjoint(HEAVY), sorted(modules.intersection(HEAVY))
    assert "sqlalchemy" in first  # it created the database
    assert "sqlalchemy" not in again  # store.quick found it current


def test_a_warm_poll_imports_no_parser_feed_writer_or_migrations(
        tmp_path: Path, httpserver: HTTPServer) -> None:
    """Every source answers 304: the poll fetches (urllib3) but parses nothing, so
    its process imports none of what parsing, building or migrating needs (the parse
    workers, other processes, may import what they like), nor requests at all."""
    for name in ("a", "b"):
        httpserver.expect_request(f"/{name}.xml").respond_with_data(
            b"", status=304, headers={"ETag": '"v1"'})
    config = write_config_file(
        tmp_path / "warm.yaml",
        ['database_url: "sqlite:///w.db"', "output_dir: public", "allow_private_networks: true"],
        {name: httpserver.url_for(f"/{name}.xml") for name in ("a", "b")})
    modules, printed = _imported(tmp_path, "--config", str(config), "poll")
    assert printed.count("not-modified (nothing to parse)") == 2, printed
    assert "urllib3" in modules  # it did fetch
    parsing = ("feedgen", "lxml", "feedparser", "alembic", "nh3", "cssselect", "requests")
    assert modules.isdisjoint(parsing), sorted(modules.intersection(parsing))


def test_statuses_is_one_select(store: Store) -> None:
    _remember(store, "alpha", articles=3)
    _remember(store, "beta", articles=0)
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        found = store.statuses()
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 1, statements
    assert [(s.source_id, s.article_count) for s in found] == [("alpha", 3), ("beta", 0)]
    assert found[0].last_result == PollOutcome.NEW.value
