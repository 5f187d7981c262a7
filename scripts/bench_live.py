#!/usr/bin/env python
"""Live mode benchmark: `python -m speech2lip live MODEL` with a headless Chromium client whose
fake microphone plays a speech file, for `--seconds` of one session.

Prints what the browser received (video frames per second, counted as presented) and the
server's session figures: frames rendered and dropped, latency from the arrival of the audio
packet that completed a frame's input to that frame leaving the server (median, 95th
percentile), the audio/video offset as sent (each frame against the audio packet it was
rendered from: the browser re-synchronises the two streams from these send times, RTCP sender
reports), and the server's resident memory over time (peak in the first minute, peak overall).

    python scripts/bench_live.py results/obama/train/model.pt --seconds 60
    python scripts/bench_live.py results/obama/train/model.pt --seconds 600 --size 512

Needs Debian's chromium and chromium-driver. The browser runs on the same machine and uses
its cores too (decoding VP8, encoding Opus), as it would for a user on one computer.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_AUDIO = ROOT.parent / "shared/media/audio/english_60s.wav"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--audio", default=str(DEFAULT_AUDIO), help="speech WAV for the fake mic")
    ap.add_argument("--extra", default="", help="more arguments for `live`, one string")
    ap.add_argument("--debug", action="store_true", help="the server logs each dropped frame")
    args = ap.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)  # noqa: SIM115
    command = [sys.executable, "-m", "speech2lip", *(["-v"] if args.debug else []), "live",
               args.model, "--port", str(port),
               "--size", str(args.size), *args.extra.split()]  # fmt: skip
    t_start = time.monotonic()
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    while True:
        try:
            urllib.request.urlopen(url, timeout=5)
            break
        except OSError:
            if server.poll() is not None:
                sys.exit(f"live failed to start; its log: {log.name}")
            time.sleep(0.5)
    print(f"server ready in {time.monotonic() - t_start:.1f} s, {rss_mb(server.pid):.0f} MB")

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
              "--no-first-run", "--disable-background-networking", "--disable-component-update",
              "--disable-sync", "--autoplay-policy=no-user-gesture-required",
              f"--user-data-dir={tempfile.mkdtemp()}", "--use-fake-ui-for-media-stream",
              "--use-fake-device-for-media-stream",
              f"--use-file-for-fake-audio-capture={args.audio}"):  # fmt: skip
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        driver.get(url)
        driver.find_element("id", "start").click()
        stats = lambda: driver.execute_script("return window.liveStats")  # noqa: E731
        while stats()["frames"] < 1:
            time.sleep(0.1)
        t0, f0 = time.monotonic(), stats()["frames"]
        peak_first = peak = 0.0
        rows = []
        while (elapsed := time.monotonic() - t0) < args.seconds:
            time.sleep(1)
            mem = rss_mb(server.pid)
            peak = max(peak, mem)
            if elapsed <= 60:
                peak_first = peak
            if int(elapsed) % 10 == 0 or elapsed + 1 >= args.seconds:
                s = stats()
                rows.append((elapsed, s["frames"] - f0, mem))
                print(
                    f"{elapsed:6.1f} s: {s['frames'] - f0} frames received "
                    f"({(s['frames'] - f0) / elapsed:.1f}/s), server {mem:.0f} MB",
                    flush=True,
                )
        s = stats()
        received = rows[-1][1] / rows[-1][0]  # frames presented / seconds, at the last sample
        differ = s["framesDiffer"] / max(1, s["frames"])
        driver.find_element("id", "stop").click()
        time.sleep(1)
        figures = json.loads(urllib.request.urlopen(url + "stats").read())["last"]
    finally:
        driver.quit()
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
    print(
        f"received: {received:.2f} frames/s over {args.seconds:.0f} s "
        f"({differ:.0%} differ from the one before)"
    )
    print(
        f"server: {figures['frames_rendered']} frames rendered, {figures['frames_dropped']} "
        f"dropped ({figures['frames_rendered'] / figures['seconds']:.2f}/s over the session)"
    )
    print(
        f"latency (audio in -> frame out): median {figures['latency_ms_median']:.0f} ms, "
        f"p95 {figures['latency_ms_p95']:.0f} ms, mean {figures['latency_ms_mean']:.0f} ms; "
        f"frames leave {figures['delay_ms']:.0f} ms after their stream time"
    )
    print(
        f"audio/video offset as sent: mean {figures['av_offset_ms_mean']:+.1f} ms, largest "
        f"|{figures['av_offset_ms_max_abs']:.1f}| ms over {figures['av_pairs']} frames"
    )
    print(
        f"input clock moved {figures['input_shifts']} times, "
        f"{figures['input_shift_ms_total']:+.0f} ms in all"
    )
    print(
        f"server memory: peak {peak_first:.0f} MB in the first minute, {peak:.0f} MB overall "
        f"({peak / max(peak_first, 1e-9) - 1:+.1%})"
    )
    print(f"server log: {log.name}")


if __name__ == "__main__":
    main()
