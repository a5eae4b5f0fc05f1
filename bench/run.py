"""Benchmark the aggregator against lemon24/reader and a naive poller on a loopback farm.

    .venv/bin/python bench/run.py [--sources 200] [--entries 50] [--runs 3]
                                  [--tree TREE] [--before OLD_TREE]
                                  [--out bench/results/<timestamp>.json]
                                  [--skip-reader] [--skip-naive] [--quick]
    .venv/bin/python bench/run.py --compare OLD.json NEW.json

Generates a seeded portal farm (see ``bench/farm.py``), serves it on loopback, and measures
whole processes as a user runs them (medians of ``--runs`` runs, each on a fresh database):
cold poll, warm re-poll (nothing changed), re-poll after 10% of the sources changed, the
CPU of the cold and warm polls' whole process trees, the builds, serving a category feed
(``wrk``, keep-alive, with and without ``If-None-Match``), peak RSS, and once the daemon's
memory with ``--daemon-sources`` tiny sources.  reader and the naive baseline poll the
same farm in the same invocation; every figure is printed with its ratio to both.

The code under test is ``--tree`` (default: the checkout this file is in), put first on
``PYTHONPATH`` of every ``aggregator`` process.  With ``--before OLD_TREE`` (another
checkout, e.g. a git worktree of an older commit) every aggregator figure is measured
with that code too, as the tool "before", phase by phase alternately with the current
tree on its own fresh directory and database, so the machine's noise hits both alike.
Ratios are "times better": baseline/aggregator for times and memory, aggregator/baseline
for throughput, so above 1 means the aggregator wins.  The table is printed as Markdown
and written as JSON.  Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from baselines import reader_python, run_naive, run_reader
from farm import DEFAULT_PORT, Farm, FarmServer
from measure import (
    ORPHAN_GRACE,
    Timed,
    TreeSampler,
    children_of,
    command_line,
    descendants,
    free_port,
    get,
    load,
    proc_status_kb,
    reap_orphans,
    timed,
    tree_memory,
    wait_for_http,
)

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
TOOLS = ("aggregator", "before", "reader", "naive")
TREE_TOOLS = ("aggregator", "before")  # the tools that are checkouts of this project
MB = 1024
SITE_URL = "http://feeds.bench.example/"


def aggregator_command() -> str:
    for candidate in (Path(sys.executable).with_name("aggregator"),
                      ROOT / ".venv" / "bin" / "aggregator"):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("aggregator")
    if not found:
        sys.exit("cannot find the `aggregator` command; run with the project's .venv/bin/python")
    return found


AGG = aggregator_command()


@dataclass(frozen=True)
class Tree:
    """A checkout of the project whose code an ``aggregator`` process runs.

    The console script imports ``aggregator`` from ``sys.path``, where ``PYTHONPATH``
    comes before the venv's editable-install finder: ``env`` puts ``path`` first, so the
    process (and its forkserver workers, which inherit the environment) run that code.
    Every aggregator process must run in a directory without an ``aggregator`` package
    (its work directory): Python 3.11 starts the forkserver with ``python -c``, which puts
    the working directory before ``PYTHONPATH``, so run from a checkout the parse workers
    would run that checkout's code whatever the main process runs.
    """

    tool: str  # "aggregator" or "before": its column in the table
    path: Path
    env: dict[str, str]

    def key(self, name: str) -> str:
        """``details`` key of this tree's ``name`` (the current tree's keys are unprefixed)."""
        return name if self.tool == "aggregator" else f"{self.tool}_{name}"


_PROBE = """import multiprocessing, aggregator
with multiprocessing.get_context("forkserver").Pool(1) as pool:
    print(aggregator.__file__)
    print(pool.apply(eval, ("__import__('aggregator').__file__",)))
