"""The service: what keeps the aggregator running as a process.

Owns ``scheduler`` (one job per source on APScheduler, host slots, debounced builds,
retention, live reload), ``process`` (``aggregator run``: signals, the config file
watch, scheduler + HTTP server in one process), ``http`` (the WSGI app serving the
published files, ``/healthz`` and ``/metrics`` with waitress), ``health`` (the pure
health summary), ``metrics`` (Prometheus collectors), ``logs`` (text/JSON log lines)
and ``wiring`` (the long-lived objects built from settings: poll options, the parse
worker pool, the retention rule).

The service wires intake, the store and publishing together; it must NOT fetch,
parse, decide a poll or render a file itself — it calls those that do — and nothing
below it (records, intake, storage, publishing) may import it.  Only the CLI does.
"""
