"""How many malloc arenas the daemon's threads may spread over (glibc only).

Why: glibc gives each new thread its own malloc arena, up to eight per CPU, and an
arena keeps the memory its thread freed for that thread's next allocations.  The daemon
runs some twenty threads (poll pool, HTTP server, scheduler, log listener); after the
first poll of 1,000 sources its 16 arenas held 23 MB of free memory, about 12 MB of
the main process's 140 MB RSS more than with two arenas (bench/README.md, "Daemon
memory").  Most allocations are Python's, made under the GIL, so threads rarely contend
for an arena anyway.

How: ``bound_malloc_arenas`` calls ``mallopt(M_ARENA_MAX)`` (mallopt(3)) once, when the
daemon starts and before it starts its threads: arenas are made when a thread first
allocates, so the bound holds for every thread started after it.  The documented
environment variable ``MALLOC_ARENA_MAX`` does the same but is read only when a process
starts, so the daemon cannot set it for itself; an operator who sets it wins (this
module then leaves malloc alone).

This module must NOT change malloc anywhere but glibc, fail the daemon's start (a libc
without ``mallopt`` is left as it is), or run at import time.  Parse workers are not
concerned: the fork server execs a new interpreter, which keeps glibc's default.
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["ARENAS", "bound_malloc_arenas"]

ARENAS = 2  # one for the GIL holder's allocations, one for C code that released it
_M_ARENA_MAX = -8  # <malloc.h>
_ENV = "MALLOC_ARENA_MAX"


def bound_malloc_arenas(arenas: int = ARENAS) -> int | None:
    """Bound this process's malloc arenas to ``arenas``; the bound set, or None when
    nothing was done (not glibc, or ``MALLOC_ARENA_MAX`` already decides)."""
    if os.environ.get(_ENV) or not _is_glibc():
        return None
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return arenas if mallopt(_M_ARENA_MAX, arenas) == 1 else None


def _is_glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError, AttributeError):
        return False
