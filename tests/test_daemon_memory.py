"""What keeps the daemon's memory small: its main process leaves parsing to the parse
workers (and imports none of their libraries), and ``service.memory`` bounds malloc's
arenas and gives freed memory back.

Each probe runs in a fresh interpreter (a subprocess): malloc's state is per process,
and the test process has its own.  The arena probe starts threads that each allocate and
then wait, so that every thread holds its arena while glibc's ``malloc_info`` counts
them.  No memory figures here: those are measured in bench/README.md ("Daemon memory").
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from builders import LogWatcher, rss_document, write_config_file
from pytest_httpserver import HTTPServer

from aggregator.service.memory import ARENAS

pytestmark = pytest.mark.skipif(
    not hasattr(os, "confstr") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="malloc arenas are glibc's")

THREADS = 8

# The probes' way to count this process's malloc arenas: glibc's malloc_info report.
_COUNT_ARENAS = """
import ctypes, re, tempfile

def count_arenas():
    libc = ctypes.CDLL(None)
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    with tempfile.NamedTemporaryFile(suffix=".xml") as info:
        stream = libc.fopen(info.name.encode(), b"w")
        libc.malloc_info(0, stream)
        libc.fclose(stream)
        return len(re.findall(rb'<heap nr="', open(info.name, "rb").read()))
"""

# ``aggregator`` in this interpreter; at its exit it writes the top-level modules it had
# imported and the malloc arenas it had made (threads that ended leave theirs behind).
_DAEMON = _COUNT_ARENAS + """
import atexit, json, sys

REPORT = sys.argv[1]

def report():
    arenas = count_arenas()
    with open(REPORT, "w", encoding="utf-8") as out:
        json.dump({"modules": sorted({m.split(".")[0] for m in sys.modules}),
                   "arenas": arenas}, out)

atexit.register(report)
from aggregator.cli import main
sys.argv[1:] = sys.argv[2:]
main()
"""

# argv: report path, "bound" or "default", threads.  Writes the bound set and the arenas counted.
_PROBE = _COUNT_ARENAS + """
import json, sys, threading
from aggregator.service.memory import bound_malloc_arenas

THREADS = int(sys.argv[3])
bound = bound_malloc_arenas() if sys.argv[2] == "bound" else None
allocated = threading.Barrier(THREADS + 1)
done = threading.Event()
kept = []

def work():
    kept.append([bytes(4096) for _ in range(64)])  # beyond pymalloc: malloc itself
    allocated.wait()
    done.wait()

threads = [threading.Thread(target=work) for _ in range(THREADS)]
for thread in threads:
    thread.start()
allocated.wait()
arenas = count_arenas()
done.set()
for thread in threads:
    thread.join()
with open(sys.argv[1], "w", encoding="utf-8") as out:
    json.dump({"bound": bound, "arenas": arenas}, out)
"""


def _probe(tmp_path: Path, mode: str, env: dict[str, str] | None = None) -> dict[str, int]:
    report = tmp_path / f"{mode}.json"
    environment = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    environment.update(env or {})
    done = subprocess.run([sys.executable, "-c", _PROBE, str(report), mode, str(THREADS)],
                          env=environment, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, int] = json.loads(report.read_text(encoding="utf-8"))
    return result


def test_the_daemon_parses_in_its_workers_and_bounds_its_arenas(
        tmp_path: Path, httpserver: HTTPServer, processes: list[subprocess.Popen[str]]) -> None:
    for name in ("a", "b", "c"):
        httpserver.expect_request(f"/{name}.xml").respond_with_data(
            rss_document(f"{name} 一", f"{name} 二", link=f"http://p.test/{name}/{{index}}"),
            content_type="application/rss+xml")
    config = write_config_file(
        tmp_path / "aggregator.yaml",
        ['database_url: "sqlite:///d.db"', "output_dir: public", "allow_private_networks: true",
         "start_jitter: 0", "build_debounce: 0.1s"],
        {name: httpserver.url_for(f"/{name}.xml") for name in ("a", "b", "c")})
    report = tmp_path / "daemon.json"
    process = subprocess.Popen(
        [sys.executable, "-c", _DAEMON, str(report), "--config", str(config), "run", "--port",
         "0"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    processes.append(process)
    log = LogWatcher(process)
    for name in ("a", "b", "c"):
        log.wait_for(rf"source={name} result=new new=2")
    log.wait_for(r"built ")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    log.wait_for(r"daemon stopped")
    assert report.is_file(), log.lines[-10:]
    daemon = json.loads(report.read_text(encoding="utf-8"))
    assert "sqlalchemy" in daemon["modules"]  # the report sees what the daemon imported
    assert {"feedparser", "nh3"}.isdisjoint(daemon["modules"])  # the workers parsed
    assert 1 <= daemon["arenas"] <= ARENAS  # some twenty threads, two arenas


def test_threads_share_at_most_the_bounded_arenas(tmp_path: Path) -> None:
    default = _probe(tmp_path, "default")
    bounded = _probe(tmp_path, "bound")
    assert default["arenas"] > ARENAS  # glibc's default: an arena for each new thread
    assert bounded["bound"] == ARENAS
    assert 1 <= bounded["arenas"] <= ARENAS


def test_an_operators_malloc_arena_max_is_left_to_decide(tmp_path: Path) -> None:
    chosen = _probe(tmp_path, "bound", {"MALLOC_ARENA_MAX": "4"})
    assert chosen["bound"] is None
    assert ARENAS < chosen["arenas"] <= 4


# Frees most of 40 MB of malloc'd blocks, keeping every 64th so the freed ones lie
# between blocks in use (glibc then returns nothing by itself); writes what release said.
_FRAGMENTS = """
import json, sys
from aggregator.service.memory import release_freed_memory

blocks = [bytearray(2048) for _ in range(20_000)]
kept = blocks[::64]
del blocks
with open(sys.argv[1], "w", encoding="utf-8") as out:
    json.dump({"released": release_freed_memory(), "kept": len(kept)}, out)
"""


def test_freed_memory_between_blocks_in_use_is_given_back(tmp_path: Path) -> None:
    report = tmp_path / "released.json"
    done = subprocess.run([sys.executable, "-c", _FRAGMENTS, str(report)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(report.read_text(encoding="utf-8")) == {"released": True, "kept": 313}
