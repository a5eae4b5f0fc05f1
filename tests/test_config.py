from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from aggregator import __version__
from aggregator.config import (
    language_tag,
    load_config,
    parse_config,
    parse_duration,
    parse_size,
    resolve_config_path,
)
from aggregator.errors import ConfigError
from aggregator.records import SourceRules

REPO = Path(__file__).resolve().parents[1]

VALID = """\
database_url: sqlite:///data/aggregator.db
output_dir: public
site_url: http://localhost:8080/
image_proxy: "https://cors.zfour.workers.dev/?"
allow_private_networks: false
sources:
  - id: ofweek-news
    name: 高科技行业门户
    url: https://rsshub.app/ofweek/news
    categories: [新媒体, 高科技行业门户, 新闻]
    interval: 30m
  - id: juejin
    name: 掘金
    url: https://juejin.cn/rss
    categories: [编程]
    interval: 2h
    encoding: gbk
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf" / "aggregator.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_valid_config_resolves_relative_paths_against_the_config_folder(tmp_path: Path) -> None:
    settings = load_config(write(tmp_path, VALID))
    folder = (tmp_path / "conf").resolve()
    assert settings.database_url == f"sqlite:///{folder}/data/aggregator.db"
    assert settings.output_dir == folder / "public"
    assert settings.image_proxy == "https://cors.zfour.workers.dev/?"
    sources = settings.source_list()
    assert [s.id for s in sources] == ["ofweek-news", "juejin"]
    assert sources[0].categories == ("新媒体", "高科技行业门户", "新闻")
    assert sources[0].interval == timedelta(minutes=30)
    assert sources[1].interval == timedelta(hours=2)
    assert sources[1].encoding == "gbk"
    assert settings.fetch_options().allow_private_networks is False
    assert settings.feed_options().feed_size == 50


def test_absolute_and_non_sqlite_urls_are_kept(tmp_path: Path) -> None:
    text = VALID.replace("sqlite:///data/aggregator.db", "postgresql+psycopg://u@db/agg")
    assert load_config(write(tmp_path, text)).database_url == "postgresql+psycopg://u@db/agg"
    text = VALID.replace("sqlite:///data/aggregator.db", "sqlite:////var/lib/agg.db")
    assert load_config(write(tmp_path, text)).database_url == "sqlite:////var/lib/agg.db"


@pytest.mark.parametrize(
    ("edit", "source_id", "field", "words"),
    [
        (("interval: 30m", "interval: 30 minutes"), "ofweek-news", "interval", "duration"),
        (("interval: 2h", "interval: 2h\n    colour: red"), "juejin", "colour", "unknown key"),
        (("url: https://juejin.cn/rss", "url: not-a-url"), "juejin", "url", "URL"),
        (("id: juejin", "id: ofweek-news"), "ofweek-news", "sources[1].id", "duplicate"),
        (("id: juejin", "id: Juejin_Bad"), "Juejin_Bad", "id", "pattern"),
        (("    categories: [编程]\n", ""), "juejin", "categories", "missing"),
        (("encoding: gbk", "encoding: klingon"), "juejin", "encoding", "unknown encoding"),
        (("encoding: gbk", "language: zh_TW"), "juejin", "language", "BCP 47"),
        (("encoding: gbk", "language: chinese-traditional"), "juejin", "language", "zh-TW"),
    ],
)
def test_bad_source_fields_name_file_source_and_field(
    tmp_path: Path, edit: tuple[str, str], source_id: str, field: str, words: str
) -> None:
    path = write(tmp_path, VALID.replace(*edit))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    error = caught.value
    assert error.path == str(path)
    assert error.source_id == source_id
    assert error.field == field
    assert words.lower() in str(error).lower()
    assert str(path) in str(error) and source_id in str(error)


def test_unknown_top_level_key_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"field 'output_dri'.*unknown key"):
        load_config(write(tmp_path, VALID.replace("output_dir:", "output_dri:")))
    with pytest.raises(ConfigError, match=r"invalid YAML at line \d+"):
        load_config(write(tmp_path, VALID + "  - id: [unclosed\n"))
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.yaml")


def test_empty_image_proxy_means_no_rewriting(tmp_path: Path) -> None:
    settings = load_config(
        write(tmp_path, VALID.replace('"https://cors.zfour.workers.dev/?"', '""'))
    )
    assert settings.normalize_options().image_proxy is None


def test_builtin_image_proxy_needs_a_key_from_the_config_or_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    builtin = VALID.replace('"https://cors.zfour.workers.dev/?"', "builtin")
    monkeypatch.delenv("AGGREGATOR_IMAGE_SECRET", raising=False)
    with pytest.raises(ConfigError, match="image_proxy_secret or \\$AGGREGATOR_IMAGE_SECRET"):
        load_config(write(tmp_path, builtin))
    monkeypatch.setenv("AGGREGATOR_IMAGE_SECRET", "from-env")
    options = load_config(write(tmp_path, builtin)).normalize_options()
    assert options.image_proxy is None
    assert options.builtin_image_proxy is not None
    assert options.builtin_image_proxy.secret == b"from-env"
    assert "from-env" not in repr(options)
    in_file = load_config(write(tmp_path, builtin + 'image_proxy_secret: "in-file"\n'))
    assert in_file.normalize_options().builtin_image_proxy.secret == b"in-file"  # type: ignore[union-attr]


def test_default_image_is_one_url_or_a_list(tmp_path: Path) -> None:
    one = load_config(write(tmp_path, VALID + 'default_image: "https://s.test/a.png"\n'))
    assert one.normalize_options().default_images == ("https://s.test/a.png",)
    several = load_config(write(
        tmp_path, VALID + 'default_image: ["https://s.test/a.png", "", "https://s.test/b.png"]\n'))
    assert several.normalize_options().default_images == ("https://s.test/a.png",
                                                          "https://s.test/b.png")
    assert load_config(write(tmp_path, VALID)).normalize_options().default_images == ()


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400), (45, 45)]
)
def test_durations(text: object, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "0m", "-5m", "5 weeks", True])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_sizes() -> None:
    assert parse_size("10MB") == 10 * 1024 * 1024
    assert parse_size("512kb") == 512 * 1024
    assert parse_size(2048) == 2048
    with pytest.raises(ValueError):
        parse_size("lots")


def test_config_path_precedence() -> None:
    assert resolve_config_path("x.yaml", {"AGGREGATOR_CONFIG": "y.yaml"}) == Path("x.yaml")
    assert resolve_config_path(None, {"AGGREGATOR_CONFIG": "y.yaml"}) == Path("y.yaml")
    assert resolve_config_path(None, {}) == Path("config/aggregator.yaml")


def test_bundled_example_config_is_valid() -> None:
    settings = load_config(REPO / "config" / "aggregator.yaml")
    ids = {s.id for s in settings.sources}
    assert "ofweek-news" in ids and len(ids) >= 8
    ofweek = next(s for s in settings.sources if s.id == "ofweek-news")
    assert ofweek.categories == ("新媒体", "高科技行业门户", "新闻")
    assert ofweek.name == "高科技行业门户"
    assert {"新媒体", "编程"} <= {c for s in settings.sources for c in s.categories}


def test_every_problem_is_reported(tmp_path: Path) -> None:
    text = VALID.replace("interval: 30m", "interval: never").replace(
        "url: https://juejin", "url: x"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    lines = str(caught.value).splitlines()
    assert caught.value.source_id == "ofweek-news" and caught.value.field == "interval"
    assert len(lines) == 2
    assert "source 'juejin': field 'url'" in lines[1]


def test_control_characters_in_names_and_categories_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="control character") as caught:
        load_config(write(tmp_path, VALID.replace("[编程]", '["编\\x1b程"]')))
    assert caught.value.source_id == "juejin" and caught.value.field == "categories"


@pytest.mark.parametrize(("tag", "normal"), [
    ("zh-CN", "zh-CN"), ("zh-tw", "zh-TW"), ("EN", "en"), ("en-gb", "en-GB"),
    ("ZH-HANT-hk", "zh-Hant-HK"), ("sr-latn", "sr-Latn"), ("es-419", "es-419"),
    ("de-CH-1996", "de-CH-1996"), ("zh-yue-HK", "zh-yue-HK"), ("en-US-x-Twain", "en-US-x-twain"),
])
def test_language_tags_are_normalized(tag: str, normal: str) -> None:
    assert language_tag(tag) == normal


@pytest.mark.parametrize("tag", ["", "z", "zh_TW", "zh--TW", "中文", "zh-TW-", "1234", "en-a"])
def test_malformed_language_tags_are_refused(tag: str) -> None:
    with pytest.raises(ValueError, match="BCP 47"):
        language_tag(tag)


def languages_config(top: str = "") -> str:
    return top + """sources:
  - {id: cna, name: 中央社, url: "https://cna.example/rss", categories: [臺灣, 國際],
     language: zh-tw}
  - {id: bbc, name: BBC, url: "https://bbc.example/rss", categories: [World, 國際], language: en}
  - {id: xinhua, name: 新华社, url: "https://xinhua.example/rss", categories: [国内, 國際]}
  - {id: rthk, name: 香港電台, url: "https://rthk.example/rss", categories: [臺灣],
     language: ZH-tw}
