"""How many malloc arenas the daemon's threads may spread over, and giving back what a
burst of polls freed (glibc only).

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

Freed memory inside an arena stays with the process too: glibc returns only the free
top of a heap, and the chunks a burst of polls and a build freed lie between ones still
in use.  ``release_freed_memory`` (``malloc_trim(0)``, malloc_trim(3)) gives their pages
back; the scheduler and the claim worker call it after each build, which follows a burst
of polls.  After the first poll of 1,000 sources it took the main process from 128 MB to
114 MB RSS.  It costs a walk over malloc's free lists: 1.5 ms on 40 MB of fragments
(2 CPUs), once per build.

This module must NOT change malloc anywhere but glibc, fail the daemon's start (a libc
without ``mallopt`` is left as it is), or run at import time.  Parse workers are not
concerned: the fork server is a new interpreter (exec'd, not forked from the daemon), so
it and the workers forked from it keep glibc's defaults.
"""

from __future__ import annotations

import ctypes
import functools
import os

__all__ = ["ARENAS", "bound_malloc_arenas", "release_freed_memory"]

ARENAS = 2  # one for the GIL holder's allocations, one for C code that released it
_M_ARENA_MAX = -8  # <malloc.h>
_ENV = "MALLOC_ARENA_MAX"


def bound_malloc_arenas(arenas: int = ARENAS) -> int | None:
    """Bound this process's malloc arenas to ``arenas``; the bound set, or None when
    nothing was done (not glibc, or ``MALLOC_ARENA_MAX`` already decides)."""
    libc = None if os.environ.get(_ENV) else _glibc()
    if libc is None:
        return None
    return arenas if libc.mallopt(_M_ARENA_MAX, arenas) == 1 else None


def release_freed_memory() -> bool:
    """Return the free pages inside malloc's heaps to the system; whether any were."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.malloc_trim(0))


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """This process's C library with ``mallopt`` and ``malloc_trim`` typed, when it is
    glibc; else None."""
    if not _is_glibc():
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    libc.mallopt.restype = libc.malloc_trim.restype = ctypes.c_int
    return libc


def _is_glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError, AttributeError):
        return False
