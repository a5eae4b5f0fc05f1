"""The two baselines the aggregator is compared with, each run as its own process.

- lemon24/reader in a venv of its own (see ``reader_venv``; created on first use:
  ``pip install reader sgmllib3k``), driven by ``bench/reader_run.py``;
- a naive poller (``bench/naive_run.py``) in the aggregator's own venv.

Both are timed with their whole process tree's CPU (``measure.timed(tree_cpu=True)``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from measure import Timed, timed

BENCH = Path(__file__).resolve().parent
READER_VENV = BENCH / ".venv-reader"
READER_VENV_ENV = "BENCH_READER_VENV"  # an existing venv with reader, used as it is
READER_PACKAGES = ("reader", "sgmllib3k")


@dataclass
class BaselineRun:
    timed: Timed
    entries: int | None
    failed: int | None
    note: str | None


def main_checkout() -> Path | None:
    """The main working tree of this repository when this file is in a linked worktree
    (``git worktree add``); None otherwise or without git."""
    try:
        found = subprocess.run(["git", "-C", str(BENCH), "rev-parse", "--path-format=absolute",
                                "--git-common-dir"], capture_output=True, text=True, check=False)
    except OSError:
        return None
    common = Path(found.stdout.strip()) if found.returncode == 0 else None
    if common is None or common.name != ".git":
        return None
    main = common.parent
    return None if main.resolve() == BENCH.parent.resolve() else main


def reader_venv() -> Path:
    """Which venv runs reader: ``$BENCH_READER_VENV`` when set; else this checkout's
    ``bench/.venv-reader`` when it exists; else the main checkout's when this is a linked
    worktree that has none (so worktrees share one venv instead of each creating its own);
    else this checkout's, to be created."""
    if os.environ.get(READER_VENV_ENV):
        return Path(os.environ[READER_VENV_ENV])
    if (READER_VENV / "bin" / "python").exists():
        return READER_VENV
    main = main_checkout()
    if main is not None and (main / "bench" / ".venv-reader" / "bin" / "python").exists():
        return main / "bench" / ".venv-reader"
    return READER_VENV


def reader_python(install: bool = True) -> tuple[Path | None, str]:
    """The reader venv's interpreter (``reader_venv``; created when missing, unless it was
    named by ``$BENCH_READER_VENV``) and reader's version."""
    venv = reader_venv()
    python = venv / "bin" / "python"
    if not python.exists() and install and venv == READER_VENV:
        print(f"creating {venv} (pip install {' '.join(READER_PACKAGES)}) ...",
              file=sys.stderr)
        made = subprocess.run([sys.executable, "-m", "venv", str(venv)],
                              capture_output=True, text=True, check=False)
        if made.returncode == 0:
            subprocess.run([str(python), "-m", "pip", "install", "-q", *READER_PACKAGES],
                           check=False)
    if not python.exists():
        return None, f"reader venv missing ({venv})"
    probe = subprocess.run(
        [str(python), "-c", "import reader, sgmllib; print(reader.__version__)"],
        capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return None, f"reader not importable: {probe.stderr.strip().splitlines()[-1:]}"
    return python, probe.stdout.strip()


def run_reader(python: Path, db: Path, urls_file: Path, *, add: bool,
               workers: int = 8) -> BaselineRun:
    command = [str(python), str(BENCH / "reader_run.py"), str(db), str(urls_file),
               "--workers", str(workers)]
    return _result(timed([*command, "--add"] if add else command, tree_cpu=True))


def run_naive(db: Path, urls_file: Path) -> BaselineRun:
    return _result(timed([sys.executable, str(BENCH / "naive_run.py"), str(db), str(urls_file)],
                         tree_cpu=True))


def _result(run: Timed) -> BaselineRun:
    lines = run.stdout.strip().splitlines()
    try:
        report = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        report = {}
    note = None
    if run.returncode != 0:
        tail = run.stderr.strip().splitlines()[-1:] or ["no output"]
        note = f"exit {run.returncode}: {tail[0]}"
    elif report.get("failed"):
        note = f"{report['failed']} feed(s) failed: {report.get('first_error')}"
    return BaselineRun(timed=run, entries=report.get("entries"), failed=report.get("failed"),
                       note=note)
