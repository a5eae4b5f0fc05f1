"""One form POST (``application/x-www-form-urlencoded``) with the safety of a fetch.

Why this module exists: the service tells a WebSub hub that a feed changed by POSTing a
small form to it, and that request leaves the machine like any fetch does — to an address
taken from the config, which must not become a way into the host's own network.  So it
goes through the same machinery as ``fetch``: the URL spelling and check, the guarded and
watched connections of an ``HttpSession`` (one bounded DNS lookup, the SSRF guard on the
connected address honouring ``FetchOptions.allow_private_networks``), the connect/read
timeouts capped by the wall-clock deadline that the watchdog enforces, and no proxies or
environment settings.

What it must NOT do: follow a redirect (a POST redirected elsewhere is the caller's
problem to configure, not something to re-send blindly: a 3xx is an error naming the
target), read the reply body (hubs say everything with the status; the body is closed,
never drained), retry, sleep or log (the caller decides: ``FetchError.status`` and
``retry_after``), or let anything but ``FetchError`` escape.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from urllib.parse import urlencode

from urllib3 import Timeout

from aggregator.errors import FetchError
from aggregator.ingest.fetch import urls
from aggregator.ingest.fetch.connection import CURRENT_POLICY, Policy
from aggregator.ingest.fetch.errors import DeadlineExceeded, deadline_error, describe
from aggregator.ingest.fetch.exchange import close, is_redirect, send
from aggregator.ingest.fetch.guard import check_url
from aggregator.ingest.fetch.protocol import (
    RETRY_AFTER_STATUSES,
    parse_retry_after,
    status_phrase,
)
from aggregator.ingest.fetch.session import HttpSession
from aggregator.ingest.fetch.watchdog import Watchdog
from aggregator.records import FetchOptions

__all__ = ["FORM_TYPE", "post_form"]

FORM_TYPE = "application/x-www-form-urlencoded"


def post_form(url: str, fields: Mapping[str, str], options: FetchOptions, *,
              purpose: str) -> int:
    """POST ``fields`` form-encoded to ``url``; the 2xx status the server answered.

    Raises ``FetchError`` (its ``source_id`` is ``purpose``, e.g. ``"websub"``, so the
    error names who was posting) for every other outcome: a non-2xx status (``status``
    set, ``retry_after`` for 429/503), a refused address, a network failure, or the
    ``options.deadline`` passing.  Redirects are not followed.
    """
    started = time.monotonic()
    watchdog = Watchdog(options.deadline)
    policy = Policy(source_id=purpose, allow_private=options.allow_private_networks,
                    deadline_at=started + options.deadline, watchdog=watchdog)
    session = HttpSession(allow_private_networks=options.allow_private_networks)
    token = CURRENT_POLICY.set(policy)
    watchdog.start()
    try:
        status = _send(url, fields, options, session, policy, watchdog, started, purpose)
        if watchdog.finish():
            raise deadline_error(purpose, options.deadline)
        return status
    except DeadlineExceeded:
        raise
    except FetchError as exc:
        if exc.status is None and _past_deadline(watchdog, started, options):
            raise deadline_error(purpose, options.deadline) from exc
        raise
    except Exception as exc:  # the stage contract: nothing but FetchError escapes
        if _past_deadline(watchdog, started, options):
            raise deadline_error(purpose, options.deadline) from exc
        raise FetchError(describe(exc), source_id=purpose) from exc
    finally:
        watchdog.finish()
        CURRENT_POLICY.reset(token)
        session.close()


def _send(url: str, fields: Mapping[str, str], options: FetchOptions, session: HttpSession,
          policy: Policy, watchdog: Watchdog, started: float, purpose: str) -> int:
    headers = {"User-Agent": options.user_agent, "Content-Type": FORM_TYPE, "Accept": "*/*"}
    try:
        target = urls.prepare_url(url)
    except ValueError as exc:
        raise FetchError(f"invalid URL {url!r}: {exc}", source_id=purpose) from exc
    check_url(target, source_id=purpose)  # the addresses are checked when connecting
    remaining = started + options.deadline - time.monotonic()
    if remaining <= 0:
        raise deadline_error(purpose, options.deadline)
    response = send(session, "POST", target, headers, purpose,
                    Timeout(connect=min(options.connect_timeout, remaining),
                            read=min(options.read_timeout, remaining)),
                    policy, watchdog, body=urlencode(dict(fields)).encode("ascii"))
    try:
        status = response.status
        if 200 <= status < 300:
            return status
        reason = response.reason or status_phrase(status)
        if is_redirect(response):
            location = response.headers.get("Location", "")
            raise FetchError(f"HTTP {status} {reason}: a POST is not redirected "
                             f"(to {location!r})", source_id=purpose, status=status)
        retry_after = (parse_retry_after(response.headers.get("Retry-After"))
                       if status in RETRY_AFTER_STATUSES else None)
        raise FetchError(f"HTTP {status} {reason}".rstrip(), source_id=purpose, status=status,
                         retry_after=retry_after)
    finally:
        close(response)  # never drain: the reply body says nothing a status does not


def _past_deadline(watchdog: Watchdog, started: float, options: FetchOptions) -> bool:
    return watchdog.expired or time.monotonic() - started >= options.deadline
