"""waitress around a WSGI app: in a background thread (``FeedServer``) or the foreground.

Why: ``aggregator run`` and the tests serve the app beside the scheduler, so they
need a server that starts on a known (or ephemeral) port, reports its URL and
stops cleanly — letting in-flight requests finish and freeing the port.
``aggregator serve`` only serves, in the foreground (``serve_forever``, which logs
where it listens and stops on SIGTERM as on Ctrl-C).  waitress is a production
server; untrusted proxy headers are cleared.  Both wrap the app in
``access.AccessLog``, so either logs one access record a request when the access
log is on.

What this module must NOT do: know what the app serves (any WSGI app works), or
poke waitress' event loop from another thread except through its trigger.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any
from wsgiref.types import WSGIApplication

from waitress.server import create_server

from aggregator.service.http.access import AccessLog

__all__ = ["SERVER_IDENT", "FeedServer", "serve_forever"]

log = logging.getLogger(__name__)

SERVER_IDENT = "aggregator"


class FeedServer:
    """waitress serving ``app`` in a background thread; ``port=0`` picks a free port.

    ``with FeedServer(app) as server: requests.get(server.url + "feeds.opml")``.
    """

    def __init__(
        self, app: WSGIApplication, host: str = "127.0.0.1", port: int = 0, threads: int = 8
    ) -> None:
        self._app = AccessLog(app)
        self._host = host
        self._port = port
        self._threads = threads
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> FeedServer:
        """Bind and start serving; returns once the socket listens (requests can connect)."""
        if self._server is not None:
            raise RuntimeError("FeedServer already started")
        # One address only (waitress would listen on each address "localhost" resolves to).
        *_, address = socket.getaddrinfo(
            self._host, self._port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )[0]
        host = str(address[0])
        server = create_server(
            self._app, host=host, port=self._port, threads=self._threads,
            ident=SERVER_IDENT, clear_untrusted_proxy_headers=True,
        )
        self._server = server
        self._thread = threading.Thread(
            target=server.run, name=f"feed-server-{server.effective_port}", daemon=True
        )
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FeedServer not started")
        return int(self._server.effective_port)

    @property
    def host(self) -> str:
        if self._server is None:
            raise RuntimeError("FeedServer not started")
        return str(self._server.effective_host)

    @property
    def url(self) -> str:
        """``http://host:port/`` (IPv6 hosts bracketed)."""
        return _url(self.host, self.port)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish (up to ``timeout``), then close all.

        Idempotent.  Every socket is closed from inside the event loop's own
        thread (waitress is not thread-safe otherwise); the loop ends as soon as
        its socket map is empty.
        """
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._server = None
        self._thread = None
        from waitress import wasyncore

        srv: Any = server

        def in_loop(action: Callable[[], None]) -> None:
            if not thread.is_alive():
                action()
                return
            done = threading.Event()

            def thunk() -> None:
                try:
                    action()
                finally:
                    done.set()

            try:
                srv.trigger.pull_trigger(thunk)
            except OSError:
                # The loop may run the thunk between its append and the wake-up write
                # (another thread's pull woke it); a thunk that closed the trigger
                # leaves -1 there, so the write fails harmlessly — only then.
                if not done.is_set():
                    raise
            if not done.wait(timeout):
                log.warning("feed server event loop did not respond within %.0f s", timeout)

        def close_everything() -> None:
            # A worker thread that outlived the drain must not write its wake-up
            # byte into a closed (and maybe reused) file descriptor.
            srv.trigger.trigger = -1
            wasyncore.close_all(srv._map, ignore_all=True)

        in_loop(lambda: wasyncore.dispatcher.close(srv))  # the listening socket only
        srv.task_dispatcher.shutdown(timeout=timeout)  # workers finish their current request
        in_loop(close_everything)
        thread.join(timeout)
        if thread.is_alive():
            log.warning("feed server thread did not stop within %.0f s", timeout)

    def __enter__(self) -> FeedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve_forever(app: WSGIApplication, host: str, port: int, *,
                  serving: str = "serving") -> None:
    """Serve ``app`` with waitress in the foreground until SIGINT or SIGTERM
    (``aggregator serve``); logs ``<serving> (listening on URL[, URL])`` once the
    sockets listen.  A host name is served on every address it resolves to."""
    server: Any = create_server(AccessLog(app), host=host, port=port, ident=SERVER_IDENT,
                                clear_untrusted_proxy_headers=True)
    listening = getattr(server, "effective_listen", None) or [
        (server.effective_host, server.effective_port)]
    log.info("%s (listening on %s)", serving,
             ", ".join(_url(str(h), int(p)) for h, p in listening))

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(0)  # waitress' loop closes its sockets on SystemExit

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, on_term)
    try:
        server.run()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    log.info("server stopped")
