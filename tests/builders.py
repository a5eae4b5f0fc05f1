"""The record and document builders the test modules share: plain functions, imported as
``from builders import make_article`` (tests/ is on ``sys.path``, as for served_site).

Not a test module (pytest does not collect it).  Each builder fills every field with a
default and takes keyword overrides; a module that needs other defaults passes them at
the call site or keeps a one-line ``functools.partial`` of the builder.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from aggregator.records import Article, Source

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def make_article(key: str = "k1", **overrides: Any) -> Article:
    """An Article of source ``src`` dated ``T0``; ``key`` also names its guid, link, title,
    content, summary and content hash unless those are overridden."""
    fields: dict[str, Any] = {
        "source_id": "src",
        "key": key,
        "guid": key,
        "link": f"https://example.com/{key}",
        "title": f"Title {key}",
        "author": "Author",
        "date": T0,
        "date_from_feed": True,
        "categories": ("news",),
        "content": f"<p>Body {key}</p>",
        "summary": f"Body {key}",
        "headimg": None,
        "thumbnail": None,
        "comments": False,
        "first_seen": T0,
        "updated_at": T0,
        "content_hash": f"hash-{key}",
    }
    fields.update(overrides)
    return Article(**fields)


def make_source(url: str = "http://portal.test/feed.xml", source_id: str = "portal",
                **overrides: Any) -> Source:
    """A Source named ``Portal`` in category ``c``; any other field as an override."""
    fields: dict[str, Any] = {"name": "Portal", "categories": ("c",)}
    fields.update(overrides)
    return Source(id=source_id, url=url, **fields)


def rss_items(items: str, *, title: str = "频道", link: str | None = "http://portal.test/",
              encoding: str = "utf-8") -> str:
    """An RSS 2.0 document (text, so a test can encode it as it likes) around raw item XML;
    ``encoding`` is only what the XML declaration says, ``link`` (None: none) the channel's."""
    channel_link = "" if link is None else f"<link>{link}</link>"
    return (
        f'<?xml version="1.0" encoding="{encoding}"?>\n<rss version="2.0"><channel>'
        f"<title>{title}</title>{channel_link}{items}</channel></rss>"
    )


def rss_document(*titles: str, link: str = "http://p.test/{index}") -> bytes:
    """A UTF-8 RSS 2.0 feed titled ``P`` with one item per title; each item's link is
    ``link`` formatted with the item's ``index`` and ``title``."""
    items = "".join(
        f"<item><title>{t}</title><link>{link.format(index=i, title=t)}</link></item>"
        for i, t in enumerate(titles)
    )
    return rss_items(items, title="P", link=None).encode()


def opml_export(reader: str) -> bytes:
    """A small OPML export as ``reader`` (miniflux, freshrss, feedly, newsboat) writes
    one, from tests/fixtures/opml/."""
    return (Path(__file__).resolve().parent / "fixtures" / "opml" / f"{reader}.opml").read_bytes()


def write_config_file(path: Path, settings: list[str], sources: dict[str, str], *,
                      written: datetime | None = None) -> Path:
    """A config file: ``settings`` lines, then ``sources`` (id -> URL, category 新闻); its
    modification time set to ``written`` when given (configs are compared by it)."""
    lines = [*settings, "sources:"]
    for source_id, url in sources.items():
        lines += [f"  - id: {source_id}", f"    name: {source_id}", f'    url: "{url}"',
                  "    categories: [新闻]"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if written is not None:
        os.utime(path, (written.timestamp(), written.timestamp()))
    return path


def database_rows(database: str, query: str) -> list[tuple[object, ...]]:
    """The rows ``query`` returns from the database at URL ``database`` (SQLite or
    PostgreSQL), read on a connection of its own that is closed before returning, so a
    test can check what a separate process committed without holding a lock on it."""
    engine = create_engine(database, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(query))]
    finally:
        engine.dispose()


