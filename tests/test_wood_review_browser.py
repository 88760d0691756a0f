"""The review page in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium):
clicks and keys become exactly the decisions in review.json, undo removes the last one, a reload resumes."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.wood_helpers import make_candidates
from training.ood_review import ReviewServer
from weakseg.ood.decisions import REVIEW_NAME, ReviewLog

CHROMEDRIVER, CHROMIUM = Path("/usr/bin/chromedriver"), Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not (CHROMEDRIVER.exists() and CHROMIUM.exists()),
                                reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1200,900"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def _wait(cond, what=lambda: "", timeout: float = 15.0) -> None:
    deadline = time.time() + timeout
    while not cond():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for the page: {what()}")
        time.sleep(0.05)


def _settled(driver) -> bool:
    body = driver.find_element("tag name", "body")
    return body.get_attribute("data-ready") == "1" and body.get_attribute("data-busy") == "0"


def test_clicks_keys_and_undo_are_recorded_exactly(tmp_path, browser):
    from selenium.webdriver.common.keys import Keys

    mine = make_candidates(tmp_path, 8)
    ids = [c.image for c in ReviewLog(mine).candidates]
    server = ReviewServer(ReviewLog(mine)).start()
    try:
        browser.get(server.url)
        _wait(lambda: _settled(browser))
        assert len(browser.find_elements("css selector", ".tile")) == 8
        assert "0 / 8 decided" in browser.find_element("id", "progress").text
        browser.find_element("id", f"keep-{ids[0]}").click()
        browser.find_element("id", f"reject-{ids[1]}").click()
        browser.find_element("id", f"keep-{ids[2]}").click()
        _wait(lambda: _settled(browser))
        body = browser.find_element("tag name", "body")
        body.send_keys("u")  # undo the last decision (ids[2]); focus returns to its tile
        _wait(lambda: _settled(browser) and "2 / 8" in browser.find_element("id", "progress").text,
              lambda: browser.find_element("id", "progress").text + " | " + browser.find_element("id", "status").text)
        assert "focus" in browser.find_element("id", f"tile-{ids[2]}").get_attribute("class")
        body.send_keys("r")  # reject the focused tile (ids[2]); focus moves to ids[3]
        body.send_keys("k")  # keep ids[3]
        body.send_keys(Keys.ARROW_RIGHT)  # skip ids[4]
        body.send_keys("k")  # keep ids[5]
        _wait(lambda: _settled(browser) and "5 / 8" in browser.find_element("id", "progress").text,
              lambda: browser.find_element("id", "progress").text)
        recorded = json.loads((mine / REVIEW_NAME).read_text())["decisions"]
        assert [(d["image"], d["decision"], d["by"]) for d in recorded] == [
            (ids[0], "keep", "human"), (ids[1], "reject", "human"), (ids[2], "reject", "human"),
            (ids[3], "keep", "human"), (ids[5], "keep", "human")]
        assert "positive rate r = 0.40" in browser.find_element("id", "progress").text
        classes = {i: browser.find_element("id", f"tile-{i}").get_attribute("class") for i in ids}
        assert "keep" in classes[ids[0]] and "reject" in classes[ids[1]] and "pending" in classes[ids[4]]
    finally:
        server.shutdown()

    server = ReviewServer(ReviewLog(mine)).start()  # a new server resumes from the file
    try:
        browser.get(server.url)
        _wait(lambda: _settled(browser))
        assert "5 / 8 decided" in browser.find_element("id", "progress").text
        assert "focus" in browser.find_element("id", f"tile-{ids[4]}").get_attribute("class")  # first pending
    finally:
        server.shutdown()
