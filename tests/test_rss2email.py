"""A second real feed reader: rss2email imports feeds.opml and mails every article.

The site is built for real (write_feeds + render_index) under a sub-path site URL and
served by FeedServer on 127.0.0.1.  rss2email (``r2e``, Debian package rss2email) runs
with HOME, the XDG dirs, its config and its data file inside tmp_path:

1. ``r2e new`` and ``r2e opmlimport feeds.opml``: every outline becomes a feed (rss2email
   names a feed after its outline's title and refuses a second feed of the same name, so
   this fails when the RSS and Atom outlines of a category share a title); ``r2e list``
   shows each feed URL the OPML lists, once.
2. ``r2e run`` with ``sendmail`` pointed at a script that keeps each message in a folder:
   every feed is fetched and every article of it arrives as one mail, CJK subjects
   included, naming the feed it came from.
3. ``r2e run --no-send``: the feeds are asked again with the validators rss2email kept,
   the server answers 304 and nothing new is mailed.

Skipped only when r2e is absent (apt-get install rss2email).
"""

from __future__ import annotations

import configparser
import email
import email.policy
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from lxml import etree
from served_site import BuiltSite, build_site

from aggregator.publish.paths import OPML_FILENAME, category_paths
from aggregator.service.http import FeedServer, make_app

R2E = shutil.which("r2e", path="/usr/bin:/bin:/usr/local/bin")
RUN_TIMEOUT = 120  # seconds per r2e invocation
RECIPIENT = "reader@example.invalid"

pytestmark = pytest.mark.skipif(
    R2E is None, reason="r2e is absent (apt-get install rss2email)"
)

# Stands in for /usr/sbin/sendmail: r2e pipes each message to it; it keeps the message.
FAKE_SENDMAIL = """\
import sys, tempfile
with tempfile.NamedTemporaryFile(dir={outbox!r}, suffix=".eml", delete=False) as out:
    out.write(sys.stdin.buffer.read())
"""


class Recorder:
    """WSGI middleware remembering (percent-encoded path, status, conditional?) of every
    request."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.seen: list[tuple[str, str, bool]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        conditional = "HTTP_IF_NONE_MATCH" in environ or "HTTP_IF_MODIFIED_SINCE" in environ
        path = quote(environ["PATH_INFO"].encode("latin-1"))  # WSGI's str is the raw bytes

        def record(status: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
            with self.lock:
                self.seen.append((path, status[:3], conditional))
            return start_response(status, headers, *rest)

        return self.app(environ, record)

    def take(self) -> list[tuple[str, str, bool]]:
        with self.lock:
            seen, self.seen = self.seen, []
        return seen


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[FeedServer, BuiltSite, Recorder]]:
    recorder = Recorder(make_app(tmp_path / "out", "http://placeholder/news/"))
    with FeedServer(recorder) as server:
        built = build_site(tmp_path, server.url + "news/")
        yield server, built, recorder


class Reader:
    """``r2e`` with its config, data and home all under ``home``."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.config = home / ".config" / "rss2email.cfg"
        self.data = home / ".local" / "share" / "rss2email.json"
        self.config.parent.mkdir(parents=True)
        self.data.parent.mkdir(parents=True)

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "XDG_DATA_HOME": str(self.home / ".local" / "share"),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "no_proxy": "*",
        }
        assert R2E is not None
        result = subprocess.run(
            [R2E, "-c", str(self.config), "-d", str(self.data), *args],
            env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=RUN_TIMEOUT, check=False,
        )
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result

    def send_with(self, sendmail: Path) -> None:
        """Point rss2email's sendmail at ``sendmail`` (and keep the rest of its config)."""
        config = configparser.ConfigParser(interpolation=None)
        config.read(self.config, encoding="utf-8")
        config["DEFAULT"]["email-protocol"] = "sendmail"
        config["DEFAULT"]["sendmail"] = str(sendmail)
        with self.config.open("w", encoding="utf-8") as out:
            config.write(out)


