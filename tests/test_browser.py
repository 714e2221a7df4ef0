"""The playground in a real browser: headless Debian chromium driven by selenium uses every tab once.

Screenshots land in tests/artifacts/browser/ (git-ignored by its own .gitignore); the path is
printed. Skipped only when chromium or chromedriver is missing; CI installs both from Debian.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests.test_app import EXAMPLES, make_app_checkpoint, running_app

try:
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # reported by the fixture: a missing dev dependency is a failure, not a skip
    webdriver = None

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "browser"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,1100",
         "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]  # a microphone to record
WAIT_S = 30

pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="chromium and chromedriver are not installed "
                                       "(apt-get install -y chromium chromium-driver)")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if webdriver is None:
        pytest.fail("selenium is not installed; it is a dev dependency: pip install -e '.[dev]'")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    folder = tmp_path_factory.mktemp("app")
    try:
        with running_app(make_app_checkpoint(folder / "checkpoint"), folder / "server.log") as (url, _):
            driver.get(url)
            yield driver
    finally:
        driver.quit()


def wait_for(driver, condition, what: str):
    """Poll `condition(driver)` until truthy; on a timeout keep a screenshot of what was on screen."""
    from selenium.common.exceptions import (NoSuchElementException, StaleElementReferenceException,
                                            TimeoutException)

    # gradio re-renders components as values arrive, so an element found a moment ago can go stale
    retry = (NoSuchElementException, StaleElementReferenceException)
    try:
        return WebDriverWait(driver, WAIT_S, ignored_exceptions=retry).until(
            condition, message=f"waited {WAIT_S} s for {what}")
    except TimeoutException:
        shoot(driver, "timeout_" + what.replace(" ", "_"))
        raise


def open_tab(driver, tab_id: str) -> None:
    driver.find_element(By.ID, f"{tab_id}-button").click()
    wait_for(driver, lambda d: d.find_element(By.ID, tab_id).is_displayed(), f"the {tab_id} panel")


def upload(driver, tab_id: str, path: Path) -> None:
    driver.find_element(By.CSS_SELECTOR, f"#{tab_id} input[type=file]").send_keys(str(path))


def click(driver, css: str, what: str) -> None:
    """Click the first visible element matching `css`, looking it up afresh until that works."""
    def visible_clicked(d):
        for element in d.find_elements(By.CSS_SELECTOR, css):
            if element.is_displayed():
                element.click()
                return True
        return False
    wait_for(driver, visible_clicked, what)


def text_of(driver, css: str) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return " ".join(e.text or e.get_attribute("value") or "" for e in found).strip()


def toast_text(driver) -> str:
    return text_of(driver, ".toast-wrap")


def shoot(driver, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS.parent / ".gitignore").write_text("*\n")  # never committed, whatever the root .gitignore says
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


@pytest.fixture(scope="module")
def page(browser):
    wait_for(browser, lambda d: d.find_elements(By.ID, "tab-chat-button"), "the page")
    print(f"\nscreenshots: {ARTIFACTS}")
    return browser


def test_chat_streams_and_stops(page):
    open_tab(page, "tab-chat")
    page.find_element(By.CSS_SELECTOR, "#tab-chat textarea[data-testid=textbox]").send_keys(
        "What is 12 plus 7?", Keys.ENTER)
    from selenium.common.exceptions import TimeoutException, WebDriverException

    wait_for(page, lambda d: "12 plus 7" in text_of(d, "#tab-chat [data-testid=user]"), "the message in the chat")
    try:
        wait_for(page, lambda d: text_of(d, "#tab-chat [data-testid=bot]"), "a streamed chat reply")
    except TimeoutException:
        # A sampled reply of the random test model can end at once (its first token may be <|end|>);
        # then the turn must be over, not hanging.
        assert page.find_elements(By.CSS_SELECTOR, "#tab-chat [data-testid=submit-button]"), "no reply, no end"
        assert not page.find_elements(By.CSS_SELECTOR, "#tab-chat [data-testid=stop-button]")

    for stop in page.find_elements(By.CSS_SELECTOR, "#tab-chat [data-testid=stop-button]"):
        try:
            stop.click()  # still streaming: the stop button must end the reply where it is
        except WebDriverException:
            pass  # the reply finished first
    wait_for(page, lambda d: d.find_elements(By.CSS_SELECTOR, "#tab-chat [data-testid=submit-button]"),
             "the chat to be ready again")
    stopped_at = text_of(page, "#tab-chat [data-testid=bot]")
    time.sleep(1.0)
    assert text_of(page, "#tab-chat [data-testid=bot]") == stopped_at, "the reply kept growing after stop"
    shoot(page, "1_chat")


def test_summarize(page):
    open_tab(page, "tab-summarize")
    page.find_element(By.CSS_SELECTOR, "#tab-summarize textarea").send_keys(
        (EXAMPLES / "package_description.txt").read_text())
    page.find_element(By.ID, "summarize-run").click()
    wait_for(page, lambda d: text_of(d, "#summarize-output textarea"), "a summary")
    shoot(page, "2_summarize")


def test_classify(page):
    open_tab(page, "tab-classify")
    click(page, "#tab-classify button.gallery-item", "the first example (dog.png)")
    wait_for(page, lambda d: d.find_elements(By.CSS_SELECTOR, "#classify-input img"), "the image")
    page.find_element(By.ID, "classify-run").click()
    wait_for(page, lambda d: "%" in text_of(d, "#classify-output"), "the top-5 label")
    shoot(page, "3_classify")


def test_detect(page):
    open_tab(page, "tab-detect")
    upload(page, "tab-detect", EXAMPLES / "scene.png")
    wait_for(page, lambda d: d.find_elements(By.CSS_SELECTOR, "#detect-input img"), "the scene")
    threshold = page.find_element(By.CSS_SELECTOR, "#detect-threshold input[type=number]")
    threshold.send_keys(Keys.CONTROL, "a")
    threshold.send_keys("0", Keys.TAB)  # an untrained model scores low: show every box
    page.find_element(By.ID, "detect-run").click()
    wait_for(page, lambda d: "box" in text_of(d, "#detect-output"), "the detection JSON")
    shoot(page, "4_detect")


def test_transcribe_upload_and_microphone(page):
    open_tab(page, "tab-transcribe")
    upload(page, "tab-transcribe", EXAMPLES / "hello_world.wav")
    wait_for(page, lambda d: "Drop Audio Here" not in d.find_element(By.ID, "tab-transcribe").text,
             "the uploaded audio")
    page.find_element(By.ID, "transcribe-run").click()
    wait_for(page, lambda d: text_of(d, "#transcribe-output textarea"), "a transcript")
    shoot(page, "5_transcribe")

    # chromium's fake microphone plays a tone; gradio uploads the recording as a WAV file
    click(page, "#tab-transcribe button[aria-label='Record audio']", "the microphone source")
    click(page, "#tab-transcribe button.record-button", "the record button")
    time.sleep(1.5)
    click(page, "#tab-transcribe button.stop-button", "the stop-recording button")
    page.execute_script("document.querySelector('#transcribe-output textarea').value = ''")
    time.sleep(1.0)  # the recording is uploaded when it stops
    page.find_element(By.ID, "transcribe-run").click()
    wait_for(page, lambda d: text_of(d, "#transcribe-output textarea"), "a transcript of the recording")
    assert "Error" not in toast_text(page)
    shoot(page, "5_transcribe_microphone")


def test_model_tab(page):
    open_tab(page, "tab-model")
    wait_for(page, lambda d: "Last call took" in text_of(d, "#model-facts"), "the model facts")
    assert "parameters" in text_of(page, "#model-facts") and "cpu" in text_of(page, "#model-facts")
    shoot(page, "6_model")


def test_bad_upload_shows_the_pipeline_message(page, tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG not really an image")
    open_tab(page, "tab-classify")
    if page.find_elements(By.CSS_SELECTOR, "#tab-classify button[aria-label='Remove Image']"):
        click(page, "#tab-classify button[aria-label='Remove Image']", "the remove-image button")
    upload(page, "tab-classify", corrupt)
    page.find_element(By.ID, "classify-run").click()
    wait_for(page, lambda d: "not an image that can be read" in toast_text(d), "the error message")
    shoot(page, "7_bad_image")
    upload(page, "tab-classify", EXAMPLES / "red_apple.png")  # and the next call still works
    page.find_element(By.ID, "classify-run").click()
    wait_for(page, lambda d: "%" in text_of(d, "#classify-output") and "Error" not in text_of(d, "#classify-output"),
             "a label after the error")
