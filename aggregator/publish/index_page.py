"""Render ``index.html``: the page people see at the site root.

Why: a person who opens the site in a browser (often a phone) should find the
category feeds to subscribe to and the latest articles, in the site's language
(``FeedOptions.language`` picks the built-in words, ``publish.language``; the
introduction can be configured), with each article's source by its configured name.
The page is one static file written next to the feeds, with inline CSS, no
script and no outside resource except article thumbnails, and a
Content-Security-Policy that forbids scripts outright.

Every value from a feed is hostile until escaped: text and attributes go
through ``html.escape``; only absolute ``http``/``https`` URLs may appear in an
``href`` or ``src`` (anything else, ``javascript:`` included, is dropped).  The
normalize stage already made the article's URLs web URLs, but a record does not
guarantee it and this page is where a script would run, so they are checked again
with the one rule, ``rules.web_url``.  Dates and titles are trusted: an
``Article`` always has aware UTC dates and a title that shows something.

Output is a pure function of the input (no "now", no randomness), so an
unchanged site gives byte-identical files that ``write_atomic`` leaves alone.

What this module must NOT do: write files, read the store or the network,
choose which articles are "latest" (the caller passes them, newest first), or
sanitize/allow any HTML from articles (summaries are shown as plain text).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from urllib.parse import quote

from aggregator.publish.language import words_for
from aggregator.publish.paths import OPML_FILENAME, category_paths
from aggregator.records import Article, FeedOptions
from aggregator.rules import web_url

__all__ = ["render_index"]


_MAX_SUMMARY_CHARS = 300

# Scripts, frames, forms, fonts, fetches: none.  Inline styles and http(s) images only.
_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src http: https:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_CSS = """
:root { color-scheme: light dark; --fg: #1f2328; --muted: #656d76; --line: #d8dee4;
  --bg: #ffffff; --card: #f6f8fa; --link: #0b57d0; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e6edf3; --muted: #9198a1; --line: #30363d; --bg: #0d1117;
    --card: #161b22; --link: #7aa7ff; }
}
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; text-size-adjust: 100%; }
body { margin: 0; background: var(--bg); color: var(--fg); line-height: 1.7;
  font-family: -apple-system, BlinkMacSystemFont, "Segoe UI", "PingFang SC",
    "Hiragino Sans GB", "Microsoft YaHei", "Noto Sans CJK SC", "Source Han Sans SC",
    "WenQuanYi Micro Hei", "Helvetica Neue", Arial, sans-serif;
  overflow-wrap: anywhere; word-break: break-word; }
:lang(zh-Hant) body, :lang(zh-TW) body, :lang(zh-HK) body, :lang(zh-MO) body {
  font-family: -apple-system, BlinkMacSystemFont, "Segoe UI", "PingFang TC",
    "Microsoft JhengHei", "Noto Sans CJK TC", "Source Han Sans TC", "Helvetica Neue",
    Arial, sans-serif; }
a { color: var(--link); text-decoration: none; }
a:hover, a:focus { text-decoration: underline; }
.wrap { max-width: 1100px; margin: 0 auto; padding: 16px; }
header.site { border-bottom: 1px solid var(--line); margin-bottom: 16px; }
header.site h1 { font-size: 1.6rem; margin: 8px 0; }
header.site p { margin: 0 0 12px; color: var(--muted); }
.layout { display: grid; grid-template-columns: minmax(0, 1fr) 300px; gap: 24px;
  align-items: start; }
h2 { font-size: 1.15rem; margin: 0 0 12px; }
.cats ul { list-style: none; margin: 0; padding: 0; }
.cats li { display: flex; flex-wrap: wrap; align-items: baseline; gap: 4px 8px;
  padding: 8px 0; border-bottom: 1px solid var(--line); }
.cats .name { flex: 1 1 auto; min-width: 0; font-weight: 600; }
.cats .feed { font-size: .85rem; padding: 0 8px; border: 1px solid var(--line);
  border-radius: 999px; white-space: nowrap; }
.opml { display: inline-block; margin-top: 12px; }
.articles { list-style: none; margin: 0; padding: 0; }
.article { display: flex; gap: 12px; padding: 12px 0; border-bottom: 1px solid var(--line); }
.article .thumb { flex: 0 0 auto; width: 112px; height: 84px; object-fit: cover;
  border-radius: 6px; background: var(--card); }
.article .body { flex: 1 1 auto; min-width: 0; }
.article h3 { font-size: 1.05rem; margin: 0 0 4px; line-height: 1.5; }
.article .meta { margin: 0; font-size: .85rem; color: var(--muted); }
.article .meta span + span::before, .article .meta span + time::before,
.article .meta time + span::before { content: " · "; }
.article .summary { margin: 4px 0 0; font-size: .95rem; }
.empty { color: var(--muted); }
footer.site { margin-top: 24px; padding-top: 12px; border-top: 1px solid var(--line);
  font-size: .85rem; color: var(--muted); }
