"""Fetch stage: one source's URL → ``FetchResult`` (or ``FetchError``).

Why this package exists: portals are slow, broken, hostile or all three, and the rest of
the poll must only ever see bytes or a typed error.  So this package owns every
network concern in one place — conditional GET, hand-followed redirects, an SSRF guard
checked on the connected address, DNS inside the deadline, a hard wall-clock deadline, a
decompressed-size limit — and it is the ONLY place in the project that imports
``urllib3`` (used directly: requests' Session layer cost half of a 304's CPU; requests
is only a test dependency now), ``certifi`` or ``idna``.  Callers use the names below
and nothing else: ``fetch``, ``make_session`` and ``HttpSession`` (plus the ``ACCEPT``
header value), and ``HttpFetcher``, the fetch a poll is given: one session per thread.
A session is only a connection pool (and a cookie jar): every setting (User-Agent,
limits, timeouts, the SSRF policy) comes from the ``FetchOptions`` passed to each
``fetch`` call, so a session kept across a config reload never sends stale settings.

What it must NOT do: decode text, sniff encodings or parse documents (the parse stage
does), decide polling policy (no retries, sleeps, backoff or schedules: the caller reads
``FetchError.status`` and ``retry_after``), touch the database or the store, log and
continue, or read the environment (``*_PROXY``, ``SSL_CERT_FILE``, ``.netrc``: TLS trusts
certifi's bundle, as requests did).  It never lets a urllib3, TLS or socket exception
escape: everything becomes
``FetchError(source_id=...)`` with a short human reason and the original kept as
``__cause__``.

The modules, by role:

- ``exchange``: the requests of one fetch — conditional headers, redirects by hand,
  cookies, the status of the final response;
- ``urls``: URLs spelled as requests spelled them, a redirect's Location read as it did;
- ``session``: ``HttpSession``, the urllib3 pool manager of watched pools and a cookie jar;
- ``guard``: which URLs and addresses are refused, whatever their spelling;
- ``resolve``: the one DNS lookup per connection, bounded by the deadline;
- ``connection``: the urllib3 connection and pool classes that resolve, check, connect to
  the checked address and report every socket to the watchdog;
- ``watchdog``: shuts a fetch's sockets down when its wall-clock deadline passes;
- ``body``: the streamed body, decompressed incrementally and cut at the size limit;
- ``protocol``: the request headers sent, Retry-After, Content-Length, status phrases;
- ``post``: one form POST (WebSub pings) with a fetch's guard and deadline; ``image``:
  the image proxy's fetch;
- ``errors``: exceptions turned into one-line reasons, and the deadline error.
"""

from __future__ import annotations

import threading
import time

from aggregator.errors import FetchError
from aggregator.ingest.fetch.connection import CURRENT_POLICY, Policy
from aggregator.ingest.fetch.errors import DeadlineExceeded, deadline_error, describe
from aggregator.ingest.fetch.exchange import follow
from aggregator.ingest.fetch.post import post_form as post_form  # a form POST (WebSub)
from aggregator.ingest.fetch.protocol import ACCEPT, request_headers
from aggregator.ingest.fetch.session import HttpSession
from aggregator.ingest.fetch.watchdog import Watchdog
from aggregator.records import FetchOptions, FetchResult, Source, Validators

__all__ = ["ACCEPT", "HttpFetcher", "HttpSession", "fetch", "make_session"]

_NO_VALIDATORS = Validators()


def make_session(options: FetchOptions) -> HttpSession:
    """A session for ``fetch``: no environment leaks, watched sockets, a connection pool.

    One session per thread is the intended use (its cookie jar and pools are the
    thread's); it keeps connections alive between polls of the same host, and may be
    kept across settings reloads: ``fetch`` applies every header and limit from the
    options of each call, never from the session.  ``options`` here only shape the
    session used directly, outside ``fetch`` (``session.request("GET", url)``): its
    default headers (``user_agent``), its redirect limit (``max_redirects``) and its SSRF
    policy (``allow_private_networks``).
    """
    return HttpSession(allow_private_networks=options.allow_private_networks,
                       headers=request_headers(options), max_redirects=options.max_redirects)


def fetch(source: Source, options: FetchOptions, validators: Validators = _NO_VALIDATORS,
          session: HttpSession | None = None, *, accept: str | None = None) -> FetchResult:
    """GET ``source.url`` conditionally, within ``options``' limits.

    Returns a 2xx result with the decompressed body, or a 304 result with empty content
    and the (possibly old) validators.  Raises ``FetchError`` for everything else.

    Everything configurable comes from ``options``, on each call: the User-Agent and
    the other request headers, the timeouts and deadline, the size and redirect limits
    and the SSRF policy.  ``session`` (an ``HttpSession``, e.g. from ``make_session``)
    lends its pooled connections and its cookies; without one, a fresh session is used
    and closed.  The connections are always the watched ones, so the deadline and the SSRF
    guard of ``options`` hold whatever options the session was made with.
    ``accept`` replaces the feed ``Accept`` header (``image.fetch_image`` asks for images).
    """
    started = time.monotonic()
    owned = session is None
    active = make_session(options) if session is None else session
    watchdog = Watchdog(options.deadline)
    policy = Policy(source_id=source.id, allow_private=options.allow_private_networks,
                    deadline_at=started + options.deadline, watchdog=watchdog)
    token = CURRENT_POLICY.set(policy)
    watchdog.start()
    try:
        return follow(source, options, validators, active, policy, watchdog, started,
                      accept=accept)
    except DeadlineExceeded:
        raise
    except FetchError as exc:
        if exc.status is None and _past_deadline(watchdog, started, options):
            raise deadline_error(source.id, options.deadline) from exc
        raise
    except Exception as exc:  # the stage contract: nothing but FetchError escapes
        if _past_deadline(watchdog, started, options):
            raise deadline_error(source.id, options.deadline) from exc
        raise FetchError(describe(exc), source_id=source.id) from exc
    finally:
        watchdog.finish()
        CURRENT_POLICY.reset(token)
        if owned:
            active.close()


def _past_deadline(watchdog: Watchdog, started: float, options: FetchOptions) -> bool:
    # Socket timeouts are capped at the time remaining, so a timeout can beat the timer
    # by a hair; either way the deadline is the reason the fetch failed.
    return watchdog.expired or time.monotonic() - started >= options.deadline


class HttpFetcher:
    """The real fetch with one HTTP session (a connection pool) per thread.

    Sessions carry no settings: each call applies the ``FetchOptions`` it is given, so
    a reloaded config (a new ``user_agent``) takes effect on the next poll.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._sessions: list[HttpSession] = []

    def __call__(self, source: Source, options: FetchOptions,
                 validators: Validators) -> FetchResult:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = make_session(options)
            with self._lock:
                self._sessions.append(session)
        return fetch(source, options, validators, session)

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()


# The image proxy's fetch (last: it is built on ``fetch`` above).
from aggregator.ingest.fetch.image import ImageResponse, fetch_image  # noqa: E402

__all__ += ["ImageResponse", "fetch_image"]
