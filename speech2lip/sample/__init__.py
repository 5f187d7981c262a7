"""Stage `sample`: the built-in demo subject, made on demand with no downloads.

A real public-domain face photo (scikit-image's `astronaut`) says espeak-ng speech: phoneme
timings from espeak-ng drive the mouth (bilabials close the lips), with slow head motion and
blinks. The result is synthetic: it exists so a fresh clone can run the whole pipeline and so
tests have a face with a known mouth signal. 25 fps, H.264 + AAC, reproducible for a seed.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from speech2lip.atomic import atomic_path
from speech2lip.config import SampleConfig
from speech2lip.media import FrameWriter
from speech2lip.sample.face import FaceRig, blinks, head_motion
from speech2lip.sample.speech import Speech, mouth_controls, speak_script

log = logging.getLogger(__name__)
FPS = 25


@dataclass(frozen=True)
class Script:
    """Everything that drives the demo video, per frame."""

    speech: Speech
    mouth: np.ndarray  # (N, 3) opening, spread, rounding in [0, 1]
    blink: np.ndarray  # (N,) eyelid closure in [0, 1]
    pose: np.ndarray  # (N, 6) yaw, pitch, roll (deg), dx, dy (px), zoom

    @property
    def n_frames(self) -> int:
        return len(self.mouth)


def make_script(cfg: SampleConfig) -> Script:
    """Speech and every per-frame control for `cfg` (deterministic for `cfg.seed`)."""
    rng = np.random.default_rng(cfg.seed)
    speech = speak_script(cfg.duration, rng, cfg.voice, cfg.words_per_minute)
    n_frames = int(np.ceil(len(speech.audio) / speech.sample_rate * FPS))
    mouth = mouth_controls(speech.phonemes, speech.sample_rate, n_frames, FPS)
    motion_rng, blink_rng = (np.random.default_rng([cfg.seed, k]) for k in (1, 2))
    pose = head_motion(n_frames, FPS, cfg.head_motion_deg, cfg.size, motion_rng)
    blink = blinks(n_frames, FPS, cfg.blink_rate, blink_rng)
    return Script(speech, mouth, blink, pose)


def run(
    cfg: SampleConfig,
    video: str | Path = "data/sample/video.mp4",
    controls: str | Path | None = None,
) -> Script:
    """Write the demo video to `video` (atomically); optionally its controls as `.npz`."""
    video = Path(video)
    video.parent.mkdir(parents=True, exist_ok=True)
    script = make_script(cfg)
    rig = FaceRig.build(cfg.size)
    n = script.n_frames
    log.info("sample: %d frames (%.1f s), %d phonemes", n, n / FPS, len(script.speech.phonemes))
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        audio = np.zeros(int(np.ceil(n / FPS * script.speech.sample_rate)), np.int16)
        audio[: len(script.speech.audio)] = script.speech.audio[: len(audio)]
        sf.write(wav, audio, script.speech.sample_rate, subtype="PCM_16")
        with (
            atomic_path(video) as tmp_out,
            FrameWriter(tmp_out, cfg.size, cfg.size, FPS, "h264", cfg.crf, audio=wav) as writer,
        ):
            for i in tqdm(range(n), desc="sample", unit="frame", disable=None):
                writer.write(rig.frame(script.mouth[i], script.blink[i], script.pose[i]))
                if (i + 1) % 250 == 0:
                    log.info("sample: %d/%d frames", i + 1, n)
    if controls is not None:
        with atomic_path(controls) as tmp_npz, open(tmp_npz, "wb") as f:
            np.savez(f, mouth=script.mouth, blink=script.blink, pose=script.pose)
    log.info("sample: wrote %s", video)
    return script
