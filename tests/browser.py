"""Helpers to drive `tinycnn serve`'s page in a real (headless) Chromium with Selenium.

    with running_server(model, "mnist") as url, chromium(tmp_path) as driver:
        driver.get(url)
        draw(driver, sketch.digit_strokes(7, rng))
        wait_idle(driver)

Used by tests/test_serve_browser.py, and by it to take the README's screenshot
(TINYCNN_SCREENSHOT=docs/serve.png python -m pytest tests/test_serve_browser.py).
"""
import contextlib
import os
import shutil
import threading
import time

from tinycnn.serve import DigitServer

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# Headless on a shared machine without a display, a GPU or the internet.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,1040"]


def browser_missing():
    """Why the browser test cannot run here (a string), or None when it can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(path):
            return f"{path} not found (apt-get install chromium chromium-driver)"
    return None


@contextlib.contextmanager
def running_server(model, name, pretrained=None):
    """A DigitServer on a free loopback port, served from a thread; yields its URL."""
    server = DigitServer(model, name, "127.0.0.1", 0, log=False, pretrained=pretrained)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextlib.contextmanager
def chromium(tmp_path):
    """A headless Chromium driven by chromedriver, with a fresh profile under tmp_path."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def draw(driver, strokes, pointer="mouse", margin=40, size=200, step_ms=8):
    """Draw strokes given in the unit box (a list of (K, 2) arrays) on the page's pad with
    real pointer events (pointer: "mouse", "pen" or "touch"), as a hand would: down, moves
    of `step_ms` each, up."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput
    rect = driver.execute_script(
        "const r = document.getElementById('pad').getBoundingClientRect();"
        "return [r.left, r.top, r.width / 280];")
    left, top, css_per_px = rect
    actions = ActionBuilder(driver, mouse=PointerInput(pointer, pointer), duration=step_ms)
    act = actions.pointer_action
    for stroke in strokes:
        points = [(int(round(left + (margin + size * x) * css_per_px)),
                   int(round(top + (margin + size * y) * css_per_px))) for x, y in stroke]
        act.move_to_location(*points[0])
        act.pointer_down()
        for x, y in points[1:]:
            act.move_to_location(x, y)
        act.pointer_up()
    actions.perform()


def wait_for(driver, script, timeout=60):
    """Wait until `script` (JavaScript with a return) is true in the page."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if driver.execute_script(script):
            return
        time.sleep(0.05)
    raise TimeoutError(f"the page did not get there in {timeout} s: {script}")


def wait_idle(driver, timeout=60):
    """Wait until the page has sent every change and painted the answer."""
    wait_for(driver, "return window.tinycnn && window.tinycnn.idle()", timeout)


def shrink_png(src, dst, colours=64):
    """Save a screenshot as a small palette PNG (for the README)."""
    from PIL import Image
    Image.open(src).convert("RGB").quantize(colours, method=Image.Quantize.MEDIANCUT).save(dst, optimize=True)
    return dst