def listed_feeds(output: str) -> dict[str, str]:
    """``r2e list`` lines (``0: [*] NAME (URL -> TO)``) as {url: name}."""
    feeds: dict[str, str] = {}
    for line in output.splitlines():
        match = re.fullmatch(r"\d+: \[\*\] (\S+) \((\S+) -> (\S+)\)", line.strip())
        assert match, line
        name, url, to = match.groups()
        assert to == RECIPIENT
        assert url not in feeds, f"{url} imported twice"
        feeds[url] = name
    return feeds


def received(outbox: Path) -> dict[str, list[str]]:
    """{feed URL: subjects of the mails from it} of every message sendmail was given."""
    mails: dict[str, list[str]] = {}
    for path in sorted(outbox.glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        mails.setdefault(str(message["X-RSS-Feed"]), []).append(str(message["Subject"]))
    return mails


def test_rss2email_imports_the_opml_and_mails_every_article(
    served: tuple[FeedServer, BuiltSite, Recorder], tmp_path: Path
) -> None:
    server, built, recorder = served
    opml = built.output_dir / OPML_FILENAME
    tree = etree.fromstring(opml.read_bytes())
    outlines = [node for node in tree.iter("outline") if node.get("xmlUrl")]
    listed = [node.get("xmlUrl") for node in outlines]
    assert len(listed) == len(set(listed)) == 2 * len(built.categories)
    expected: dict[str, set[str]] = {}
    for category in built.categories:
        paths = category_paths(category)
        for relative in (paths.rss, paths.atom):
            url = server.url + "news/" + quote(relative)
            expected[url] = {a.title for a in built.by_category[category]}
    assert set(expected) == set(listed)

    reader = Reader(tmp_path / "home")
    reader("new", RECIPIENT)

    # 1. Import every outline, each as its own feed.
    reader("opmlimport", str(opml))
    feeds = listed_feeds(reader("list").stdout)
    assert sorted(feeds) == sorted(listed)
    assert len(set(feeds.values())) == len(listed)  # distinct names, one per outline
    names = {url: feeds[url] for url in listed}
    for category in built.categories:
        paths = category_paths(category)
        rss_name = names[server.url + "news/" + quote(paths.rss)]
        atom_name = names[server.url + "news/" + quote(paths.atom)]
        assert rss_name.endswith("RSS-") and atom_name.endswith("Atom-"), (rss_name, atom_name)
        assert rss_name.startswith(category.split()[0])  # readable: the category's name

    # 2. Fetch every feed; every article arrives as one mail naming its feed.
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    sendmail = tmp_path / "sendmail"
    sendmail.write_text(f"#!{sys.executable}\n" + FAKE_SENDMAIL.format(outbox=str(outbox)))
    sendmail.chmod(0o755)
    reader.send_with(sendmail)
    recorder.take()
    reader("run")
    first = recorder.take()
    fetched = {path for path, status, _ in first if status == "200"}
    assert fetched == {"/news/" + quote(category_paths(c).rss) for c in built.categories} | {
        "/news/" + quote(category_paths(c).atom) for c in built.categories
    }
    mails = received(outbox)
    assert set(mails) == set(listed)
    for url, subjects in mails.items():
        assert len(subjects) == len(expected[url]), url  # one mail per article, none twice
        assert set(subjects) == expected[url], url
    assert any("工业互联网" in s for subjects in mails.values() for s in subjects)

    # 3. Again, without sending: conditional requests, 304s, nothing new mailed.
    count = len(list(outbox.glob("*.eml")))
    reader("run", "--no-send")
    again = recorder.take()
    assert sorted(path for path, _, _ in again) == sorted(path for path, _, _ in first)
    assert all(status == "304" and conditional for _, status, conditional in again), again
    assert len(list(outbox.glob("*.eml"))) == count
