"""The ``aggregator run`` process: scheduler + HTTP server + signals + file watch.

The scheduler (``service.scheduler``) and the HTTP side (``service.http``) know nothing of
each other or of the process they run in; this module puts them in one process:

- SIGTERM / SIGINT: stop scheduling, let in-flight polls finish within
  ``shutdown_timeout``, stop the server, return 0 (the CLI closes the database);
- SIGHUP, or any change of the config file (``watchfiles``, watching the folder so
  editors that replace the file are seen too): reload the config;
- the HTTP server serves ``output_dir`` plus ``/healthz`` and ``/metrics`` from
  the same scheduler state;
- before any of its threads start, malloc's arenas are bounded (``service.memory``).

Signal handlers only enqueue a word; the main thread does the work, so nothing
heavy ever runs inside a handler.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
from pathlib import Path
from types import FrameType

from aggregator.config import Settings
from aggregator.ingest.poll import utc_now
from aggregator.service.health import ConfigState, health_report
from aggregator.service.http import FeedServer, make_app
from aggregator.service.http.images import image_settings
from aggregator.service.memory import bound_malloc_arenas
from aggregator.service.metrics import Metrics
from aggregator.service.scheduler import Scheduler
from aggregator.service.worker import ClaimWorker
from aggregator.store import Store

log = logging.getLogger(__name__)

STOP = "stop"
RELOAD = "reload"


ROLES = ("all", "worker", "web")


def run_service(settings: Settings, store: Store, *, host: str, port: int | None,
                role: str = "all") -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code.

    ``all``: one process schedules its polls in memory (``Scheduler``) and serves.
    ``worker``: polls what the database says is due, with any number of peers
    (``ClaimWorker``); serves ``/healthz`` and ``/metrics`` only when given a ``port``.
    ``web``: serves the published files and health, polls nothing.
    """
    bound_malloc_arenas()  # before this process starts its threads (see service.memory)
    events: queue.SimpleQueue[str] = queue.SimpleQueue()
    metrics = Metrics()
    engine: Scheduler | ClaimWorker | None = None
    if role == "all":
        engine = Scheduler(settings, store, metrics)
    elif role == "worker":
        engine = ClaimWorker(settings, store, metrics)

    served = ConfigState(settings.config_path, utc_now())  # the web role never reloads

    def health() -> dict[str, object]:
        current = engine.settings if engine is not None else settings
        state = engine.config_state if engine is not None else served
        return health_report(current.source_list(), store.statuses(), utc_now(), state)

    server = None
    if port is not None:
        app = make_app(settings.output_dir, str(settings.site_url), health=health,
                       metrics=metrics, images=image_settings(settings))
        server = FeedServer(app, host=host, port=port)
    previous = _install_signal_handlers(events)
    watcher_stop = threading.Event()
    watcher = _watch_config(settings.config_path, events, watcher_stop) if engine else None
    finished = True
    try:
        if server is not None:
            server.start()
            log.info("serving %s at %s (listening on %s)", settings.output_dir,
                     settings.site_url, server.url)
        if engine is not None:
            engine.start()
        while True:
            try:
                event = events.get(timeout=1.0)
            except queue.Empty:
                continue
            if event == STOP:
                break
            if event == RELOAD and engine is not None:
                engine.reload()
    finally:
        log.info("shutting down")
        watcher_stop.set()
        if engine is not None:
            finished = engine.stop()
        if server is not None:
            server.stop()
        if watcher is not None:
            watcher.join(timeout=5)
        _restore_signal_handlers(previous)
    if not finished:
        log.warning("some polls did not finish in time; their sources will be polled again")
    log.info("daemon stopped")
    return 0


def _install_signal_handlers(events: queue.SimpleQueue[str]) -> dict[int, object]:
    def on_stop(signum: int, _frame: FrameType | None) -> None:
        events.put(STOP)

    def on_reload(signum: int, _frame: FrameType | None) -> None:
        events.put(RELOAD)

    previous: dict[int, object] = {}
    for signum, handler in ((signal.SIGTERM, on_stop), (signal.SIGINT, on_stop),
                            (signal.SIGHUP, on_reload)):
        previous[signum] = signal.signal(signum, handler)
    return previous


def _restore_signal_handlers(previous: dict[int, object]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)  # type: ignore[arg-type]


def _watch_config(path: Path | None, events: queue.SimpleQueue[str],
                  stop: threading.Event) -> threading.Thread | None:
    """Enqueue RELOAD whenever the config file changes; None when there is no file."""
    if path is None:
        return None
    from watchfiles import watch

    target = path.resolve()

    def changed(_change: object, changed_path: str) -> bool:
        return Path(changed_path).name == target.name

    def loop() -> None:
        try:
            for _ in watch(target.parent, watch_filter=changed, stop_event=stop,
                           debounce=300, raise_interrupt=False):
                log.info("config file changed: %s", target)
                events.put(RELOAD)
        except Exception:  # a watcher failure must not take the daemon down; SIGHUP still works
            log.exception("config file watcher stopped")

    thread = threading.Thread(target=loop, name="config-watch", daemon=True)
    thread.start()
    return thread
