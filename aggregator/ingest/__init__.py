"""Intake: portals in, ``Article`` records and one decision per poll out.

Owns everything between a portal and the store:

- ``fetch`` (a package, the only importer of urllib3): conditional GET,
  redirects, the address guard, the deadline watchdog, body limits and decoding;
- ``parse`` (the only importer of feedparser): encodings, RSS/Atom/JSON Feed into
  ``ParsedFeed`` records; ``normalize`` (the only importer of nh3): entries into
  ``Article`` records, sanitized, with absolute URLs and the image proxy;
- ``extract``: parse → normalize of one document, what a parse worker runs, under
  the ``sandbox`` budget (worker processes with a time and memory limit);
- ``decide``: the poll's pure decisions (plan before the fetch, ``SourceUpdate``
  after it); ``poll``: the sequence plan → fetch → parse → normalize → decide →
  commit for one source, and many sources on a thread pool with per-host limits;
- for the operator's ``aggregator sources`` commands: ``discover`` (a page's
  ``<link rel="alternate">`` feeds, test-parsed) and ``subscriptions`` (other readers'
  OPML lists in).

Intake must NOT import the store, publishing or the service: the store comes in as
a small protocol (``poll.PollStore``), fetch is injected, and settings arrive as the
option records of ``aggregator.records``.  It never writes files.
"""
