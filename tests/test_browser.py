"""The search page and the retrieval explorer in a real browser: headless Chromium through
Selenium (`.ci/run` installs Debian's chromium and chromium-driver; without them these tests are
skipped, saying so)."""

from __future__ import annotations

import shutil
import socket
import threading
import time
import urllib.request

import pytest

from cbir.config import load_config

from conftest import REPO

webdriver = pytest.importorskip("selenium.webdriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="no chromium and chromedriver here; .ci/run installs Debian's")


@pytest.fixture
def browser(tmp_path):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def wait_for(condition, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("the page never got there")


def test_explorer_compares_two_methods_query_by_query(default_run, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get((default_run / "results/report/default/explorer_digits.html").as_uri())
    rows = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#queries tr"))
    assert len(rows) == 60
    Select(browser.find_element(By.ID, "a")).select_by_value("hashing/smallcnn/ba/48")
    Select(browser.find_element(By.ID, "b")).select_by_value("hashing/smallcnn/itq/12")
    # Sorted by |A - B|, largest first.
    differences = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#queries tr td:nth-child(5)")]
    magnitudes = [abs(float(text)) for text in differences if text != "–"]
    assert magnitudes == sorted(magnitudes, reverse=True)
    browser.find_elements(By.CSS_SELECTOR, "#queries tr")[0].click()
    for side in ("a", "b"):
        thumbs = browser.find_elements(By.CSS_SELECTOR, f'.row[data-side="{side}"] .thumb')
        assert len(thumbs) == 10
        assert all("hit" in t.get_attribute("class") or "miss" in t.get_attribute("class") for t in thumbs)
        assert all(t.find_element(By.TAG_NAME, "img").get_property("naturalWidth") > 0 for t in thumbs)
    # Sorting by another column, and the other ground truth.
    browser.find_element(By.CSS_SELECTOR, 'th[data-key="a"]').click()
    values = [float(c.text) for c in browser.find_elements(By.CSS_SELECTOR, "#queries tr td:nth-child(3)") if c.text != "–"]
    assert values == sorted(values, reverse=True)
    Select(browser.find_element(By.ID, "gt")).select_by_value("neighbours")
    assert "queries: mean AP" in browser.find_element(By.ID, "summary").text
    browser.save_screenshot(str(tmp_path / "explorer.png"))


@pytest.fixture
def server(default_run, monkeypatch):
    import uvicorn

    from cbir.web.server import create_app

    monkeypatch.chdir(default_run)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    instance = uvicorn.Server(uvicorn.Config(create_app(load_config(REPO / "config.yaml")), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    wait_for(lambda: _answers(f"http://127.0.0.1:{port}/api/indexes"))
    yield f"http://127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(10)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


def test_search_page_with_an_upload_and_with_a_query_of_the_split(default_run, server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from test_web import database_image

    image_id, data = database_image(default_run, 3)
    upload = tmp_path / "mine.png"
    upload.write_bytes(data)
    browser.get(server)
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#query option"))
    Select(browser.find_element(By.ID, "model")).select_by_value("features/smallcnn/finetuned/penultimate")
    wait_for(lambda: "queries in this split" in browser.find_element(By.ID, "status").text)
    browser.find_element(By.ID, "file").send_keys(str(upload))
    hits = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#hits .hit"))
    assert len(hits) == 10 and hits[0].get_attribute("data-image-id") == image_id
    assert "uploaded mine.png" in browser.find_element(By.ID, "query-info").text
    # A query of the split: hits and misses marked, its precision shown, thumbnails loaded.
    Select(browser.find_element(By.ID, "model")).select_by_value("hashing/smallcnn/ba/48")
    wait_for(lambda: "queries in this split" in browser.find_element(By.ID, "status").text)
    browser.find_element(By.ID, "search-query").click()
    wait_for(lambda: "precision@10" in browser.find_element(By.ID, "query-info").text)
    hits = browser.find_elements(By.CSS_SELECTOR, "#hits .hit")
    assert len(hits) == 10 and all(len(set(h.get_attribute("class").split()) & {"relevant", "irrelevant"}) == 1 for h in hits)
    wait_for(lambda: all(h.find_element(By.TAG_NAME, "img").get_property("naturalWidth") == 96 for h in hits))
    # An upload that is not an image: the reason, in words.
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    browser.find_element(By.ID, "file").send_keys(str(bad))
    wait_for(lambda: "is not an image cbir can read" in browser.find_element(By.ID, "status").text)
    browser.save_screenshot(str(tmp_path / "search.png"))
