"""The documentation's screenshots of the search page and the retrieval explorer.

    uv run snakemake --cores 2 --directory RUN            # a built default run (config.yaml)
    uv run python docs/_screenshots.py RUN                # writes docs/images/search.png, explorer.png

Needs Debian's chromium and chromium-driver (as tests/test_browser.py); serves RUN with
``cbir serve``'s app on a free local port, opens both pages headless and saves what they show.
"""

from __future__ import annotations

import shutil
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from cbir.config import load_config
from cbir.web.server import create_app

IMAGES = Path(__file__).resolve().parent / "images"


def wait_for(condition, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.2)
    raise SystemExit("the page never got there")


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


def main(run: Path) -> None:
    options = Options()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    profile = tempfile.mkdtemp()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        browser.get((run / "results/report/default/explorer_digits.html").as_uri())
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#queries tr"))
        Select(browser.find_element(By.ID, "a")).select_by_value("hashing/smallcnn/ba/48")
        Select(browser.find_element(By.ID, "b")).select_by_value("hashing/smallcnn/itq/12")
        browser.find_elements(By.CSS_SELECTOR, "#queries tr")[0].click()
        time.sleep(1)
        browser.save_screenshot(str(IMAGES / "explorer.png"))

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(create_app(load_config(IMAGES.parents[1] / "config.yaml")), host="127.0.0.1", port=port, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: answers(f"{url}/api/indexes"))
        browser.get(url)
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#query option"))
        Select(browser.find_element(By.ID, "model")).select_by_value("hashing/smallcnn/ba/48")
        wait_for(lambda: "queries in this split" in browser.find_element(By.ID, "status").text)
        browser.find_element(By.ID, "search-query").click()
        wait_for(lambda: "precision@10" in browser.find_element(By.ID, "query-info").text)
        time.sleep(1)
        browser.save_screenshot(str(IMAGES / "search.png"))
        server.should_exit = True
    finally:
        browser.quit()
    print(f"wrote {IMAGES / 'explorer.png'} and {IMAGES / 'search.png'}")


if __name__ == "__main__":
    import os

    run = Path(sys.argv[1]).resolve()
    os.chdir(run)  # the app resolves results/ against the working directory, as `cbir serve` does
    main(run)
