"""Real footage from ../shared/media (skipped cleanly where the folder is absent)."""

from __future__ import annotations

import json

import pytest
import soundfile as sf
from conftest import media

from speech2lip.config import ResampleConfig
from speech2lip.media import probe
from speech2lip.resample import run

pytestmark = pytest.mark.media

CLIPS = {  # name: (duration s, what it tests)
    "obama_weekly_address.mp4": 34.1,  # letterboxed 1280x720, 30 fps
    "hdtf_woman_512.mp4": 8.1,  # MPEG-4 Part 2, 16 kHz stereo
    "vfr_office.mp4": 6.1,  # variable frame rate
    "portrait_hevc_kitchen.mp4": 20.1,  # 1080x1920 HEVC, small face
}


@pytest.mark.parametrize("name", sorted(CLIPS))
def test_real_clip_resamples_with_consistent_counts(tmp_path, name):
    src = media(name)
    info = probe(src)
    meta = run(src, tmp_path, ResampleConfig(size=256))
    n = meta["n_frames"]
    assert abs(n - round(info.duration * 25)) <= 2
    assert abs(n / 25 - CLIPS[name]) < 0.2
    audio, sr = sf.read(tmp_path / "audio.wav")
    assert sr == 16000 and audio.ndim == 1 and len(audio) == n * 640
    assert (meta["width"], meta["height"]) == (256, 256)
    x, y, w, h = meta["crop"]["box"]
    assert w == h and x >= 0 and y >= 0 and x + w <= info.width and y + h <= info.height
    assert json.loads((tmp_path / "meta.json").read_text())["split"]["test"][1] == n
    if name.startswith("obama"):  # the letterbox (picture at x=64, y=36, 1152x648) is excluded
        assert x >= 64 and y >= 36 and y + h <= 36 + 648
    if name.startswith("vfr"):
        assert meta["source"]["variable_frame_rate"]
