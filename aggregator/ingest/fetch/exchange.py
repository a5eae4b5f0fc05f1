"""One fetch's requests and responses: conditional GET, redirects by hand, the status.

Why this module exists: redirects are followed here, hop by hop, rather than by urllib3,
because every hop is a new URL the guard must check (a portal may redirect to ``file:``,
to 169.254.169.254 or into a loop), because only the unbroken chain of permanent
redirects from the source URL means "the feed moved", and because a redirect body must
never be read (it may be endless).

Every request is built from this call's ``FetchOptions`` (User-Agent and the other
headers, limits, timeouts), never from settings frozen into the session, which callers
keep across config reloads: a session is only a connection pool (and a cookie jar).
Requests go straight to a pool of the session (``pool.urlopen``: no redirects, no
retries, the body left unread and undecoded), spelled as requests spelled them
(``urls``).

What must not happen: draining a redirect or error body (it may be endless: responses
are closed, never read to the end), a hop past ``max_redirects`` or the deadline, or a
result for a fetch whose watchdog fired (a body that "ended" because its socket was shut
down is the deadline, never a short success).  Setting up and tearing down the fetch (the
watchdog, the policy, turning exceptions into ``FetchError``) is ``fetch``'s job, in the
package's ``__init__``.
"""

from __future__ import annotations

import time
from dataclasses import replace
from urllib.parse import urljoin

from urllib3 import BaseHTTPResponse, Retry, Timeout

from aggregator.errors import FetchError
from aggregator.ingest.fetch import urls
from aggregator.ingest.fetch.body import read_body
from aggregator.ingest.fetch.connection import Policy, check_response_peer, response_socket
from aggregator.ingest.fetch.errors import deadline_error
from aggregator.ingest.fetch.guard import check_url
from aggregator.ingest.fetch.protocol import (
    RETRY_AFTER_STATUSES,
    parse_retry_after,
    request_headers,
    status_phrase,
)
from aggregator.ingest.fetch.session import HttpSession, cookie_header, extract_cookies
from aggregator.ingest.fetch.watchdog import Watchdog
from aggregator.records import FetchOptions, FetchResult, Source, Validators

__all__ = ["close", "follow", "is_redirect", "send"]

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})  # with a Location: a redirect
_NO_RETRIES = Retry(total=False, redirect=False)  # an error is raised as it happened


def follow(source: Source, options: FetchOptions, validators: Validators,
           session: HttpSession, policy: Policy, watchdog: Watchdog, started: float, *,
           accept: str | None = None) -> FetchResult:
    """GET ``source.url`` and the redirects it leads to; the final response as a result.

    ``accept`` replaces the feed ``Accept`` header (the image proxy asks for images)."""
    deadline_at = started + options.deadline
    # This call's options, on every hop (a session's own headers are never sent: a session
    # is a connection pool and cookies, never a second source of settings).  Connection:
    # keep-alive as requests sent it, for the HTTP/1.0 servers that keep a connection
    # open only when asked.
    headers = request_headers(options)
    headers["Connection"] = "keep-alive"
    if accept is not None:
        headers["Accept"] = accept
    if validators.etag:
        headers["If-None-Match"] = validators.etag
    if validators.last_modified:
        headers["If-Modified-Since"] = validators.last_modified

    url = source.url
    seen: set[str] = set()
    hops = 0
    # Where an unbroken chain of permanent redirects (301/308) from source.url leads.
    moved_to: str | None = None
    permanent_so_far = True
    while True:
        try:
            url = urls.prepare_url(url)
        except ValueError as exc:
            raise FetchError(f"invalid URL {url!r}: {exc}", source_id=source.id) from exc
        if url in seen:
            raise FetchError(f"redirect loop: {url} was already visited", source_id=source.id)
        seen.add(url)
        check_url(url, source_id=source.id)  # the addresses are checked when connecting

        remaining = deadline_at - time.monotonic()
        if remaining <= 0:
            raise deadline_error(source.id, options.deadline)
        response = send(session, "GET", url, headers, source.id,
                        Timeout(connect=min(options.connect_timeout, remaining),
                                read=min(options.read_timeout, remaining)), policy, watchdog)
        try:
            if is_redirect(response):
                location = response.headers["location"]
                try:
                    location = urls.redirect_location(location)
                    target = urljoin(url, location)
                except ValueError as exc:
                    raise FetchError(f"invalid redirect Location {location!r}: {exc}",
                                     source_id=source.id) from exc
                hops += 1
                if hops > options.max_redirects:
                    raise FetchError(
                        f"too many redirects: more than {options.max_redirects} "
                        f"(last hop {url} → {location})", source_id=source.id)
                url = target
                permanent_so_far = permanent_so_far and response.status in (301, 308)
                if permanent_so_far:
                    moved_to = url
                continue
            result = _finish(source, options, validators, response, url, watchdog, started,
                             deadline_at)
            return replace(result, permanent_redirect=moved_to) if moved_to else result
        finally:
            close(response)


