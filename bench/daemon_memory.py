"""Where the daemon's memory is, after the first poll of N tiny sources (issue 15).

``run.py`` measures the daemon's RSS and PSS per process; this says what they are made
of.  It serves ``run.py``'s farm, starts ``aggregator run`` (the ``--tree`` checkout's
code) under a small wrapper, waits until every source was polled and the build after
them ran, then asks the daemon for a report (SIGUSR1): its modules, glibc's
``malloc_info`` (arenas, and what they hold free), pymalloc's arenas, and with
``--tracemalloc`` the live Python allocations, split into those made while importing
and those made at run time.  Beside it: RSS, PSS, RssAnon and RssFile of every process
of the tree.  Figures only, no assertions; results in bench/README.md ("Daemon memory").

    .venv/bin/python bench/daemon_memory.py [--tree CHECKOUT] [--sources 1000] [--tracemalloc]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from farm import Farm, FarmServer
from measure import command_line, descendants, proc_status_kb, pss_kb
from run import agg_python, write_config

# Runs in the daemon: ``aggregator run`` on the main thread; SIGUSR1 writes the report.
_WRAPPER = r'''
import ctypes, gc, json, os, re, signal, sys, threading, tracemalloc
from collections import Counter

REPORT = sys.argv.pop(1)

def heaps():
    libc = ctypes.CDLL(None)
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    stream = libc.fopen((REPORT + ".xml").encode(), b"w")
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    xml = open(REPORT + ".xml", encoding="ascii").read()
    out = []
    for body in re.findall(r'<heap nr="\d+">(.*?)</heap>', xml, re.S):
        free = re.search(r'<total type="rest" count="\d+" size="(\d+)"', body).group(1)
        system = re.search(r'<system type="current" size="(\d+)"', body).group(1)
        out.append({"free": int(free), "system": int(system)})
    return out

def pymalloc():
    fd = os.open(REPORT + ".pymalloc", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    saved = os.dup(2)
    os.dup2(fd, 2)
    try:
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(fd)
        os.close(saved)
    text = open(REPORT + ".pymalloc", encoding="ascii").read()
    def number(label):
        return int(re.search(label + r"\s*=\s*([\d,]+)", text).group(1).replace(",", ""))

    if "# arenas allocated current" not in text:
        return None  # tracemalloc's hooks hide pymalloc's statistics
    return {"arenas": number("# arenas allocated current"),
            "allocated": number("# bytes in allocated blocks"),
            "available": number("# bytes in available blocks")}

def python_heap():
    if not tracemalloc.is_tracing():
        return None
    snapshot = tracemalloc.take_snapshot()
    importing = running = 0
    places = Counter()
    for trace in snapshot.traces:
        frames = list(trace.traceback)
        if any("importlib" in f.filename for f in frames):
            importing += trace.size
            continue
        running += trace.size
        ours = [f for f in frames if "/aggregator/" in f.filename]
        where = ours[0] if ours else frames[0]
        places[f"{where.filename.split('/')[-1]}:{where.lineno}"] += trace.size
    return {"importing": importing, "running": running, "top": places.most_common(12)}

def report(*_args):
    data = {"modules": sorted({m.split(".")[0] for m in sys.modules}),
            "threads": len(threading.enumerate()), "heaps": heaps(), "pymalloc": pymalloc(),
            "python": python_heap(),
            "objects": Counter(type(o).__name__ for o in gc.get_objects()).most_common(8)}
    with open(REPORT + ".tmp", "w", encoding="utf-8") as out:
        json.dump(data, out)
    os.replace(REPORT + ".tmp", REPORT)

signal.signal(signal.SIGUSR1, lambda *_: threading.Thread(target=report).start())
from aggregator.cli import main
main()
'''

MB = 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--sources", type=int, default=1000)
    parser.add_argument("--tracemalloc", action="store_true",
                        help="trace Python allocations (the daemon then needs twice the RSS)")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    farm = Farm(20, 5, seed=1)
    for index in range(args.sources):
        farm.render_tiny(index)
    work = Path(tempfile.mkdtemp(prefix="aggregator-daemon-memory-"))
    env = {**os.environ, "PYTHONPATH": str(args.tree.resolve())}
    if args.tracemalloc:
        env["PYTHONTRACEMALLOC"] = "12"
    report = work / "report.json"
    with FarmServer(farm, port=0) as server:
        config = work / "aggregator.yaml"
        write_config(config, workdir=work, extra={"start_jitter": "0", "build_debounce": "2s"},
                     sources=[(f"t{i:04d}", f"小站{i:04d}", server.tiny_url(i), "tiny")
                              for i in range(args.sources)])
        proc = subprocess.Popen([agg_python(), "-c", _WRAPPER, str(report), "--config",
                                 str(config), "run", "--port", "0"], cwd=work, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        assert proc.stderr is not None
        threading.Thread(target=lambda: lines.extend(proc.stderr or ()), daemon=True).start()
        started = time.monotonic()
        try:
            while time.monotonic() - started < args.timeout:
                polled = sum(" result=" in line for line in lines)
                if polled >= args.sources and any(re.search(r"\bbuilt\b", line)
                                                  for line in lines[-50:]):
                    break
                time.sleep(0.2)
            time.sleep(2)  # the build's last writes
            proc.send_signal(signal.SIGUSR1)
            while not report.exists() and time.monotonic() - started < args.timeout + 60:
                time.sleep(0.2)
            processes = [(pid, command_line(pid)) for pid in [proc.pid, *descendants(proc.pid)]]
            print(f"{polled}/{args.sources} sources polled; per process (MB):")
            for pid, command in processes:
                role = ("main" if pid == proc.pid else "resource_tracker"
                        if "resource_tracker" in command else "fork server / parse worker")
                figures = {name: (proc_status_kb(pid, name) or 0) / 1024
                           for name in ("VmRSS", "VmHWM", "RssAnon", "RssFile")}
                print(f"  {pid:>7} {role:27s} " + "  ".join(
                    f"{name} {value:5.1f}" for name, value in figures.items())
                    + f"  PSS {(pss_kb(pid) or 0) / 1024:5.1f}")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    if not report.exists():
        sys.exit("the daemon wrote no report:\n" + "".join(lines[-20:]))
    daemon = json.loads(report.read_text(encoding="utf-8"))
    heaps = daemon["heaps"]
    print(f"main: {daemon['threads']} threads; glibc malloc: {len(heaps)} arenas, "
          f"{sum(h['system'] for h in heaps) / MB:.1f} MB from the system, "
          f"{sum(h['free'] for h in heaps) / MB:.1f} MB of it free")
    py = daemon["pymalloc"] or {"arenas": 0, "allocated": 0, "available": 0}
    print(f"main: pymalloc {py['arenas']} arenas, {py['allocated'] / MB:.1f} MB in use, "
          f"{py['available'] / MB:.1f} MB free in them")
    parsing = sorted({"feedparser", "nh3", "lxml", "feedgen"} & set(daemon["modules"]))
    print(f"main imported: {len(daemon['modules'])} top-level modules; of the parsers' and "
          f"builders' libraries: {', '.join(parsing) or 'none'}")
    print(f"main objects: {daemon['objects']}")
    if daemon["python"]:
        traced = daemon["python"]
        print(f"main Python heap (tracemalloc): {traced['importing'] / MB:.1f} MB made while "
              f"importing, {traced['running'] / MB:.1f} MB at run time; at run time, by place:")
        for place, size in traced["top"]:
            print(f"  {size / MB:6.2f} MB  {place}")


if __name__ == "__main__":
    sys.exit(main())
