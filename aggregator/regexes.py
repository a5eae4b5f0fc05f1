"""Operators' regular expressions: checked when the config loads, compiled once per
process, and never run without a time bound.

Why one module at the bottom of the import graph: the config checks every pattern of a
source's ``rules:`` when it loads (a bad one is a ``ConfigError`` naming the source and
the rule, see ``aggregator.config``), and the parse workers run them
(``aggregator.ingest.filters``); both must use the same engine, so that a pattern the
config accepted is the pattern the worker runs.  This is the one home of the ``regex``
library (maintained, ``re``'s syntax in its default V0 mode, plus ``\\p{Han}`` and
friends), chosen for its ``timeout=``: the standard ``re`` cannot be interrupted, and a
catastrophic pattern such as ``(a+)+$`` on a long ``aaaa…b`` title would hold a parse
worker until its budget killed the whole document.

What must NOT happen: a pattern run without ``timeout`` (every call here passes one),
or a pattern compiled on every article (``compiled`` caches by pattern text).  Imports no
project module, so ``config`` and ``ingest`` can both use it.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import regex

__all__ = ["MATCH_TIMEOUT", "check_pattern", "compiled", "remove", "search"]

# Seconds one pattern may spend on one text.  Real rules on real titles and articles take
# microseconds; a pattern that needs this long is backtracking, not matching.
MATCH_TIMEOUT = 0.1


def check_pattern(pattern: str) -> str:
    """``pattern`` when it compiles and is not empty, else ``ValueError`` saying why.

    An empty pattern is refused: it matches every article (an ``exclude`` of ``""`` drops
    the whole source), which is never what an operator meant.
    """
    import regex  # here and in ``compiled``: only a config with rules needs the engine

    if not pattern:
        raise ValueError("empty regex (it would match every article)")
    try:
        compiled(pattern)
    except regex.error as exc:
        raise ValueError(f"invalid regex {pattern!r}: {exc}") from None
    return pattern


@functools.lru_cache(maxsize=1024)
def compiled(pattern: str) -> regex.Pattern[str]:
    """The compiled ``pattern``, once per process (``regex.error`` if it is invalid)."""
    import regex  # 2 MB in every parse worker that no source's rules need

    return regex.compile(pattern)


def search(pattern: str, text: str, *, timeout: float = MATCH_TIMEOUT) -> bool:
    """True when ``pattern`` occurs anywhere in ``text``.

    Raises ``TimeoutError`` when it has not decided within ``timeout`` seconds: the caller
    decides what a timed-out rule means (``ingest.filters``: no match, and says so).
    """
    return compiled(pattern).search(text, timeout=timeout) is not None


def remove(pattern: str, text: str, *, timeout: float = MATCH_TIMEOUT) -> str:
    """``text`` without the matches of ``pattern``; ``TimeoutError`` past ``timeout``."""
    return compiled(pattern).sub("", text, timeout=timeout)
