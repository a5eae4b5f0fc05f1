"""The tree shows the roles, and imports flow one way.

records ← intake (ingest) / storage (store) / publishing (publish) ← service ← cli, with
``rules``, ``errors``, ``regexes`` and ``httpsemantics`` at the bottom; and every outside
library has one home.  Read from the source with ``ast`` (imports inside functions
included), so a shortcut taken anywhere fails here.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "aggregator"
BOTTOM = {"aggregator.records", "aggregator.rules", "aggregator.stories", "aggregator.errors",
          "aggregator.regexes", "aggregator.imageproxy"}

# What each part may import from the project (besides itself and BOTTOM).
ALLOWED = {
    "aggregator.rules": set(),
    "aggregator.errors": set(),
    "aggregator.regexes": set(),
    "aggregator.httpsemantics": set(),
    "aggregator.stories": set(),
    "aggregator.imageproxy": set(),
    "aggregator.records": {"aggregator.rules", "aggregator.stories"},
    "aggregator.config": set(),
    "aggregator.ingest": set(),
    "aggregator.store": set(),
    "aggregator.publish": set(),
    "aggregator.demo": {"aggregator.httpsemantics"},
    "aggregator.service": {"aggregator.config", "aggregator.ingest", "aggregator.store",
                           "aggregator.publish", "aggregator.httpsemantics"},
    "aggregator.configfile": {"aggregator.config"},
    "aggregator.cli": {"aggregator.config", "aggregator.ingest", "aggregator.store",
                       "aggregator.publish", "aggregator.service", "aggregator.demo",
                       "aggregator.cli_sources"},
    "aggregator.cli_sources": {"aggregator.cli", "aggregator.config", "aggregator.configfile",
                               "aggregator.ingest", "aggregator.store", "aggregator.publish",
                               "aggregator.service"},
    "aggregator.__main__": {"aggregator.cli"},
    "aggregator": set(),
}

# Outside libraries and the one part of the tree that may import each.
HOMES = {
    "urllib3": ("aggregator.ingest.fetch",),
    "certifi": ("aggregator.ingest.fetch.session",),
    "idna": ("aggregator.ingest.fetch.urls",),
    "feedparser": ("aggregator.ingest.parse",),
    "nh3": ("aggregator.ingest.normalize",),
    "regex": ("aggregator.regexes",),
    "sqlalchemy": ("aggregator.store",),
    "alembic": ("aggregator.store",),
    "feedgen": ("aggregator.publish.feeds", "aggregator.publish.feedlinks"),
    "lxml": ("aggregator.publish.opml", "aggregator.ingest.scrape", "aggregator.ingest.fulltext",
             "aggregator.ingest.discover", "aggregator.ingest.subscriptions",
             "aggregator.ingest.fastparse", "aggregator.ingest.fastparse_entries"),
    "cssselect": ("aggregator.ingest.scrape",),
    "readability": ("aggregator.ingest.fulltext",),
    "ruamel": ("aggregator.configfile",),
    "apscheduler": ("aggregator.service.scheduler",),
    "waitress": ("aggregator.service.http.server",),
    "prometheus_client": ("aggregator.service.metrics",),
    "watchfiles": ("aggregator.service.process",),
    "pydantic": ("aggregator.config",),
    "yaml": ("aggregator.config",),
    "click": ("aggregator.cli", "aggregator.cli_sources"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def imports() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        if "migrations" in path.parts:
            continue  # Alembic's own scripts, run by Alembic inside the store
        name = module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        targets = found.setdefault(name, set())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets.add(node.module)
                targets.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def part_of(module: str) -> str:
    """The part of the tree a module belongs to: its entry in ALLOWED."""
    candidates = [p for p in ALLOWED if module == p or module.startswith(p + ".")]
    return max(candidates, key=len)


def is_module(name: str) -> bool:
    return name in imports()


def test_every_module_belongs_to_a_known_part() -> None:
    assert {part_of(m) for m in imports()} <= set(ALLOWED)
    assert {"aggregator.ingest.poll", "aggregator.store", "aggregator.publish.feeds",
            "aggregator.service.scheduler"} <= set(imports())


@pytest.mark.parametrize("module", sorted(imports()))
def test_imports_flow_one_way(module: str) -> None:
    part = part_of(module)
    wrong = set()
    for target in imports()[module]:
        if not target.startswith("aggregator.") or not is_module(target):
            continue  # an outside library, or a name imported from a module
        target_part = part_of(target)
        if target_part == part or target in BOTTOM or target_part in ALLOWED[part]:
            continue
        wrong.add(target)
    assert not wrong, f"{module} ({part}) must not import {sorted(wrong)}"


@pytest.mark.parametrize("library", sorted(HOMES))
def test_each_outside_library_has_one_home(library: str) -> None:
    users = {m for m, targets in imports().items()
             if any(t == library or t.startswith(library + ".") for t in targets)}
    home = HOMES[library]
    assert users, f"nobody imports {library}: drop it from HOMES"
    strays = {m for m in users if not any(m == h or m.startswith(h + ".") for h in home)}
    assert not strays, f"{library} is imported outside {home}: {sorted(strays)}"


def test_requests_is_only_a_test_dependency() -> None:
    # The fetch speaks urllib3 directly (requests' Session layer was half of a 304's CPU).
    users = {m for m, targets in imports().items()
             if any(t == "requests" or t.startswith("requests.") for t in targets)}
    assert not users, f"requests is imported by {sorted(users)}"


def test_every_subpackage_says_what_it_owns_and_must_not_do() -> None:
    for package in ("ingest", "ingest/fetch", "store", "publish", "service", "service/http"):
        doc = ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text()))
        assert doc and "must not" in doc.lower() and "own" in doc.lower(), package