"""


def make_tree(tool: str, path: Path) -> Tree:
    """``path`` as the code of ``tool``; exits unless both a process and its forkserver
    workers, started as the benchmark starts them, import ``aggregator`` from there."""
    path = path.resolve()
    if not (path / "aggregator" / "__init__.py").is_file():
        sys.exit(f"--{'tree' if tool == 'aggregator' else tool} {path}: no aggregator/ package")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(path), env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="aggregator-bench-probe-") as empty:
        probe = subprocess.run([agg_python(), "-c", _PROBE], capture_output=True, text=True,
                               env=env, cwd=empty, check=False, timeout=120)
    imported = [Path(line).resolve() for line in probe.stdout.split()]
    if probe.returncode != 0 or len(imported) != 2 or not all(
            p.is_relative_to(path) for p in imported):
        sys.exit(f"{tool}: with PYTHONPATH={path}, `import aggregator` in a process and its "
                 f"forkserver worker gave {[str(p) for p in imported]} "
                 f"{probe.stderr.strip()[-300:]}")
    return Tree(tool=tool, path=path, env=env)


def agg_python() -> str:
    """The interpreter of the ``aggregator`` console script (its ``#!`` line)."""
    try:
        with open(AGG, "rb") as script:
            first = script.readline().decode("utf-8", "replace")
    except OSError:
        return sys.executable
    command = first[2:].strip().split() if first.startswith("#!") else []
    return command[0] if command and Path(command[0]).exists() else sys.executable


def tree_info(tree: Tree) -> dict[str, Any]:
    """Path, HEAD commit and whether tracked files differ from it."""
    status = subprocess.run(["git", "-C", str(tree.path), "status", "--porcelain",
                             "--untracked-files=no"], capture_output=True, text=True,
                            check=False)
    return {"path": str(tree.path), "commit": current_commit(tree.path),
            "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}


# --------------------------------------------------------------------------- figures


# (aggregator, reader, naive medians, details) -> target met?  None: cannot tell.
Check = Callable[[float | None, float | None, float | None, dict[str, Any]], bool | None]


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str
    higher_is_better: bool = False
    target: str = ""
    check: Check | None = None


def _faster(times: float) -> Check:
    def check(agg: float | None, reader: float | None, _n: float | None,
              _d: dict[str, Any]) -> bool | None:
        return None if agg is None or reader is None else reader / agg >= times
    return check


def _at_least(value: float) -> Check:
    return lambda agg, _r, _n, _d: None if agg is None else agg >= value


def _at_most(value: float) -> Check:
    return lambda agg, _r, _n, _d: None if agg is None else agg <= value


def _below(value: float) -> Check:
    return lambda agg, _r, _n, _d: None if agg is None else agg < value


def _only_affected(_a: float | None, _r: float | None, _n: float | None,
                   details: dict[str, Any]) -> bool | None:
    checks = [run["changed_build"]["only_affected"] for run in details["runs"]
              if "changed_build" in run]
    return all(checks) if checks else None


FIGURES = (
    Figure("startup_s", "startup: a poll of no sources, empty DB", "s"),
    Figure("startup_current_s", "startup: a poll of no sources, up-to-date DB", "s",
           target="≤ 0.25 s", check=_at_most(0.25)),
    Figure("status_s", "`status` of the daemon's sources (median of 3)", "s",
           target="≤ 0.4 s (1,000 sources)", check=_at_most(0.4)),
    Figure("cold_poll_s", "cold poll, empty DB", "s", target="≥ 5× faster than reader",
           check=_faster(5)),
    Figure("cold_entries_per_s", "cold poll throughput", "entries/s", higher_is_better=True,
           target="≥ 5,000 entries/s", check=_at_least(5000)),
    Figure("cold_poll_cpu_s", "cold poll CPU, whole process tree", "s"),
    Figure("cold_poll_rss_mb", "cold poll peak RSS", "MB"),
    Figure("warm_poll_s", "warm re-poll, nothing changed", "s", target="≥ 2× faster than reader",
           check=_faster(2)),
    Figure("warm_poll_cpu_s", "warm re-poll CPU, whole process tree", "s"),
    Figure("warm_poll_rss_mb", "warm re-poll peak RSS", "MB"),
    Figure("changed_poll_s", "re-poll, 10% of sources changed", "s"),
    Figure("changed_poll_rss_mb", "re-poll 10% peak RSS", "MB"),
    Figure("build_s", "build all categories (first)", "s"),
    Figure("build_rss_mb", "build peak RSS", "MB"),
    Figure("unchanged_build_s", "build again, nothing changed", "s"),
    Figure("changed_build_s", "build after 10% changed", "s"),
    Figure("changed_build_categories", "categories rewritten after 10% changed", "categories",
           target="only the affected ones", check=_only_affected),
    Figure("serve_rps", "serve category feed, 200, keep-alive", "req/s", higher_is_better=True,
           target="≥ 2,500 req/s", check=_at_least(2500)),
    Figure("serve_gzip_rps", "serve category feed, 200, Accept-Encoding: gzip", "req/s",
           higher_is_better=True, target="≥ 2,500 req/s", check=_at_least(2500)),
    Figure("serve_304_rps", "serve category feed, If-None-Match → 304", "req/s",
           higher_is_better=True, target="≥ 2,500 req/s", check=_at_least(2500)),
    Figure("serve_rss_mb", "serve peak RSS (VmHWM)", "MB"),
    Figure("daemon_poll_all_s", "daemon: first poll of every source", "s"),
    Figure("daemon_tree_peak_mb", "daemon: peak RSS, main + parse workers", "MB",
           target="< 200 MB", check=_below(200)),
    Figure("daemon_tree_rss_mb", "daemon: RSS after polling, main + workers", "MB",
           target="< 200 MB", check=_below(200)),
    Figure("daemon_tree_pss_mb", "daemon: PSS after polling, main + workers", "MB",
           target="< 200 MB", check=_below(200)),
    Figure("daemon_main_hwm_mb", "daemon: main process VmHWM", "MB", target="< 200 MB",
           check=_below(200)),
    Figure("daemon_main_rss_mb", "daemon: main process VmRSS", "MB"),
    Figure("daemon_workers_rss_mb", "daemon: child processes VmRSS (sum)", "MB"),
)


@dataclass
class Results:
    values: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)

    def add(self, key: str, tool: str, value: float | None) -> None:
        if value is not None and not math.isnan(value):
            self.values.setdefault(key, {}).setdefault(tool, []).append(value)

    def problem(self, text: str) -> None:
        if text not in self.problems:
            self.problems.append(text)
            print(f"  ! {text}", file=sys.stderr)

    def median(self, key: str, tool: str) -> float | None:
        samples = self.values.get(key, {}).get(tool)
        return statistics.median(samples) if samples else None


# --------------------------------------------------------------------------- aggregator


def write_config(path: Path, *, workdir: Path,
                 sources: list[tuple[str, str, str, str]], extra: dict[str, Any]) -> None:
    """An aggregator config: SQLite and output in ``workdir``; sources (id, name, url, cat)."""
    q = json.dumps  # JSON scalars are valid YAML
    lines = [
        f"database_url: {q(f'sqlite:///{workdir}/aggregator.db')}",
        f"output_dir: {q(str(workdir / 'public'))}",
        # not the serving port: identical farms then build byte-identical feeds in every run
        f"site_url: {q(SITE_URL)}",
        "site_title: Bench",
        'image_proxy: "https://img-proxy.example/?"',
        "allow_private_networks: true",
        "workers: 8",
    ]
    lines += [f"{key}: {q(value)}" for key, value in extra.items()]
    lines.append("sources:" if sources else "sources: []")
    for source_id, name, url, category in sources:
        lines += [f"  - id: {source_id}", f"    name: {q(name, ensure_ascii=False)}",
                  f"    url: {q(url)}", f"    categories: [{q(category, ensure_ascii=False)}]",
                  "    interval: 1h"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


_POLL_LINE = re.compile(r"^(\S+)\s+(new|updated|unchanged|not-modified): (\d+) new, "
                        r"(\d+) updated, (\d+) unchanged")


@dataclass
class PollReport:
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0  # not-modified / unchanged without parsing
    errors: list[str] = field(default_factory=list)
    summary: str = ""


def parse_poll(stdout: str) -> PollReport:
    report = PollReport()
    for line in stdout.splitlines():
        found = _POLL_LINE.match(line)
        if found:
            report.new += int(found.group(3))
            report.updated += int(found.group(4))
            report.unchanged += int(found.group(5))
        elif "(nothing to parse)" in line:
            report.skipped += 1
        elif re.match(r"^\S+\s+error: ", line):
            report.errors.append(line.strip())
        elif line.startswith("polled "):
            report.summary = line.strip()
    return report


def aggregator(tree: Tree, config: Path, *args: str) -> Timed:
    """One ``aggregator`` command with ``tree``'s code, CPU counted over its process tree."""
    return timed([AGG, "--config", str(config), *args], env=tree.env, tree_cpu=True,
                 cwd=str(config.parent))


def check_process(results: Results, what: str, run: Timed) -> None:
    if run.returncode != 0:
        tail = " | ".join(run.stderr.strip().splitlines()[-3:]) or "no output"
        results.problem(f"{what}: exit code {run.returncode}: {tail}")
    for line in run.stderr.splitlines():
        text = line.strip()
        if not text or text.startswith("polling"):
            continue  # the progress bar
        if re.search(r"Traceback|Error|error|WARNING|CRITICAL|Exception", text):
            results.problem(f"{what}: stderr: {text[:300]}")


def snapshot(directory: Path) -> dict[str, tuple[int, int, int]]:
    """relative path -> (inode, mtime_ns, size); atomic replacement changes the inode."""
    files: dict[str, tuple[int, int, int]] = {}
    if directory.exists():
        for path in directory.rglob("*"):
            if path.is_file():
                st = path.stat()
                files[path.relative_to(directory).as_posix()] = (st.st_ino, st.st_mtime_ns,
                                                                  st.st_size)
    return files


def written_since(before: dict[str, tuple[int, int, int]],
                  after: dict[str, tuple[int, int, int]]) -> list[str]:
    return sorted(p for p, sig in after.items() if before.get(p) != sig)


def categories_of(paths: list[str]) -> set[str]:
    return {p.split("/")[1] for p in paths if p.startswith("categories/") and p.count("/") >= 2}


# --------------------------------------------------------------------------- one run


def one_run(number: int, args: argparse.Namespace, farm: Farm, server: FarmServer,
            reader_py: Path | None, results: Results, work_root: Path,
            trees: list[Tree]) -> None:
    """One run of every phase for every tool, each tool on its own fresh directory.

    Phase by phase, each tree (the current one and ``--before``) runs in turn, the order
    alternating between runs, so that neither gets a systematically quieter moment; the
    baselines follow.  The farm serves the same versions to all of them: it is reset at
    the start, and changed once, before any tool's "10% changed" poll.
    """
    farm.reset()
    server.take_stats()
    workdir = work_root / f"run{number}"
    workdir.mkdir()
    order = trees if number % 2 else trees[::-1]
    details: dict[str, Any] = {"run": number, "order": [t.tool for t in order], "traffic": {}}
    results.runs.append(details)
    expected_entries = args.sources * args.entries
    configs: dict[str, Path] = {}
    for tree in trees:
        tree_dir = workdir / tree.tool
        tree_dir.mkdir()
        configs[tree.tool] = tree_dir / "aggregator.yaml"
        write_config(configs[tree.tool], workdir=tree_dir, extra={}, sources=[
            (s.id, s.name, server.url(s.index), s.category) for s in farm.specs])
    urls_file = workdir / "urls.txt"
    urls_file.write_text("\n".join(server.url(s.index) for s in farm.specs) + "\n",
                         encoding="utf-8")

    def say(text: str) -> None:
        print(f"run {number}/{args.runs}: {text}", file=sys.stderr, flush=True)

    cpu = [time.process_time()]

    def traffic(phase: str) -> None:
        # the farm runs in this process: its CPU time shows it is not the bottleneck
        now = time.process_time()
        details["traffic"][phase] = {**server.take_stats(), "farm_cpu_s": round(now - cpu[0], 3)}
        cpu[0] = now

    def agg_poll(tree: Tree, phase: str, expect_new: int | None) -> PollReport:
        tool = tree.tool
        run = aggregator(tree, configs[tool], "poll")
        traffic(f"{tool} {phase}")
        check_process(results, f"{tool} poll ({phase})", run)
        report = parse_poll(run.stdout)
        for line in report.errors[:3]:
            results.problem(f"{tool} poll ({phase}): {line}")
        if expect_new is not None and report.new != expect_new:
            results.problem(f"{tool} poll ({phase}): {report.new} new entries, "
                            f"expected {expect_new}")
        cpu_problem(results, f"{tool} poll ({phase})", run)
        results.add(f"{phase}_poll_s", tool, run.wall)
        results.add(f"{phase}_poll_rss_mb", tool, run.peak_mb)
        if phase in ("cold", "warm"):
            results.add(f"{phase}_poll_cpu_s", tool, run.tree_cpu_s)
        details[f"{tool}_{phase}"] = {"wall": run.wall, "peak_kb": run.peak_kb,
                                      **cpu_details(run),
                                      "new": report.new, "updated": report.updated,
                                      "unchanged": report.unchanged,
                                      "skipped": report.skipped, "summary": report.summary}
        say(f"{tool} {phase} poll {run.wall:.2f} s, CPU {fmt_cpu(run)}, {report.new} new, "
            f"{report.skipped} skipped, peak {run.peak_mb or 0:.0f} MB ({report.summary})")
        if phase == "cold":
            results.add("cold_entries_per_s", tool, report.new / run.wall)
        return report

    def agg_build(tree: Tree, phase: str) -> list[str]:
        output = configs[tree.tool].parent / "public"
        before = snapshot(output)
        run = aggregator(tree, configs[tree.tool], "build")
        check_process(results, f"{tree.tool} build ({phase})", run)
        written = written_since(before, snapshot(output))
        say(f"{tree.tool} build ({phase}) {run.wall:.2f} s, {len(written)} file(s) written")
        details[tree.key(f"build_{phase}")] = {"wall": run.wall, "peak_kb": run.peak_kb,
                                               "written": written, "stdout": run.stdout.strip()}
        return written

    def baseline(tool: str, phase: str, expect: int | None) -> None:
        db = workdir / f"{tool}.sqlite"
        if tool == "reader":
            assert reader_py is not None
            result = run_reader(reader_py, db, urls_file, add=phase == "cold")
        else:
            result = run_naive(db, urls_file)
        traffic(f"{tool} {phase}")
        if result.note:
            results.problem(f"{tool} ({phase}): {result.note}")
        if expect is not None and result.entries != expect:
            results.problem(f"{tool} ({phase}): {result.entries} entries stored, "
                            f"expected {expect}")
        cpu_problem(results, f"{tool} ({phase})", result.timed)
        results.add(f"{phase}_poll_s", tool, result.timed.wall)
        results.add(f"{phase}_poll_rss_mb", tool, result.timed.peak_mb)
        if phase in ("cold", "warm"):
            results.add(f"{phase}_poll_cpu_s", tool, result.timed.tree_cpu_s)
        if phase == "cold" and result.entries:
            results.add("cold_entries_per_s", tool, result.entries / result.timed.wall)
        details[f"{tool}_{phase}"] = {"wall": result.timed.wall, "peak_kb": result.timed.peak_kb,
                                      **cpu_details(result.timed), "entries": result.entries}
        say(f"{tool} {phase} poll {result.timed.wall:.2f} s, CPU {fmt_cpu(result.timed)}, "
            f"{result.entries} entries, peak {result.timed.peak_mb or 0:.0f} MB")

    baselines = [t for t, skip in (("reader", args.skip_reader or reader_py is None),
                                   ("naive", args.skip_naive)) if not skip]

    # fixed costs: interpreter, imports, schema creation, worker pools; no feeds at all
    empty = workdir / "empty"
    empty.mkdir()
    (empty / "urls.txt").write_text("", encoding="utf-8")
    for tree in order:
        empty_dir = empty / tree.tool
        empty_dir.mkdir()
        write_config(empty_dir / "aggregator.yaml", workdir=empty_dir, extra={}, sources=[])
        start = aggregator(tree, empty_dir / "aggregator.yaml", "poll")
        check_process(results, f"{tree.tool} poll (no sources)", start)
        results.add("startup_s", tree.tool, start.wall)
        # again, now that the database exists and is current: what cron pays every time
        again = aggregator(tree, empty_dir / "aggregator.yaml", "poll")
        check_process(results, f"{tree.tool} poll (no sources, up-to-date DB)", again)
        results.add("startup_current_s", tree.tool, again.wall)
    for tool in baselines:
        db = empty / f"{tool}.sqlite"
        nothing = (run_reader(reader_py, db, empty / "urls.txt", add=True)  # type: ignore[arg-type]
                   if tool == "reader" else run_naive(db, empty / "urls.txt"))
        if nothing.note:
            results.problem(f"{tool} (no sources): {nothing.note}")
        results.add("startup_s", tool, nothing.timed.wall)
    say("startup (no sources): " + ", ".join(
        f"{tool} {results.values['startup_s'][tool][-1]:.2f} s"
        for tool in results.values.get("startup_s", {}))
        + "; again (up-to-date DB): " + ", ".join(
        f"{tool} {results.values['startup_current_s'][tool][-1]:.2f} s"
        for tool in results.values.get("startup_current_s", {})))
    server.take_stats()
    cpu[0] = time.process_time()

    # cold, then a build of every category, then the unchanged re-poll and rebuild
    for tree in order:
        agg_poll(tree, "cold", expected_entries)
    for tree in order:
        first_build = agg_build(tree, "first")
        build = details[tree.key("build_first")]
        results.add("build_s", tree.tool, build["wall"])
        results.add("build_rss_mb", tree.tool, (build["peak_kb"] or 0) / MB)
        if not categories_of(first_build):
            results.problem(f"{tree.tool} build (first): no category feed was written")
    for tree in order:
        agg_poll(tree, "warm", 0)
    for tree in order:
        unchanged = agg_build(tree, "unchanged")
        results.add("unchanged_build_s", tree.tool, details[tree.key("build_unchanged")]["wall"])
        if categories_of(unchanged):
            results.problem(f"{tree.tool} build with nothing changed rewrote "
                            f"{sorted(categories_of(unchanged))}")
    for tool in baselines:
        baseline(tool, "cold", expected_entries)
        baseline(tool, "warm", expected_entries)

    # 10% of the sources change; rendered now, so that no tool's poll pays for it
    changed = farm.change(0.1)
    for index in changed:
        farm.render(index)
    affected = farm.affected_categories(changed)
    new_entries = len(changed) * farm.new_per_change
    for tree in order:
        agg_poll(tree, "changed", new_entries)
    for tree in order:
        written = agg_build(tree, "changed")
        rewritten = categories_of(written)
        results.add("changed_build_s", tree.tool, details[tree.key("build_changed")]["wall"])
        results.add("changed_build_categories", tree.tool, len(rewritten))
        details[tree.key("changed_build")] = {
            "changed_sources": [farm.specs[i].id for i in changed],
            "affected": sorted(affected), "rewritten": sorted(rewritten),
            "other_files": [p for p in written if not p.startswith("categories/")],
            "only_affected": rewritten <= affected,
        }
        if rewritten != affected:
            results.problem(f"{tree.tool} build after 10% changed rewrote {sorted(rewritten)}, "
                            f"affected {sorted(affected)}")
    for tool in baselines:
        baseline(tool, "changed", expected_entries + new_entries)

    if not args.skip_serve:
        category = sorted(affected)[0] if affected else farm.specs[0].category
        for tree in order:
            serve = measure_serve(tree, configs[tree.tool], free_port(), category,
                                  args.serve_seconds, results)
            details[tree.key("serve")] = serve
            results.add("serve_rps", tree.tool, serve.get("rps"))
            results.add("serve_gzip_rps", tree.tool, serve.get("rps_gzip"))
            results.add("serve_304_rps", tree.tool, serve.get("rps_304"))
            results.add("serve_rss_mb", tree.tool, (serve.get("hwm_kb") or 0) / MB or None)
            say(f"{tree.tool} serve {serve.get('rps', 0):.0f} req/s, gzip "
                f"{serve.get('rps_gzip', 0):.0f} req/s, with If-None-Match "
                f"{serve.get('rps_304', 0):.0f} req/s ({serve.get('tool')})")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)


def cpu_details(run: Timed) -> dict[str, Any]:
    """The CPU figures of one process for the JSON (see ``measure.Timed``)."""
    return {"cpu_s": run.cpu_s, "tree_cpu_s": run.tree_cpu_s, "orphans": run.orphans,
            "stragglers": run.stragglers}


def cpu_problem(results: Results, what: str, run: Timed) -> None:
    if run.tree_cpu_s is None:
        results.problem(f"{what}: no process-tree CPU (prctl(PR_SET_CHILD_SUBREAPER) refused)")
    elif run.stragglers:
        results.problem(f"{what}: {run.stragglers} descendant(s) still running "
                        f"{ORPHAN_GRACE:.0f} s after the end; their CPU is not counted")


def fmt_cpu(run: Timed) -> str:
    tree = "—" if run.tree_cpu_s is None else f"{run.tree_cpu_s:.2f} s"
    main = "—" if run.cpu_s is None else f"{run.cpu_s:.2f} s"
    return f"{tree} (main process {main})"


def measure_serve(tree: Tree, config: Path, port: int, category: str, seconds: float,
                  results: Results) -> dict[str, Any]:
    log_path = config.with_name("serve.log")
    ours = set(children_of(os.getpid()))
    with log_path.open("w", encoding="utf-8") as log:
        proc = subprocess.Popen([AGG, "--config", str(config), "serve", "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, env=tree.env,
                                cwd=config.parent)
    url = f"http://127.0.0.1:{port}/categories/{quote(category)}/rss.xml"
    out: dict[str, Any] = {"url": url}
    try:
        wait_for_http(url)
        status, headers, body = get(url)
        etag = {k.lower(): v for k, v in headers.items()}.get("etag")
        out.update(status=status, bytes=len(body), etag=etag)
        if status != 200 or not etag:
            results.problem(f"{tree.tool} serve: GET {url} -> {status}, ETag {etag!r}")
        full = load(url, seconds=seconds)
        out.update(rps=full.requests_per_s, tool=full.tool, errors=full.errors)
        gzip_headers = {"Accept-Encoding": "gzip"}
        _status, zipped_headers, zipped = get(url, gzip_headers)
        encoding = {k.lower(): v for k, v in zipped_headers.items()}.get("content-encoding")
        out.update(gzip_bytes=len(zipped), gzip_encoding=encoding)
        if encoding != "gzip":
            results.problem(f"{tree.tool} serve: Accept-Encoding: gzip answered "
                            f"Content-Encoding {encoding}")
        zipped_load = load(url, seconds=seconds, headers=gzip_headers)
        out.update(rps_gzip=zipped_load.requests_per_s, errors_gzip=zipped_load.errors)
        if etag:
            status_304 = get(url, {"If-None-Match": etag})[0]
            if status_304 != 304:
                results.problem(f"{tree.tool} serve: If-None-Match answered {status_304}, "
                                f"not 304")
            cond = load(url, seconds=seconds, headers={"If-None-Match": etag})
            out.update(rps_304=cond.requests_per_s, errors_304=cond.errors, status_304=status_304)
        if out.get("errors") or out.get("errors_gzip") or out.get("errors_304"):
            results.problem(f"{tree.tool} serve: load generator saw errors: "
                            f"{out.get('errors')} (200), "
                            f"{out.get('errors_gzip')} (gzip), {out.get('errors_304')} (304)")
        out["hwm_kb"] = proc_status_kb(proc.pid, "VmHWM")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reap_orphans(ours)  # this process is a subreaper (see measure.timed)
    text = log_path.read_text(encoding="utf-8", errors="replace")
    for line in text.splitlines():
        if re.search(r"Traceback|ERROR|Exception", line):
            results.problem(f"{tree.tool} serve log: {line.strip()[:300]}")
    return out


# --------------------------------------------------------------------------- daemon


def measure_daemon(tree: Tree, count: int, server: FarmServer, work_root: Path,
                   results: Results, timeout: float) -> dict[str, Any]:
    workdir = work_root / tree.key("daemon")
    workdir.mkdir()
    tool = tree.tool
    config = workdir / "aggregator.yaml"
    write_config(config, workdir=workdir,
                 extra={"start_jitter": "0", "build_debounce": "2s"},
                 sources=[(f"t{i:04d}", f"小站{i:04d}", server.tiny_url(i), "tiny")
                          for i in range(count)])
    server.take_stats()
    print(f"{tool} daemon: {count} sources ...", file=sys.stderr, flush=True)
    ours = set(children_of(os.getpid()))
    started = time.monotonic()
    proc = subprocess.Popen([AGG, "--config", str(config), "run", "--port", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            encoding="utf-8", errors="replace", env=tree.env,
                            cwd=workdir)
    state: dict[str, Any] = {"results": 0, "errors": 0, "built_at": None, "url": None,
                             "last_result_at": None, "lines": []}
    lock = threading.Lock()

    def follow() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            with lock:
                state["lines"].append(line.rstrip())
                if " result=" in line:
                    state["results"] += 1
                    state["last_result_at"] = time.monotonic()
                    if "result=error" in line:
                        state["errors"] += 1
                elif re.search(r"\bbuilt\b", line):
                    state["built_at"] = time.monotonic()
                found = re.search(r"listening on (\S+?)\)?$", line.strip())
                if found and state["url"] is None:
                    state["url"] = found.group(1)

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    sampler = TreeSampler(proc.pid).start()
    out: dict[str, Any] = {"sources": count}
    try:
        deadline = started + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            with lock:
                if state["results"] >= count:
                    break
            time.sleep(0.2)
        with lock:
            polled = state["results"]
            last = state["last_result_at"]
        out["poll_all_s"] = (last - started) if last and polled >= count else None
        if polled < count:
            results.problem(f"{tool} daemon: only {polled}/{count} polls logged within "
                            f"{timeout:.0f} s"
                            + (f" (exited {proc.returncode})" if proc.poll() is not None else ""))
        # let the debounced build run
        wait_until = time.monotonic() + 30
        while time.monotonic() < wait_until:
            with lock:
                if state["built_at"] and last and state["built_at"] >= last:
                    break
            time.sleep(0.2)
        time.sleep(1)
        memory = tree_memory(proc.pid)
        kids = descendants(proc.pid)
        out.update(
            main_rss_kb=memory.main_rss_kb, main_hwm_kb=memory.main_hwm_kb,
            children_rss_kb=memory.children_rss_kb, children_hwm_kb=memory.children_hwm_kb,
            tree_rss_kb=memory.total_rss_kb, tree_pss_kb=memory.tree_pss_kb,
            tree_peak_kb=max(sampler.peak_kb, memory.total_rss_kb),
            children=[{"pid": k, "rss_kb": proc_status_kb(k, "VmRSS"),
                       "hwm_kb": proc_status_kb(k, "VmHWM"), "cmd": command_line(k)[:120]}
                      for k in kids],
            poll_errors=state["errors"], traffic=server.take_stats())
        if state["url"]:
            status, _headers, body = get(state["url"].rstrip("/") + "/healthz")
            health = json.loads(body)
            succeeded = sum(1 for s in health.get("sources", []) if s.get("last_success_at"))
            out["healthz"] = {"status": health.get("status"), "http": status,
                              "sources_with_success": succeeded}
            if succeeded < count:
                results.problem(f"{tool} daemon: /healthz shows {succeeded}/{count} sources with a "
                                f"success")
        if state["errors"]:
            results.problem(f"{tool} daemon: {state['errors']} poll(s) logged result=error")
    finally:
        sampler.stop()
        proc.send_signal(signal.SIGTERM)
        try:
            out["exit_code"] = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out["exit_code"] = proc.wait()
            results.problem(f"{tool} daemon: did not exit within 60 s of SIGTERM (killed)")
        follower.join(timeout=5)
        reap_orphans(ours)  # this process is a subreaper (see measure.timed)
    if out["exit_code"] != 0:
        results.problem(f"{tool} daemon: exit code {out['exit_code']} after SIGTERM")
    # ``status`` of what the daemon polled (its config applied, every source remembered)
    statuses = [aggregator(tree, config, "status") for _ in range(3)]
    for run in statuses:
        check_process(results, f"{tool} status ({count} sources)", run)
    out["status_s"] = sorted(run.wall for run in statuses)[1]
    results.add("status_s", tool, out["status_s"])
    for line in state["lines"]:
        if re.search(r"Traceback|ERROR|CRITICAL|Exception", line):
            results.problem(f"{tool} daemon log: {line[:300]}")
    out["log_tail"] = state["lines"][-5:]
    for key, value in (("daemon_poll_all_s", out.get("poll_all_s")),
                       ("daemon_tree_peak_mb", out.get("tree_peak_kb", 0) / MB),
                       ("daemon_tree_rss_mb", out.get("tree_rss_kb", 0) / MB),
                       ("daemon_tree_pss_mb", out.get("tree_pss_kb", 0) / MB),
                       ("daemon_main_hwm_mb", out.get("main_hwm_kb", 0) / MB),
                       ("daemon_main_rss_mb", out.get("main_rss_kb", 0) / MB),
                       ("daemon_workers_rss_mb", out.get("children_rss_kb", 0) / MB)):
        results.add(key, tool, value)
    print(f"{tool} daemon: all polled in {out.get('poll_all_s') or float('nan'):.1f} s; tree RSS "
          f"{out.get('tree_rss_kb', 0) / MB:.0f} MB (peak {out.get('tree_peak_kb', 0) / MB:.0f} "
          f"MB), main {out.get('main_rss_kb', 0) / MB:.0f} MB, {len(out.get('children', []))} "
          f"child process(es) {out.get('children_rss_kb', 0) / MB:.0f} MB", file=sys.stderr)
    return out


# --------------------------------------------------------------------------- output


def ratio(figure: Figure, agg: float | None, other: float | None) -> float | None:
    """"Times better" than ``other``; None for counts (categories), where it means nothing."""
    if agg is None or other is None or agg == 0 or other == 0 or figure.unit == "categories":
        return None
    return agg / other if figure.higher_is_better else other / agg


def figure_rows(results: Results, details: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for figure in FIGURES:
        if figure.key not in results.values:
            continue
        medians = {tool: results.median(figure.key, tool) for tool in TOOLS}
        met = figure.check(medians["aggregator"], medians["reader"], medians["naive"],
                           details) if figure.check else None
        rows.append({
            "key": figure.key, "label": figure.label, "unit": figure.unit,
            "higher_is_better": figure.higher_is_better,
            **medians,
            "runs": results.values[figure.key],
            "vs_before": ratio(figure, medians["aggregator"], medians["before"]),
            "vs_reader": ratio(figure, medians["aggregator"], medians["reader"]),
            "vs_naive": ratio(figure, medians["aggregator"], medians["naive"]),
            "target": figure.target or None, "met": met,
        })
    return rows


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "MB":
        return f"{value:.0f} MB"
    if unit == "categories":
        return f"{value:.0f}"
    return f"{value:,.0f} {unit}"


def table(rows: list[dict[str, Any]], *, with_before: bool) -> str:
    """The Markdown table; the "before" and "vs before" columns only ``with_before``."""
    tools = [t for t in TOOLS if with_before or t != "before"]
    versus = [f"vs_{t}" for t in tools[1:]]
    header = ["figure", *tools, *(k.replace("_", " ") for k in versus), "target", "met?"]
    body = []
    for row in rows:
        body.append([
            row["label"],
            *(fmt(row[tool], row["unit"]) for tool in tools),
            *(f"{row[k]:.2f}×" if row[k] is not None else "—" for k in versus),
            row["target"] or "",
            {True: "yes", False: "**NO**", None: ""}[row["met"]] if row["target"] else "",
        ])
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
              for r in body]
    return "\n".join(lines)


def current_commit(tree: Path = ROOT) -> str | None:
    """HEAD's commit of the checkout ``tree``: ``git rev-parse``, else read from ``.git``'s
    files (a plain clone's; a worktree's ``.git`` is a file, which needs git)."""
    try:
        found = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"],
                               capture_output=True, text=True, check=False)
        if found.returncode == 0 and found.stdout.strip():
            return found.stdout.strip()
    except OSError:
        pass
    git = tree / ".git"
    try:
        head = (git / "HEAD").read_text(encoding="utf-8").strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        if (git / ref).exists():
            return (git / ref).read_text(encoding="utf-8").strip()
        for line in (git / "packed-refs").read_text(encoding="utf-8").splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        pass
    return None


def compare(old_path: Path, new_path: Path) -> None:
    old = {r["key"]: r for r in json.loads(old_path.read_text(encoding="utf-8"))["figures"]}
    new = json.loads(new_path.read_text(encoding="utf-8"))["figures"]
    print(f"aggregator medians: {old_path} → {new_path} (change > 1× = better)")
    for row in new:
        before = old.get(row["key"], {}).get("aggregator")
        after = row["aggregator"]
        if before and after:
            change = after / before if row["higher_is_better"] else before / after
            text = f"{change:.2f}×"
        else:
            text = "—"
        print(f"  {row['label']:<45} {fmt(before, row['unit']):>16} → "
              f"{fmt(after, row['unit']):>16}  {text}")


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=200)
    parser.add_argument("--entries", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--farm-port", type=int, default=DEFAULT_PORT,
                        help="port of the farm on 127.0.0.1-10 (0: any; busy: any)")
    parser.add_argument("--out", type=Path, help="JSON file (default bench/results/<time>.json)")
    parser.add_argument("--tree", type=Path, default=ROOT,
                        help="checkout whose code is measured as 'aggregator' (default: this one)")
    parser.add_argument("--before", type=Path, metavar="TREE",
                        help="another checkout (e.g. a worktree of an older commit), measured "
                             "in the same run as the tool 'before'")
    parser.add_argument("--skip-reader", action="store_true")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--skip-serve", action="store_true")
    parser.add_argument("--skip-daemon", action="store_true")
    parser.add_argument("--daemon-sources", type=int, default=1000)
    parser.add_argument("--daemon-timeout", type=float, default=600)
    parser.add_argument("--serve-seconds", type=float, default=5)
    parser.add_argument("--quick", action="store_true",
                        help="smoke check: 20 × 20, 1 run, 100 daemon sources, 2 s of load")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("OLD", "NEW"),
                        help="compare two JSON results and exit")
    args = parser.parse_args()
    if args.compare:
        compare(*args.compare)
        return
    if args.quick:
        args.sources, args.entries, args.runs = 20, 20, 1
        args.daemon_sources, args.serve_seconds = 100, 2
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_path: Path = args.out or BENCH / "results" / f"{stamp}.json"
    trees = [make_tree("aggregator", args.tree)]
    if args.before:
        trees.insert(0, make_tree("before", args.before))
    if len({t.path for t in trees}) < len(trees):
        print("warning: --before is the same checkout as --tree", file=sys.stderr)
    for tree in trees:
        print(f"{tree.tool}: {tree.path} ({(current_commit(tree.path) or '?')[:12]})",
              file=sys.stderr)

    reader_py, reader_version = (None, "skipped") if args.skip_reader else reader_python()
    if not args.skip_reader and reader_py is None:
        print(f"reader unavailable ({reader_version}); continuing without it", file=sys.stderr)
    results = Results()
    if not args.skip_reader and reader_py is None:
        results.problem(f"reader unavailable: {reader_version}")
    started = time.monotonic()
    farm = Farm(args.sources, args.entries, seed=args.seed)
    farm_bytes = farm.total_bytes()
    print(f"farm: {args.sources} sources × {args.entries} entries, {farm_bytes / 1e6:.1f} MB, "
          f"{farm.hosts} loopback hosts (generated in {time.monotonic() - started:.1f} s)",
          file=sys.stderr)
    work_root = Path(tempfile.mkdtemp(prefix="aggregator-bench-"))
    details: dict[str, Any] = {"runs": results.runs}
    with FarmServer(farm, port=args.farm_port) as server:
        farm_port = server.base_url(0).rsplit(":", 1)[1] if server.fixed_port else "varies"
        for number in range(1, args.runs + 1):
            one_run(number, args, farm, server, reader_py, results, work_root, trees)
        if not args.skip_daemon:
            for index in range(args.daemon_sources):
                farm.render_tiny(index)  # rendered now, not during the first daemon's polls
            for tree in trees:
                details[tree.key("daemon")] = measure_daemon(
                    tree, args.daemon_sources, server, work_root, results, args.daemon_timeout)
    if args.keep:
        print(f"work directory kept: {work_root}", file=sys.stderr)
    else:
        shutil.rmtree(work_root, ignore_errors=True)

    rows = figure_rows(results, details)
    changed = farm.changed_sources(0.1)
    document = {
        "schema": 1,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": current_commit(trees[-1].path),  # the "aggregator" column's
        "trees": {tree.tool: tree_info(tree) for tree in trees},
        "duration_s": round(time.monotonic() - started, 1),
        "params": {"sources": args.sources, "entries": args.entries, "runs": args.runs,
                   "seed": args.seed, "daemon_sources": args.daemon_sources,
                   "serve_seconds": args.serve_seconds, "workers": 8,
                   "quick": args.quick, "tree": str(trees[-1].path),
                   "before": str(trees[0].path) if args.before else None},
        "environment": {
            "python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "reader": reader_version,
            "load_generator": shutil.which("wrk") or "python fallback",
        },
        "farm": {"bytes": farm_bytes, "hosts": farm.hosts, "port": farm_port,
                 "changed_sources": [farm.specs[i].id for i in changed],
                 "affected_categories": sorted(farm.affected_categories(changed)),
                 "new_entries_per_changed_source": farm.new_per_change},
        "figures": rows,
        "problems": results.problems,
        "details": details,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(document, ensure_ascii=False, indent=2) + "\n",
                        encoding="utf-8")

    print()
    print(f"aggregator benchmark: {args.sources} sources × {args.entries} entries "
          f"({farm_bytes / 1e6:.1f} MB), medians of {args.runs} run(s); daemon: "
          f"{args.daemon_sources} tiny sources, 1 run; reader {reader_version}; "
          f"{os.cpu_count()} CPUs")
    for tree in trees:
        info = document["trees"][tree.tool]
        print(f"{tree.tool}: {info['path']} at {(info['commit'] or '?')[:12]}"
              + (" (uncommitted changes)" if info["dirty"] else ""))
    print("ratios: times better than the baseline (> 1 = aggregator better)")
    print()
    print(table(rows, with_before=bool(args.before)))
    if results.problems:
        print()
        print("problems seen:")
        for text in results.problems:
            print(f"- {text}")
    print()
    print(f"JSON: {out_path}  ({document['duration_s']:.0f} s)")


if __name__ == "__main__":
    main()
