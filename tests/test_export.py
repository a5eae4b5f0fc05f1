"""Tests for aggregator.publish.hexo: the seed's exact front matter, YAML safety, file writing.

The golden test reads the seed post from ``../shared/seed`` (a sibling of the repo) and
must not be copied into the project.  These tests never touch a database or the network.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from pathlib import Path

import builders
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from aggregator.errors import AggregatorError
from aggregator.publish import files
from aggregator.publish.hexo import (
    MANIFEST,
    ExportReport,
    hexo_filename,
    render_front_matter,
    render_hexo,
    write_posts,
)
from aggregator.records import Article
from aggregator.rules import has_text

SEED = Path(__file__).resolve().parents[2] / "shared" / "seed" / "000_08ef3d22c0e5d0f0.txt"
SEED_IMAGE = (
    "https://cors.zfour.workers.dev/?http://images.ofweek.com/Upload/News/2021-05/21/"
    "jingwei/1621582693914051820.jpg"
)
SEED_DATE = datetime(2021, 5, 21, 7, 25, tzinfo=UTC)
URL = "https://example.com/a/1"

# Every field fixed, none derived from the key: overriding ``key`` keeps guid and link.
make_article = partial(
    builders.make_article, key=URL, guid=URL, link=URL, source_id="ofweek",
    title="Title", content="<p>Body</p>", summary="Body", date=SEED_DATE,
    first_seen=SEED_DATE, updated_at=SEED_DATE, content_hash="0" * 64,
)


def seed_parts() -> tuple[str, str, str]:
    """(whole post as our export writes it, front matter block, content between the divs)."""
    raw = SEED.read_text(encoding="utf-8")
    # shared/ has a blank line before the first --- and blanks after </div>; ours has neither.
    post = raw.lstrip("\n").rstrip(" ")
    match = re.match(r"(---\n.*?\n---\n)\n<div>   \n(.*) \n  \n</div>\n\Z", post, re.S)
    assert match, "seed layout changed"
    return post, match.group(1), match.group(2)


def seed_article() -> Article:
    _, _, content = seed_parts()
    return make_article(
        source_id="000",
        title="来了！2021工业互联网先锋TOP100榜单出炉！",
        categories=("新媒体", "高科技行业门户", "新闻"),
        author="高科技行业门户",
        date=SEED_DATE,
        headimg=SEED_IMAGE,
        thumbnail=SEED_IMAGE,
        comments=False,
        content=content,
    )


def load_front_matter(text: str) -> dict[str, object]:
    """Split like Hexo does (first line ---, up to the next line that is exactly ---)."""
    lines = text.split("\n")
    assert lines[0] == "---"
    end = lines.index("---", 1)
    assert not any(line.startswith("---") for line in lines[1:end])
    loaded = yaml.safe_load("\n".join(lines[1:end]))
    assert isinstance(loaded, dict)
    return loaded


# --- golden ------------------------------------------------------------------------------


def test_front_matter_matches_seed_byte_for_byte() -> None:
    _, front_matter, _ = seed_parts()
    assert render_front_matter(seed_article()) == front_matter
    assert "categories: \n - 新媒体\n" in front_matter  # the trailing space is really there


def test_body_wraps_seed_content_like_the_seed() -> None:
    post, front_matter, content = seed_parts()
    rendered = render_hexo(seed_article())
    body = rendered[len(front_matter):]
    assert content in body
    assert body == f"\n<div>   \n{content} \n  \n</div>\n"
    assert rendered == post


def test_hexo_template_syntax_in_content_is_inert() -> None:
    article = make_article(content="<p>{{ config.secret }} {% include 'x' %} {# c #} {a}</p>")
    body = render_hexo(article).split("---\n", 2)[2]
    assert "{{" not in body and "{%" not in body and "{#" not in body
    assert "&#123;{ config.secret }}" in body and "{a}" in body


def test_seed_front_matter_loads_to_the_article_values() -> None:
    loaded = load_front_matter(render_front_matter(seed_article()))
    assert loaded == {
        "title": "来了！2021工业互联网先锋TOP100榜单出炉！",
        "categories": ["新媒体", "高科技行业门户", "新闻"],
        "headimg": SEED_IMAGE,
        "author": "高科技行业门户",
        "comments": False,
        "date": "Fri, 21 May 2021 07:25:00 GMT",
        "thumbnail": SEED_IMAGE,
    }


# --- front matter formats -----------------------------------------------------------------


def test_missing_images_are_empty_quoted_strings() -> None:
    text = render_front_matter(make_article(headimg=None, thumbnail=None))
    assert "\nheadimg: ''\n" in text
    assert "\nthumbnail: ''\n" in text
    loaded = load_front_matter(text)
    assert loaded["headimg"] == "" and loaded["thumbnail"] == ""


def test_comments_true_and_date_converted_to_gmt() -> None:
    beijing = timezone(timedelta(hours=8))
    article = make_article(comments=True, date=datetime(2021, 5, 21, 15, 25, tzinfo=beijing))
    text = render_front_matter(article)
    assert "\ncomments: true\n" in text
    assert "\ndate: Fri, 21 May 2021 07:25:00 GMT\n" in text


def test_empty_categories_load_as_empty_list() -> None:
    text = render_front_matter(make_article(categories=()))
    assert "\ncategories: []\n" in text
    assert load_front_matter(text)["categories"] == []


@pytest.mark.parametrize(
    ("value", "rendered"),
    [
        ("高科技行业门户", "高科技行业门户"),
        ("John Smith", "John Smith"),
        ("http://x.com/a", "http://x.com/a"),
        ("yes", "'yes'"),
        ("No", "'No'"),
        ("true", "'true'"),
        ("null", "'null'"),
        ("~", "'~'"),
        ("2021", "'2021'"),
        ("3.14", "'3.14'"),
        ("2021-05-21", "'2021-05-21'"),
        (".inf", "'.inf'"),
        ("", "''"),
        ("- item", "'- item'"),
        ("---", "'---'"),
        ("a: b", "'a: b'"),
        ("a #b", "'a #b'"),
        ("ends:", "'ends:'"),
        ("it's", "it's"),
        ("'quoted'", "'''quoted'''"),
        ('"dq"', "'\"dq\"'"),
        (" padded ", "' padded '"),
        ("a\tb", "'a\tb'"),
        ("*alias", "'*alias'"),
        ("&anchor", "'&anchor'"),
        ("!tag", "'!tag'"),
        ("@at", "'@at'"),
        ("%pct", "'%pct'"),
        ("[list]", "'[list]'"),
        ("{map}", "'{map}'"),
        ("|", "'|'"),
        (">", "'>'"),
        ("<<", "'<<'"),
        ("=", "'='"),
    ],
)
def test_author_and_category_quoting(value: str, rendered: str) -> None:
    text = render_front_matter(make_article(author=value, categories=(value,)))
    assert f"\nauthor: {rendered}\n" in text
    assert f"\n - {rendered}\n" in text
    loaded = load_front_matter(text)
    assert loaded["author"] == value
    assert loaded["categories"] == [value]


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("It's a 'test'", "It's a 'test'"),
        ("yes", "yes"),
        ("2021", "2021"),
        ("---", "---"),
        ("- a: b # c", "- a: b # c"),
        ("line one\nline two", "line one line two"),
        ("a \r\n\n  b", "a b"),
        ("a\u2028b\x85c", "a b c"),
        ("\n---\nb", " --- b"),
        ("bell\x07 nul\x00 del\x7f", "bell nul del"),
    ],
)
def test_title_is_single_quoted_and_single_line(title: str, expected: str) -> None:
    text = render_front_matter(make_article(title=title))
    title_line = text.split("\n")[1]
    assert title_line.startswith("title: '") and title_line.endswith("'")
    assert load_front_matter(text)["title"] == expected


def test_hostile_values_do_not_end_the_front_matter_early() -> None:
    article = make_article(
        title="x\n---\ny", author="a\n---", categories=("\n---\n", "- ---"),
        headimg="http://i/\n---", content="<p>\n---\n</p>",
    )
    text = render_hexo(article)
    assert text.split("\n").count("---") == 3  # two delimiters + the one in the body
    loaded = load_front_matter(text)
    assert loaded["title"] == "x --- y"
    assert loaded["author"] == "a ---"
    assert loaded["categories"] == [" --- ", "- ---"]
    assert loaded["headimg"] == "http://i/ ---"


# --- property tests ----------------------------------------------------------------------

# Text YAML can carry on one line: no controls except tab, no line/paragraph separators,
# no surrogates or non-characters.  Hostile ASCII is mixed in so it shows up often.
_clean_chars = st.characters(
    blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\ufffe\uffff"
)
_hostile = ["'", '"', ":", "#", "-", "?", ",", "[", "]", "{", "}", "&", "*", "!", "|", ">",
            "%", "@", "`", "~", "=", "<", "\t", " ", "---", ": ", " #", "- ", "yes", "0", "1.5"]
clean_text = st.lists(
    st.one_of(st.text(alphabet=_clean_chars, max_size=6), st.sampled_from(_hostile)), max_size=8
).map("".join)
any_text = st.text()  # controls, line breaks, surrogates, non-characters: anything
NON_YAML = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff\u2028\u2029]")


@given(title=clean_text.filter(has_text), author=clean_text,
       categories=st.lists(clean_text, max_size=4), image=clean_text, comments=st.booleans())
def test_clean_values_round_trip_exactly(
    title: str, author: str, categories: list[str], image: str, comments: bool
) -> None:
    article = make_article(title=title, author=author, categories=tuple(categories),
                           headimg=image, thumbnail=image or None, comments=comments)
    loaded = load_front_matter(render_front_matter(article))
    assert list(loaded) == [
        "title", "categories", "headimg", "author", "comments", "date", "thumbnail",
    ]
    assert loaded["title"] == title
    assert loaded["author"] == author
    assert loaded["categories"] == categories
    assert loaded["headimg"] == image
    assert loaded["thumbnail"] == image
    assert loaded["comments"] is comments


@given(title=any_text.filter(has_text), author=any_text, categories=st.lists(any_text, max_size=4))
def test_arbitrary_values_always_load_as_single_line_strings(
    title: str, author: str, categories: list[str]
) -> None:
    article = make_article(title=title, author=author, categories=tuple(categories))
    text = render_front_matter(article)
    assert text.count("\n") == 9 + len(categories)  # one line per value
    loaded = load_front_matter(text)
    values = [loaded["title"], loaded["author"], *loaded["categories"]]  # type: ignore[misc]
    assert all(isinstance(value, str) for value in values)
    assert not any(NON_YAML.search(value) or "\n" in value or "\r" in value for value in values)
    for original, value in zip([title, author, *categories], values, strict=True):
        if not re.search(r"[\n\r\x85\u2028\u2029]", original):
            assert value == NON_YAML.sub("", original)  # only unrepresentable chars dropped


# --- file names --------------------------------------------------------------------------


def test_filename_is_sha1_of_source_and_key() -> None:
    article = make_article(source_id="000", key="guid-1")
    digest = hashlib.sha1(b"000\nguid-1").hexdigest()[:16]
    assert hexo_filename(article) == f"000_{digest}.md"


def test_filename_is_stable_and_depends_only_on_identity() -> None:
    article = make_article()
    edited = replace(article, title="Other", content="<p>x</p>", date=SEED_DATE + timedelta(1))
    assert hexo_filename(article) == hexo_filename(edited)
    assert hexo_filename(article) != hexo_filename(replace(article, key="other"))
    assert hexo_filename(article) != hexo_filename(replace(article, source_id="other"))
    # the newline separator keeps plain concatenations apart
    assert hexo_filename(make_article(source_id="ab", key="c")) != hexo_filename(
        make_article(source_id="a", key="bc")
    )


@pytest.mark.parametrize("source_id", ["", "a/b", "../x", "a\\b", "a\x00b"])
def test_filename_refuses_path_like_source_ids(source_id: str) -> None:
    with pytest.raises(ValueError, match="file name"):
        hexo_filename(make_article(source_id=source_id))


# --- write_posts ---------------------------------------------------------------------------


def three_articles() -> list[Article]:
    return [make_article(key=f"k{i}", title=f"Title {i}") for i in range(3)]


def test_export_writes_one_file_per_article(tmp_path: Path) -> None:
    out = tmp_path / "site" / "source" / "_posts"
    articles = three_articles()
    report = write_posts(articles, out)
    assert report == ExportReport(written=3, unchanged=0, out_dir=str(out))
    assert sorted(p.name for p in out.glob("*.md")) == sorted(hexo_filename(a) for a in articles)
    for article in articles:
        assert (out / hexo_filename(article)).read_bytes() == render_hexo(article).encode()


def test_reexport_is_idempotent(tmp_path: Path) -> None:
    articles = three_articles()
    write_posts(articles, tmp_path)
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    report = write_posts(iter(articles), tmp_path)
    assert (report.written, report.unchanged) == (0, 3)
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    assert after == before  # same files, none replaced


def test_changed_article_rewrites_its_file(tmp_path: Path) -> None:
    articles = three_articles()
    write_posts(articles, tmp_path)
    changed = replace(articles[1], title="New title", content="<p>new</p>")
    report = write_posts([articles[0], changed, articles[2]], tmp_path)
    assert (report.written, report.unchanged) == (1, 2)
    assert len(list(tmp_path.glob("*.md"))) == 3
    text = (tmp_path / hexo_filename(changed)).read_text(encoding="utf-8")
    assert "title: 'New title'" in text and "<p>new</p>" in text
    assert "Title 1" not in text


def test_existing_different_file_is_overwritten(tmp_path: Path) -> None:
    article = make_article()
    (tmp_path / hexo_filename(article)).write_text("stale", encoding="utf-8")
    report = write_posts([article], tmp_path)
    assert (report.written, report.unchanged) == (1, 0)
    assert (tmp_path / hexo_filename(article)).read_text(encoding="utf-8") == render_hexo(article)


def test_failed_write_leaves_old_file_and_no_temp_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    article = make_article()
    path = tmp_path / hexo_filename(article)
    path.write_bytes(b"old")

    def refuse(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", refuse)
    with pytest.raises(AggregatorError, match="disk full") as info:
        write_posts([replace(article, title="new")], tmp_path)
    assert info.value.source_id == article.source_id
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir() if p.name != MANIFEST] == [path.name]


def test_out_dir_that_is_a_file_is_reported(tmp_path: Path) -> None:
    blocker = tmp_path / "posts"
    blocker.write_text("not a dir", encoding="utf-8")
    with pytest.raises(AggregatorError, match="export directory"):
        write_posts([make_article()], blocker)


def test_written_file_respects_umask_not_temp_file_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_posts([make_article()], tmp_path)
    finally:
        os.umask(old)
    (path,) = tmp_path.glob("*.md")
    assert path.stat().st_mode & 0o777 == 0o644


def test_prune_deletes_only_posts_an_earlier_export_wrote(tmp_path: Path) -> None:
    articles = three_articles()
    write_posts(articles, tmp_path)
    handwritten = tmp_path / "my-own-post.md"
    handwritten.write_text("---\ntitle: mine\n---\n", encoding="utf-8")
    foreign = tmp_path / f"other_{'0' * 16}.md"  # looks like ours, but we never wrote it
    foreign.write_text("x", encoding="utf-8")
    kept = write_posts(articles[1:], tmp_path)  # without prune: nothing is deleted
    assert (kept.removed, (tmp_path / hexo_filename(articles[0])).exists()) == (0, True)
    pruned = write_posts(articles[1:], tmp_path, prune=True)
    assert (pruned.written, pruned.unchanged, pruned.removed) == (0, 2, 1)
    assert not (tmp_path / hexo_filename(articles[0])).exists()
    assert handwritten.exists() and foreign.exists()
    assert write_posts(articles[1:], tmp_path, prune=True).removed == 0


def test_a_failed_export_still_lets_a_later_prune_find_what_it_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second, third = three_articles()
    write_posts([first], tmp_path)

    def broken() -> Iterator[Article]:
        yield second
        raise AggregatorError("store went away")

    with pytest.raises(AggregatorError, match="store went away"):
        write_posts(broken(), tmp_path, prune=True)
    assert (tmp_path / hexo_filename(first)).exists()  # a failed run prunes nothing
    report = write_posts([third], tmp_path, prune=True)
    assert report.removed == 2
    assert sorted(p.name for p in tmp_path.glob("*.md")) == [hexo_filename(third)]


def test_a_manifest_naming_paths_outside_the_folder_deletes_nothing(tmp_path: Path) -> None:
    outside = tmp_path / "precious.md"
    outside.write_text("keep", encoding="utf-8")
    posts = tmp_path / "posts"
    posts.mkdir()
    (posts / MANIFEST).write_text('{"posts": ["../precious.md", "/etc/passwd"]}',
                                  encoding="utf-8")
    assert write_posts([], posts, prune=True).removed == 0
    assert outside.read_text(encoding="utf-8") == "keep"
