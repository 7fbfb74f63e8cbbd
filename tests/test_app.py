"""The Gradio app, driven in headless Chromium against a tiny Spa3-VLM served on 127.0.0.1: upload, ask, read."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
APP = Path(__file__).resolve().parent.parent / "app" / "app.py"
QUESTION = "How many chairs are in the room?"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="headless Chromium not installed (apt-get install chromium chromium-driver)",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(spa3_vlm_dir, tmp_path):
    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [sys.executable, str(APP), "--model", str(spa3_vlm_dir), "--port", str(port), "--max-new-tokens", "8"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url, log = f"http://127.0.0.1:{port}/", []
    deadline = time.time() + 90
    while time.time() < deadline:
        line = process.stdout.readline()
        log.append(line)
        if "Running on local URL" in line:
            break
        if process.poll() is not None:
            pytest.fail("the app exited:\n" + "".join(log)[-3000:])
    else:
        process.kill()
        pytest.fail("the app did not start within 90 s:\n" + "".join(log)[-3000:])
    yield url
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_upload_ask_and_read_answer(server, browser, spa3_vlm_dir, scene_pictures, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from modeling_spa3r.inference import answer

    wait = WebDriverWait(browser, 60)
    browser.get(server)
    upload = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#files input[type=file]")))
    upload.send_keys("\n".join(str(p) for p in scene_pictures[:3]))
    wait.until(lambda d: all(p.stem in d.find_element(By.ID, "files").text for p in scene_pictures[:3]))
    browser.find_element(By.CSS_SELECTOR, "#question textarea").send_keys(QUESTION)
    browser.find_element(By.ID, "ask").click()
    answer_box = browser.find_element(By.CSS_SELECTOR, "#answer textarea")
    wait.until(lambda d: answer_box.get_attribute("value"))
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#picture img")))
    browser.save_screenshot(str(tmp_path / "app.png"))

    model = AutoModelForImageTextToText.from_pretrained(spa3_vlm_dir).eval()
    frames = [Image.open(p).convert("RGB") for p in scene_pictures[:3]]
    expected = answer(model, AutoProcessor.from_pretrained(spa3_vlm_dir), frames, QUESTION, max_new_tokens=8)
    assert answer_box.get_attribute("value") == expected != ""  # the exact greedy answer, control characters and all
    with Image.open(tmp_path / "app.png") as screenshot:
        assert screenshot.size[0] > 1000
