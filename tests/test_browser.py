"""A person opens the site: headless Debian Chromium (driven by Selenium) loads index.html.

The site is built for real (generate.write_feeds + site.render_index, written with
files.write_atomic) under a sub-path site URL and served by FeedServer on 127.0.0.1.
Chromium runs with a fresh profile, no background networking, and a host resolver
that maps every name to NOTFOUND, so the page can only reach the loopback server.
Skipped only when /usr/bin/chromium is absent (Debian packages: chromium, chromium-driver).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from served_site import HOSTILE_TITLE, SITE_TITLE, SOURCE_NAMES, BuiltSite, build_site

from aggregator.publish.paths import category_paths
from aggregator.service.http import FeedServer, make_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PAGE_LOAD_TIMEOUT = 30  # seconds; the whole file stays well under a minute

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (apt-get install chromium)"
)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[FeedServer, BuiltSite]]:
    output_dir = tmp_path / "out"
    with FeedServer(make_app(output_dir, "http://placeholder/feeds/")) as server:
        built = build_site(tmp_path, server.url + "feeds/", local_images=True)
        yield server, built


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    assert CHROMEDRIVER.exists(), "/usr/bin/chromedriver missing (apt-get install chromium-driver)"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--user-data-dir={profile}",
        "--window-size=1280,900",
    ):
        options.add_argument(flag)
    service = Service(executable_path=str(CHROMEDRIVER), log_output=os.devnull)
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT)
    driver.set_script_timeout(PAGE_LOAD_TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()


def phone(driver: webdriver.Chrome, width: int = 375, height: int = 812) -> None:
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 2, "mobile": True},
    )


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), path
    assert len(data) > 1000, path


def test_index_page_in_chromium(
    served: tuple[FeedServer, BuiltSite], browser: webdriver.Chrome, tmp_path: Path
) -> None:
    server, built = served
    page_url = server.url + "feeds/"
    browser.get(page_url)

    assert browser.title == SITE_TITLE
    assert browser.execute_script("return document.documentElement.lang") == "zh-CN"
    assert browser.execute_script("return document.characterSet") == "UTF-8"

    # Chinese category names are rendered as text, each with RSS, Atom and JSON Feed links
    # that work.
    names = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".cats .name")]
    assert names == built.categories
    assert "新闻" in browser.find_element(By.TAG_NAME, "body").text
    for category in built.categories:
        paths = category_paths(category)
        for relative, media in ((paths.rss, "application/rss+xml"),
                                (paths.atom, "application/atom+xml"),
                                (paths.json, "application/feed+json")):
            link = browser.find_element(
                By.XPATH, f"//aside//a[@href=\"{requests.utils.quote(relative)}\"]"
            )
            absolute = link.get_property("href")  # resolved by the browser against the page
            assert absolute == page_url + requests.utils.quote(relative)
            response = requests.get(absolute, timeout=10)
            assert response.status_code == 200
            assert response.headers["Content-Type"].startswith(media)

    # Article titles are links to the articles; the hostile one is plain text.
    headings = browser.find_elements(By.CSS_SELECTOR, "li.article h3")
    by_text = {h.text: h for h in headings}
    for article in built.articles:
        heading = by_text[" ".join(article.title.split())]
        anchors = heading.find_elements(By.TAG_NAME, "a")
        if article.link and article.link.startswith("https://"):
            assert [a.get_attribute("href") for a in anchors] == [article.link]
            assert anchors[0].get_attribute("rel") == "noopener noreferrer"
        else:
            assert anchors == []
    assert HOSTILE_TITLE in by_text
    # Each article names its source as configured, hostile names as plain text.
    sources = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "li.article .source")]
    assert sources == [SOURCE_NAMES[a.source_id] for a in built.articles]
    assert browser.execute_script("return typeof window.__pwned") == "undefined"
    assert browser.execute_script("return document.scripts.length") == 0

    # Thumbnails load from the local server.
    loaded = browser.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth])"
    )
    assert loaded and all(done and width == 8 for done, width in loaded)

    # Desktop: two columns side by side.
    main_left, aside_left = browser.execute_script(
        "return [document.querySelector('main').getBoundingClientRect().left,"
        " document.querySelector('aside').getBoundingClientRect().left]"
    )
    assert aside_left > main_left
    browser.save_screenshot(str(tmp_path / "index-desktop.png"))
    assert_png(tmp_path / "index-desktop.png")

    # Phone: 375 px wide, one column, nothing wider than the screen.
    phone(browser)
    browser.get(page_url)
    scroll_width = browser.execute_script("return document.documentElement.scrollWidth")
    assert scroll_width <= 375  # (a mobile viewport also widens to fit overflowing content)
    assert browser.execute_script("return window.innerWidth") == 375
    main_left, aside_left, aside_top, main_bottom = browser.execute_script(
        "const m = document.querySelector('main').getBoundingClientRect();"
        "const a = document.querySelector('aside').getBoundingClientRect();"
        "return [m.left, a.left, a.top, m.bottom]"
    )
    assert aside_left == main_left and aside_top >= main_bottom
    assert browser.execute_script("return typeof window.__pwned") == "undefined"
    shot = tmp_path / "index-375.png"
    assert browser.save_screenshot(str(shot))
    assert_png(shot)
