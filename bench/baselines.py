"""The two baselines the aggregator is compared with, each run as its own process.

- lemon24/reader in ``bench/.venv-reader`` (created on first use: ``pip install reader
  sgmllib3k``), driven by ``bench/reader_run.py``;
- a naive poller (``bench/naive_run.py``) in the aggregator's own venv.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from measure import Timed, timed

BENCH = Path(__file__).resolve().parent
READER_VENV = BENCH / ".venv-reader"
READER_PACKAGES = ("reader", "sgmllib3k")


@dataclass
class BaselineRun:
    timed: Timed
    entries: int | None
    failed: int | None
    note: str | None


def reader_python(install: bool = True) -> tuple[Path | None, str]:
    """The reader venv's interpreter (created when missing) and reader's version."""
    python = READER_VENV / "bin" / "python"
    if not python.exists() and install:
        print(f"creating {READER_VENV} (pip install {' '.join(READER_PACKAGES)}) ...",
              file=sys.stderr)
        made = subprocess.run([sys.executable, "-m", "venv", str(READER_VENV)],
                              capture_output=True, text=True, check=False)
        if made.returncode == 0:
            subprocess.run([str(python), "-m", "pip", "install", "-q", *READER_PACKAGES],
                           check=False)
    if not python.exists():
        return None, "reader venv missing"
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
    return _result(timed([*command, "--add"] if add else command))


def run_naive(db: Path, urls_file: Path) -> BaselineRun:
    return _result(timed([sys.executable, str(BENCH / "naive_run.py"), str(db), str(urls_file)]))


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