class LogWatcher:
    """Collects a process's stderr lines; waits for a line matching a pattern."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, pattern: str, *, after: int = 0, timeout: float = 30) -> re.Match[str]:
        regex = re.compile(pattern)
        found: list[re.Match[str]] = []

        def seen() -> bool:
            for line in self.lines[after:]:
                if match := regex.search(line):
                    found.append(match)
                    return True
            return False

        with self._changed:
            if not self._changed.wait_for(seen, timeout=timeout):
                tail = "\n".join(self.lines[-30:])
                raise AssertionError(f"no log line matching {pattern!r}; last lines:\n{tail}")
        return found[0]

    def wait_closed(self, timeout: float = 10) -> list[str]:
        """Every line, once the process closed its stderr (it has exited): for a test that
        counts what a stopped process logged, none of it still in the pipe."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the process's stderr is still open"
        with self._changed:
            return list(self.lines)


class LoopbackPortal(ThreadingHTTPServer):
    """A loopback portal: ``/<name>.xml`` is a one-item feed (titled ``<name> 一``).

    Every request is recorded (name and time) and counted while it runs (``peak``);
    answers wait while ``release`` is clear (``held=True`` starts that way), so a test can
    keep polls in flight.  ``arrived`` is released once per request.
    """

    daemon_threads = True

    def __init__(self, address: str = "127.0.0.1", *, held: bool = False) -> None:
        self.release = threading.Event()
        if not held:
            self.release.set()
        self.arrived = threading.Semaphore(0)
        self.requests: list[tuple[str, float]] = []
        self.changed = threading.Condition()
        self.active = self.peak = 0
        portal = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.strip("/").removesuffix(".xml")
                with portal.changed:
                    portal.requests.append((name, time.monotonic()))
                    portal.active += 1
                    portal.peak = max(portal.peak, portal.active)
                    portal.changed.notify_all()
                portal.arrived.release()
                portal.release.wait(60)
                with portal.changed:
                    portal.active -= 1
                body = rss_document(f"{name} 一", link=f"http://portal.test/{name}/{{index}}")
                self.send_response(200)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        super().__init__((address, 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://{self.server_address[0]}:{self.server_address[1]}/{path}"

    def fetches(self) -> dict[str, list[float]]:
        """Request times by name."""
        with self.changed:
            return self._by_name()

    def _by_name(self) -> dict[str, list[float]]:
        found: dict[str, list[float]] = {}
        for name, at in self.requests:
            found.setdefault(name, []).append(at)
        return found

    def wait_for_requests(self, count: int, timeout: float) -> list[str]:
        """The names of the first ``count`` requests, once they have arrived."""
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.requests) >= count, timeout=timeout)
            return [name for name, _ in self.requests]

    def wait_until_each_fetched(self, times: int, names: int, timeout: float) -> bool:
        """Whether ``names`` different feeds were each asked ``times`` times in time."""
        def enough() -> bool:
            found = self._by_name()
            return len(found) == names and min(len(v) for v in found.values()) >= times

        with self.changed:
            return self.changed.wait_for(enough, timeout=timeout)

    def close(self) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()


# -- article pages of a Chinese portal (full_text) --------------------------------------

# What a portal prints around every article: none of it may reach an extracted article.
PORTAL_BOILERPLATE = (
    "网站首页", "国内新闻", "国际新闻", "财经频道", "科技频道", "体育频道", "娱乐频道",
    "当前位置：首页 > 科技 > 正文",
    "热门排行", "一周热点：多地出台新政支持新能源汽车下乡，购车补贴最高可达一万元",
    "相关阅读：工业互联网平台建设步伐加快，中小企业数字化转型迎来新机遇",
    "网友评论", "北京网友：写得很好，希望国家继续加大对基础研究的投入，让更多年轻人安心做科研。",
    "上海网友：期待这些成果早日走进寻常百姓家，也希望价格能够更加亲民一些，大家都用得起。",
    "分享到微信朋友圈", "关于我们", "广告服务", "联系我们",
    "版权所有 示例新闻网 京ICP备12345678号 京公网安备11010502030000号",
)
ARTICLE_PARAGRAPHS = (
    "本报北京5月21日电 记者从工业和信息化部获悉，今年前四个月，我国工业互联网产业规模"
    "继续保持较快增长，重点平台连接设备数量已超过九千万台（套），服务企业超过二十万家。",
    "业内专家表示，随着5G、人工智能等新技术与制造业深度融合，越来越多的工厂开始"
    "利用数据优化生产流程，产品不良率明显下降，能源消耗持续减少，综合效益显著提升。",
    "据介绍，下一步将加快建设一批具有国际影响力的工业互联网平台，推动中小企业“上云用数赋智”，"
    "并完善标识解析体系，力争到2025年底实现重点行业全覆盖。",
    "在长三角、珠三角等制造业集聚区，已有不少企业尝到了数字化转型的甜头。一家汽车零部件"
    "企业负责人说，引入智能排产系统后，订单交付周期缩短了三分之一。",
    "专家同时提醒，数字化转型不是简单的设备更新，更需要管理理念和人才结构的同步升级，"
    "各地应因地制宜，避免一哄而上。",
)


