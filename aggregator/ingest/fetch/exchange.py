"""One fetch's requests and responses: conditional GET, redirects by hand, the status.

Why this module exists: redirects are followed here, hop by hop, rather than by
``requests``, because every hop is a new URL the guard must check (a portal may redirect
to ``file:``, to 169.254.169.254 or into a loop), because only the unbroken chain of
permanent redirects from the source URL means "the feed moved", and because
``Session.send`` reads a whole redirect body into memory with no limit.

Every request is built from this call's ``FetchOptions`` (User-Agent and the other
headers, limits, timeouts), never from settings frozen into the session, which callers
keep across config reloads: a session is only a connection pool (and a cookie jar).

What must not happen: draining a redirect or error body (it may be endless: responses
are closed, never read to the end), a hop past ``max_redirects`` or the deadline, or a
result for a fetch whose watchdog fired (a body that "ended" because its socket was shut
down is the deadline, never a short success).  Setting up and tearing down the fetch (the
watchdog, the policy, turning exceptions into ``FetchError``) is ``fetch``'s job, in the
package's ``__init__``.
"""

from __future__ import annotations

import functools
import time
from dataclasses import replace
from urllib.parse import urljoin, urlsplit

import requests
from requests.cookies import extract_cookies_to_jar
from requests.structures import CaseInsensitiveDict

from aggregator.errors import FetchError
from aggregator.ingest.fetch.body import read_body
from aggregator.ingest.fetch.connection import (
    Adapters,
    Policy,
    WatchedAdapter,
    check_response_peer,
    response_socket,
)
from aggregator.ingest.fetch.errors import deadline_error
from aggregator.ingest.fetch.guard import check_url
from aggregator.ingest.fetch.protocol import (
    RETRY_AFTER_STATUSES,
    parse_retry_after,
    request_headers,
    status_phrase,
)
from aggregator.ingest.fetch.watchdog import Watchdog
from aggregator.records import FetchOptions, FetchResult, Source, Validators

__all__ = ["follow"]


def follow(source: Source, options: FetchOptions, validators: Validators,
           session: requests.Session, adapters: Adapters, policy: Policy,
           watchdog: Watchdog, started: float, *, accept: str | None = None) -> FetchResult:
    """GET ``source.url`` and the redirects it leads to; the final response as a result.

    ``accept`` replaces the feed ``Accept`` header (the image proxy asks for images)."""
    deadline_at = started + options.deadline
    # This call's options, on every hop, over the session's own headers: a session is a
    # connection pool (and cookies), never a second source of settings.
    headers = request_headers(options)
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
            prepared = _prepare(session, url, headers)
        except (requests.RequestException, ValueError) as exc:
            raise FetchError(f"invalid URL {url!r}: {exc}", source_id=source.id) from exc
        url = prepared.url or url
        if url in seen:
            raise FetchError(f"redirect loop: {url} was already visited", source_id=source.id)
        seen.add(url)
        check_url(url, source_id=source.id)  # the addresses are checked when connecting

        remaining = deadline_at - time.monotonic()
        if remaining <= 0:
            raise deadline_error(source.id, options.deadline)
        response = _send(session, adapters.for_url(session, url, source.id), prepared,
                         (min(options.connect_timeout, remaining),
                          min(options.read_timeout, remaining)))
        sock = response_socket(response)
        check_response_peer(response, sock, policy, urlsplit(url).hostname or url)
        watchdog.track(sock)
        try:
            if response.is_redirect:
                location = session.get_redirect_target(response) or ""
                hops += 1
                if hops > options.max_redirects:
                    raise FetchError(
                        f"too many redirects: more than {options.max_redirects} "
                        f"(last hop {url} → {location})", source_id=source.id)
                try:
                    url = urljoin(url, location)
                except ValueError as exc:
                    raise FetchError(f"invalid redirect Location {location!r}: {exc}",
                                     source_id=source.id) from exc
                permanent_so_far = permanent_so_far and response.status_code in (301, 308)
                if permanent_so_far:
                    moved_to = url
                continue
            result = _finish(source, options, validators, response, url, watchdog, started,
                             deadline_at)
            return replace(result, permanent_redirect=moved_to) if moved_to else result
        finally:
            response.close()  # never drain: a redirect or error body may be endless


def _prepare(session: requests.Session, url: str,
             headers: dict[str, str]) -> requests.PreparedRequest:
    """The GET ``Session.prepare_request`` would build — the session's headers under this
    call's, its cookies, params and auth — without its generic merging (a copy of the
    whole cookie jar, hooks, netrc: a third of a 304's CPU), and with the URL's own
    preparation (parsing, IDNA, requoting: the same result for the same URL) done once per
    URL.  The steps are ``PreparedRequest.prepare``'s, in its order."""
    merged = CaseInsensitiveDict(session.headers)
    merged.update(headers)
    prepared = requests.PreparedRequest()
    prepared.prepare_method("GET")
    if session.params:
        prepared.prepare_url(url, session.params)
    else:
        prepared.url = _prepared_url(url)
    prepared.prepare_headers({name: value for name, value in merged.items() if value is not None})
    prepared.prepare_cookies(session.cookies)
    prepared.prepare_body(None, None)
    prepared.prepare_auth(session.auth, url)
    prepared.prepare_hooks(None)
    return prepared


@functools.lru_cache(maxsize=4096)
def _prepared_url(url: str) -> str:
    """``url`` as ``PreparedRequest.prepare_url`` spells it (raises as it does)."""
    prepared = requests.PreparedRequest()
    prepared.prepare_url(url, None)
    return prepared.url or url


def _keep_alive(response: requests.Response) -> None:
    """Give a 304's connection back to the session's pool instead of closing it.

    A 304 ends at its headers (``http.client`` reads no body for it, whatever the server
    says), so there is nothing to drain; closing it would make every re-poll of a portal
    with many feeds a new TCP (and TLS) connection.  A 2xx whose body was read to the end
    goes back by itself; redirects and errors are closed, never drained.
    """
    raw = response.raw
    try:
        raw.drain_conn()  # reads nothing: marks the exchange complete
        raw.release_conn()
    except Exception:  # a connection that cannot be kept is closed instead (finally)
        return


def _send(session: requests.Session, adapter: WatchedAdapter,
          prepared: requests.PreparedRequest, timeout: tuple[float, float]) -> requests.Response:
    # Not ``session.send``: with allow_redirects=False it still reads a redirect response's
    # whole body into memory (to compute ``Response.next``), with no size limit.  No
    # proxies: ``Adapters.for_url`` refused a session that has any.
    response = adapter.send(prepared, stream=True, timeout=timeout, verify=session.verify,
                            cert=session.cert, proxies={})
    if "set-cookie" in response.headers:  # (case-insensitive) the jar reads nothing else
        extract_cookies_to_jar(session.cookies, prepared, response.raw)
    return response


def _finish(source: Source, options: FetchOptions, validators: Validators,
            response: requests.Response, url: str, watchdog: Watchdog, started: float,
            deadline_at: float) -> FetchResult:
    status = response.status_code
    headers = dict(response.headers.items())
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