@media (max-width: 700px) {
  .wrap { padding: 12px; }
  .layout { grid-template-columns: minmax(0, 1fr); }
  .article .thumb { width: 84px; height: 63px; }
  header.site h1 { font-size: 1.35rem; }
}
""".strip()


def _e(value: object) -> str:
    """Escape for text and double-quoted attributes alike."""
    return html.escape(str(value), quote=True)


def _summary(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > _MAX_SUMMARY_CHARS:
        text = text[: _MAX_SUMMARY_CHARS - 1].rstrip() + "…"
    return text


# Each feed of a category: its ``CategoryFeedPaths`` field (also the link's class), media
# type, link text and the format's name in the alternate's title.  RSS first: a reader
# that takes the page's first alternate should pick it.
_FEED_KINDS = (("rss", "application/rss+xml", "RSS", "RSS"),
               ("atom", "application/atom+xml", "Atom", "Atom"),
               ("json", "application/feed+json", "JSON", "JSON Feed"))


def _category_item(category: str) -> str:
    paths = category_paths(category)
    name = category.strip() or paths.rss.split("/")[1]
    links = "".join(
        f' <a class="feed {kind}" href="{_e(quote(getattr(paths, kind)))}" type="{media}">'
        f"{text}</a>"
        for kind, media, text, _format in _FEED_KINDS
    )
    return f'<li><span class="name">{_e(name)}</span>{links}</li>'


def _article_item(article: Article, options: FeedOptions) -> str:
    parts: list[str] = ['<li class="article">']
    image = web_url(article.headimg) or web_url(article.thumbnail)
    if image:
        parts.append(
            f'<img class="thumb" src="{_e(image)}" loading="lazy"'
            ' referrerpolicy="no-referrer" alt="" width="112" height="84">'
        )
    parts.append('<div class="body">')
    title = article.title
    link = web_url(article.link)
    if link:
        parts.append(
            f'<h3><a href="{_e(link)}" rel="noopener noreferrer">{_e(title)}</a></h3>'
        )
    else:
        parts.append(f"<h3>{_e(title)}</h3>")
    source = options.source_names.get(article.source_id, "").strip() or article.source_id
    meta: list[str] = [f'<span class="source">{_e(source)}</span>']
    author = article.author.strip()
    if author:
        meta.append(f'<span class="author">{_e(author)}</span>')
    date = article.date.replace(microsecond=0)
    iso = date.isoformat().replace("+00:00", "Z")
    meta.append(f'<time datetime="{_e(iso)}">{date:%Y-%m-%d %H:%M}</time>')
    parts.append(f'<p class="meta">{"".join(meta)}</p>')
    summary = _summary(article.summary or "")
    if summary:
        parts.append(f'<p class="summary">{_e(summary)}</p>')
    parts.append("</div></li>")
    return "".join(parts)


def render_index(
    categories: Sequence[str],
    latest: Sequence[Article],
    options: FeedOptions,
    *,
    site_title: str = "Aggregator",
) -> bytes:
    """The UTF-8 bytes of ``index.html``: category feeds (RSS, Atom, JSON Feed, each also a
    ``<link rel="alternate">``), the OPML link, the latest articles.

    Links are relative to the page (it lives at the root of ``output_dir``) and
    percent-encoded.  Categories are listed once each, in the order given;
    articles in the order given (the caller passes the newest first).
    """
    unique = list(dict.fromkeys(categories))
    title = " ".join(site_title.split()) or "Aggregator"
    words = words_for(options.language)
    opml = _e(quote(OPML_FILENAME))
    if options.site_description and options.site_description.strip():
        intro = _e(" ".join(options.site_description.split()))
    else:
        intro = words.intro_html.format(opml=opml)
    lang = f' lang="{_e(options.language)}"' if options.language else ""
    alternates = "".join(
        f'\n<link rel="alternate" type="{media}"'
        f' title="{_e(f"{options.title_prefix}{category} ({format_name})")}"'
        f' href="{_e(quote(getattr(category_paths(category), kind)))}">'
        for category in unique for kind, media, _text, format_name in _FEED_KINDS
    )
    if unique:
        category_list = "<ul>\n" + "\n".join(
            _category_item(c) for c in unique
        ) + "\n</ul>"
    else:
        category_list = f'<p class="empty">{_e(words.no_categories)}</p>'
    if latest:
        article_list = (
            '<ol class="articles">\n'
            + "\n".join(_article_item(a, options) for a in latest) + "\n</ol>"
        )
    else:
        article_list = f'<p class="empty">{_e(words.no_articles)}</p>'
    page = f"""<!DOCTYPE html>
<html{lang}>
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{_e(_CSP)}">
<meta name="referrer" content="no-referrer">
<meta name="generator" content="aggregator">
<title>{_e(title)}</title>
<link rel="alternate" type="text/x-opml" title="OPML" href="{opml}">{alternates}
<style>
{_CSS}
</style>
</head>
<body>
<div class="wrap">
<header class="site">
<h1>{_e(title)}</h1>
<p>{intro}</p>
</header>
<div class="layout">
<main class="latest">
<h2>{_e(words.latest)}</h2>
{article_list}
</main>
<aside class="cats" id="categories">
<h2>{_e(words.categories)}</h2>
{category_list}
<a class="opml" href="{opml}" type="text/x-opml">{_e(words.all_categories)}</a>
</aside>
</div>
<footer class="site">{_e(words.footer)}</footer>
</div>
</body>
</html>
"""
    return page.encode("utf-8")