def portal_article_page(title: str = "我国工业互联网产业规模持续扩大",
                        paragraphs: tuple[str, ...] = ARTICLE_PARAGRAPHS, *,
                        images: tuple[str, ...] = (
                            '<img src="/images/grey.gif" data-src="/upload/2024/05/a1.jpg"'
                            ' alt="">',
                            '<img src="/images/loading.png" data-original="//img.portal.test'
                            '/upload/2024/05/a2.jpg">',
                            '<img data-lazy-src="http://img.portal.test/upload/a3.png">'),
                        charset: str = "gb2312") -> str:
    """A portal's article page (text: encode it as ``charset`` says): navigation,
    breadcrumb, share bar, related links, comments, a sidebar and a footer around
    ``div.article-content``, which holds the paragraphs and, after the first, second and
    fourth of them, the lazy-loaded ``images`` (placeholder ``src``, real URL elsewhere)."""
    nav = "".join(f'<li><a href="/{i}/">{name}</a></li>' for i, name in enumerate(
        PORTAL_BOILERPLATE[:7]))
    body: list[str] = []
    after = dict(zip((0, 1, 3), images, strict=False))  # paragraph index → image
    for index, paragraph in enumerate(paragraphs):
        body.append(f'<p style="text-indent:2em">{paragraph}</p>')
        if index in after:
            body.append(f'<p style="text-align:center">{after[index]}</p>')
    related = "".join(f'<li><a href="/tech/2024/05/{n}.html">{PORTAL_BOILERPLATE[9 + n]}</a></li>'
                      for n in range(2))
    comments = "".join(f'<div class="comment-item"><p>{c}</p><span>2024-05-21 11:0{n}</span>'
                       '<a href="#">回复</a> <a href="#">点赞(12)</a></div>'
                       for n, c in enumerate(PORTAL_BOILERPLATE[12:14]))
    return f"""<!DOCTYPE html>
<html><head><meta charset="{charset}"><title>{title}_科技频道_示例新闻网</title>
<meta name="keywords" content="工业互联网,数字化转型">
<script>var _hmt = _hmt || [];
(function() {{ var hm = document.createElement("script"); }})();</script>
<link rel="stylesheet" href="/css/main.css"></head>
<body>
<div id="top-nav" class="nav"><ul>{nav}</ul></div>
<div class="breadcrumb">{PORTAL_BOILERPLATE[7]}</div>
<div class="main clearfix">
 <div class="left">
  <h1 class="article-title">{title}</h1>
  <div class="article-info"><span>2024-05-21 10:30</span> <span>来源：示例新闻网</span></div>
  <div class="article-content" id="content">
{"".join(body)}
  </div>
  <div class="share">{PORTAL_BOILERPLATE[14]} <a href="#">微博</a> <a href="#">QQ空间</a></div>
  <div class="related"><h3>相关阅读</h3><ul>{related}</ul></div>
  <div class="comments" id="comments"><h3>{PORTAL_BOILERPLATE[11]}</h3>{comments}</div>
 </div>
 <div class="right sidebar">
  <h3>{PORTAL_BOILERPLATE[8]}</h3>
  <ol><li><a href="/hot/1.html">{PORTAL_BOILERPLATE[9]}</a></li>
  <li><a href="/hot/2.html">高温天气持续 多地电网负荷创历史新高</a></li></ol>
 </div>
</div>
<div class="footer"><a href="/about">{PORTAL_BOILERPLATE[15]}</a> |
<a href="/ad">{PORTAL_BOILERPLATE[16]}</a> | <a href="/contact">{PORTAL_BOILERPLATE[17]}</a>
<p>Copyright &copy; 2024 {PORTAL_BOILERPLATE[18]}</p></div>
<script src="/js/stat.js"></script>
</body></html>"""
