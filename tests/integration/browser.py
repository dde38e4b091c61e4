"""A real Chromium (Debian's `chromium` and `chromium-driver`) driven by selenium, looking at the console.

Every test gets a headless browser whose downloads land in a folder of the test, whose console
and network logs are kept (to show that no script failed and nothing was asked of another
origin), and which saves a screenshot of each step into the test's folder.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from .harness import unavailable, wait_for

T = TypeVar("T")

CHROMIUM = ("chromium", "chromium-browser")
STEP_SECONDS = 15.0
# Other origins a page may name without a request leaving the machine.
LOCAL_SCHEMES = {"data", "blob"}


def chromium_paths() -> tuple[str, str]:
    """The browser and its driver, or skip (fail under CI) when either is missing."""
    browser = next((path for name in CHROMIUM if (path := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        unavailable("the console's tests need Debian's chromium and chromium-driver (apt-get install them)")
    return browser, driver


def start_chromium(downloads: Path) -> webdriver.Chrome:
    browser, driver = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(argument)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    chrome = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    chrome.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    return chrome


class ConsolePage:
    """The console of one service in one browser, with the steps a person takes and what they see."""

    def __init__(self, driver: webdriver.Chrome, base_url: str, folder: Path) -> None:
        self.driver = driver
        self.base_url = base_url
        self.folder = folder
        self.downloads = folder / "downloads"
        self.shots = 0
        self.requested: list[str] = []
        self.console: list[dict] = []

    # --- looking ---------------------------------------------------------------------------

    def open(self) -> ConsolePage:
        self.driver.get(f"{self.base_url}/")
        return self

    def shot(self, step: str) -> Path:
        """A screenshot of this step, in the test's folder, numbered in order."""
        self.shots += 1
        path = self.folder / "screenshots" / f"{self.shots:02d}-{step}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))
        return path

    def until(self, check: Callable[[], T], what: str, timeout: float = STEP_SECONDS) -> T:
        return wait_for(check, timeout, what, ignore=(StaleElementReferenceException,))

    def element(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def visible(self, css: str) -> WebElement | None:
        found = self.driver.find_elements(By.CSS_SELECTOR, css)
        return found[0] if found and found[0].is_displayed() else None

    def text(self, css: str) -> str:
        return self.element(css).text

    def listed_keys(self) -> list[str]:
        return [item.get_attribute("data-key") or "" for item in self.driver.find_elements(By.CSS_SELECTOR, "li.file")]

    def folders(self) -> list[str]:
        return [item.text for item in self.driver.find_elements(By.CSS_SELECTOR, "li.folder button")]

    def uploads(self) -> list[dict]:
        """Each upload row: its key, state, text and bytes sent, newest first."""
        return self.driver.execute_script(
            """return [...document.querySelectorAll('#upload-list li.upload')].map((item) => ({
                 key: item.querySelector('label').textContent, state: item.dataset.state,
                 session: item.dataset.session, text: item.querySelector('.upload-text').textContent,
                 sent: item.querySelector('progress').value, size: item.querySelector('progress').max}))"""
        )

    def kept_sessions(self) -> list[dict]:
        return json.loads(self.driver.execute_script("return localStorage.getItem('files-console:uploads') || '[]'"))

    # --- doing -------------------------------------------------------------------------------

    def choose(self, input_id: str, *paths: Path) -> None:
        """Give files (or a folder, to the folder picker) to one of the page's file inputs."""
        self.element(f"#{input_id}").send_keys("\n".join(str(path) for path in paths))

    def click(self, css: str) -> None:
        self.element(css).click()

    def sign_in(self, token: str) -> None:
        field = self.until(lambda: self.visible("#token"), "the sign-in form")
        field.clear()
        field.send_keys(token)
        self.click("#sign-in-form button")

    def wait_upload(self, key: str, state: str = "done", timeout: float = STEP_SECONDS) -> dict:
        def finished() -> dict | None:
            rows = [row for row in self.uploads() if row["key"].split("/", 1)[1] == key]
            return rows[0] if rows and rows[0]["state"] == state else None

        return self.until(finished, f"the upload of {key} to be {state} (uploads: {self.uploads()})", timeout)

    # --- checking ----------------------------------------------------------------------------

    def collect_logs(self) -> None:
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                self.requested.append(message["params"]["request"]["url"])
        self.console += self.driver.get_log("browser")

    def assert_clean(self) -> None:
        """No script error in the browser's log, and no request to anything but the service's origin."""
        try:
            self.collect_logs()
        except WebDriverException as error:
            raise AssertionError(f"could not read the browser's logs: {error}") from error
        origin = urlsplit(self.base_url)
        outside = [
            url
            for url in self.requested
            if urlsplit(url).scheme not in LOCAL_SCHEMES
            and (urlsplit(url).scheme, urlsplit(url).netloc) != (origin.scheme, origin.netloc)
        ]
        assert self.requested, "the network log recorded no request at all"
        assert not outside, f"requests outside {self.base_url}: {outside}"
        # A failed request (a 401 on purpose, a killed service) is logged by the network, not by a script.
        errors = [entry for entry in self.console if entry["level"] == "SEVERE" and entry.get("source") != "network"]
        assert not errors, f"script errors in the browser: {errors}"