"""


def test_languages_per_source_and_category(tmp_path: Path) -> None:
    settings = load_config(write(tmp_path, languages_config()))
    assert settings.language == "zh-CN"  # the default top-level language
    languages = {s.id: s.language for s in settings.source_list()}
    assert languages == {"cna": "zh-TW", "bbc": "en", "xinhua": "zh-CN", "rthk": "zh-TW"}
    options = settings.feed_options()
    assert options.language == "zh-CN"
    assert dict(options.category_languages) == {
        "臺灣": "zh-TW", "World": "en", "国内": "zh-CN", "國際": None}
    assert dict(options.source_names) == {
        "cna": "中央社", "bbc": "BBC", "xinhua": "新华社", "rthk": "香港電台"}

    english = load_config(write(tmp_path, languages_config("language: EN-us\n")))
    assert english.language == "en-US"
    assert {s.id: s.language for s in english.source_list()}["xinhua"] == "en-US"
    assert english.feed_options().category_languages["国内"] == "en-US"

    unknown = load_config(write(tmp_path, languages_config("language: null\n")))
    assert unknown.feed_options().language is None
    assert {s.id: s.language for s in unknown.source_list()}["xinhua"] is None
    assert unknown.feed_options().category_languages["国内"] is None

    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, languages_config("language: zh_CN\n")))
    assert caught.value.field == "language" and caught.value.source_id is None


def test_descriptions_from_config(tmp_path: Path) -> None:
    text = VALID + 'site_description: "Tech news, twice a day"\n' \
        'feed_description: "{site}: the latest in {category}"\n'
    options = load_config(write(tmp_path, text)).feed_options()
    assert options.site_description == "Tech news, twice a day"
    assert options.feed_description == "{site}: the latest in {category}"
    defaults = load_config(write(tmp_path, VALID)).feed_options()
    assert defaults.site_description is None and defaults.feed_description is None
    with pytest.raises(ConfigError, match=r"placeholder \{name\}") as caught:
        load_config(write(tmp_path, VALID + 'feed_description: "{name} feed"\n'))
    assert caught.value.field == "feed_description"


def test_default_user_agent_names_a_real_homepage(tmp_path: Path) -> None:
    def agent(top: str) -> str:
        return parse_config(top, tmp_path / "aggregator.yaml").user_agent

    # site_url at its localhost default tells a portal nothing: no URL at all.
    assert agent("") == f"aggregator/{__version__} (RSS aggregator)"
    assert agent("site_url: http://127.0.0.1:8080/\n") == agent("")
    assert agent("site_url: https://news.example.org/feeds/\n") == (
        f"aggregator/{__version__} (RSS aggregator; +https://news.example.org/feeds/)")
    assert agent("site_url: http://localhost/\nhomepage_url: https://example.org/about\n") == (
        f"aggregator/{__version__} (RSS aggregator; +https://example.org/about)")
    assert agent('site_url: https://x.example/\nuser_agent: "MyBot/2 (+mailto:a@b.example)"\n') \
        == "MyBot/2 (+mailto:a@b.example)"
    for top in ("", "site_url: https://news.example.org/\n"):
        assert "github.com/aggregator" not in agent(top)
    settings = parse_config("homepage_url: https://example.org/about\n", tmp_path / "a.yaml")
    assert settings.fetch_options().user_agent == settings.user_agent
    with pytest.raises(ConfigError) as caught:
        parse_config("homepage_url: not a url\n", tmp_path / "a.yaml")
    assert caught.value.field == "homepage_url"


RULES = """\
    rules:
      exclude: ["广告", " 推广 "]
      include: 工业互联网
      strip_title: "^【[^】]*】\\\\s*"
      categories:
        "人工智能|AI": " 人工智能 "
        "芯片": 硬件