def send(session: HttpSession, method: str, url: str, headers: dict[str, str],
         source_id: str, timeout: Timeout, policy: Policy, watchdog: Watchdog, *,
         body: bytes | None = None) -> BaseHTTPResponse:
    """One request of a fetch (``url`` prepared and checked) through a pool of ``session``.

    Adds what requests added: the session's cookies for ``url`` and the Basic credentials
    of its userinfo.  The reply is refused when it came from an address ``policy``
    forbids, its socket is given to ``watchdog``, and only then are the cookies it sets
    stored.  Its body is left unread (and undecoded: ``body.read_body`` decodes it); the
    caller must ``close`` it.
    """
    try:
        where = urls.target(url)
    except ValueError as exc:  # e.g. credentials that are not latin-1, as with requests
        raise FetchError(f"invalid URL {url!r}: {exc}", source_id=source_id) from exc
    cookies = cookie_header(session.cookies, url)
    if cookies is not None or where.authorization is not None:
        headers = dict(headers)
        if cookies is not None:
            headers["Cookie"] = cookies
        if where.authorization is not None:
            headers["Authorization"] = where.authorization
    pool = session.connection_from_host(where.host, where.port, where.scheme)
    response = pool.urlopen(method, where.path, body=body, headers=headers, redirect=False,
                            assert_same_host=False, retries=_NO_RETRIES,
                            preload_content=False, decode_content=False, timeout=timeout)
    try:
        sock = response_socket(response)
        check_response_peer(response, sock, policy, where.host or url)
        watchdog.track(sock)
        if "set-cookie" in response.headers:  # (case-insensitive) the jar reads nothing else
            extract_cookies(session.cookies, url, response.headers)
    except BaseException:
        close(response)
        raise
    return response


def is_redirect(response: BaseHTTPResponse) -> bool:
    """A redirect status with a Location to go to (as requests' ``is_redirect``)."""
    return response.status in REDIRECT_STATUSES and "location" in response.headers


def close(response: BaseHTTPResponse) -> None:
    """Close ``response`` without draining it, and give its pool slot back (as requests
    did: the closed connection goes back, and the next request through it reconnects)."""
    response.close()
    response.release_conn()


def _keep_alive(response: BaseHTTPResponse) -> None:
    """Give a 304's connection back to the session's pool instead of closing it.

    A 304 ends at its headers (``http.client`` reads no body for it, whatever the server
    says), so there is nothing to drain; closing it would make every re-poll of a portal
    with many feeds a new TCP (and TLS) connection.  A 2xx whose body was read to the end
    goes back by itself; redirects and errors are closed, never drained.
    """
    try:
        response.drain_conn()  # reads nothing: marks the exchange complete
        response.release_conn()
    except Exception:  # a connection that cannot be kept is closed instead (finally)
        return


def _finish(source: Source, options: FetchOptions, validators: Validators,
            response: BaseHTTPResponse, url: str, watchdog: Watchdog, started: float,
            deadline_at: float) -> FetchResult:
    status = response.status
    headers = {name: response.headers[name] for name in response.headers}  # joined repeats
    etag = response.headers.get("ETag")
    last_modified = response.headers.get("Last-Modified")

    if status == 304:
        if watchdog.finish():
            raise deadline_error(source.id, options.deadline)
        _keep_alive(response)
        return FetchResult(
            source_id=source.id, url=url, status=304, content=b"", headers=headers,
            etag=etag or validators.etag,
            last_modified=last_modified or validators.last_modified,
            elapsed=time.monotonic() - started)

    if not 200 <= status < 300:
        reason = response.reason or status_phrase(status)
        retry_after = (parse_retry_after(response.headers.get("Retry-After"))
                       if status in RETRY_AFTER_STATUSES else None)
        raise FetchError(f"HTTP {status} {reason}".rstrip(), source_id=source.id,
                         status=status, retry_after=retry_after)

    limit = source.max_bytes or options.max_bytes
    content = read_body(response, limit, source_id=source.id, deadline_at=deadline_at,
                        deadline=options.deadline)
    if watchdog.finish():  # the body may have "ended" because the watchdog shut it
        raise deadline_error(source.id, options.deadline)
    return FetchResult(source_id=source.id, url=url, status=status, content=content,
                       headers=headers, etag=etag, last_modified=last_modified,
                       elapsed=time.monotonic() - started)
