"""Live mode in a real browser: headless Chromium (Debian's chromium + chromium-driver, driven by
Selenium) with a fake microphone playing a speech file, against `python -m speech2lip live`
serving the tiny demo model. Skipped, saying why, where Chromium cannot start."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from conftest import results_folder

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.fixture(scope="module")
def chromium():
    """A function that starts headless Chromium (fake microphone playing `wav`, or none with
    the permission refused); skips the module where it cannot start."""
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs "
                    "them)")  # fmt: skip
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    drivers = []

    def start(tmp_path, wav=None):
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--autoplay-policy=no-user-gesture-required",
                    f"--user-data-dir={tmp_path / 'chromium'}"):  # fmt: skip
            opts.add_argument(arg)
        if wav is not None:
            opts.add_argument("--use-fake-ui-for-media-stream")
            opts.add_argument("--use-fake-device-for-media-stream")
            opts.add_argument(f"--use-file-for-fake-audio-capture={wav}")
        else:
            opts.add_argument("--deny-permission-prompts")
        try:
            driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        except Exception as exc:  # noqa: BLE001 - any failure to start is a reason to skip
            pytest.skip(f"headless Chromium could not start here: {str(exc).splitlines()[0]}")
        drivers.append(driver)
        return driver

    yield start
    for driver in drivers:
        driver.quit()


@pytest.fixture(scope="module")
def server(demo_model, demo_geometry, demo_warp, tmp_path_factory):
    """`python -m speech2lip live` on the tiny demo model, on a free port, over one still
    background frame (so that only the mouth moves): its URL."""
    base = results_folder(tmp_path_factory.mktemp("live") / "demo", demo_model, demo_geometry,
                          demo_warp)  # fmt: skip
    port = _free_port()
    log = open(base / "live.log", "w+")  # noqa: SIM115 - read at the end
    command = [sys.executable, "-m", "speech2lip", "live", str(base / "train/model.pt"),
               "--port", str(port), "--size", "256", "--frames", "1"]  # fmt: skip
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 90
    while True:
        try:
            if _get(url)[0] == 200:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log.seek(0)
            pytest.fail(f"live did not start:\n{log.read()}")
        time.sleep(0.5)
    yield url
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    log.close()


def _stats(driver) -> dict:
    return driver.execute_script("return window.liveStats")


def _wait(driver, test, seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        stats = _stats(driver)
        if test(stats):
            return stats
        time.sleep(0.2)
    return _stats(driver)


def test_the_browser_sees_the_subject_speak(server, chromium, demo_geometry, tmp_path):
    driver = chromium(tmp_path, wav=demo_geometry / "resample/audio.wav")  # espeak speech
    driver.get(server)
    driver.find_element("id", "start").click()
    first = _wait(driver, lambda s: s["frames"] >= 25, 30)
    assert first["frames"] >= 25, f"no video arrived: {first}"
    t0 = time.monotonic()
    time.sleep(4)
    last = _stats(driver)
    fps = (last["frames"] - first["frames"]) / (time.monotonic() - t0)
    assert fps >= 20, last
    assert last["framesDiffer"] >= 0.5 * last["frames"], last
    assert last["error"] is None and last["state"] == "connected"

    # one client at a time: a second one gets "busy", as a page and as a refused offer
    status, text = _get(server)
    assert status == 503 and "busy" in text
    request = urllib.request.Request(server + "offer", data=b'{"sdp": "", "type": "offer"}',
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 409

    # leaving frees the renderer at once, with the session's figures
    driver.find_element("id", "stop").click()
    assert _stats(driver)["state"] == "closed"
    deadline = time.monotonic() + 5
    while _get(server)[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    figures = json.loads(_get(server + "stats")[1])
    assert figures["active"] is None
    assert figures["last"]["frames_rendered"] >= 100
    # one still background frame: what changes is the mouth, moved by the speech (about half
    # the frames: the speech file has pauses, where the mouth rests; a model deaf to the audio
    # moved 6 %)
    assert figures["last"]["frames_mouth_moved"] >= 0.25 * figures["last"]["frames_rendered"]
    assert figures["last"]["av_offset_ms_p95_abs"] <= 40  # 95 % of frames within one frame


def test_a_malformed_offer_is_refused_and_leaves_the_server_free(server):
    for body in (b"not json", b'{"sdp": "v=0 nonsense", "type": "offer"}'):
        request = urllib.request.Request(server + "offer", data=body,
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 400
        assert _get(server)[0] == 200


def test_a_refused_microphone_is_one_clear_line(server, chromium, tmp_path):
    driver = chromium(tmp_path, wav=None)
    driver.get(server)
    driver.find_element("id", "start").click()
    stats = _wait(driver, lambda s: s["state"] == "failed", 15)
    assert stats["state"] == "failed"
    line = driver.find_element("id", "status").text
    assert line.startswith("No microphone: the browser refused it"), line
    assert "--audio FILE" in line
    assert _get(server)[0] == 200  # nothing was taken