"""


def test_rules_are_read_in_config_order_and_patterns_kept_as_written(tmp_path: Path) -> None:
    settings = load_config(write(tmp_path, VALID + RULES))
    juejin = settings.source_list()[1]
    assert juejin.rules == SourceRules(
        exclude=("广告", " 推广 "), include=("工业互联网",), strip_title=r"^【[^】]*】\s*",
        categories=(("人工智能|AI", "人工智能"), ("芯片", "硬件")))
    assert juejin.all_categories == ("编程", "人工智能", "硬件")
    assert settings.category_languages()["硬件"] == "zh-CN"
    assert not settings.source_list()[0].rules


@pytest.mark.parametrize(
    ("rules", "field", "words"),
    [
        ('exclude: ["广告", "(a"]', "rules.exclude[1]", "invalid regex '(a': missing )"),
        ('include: ["ok", ""]', "rules.include[1]", "empty regex"),
        ('strip_title: "[【"', "rules.strip_title", "invalid regex '[【'"),
        ('categories: {"AI|(": 人工智能}', "rules.categories['AI|(']", "invalid regex"),
        ('categories: {"AI": "  "}', "rules.categories['AI']", "category name is empty"),
        ("categories: {AI: \"a\\x01\"}", "rules.categories['AI']", "control character"),
        ("exclude: [\"x{2,1}\"]", "rules.exclude[0]", "invalid regex"),
        ("exlude: [x]", "rules.exlude", "unknown key"),
    ],
)
def test_a_bad_rule_names_the_source_and_the_rule(
    tmp_path: Path, rules: str, field: str, words: str
) -> None:
    path = write(tmp_path, VALID + f"    rules:\n      {rules}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert (caught.value.source_id, caught.value.field) == ("juejin", field)
    assert f"source 'juejin': field {field!r}: " in str(caught.value)
    assert words in str(caught.value)
