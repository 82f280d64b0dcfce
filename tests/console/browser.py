"""A real browser for the console's tests: Debian's ``chromium`` driven through ``chromium-driver``
(Selenium), headless, with its console log and its network log kept for assertions.

Missing packages are installed with apt-get when we are root (as CI is; ``./dev test`` installs
them first anyway); otherwise the tests are skipped, saying why. Selenium is given both paths, so it
never tries to download a browser or a driver of its own (nothing can be fetched here).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

PACKAGES = ["chromium", "chromium-driver"]
SCREENSHOTS_ENV = "TUNELOOP_CONSOLE_SCREENSHOTS"  # a folder: the tests save a screenshot of each page there


def _found() -> tuple[str, str] | None:
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def chromium() -> tuple[str, str]:
    """The paths of chromium and its driver, installing them when root; else the test is skipped."""
    found = _found()
    if found is None and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if subprocess.run(["apt-get", "install", "-y", *PACKAGES], env=env, capture_output=True).returncode:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True)
            subprocess.run(["apt-get", "install", "-y", *PACKAGES], env=env, capture_output=True)
        found = _found()
    if found is None:
        pytest.skip("the console's browser tests need Debian's chromium and chromium-driver, which are not installed "
                    "and cannot be without root: apt-get install chromium chromium-driver (./dev test does, as root)")
    return found


def start() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1440,960",
                "--no-first-run", "--disable-extensions", "--disable-background-networking", "--disable-sync",
                "--disable-component-update", "--disable-default-apps", "--metrics-recording-only"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def js_errors(driver: Any) -> list[str]:
    """The browser console's errors since the last call (a failed load, a script error, a CSP refusal)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def requested_urls(driver: Any) -> list[str]:
    """Every URL the browser asked for since the last call (its network log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def resources(driver: Any) -> list[str]:
    """What the page in view loaded besides itself (stylesheets, scripts, images), as the page sees it."""
    return driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")


def screenshot(driver: Any, name: str) -> None:
    """Save the page in view as NAME.png under $TUNELOOP_CONSOLE_SCREENSHOTS, when it is set."""
    folder = os.environ.get(SCREENSHOTS_ENV)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        size = driver.get_window_size()
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(size["width"], max(size["height"], height + 140))  # the whole page
        driver.save_screenshot(str(Path(folder) / f"{name}.png"))
        driver.set_window_size(size["width"], size["height"])
