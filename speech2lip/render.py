"""Stage `render`: the trained model's frames for the test split or a driving audio.

Thin I/O over `speech2lip.renderer` (which holds the renderer itself, shared with anything else
that renders: the pipeline's evaluation, later a live mode):

- `results/{subject}/video.mp4`: the held-out test split re-synthesised from its own audio,
  over its own frames: comparable with the ground truth frame by frame.
- `results/{subject}/driven/{name}.mp4`: any driving audio over ping-pong backgrounds.
- Each video's figures go next to it as `<stem>.json`.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from speech2lip.atomic import write_json
from speech2lip.config import RenderConfig
from speech2lip.errors import Speech2LipError
from speech2lip.inputs import read_clip_audio, read_meta
from speech2lip.media import FPS, SAMPLES_PER_FRAME
from speech2lip.renderer import (
    FIELDS,
    Renderer,
    SubjectVoice,
    clean_speech,
    load_driving_audio,
    stream_video,
)
from speech2lip.renderer.frames import pingpong

log = logging.getLogger(__name__)


def speech_and_backgrounds(data, audio, driving, start_frame: int):
    """What to render: (16 kHz samples, background frame ids, what in words): the test split's
    own audio over its own frames, or `driving` over ping-pong."""
    if driving is None:
        ids = data.split_ids("test")
        if len(ids) == 0:
            raise Speech2LipError(f"{data.index_path}: the test split is empty")
        wav = read_clip_audio(audio, len(data))
        wav = wav[ids[0] * SAMPLES_PER_FRAME : (ids[-1] + 1) * SAMPLES_PER_FRAME]
        return wav, ids, "the test split"
    wav = load_driving_audio(driving)
    n = len(wav) // SAMPLES_PER_FRAME
    return wav, pingpong(n, len(data), start_frame), f"driving audio {driving}"


def heard(data, audio, wav, driving, cfg: RenderConfig, features: str):
    """What the model hears: (the output frames' audio windows, the subject's voice, the
    output frames' speech probability, what noise suppression did); for the test split the
    voice and probability are None unless `render.silence` needs them. The test split's
    windows come from the warp shards (its own voice); driving audio's are computed here once,
    denoised with `render.denoise`, brought to the subject's level with `render.match_level`
    (for the features only: the video keeps the audio as it is) and its phone posteriors'
    cepstral mean started from the subject's. The caller rests the mouth in silent spans."""
    from speech2lip.data.batches import read_audio
    from speech2lip.data.voice import speech_probability

    n = len(wav) // SAMPLES_PER_FRAME
    voice = SubjectVoice(data, audio) if cfg.silence or driving is not None else None
    if driving is None:
        prob = speech_probability(wav, n) if voice is not None else None
        return read_audio(data, data.split_ids("test"), features), voice, prob, None
    wav, prob, noise = clean_speech(wav, cfg, f"driving audio {driving}", True)
    return voice.heard(wav, prob, features, str(driving), cfg), voice, prob, noise


def run(
    model,
    index,
    frames,
    meta,
    audio,
    video,
    cfg: RenderConfig,
    figures=None,
    driving: str | None = None,
    source: str | None = None,
    threads: int = 1,
    device: str = "auto",
) -> dict:
    """Render `video`: the test split with its own audio (`audio`, the resample stage's
    audio.wav), or `driving` audio over ping-pong backgrounds. `source`: the original video,
    for `output_size: source`. Writes `video` and its figures `figures` (default: `<video
    stem>.json`)."""
    import torch

    from speech2lip.data.shards import WarpData
    from speech2lip.models.checkpoint import load_model, pick_device
    from speech2lip.renderer.pose import PoseControl, pose_schedule

    torch.set_num_threads(max(1, threads))
    dev = pick_device(device)
    video = Path(video)
    clip = read_meta(meta)
    net = load_model(model, dev)
    data = WarpData(index, fields=FIELDS + ["mel"])
    if len(data) != clip["n_frames"]:
        raise Speech2LipError(
            f"{index} has {len(data)} frames, {meta} {clip['n_frames']}: re-run warp"
        )
    wav, background, what = speech_and_backgrounds(data, audio, driving, cfg.start_frame)
    mel, voice, prob, noise = heard(data, audio, wav, driving, cfg, net.sizes.features)
    log.info("render: %s, %d frames (%.1f s) on %s", what, len(mel), len(mel) / FPS, dev)
    offsets = pose_schedule(len(mel), cfg)
    pose = None
    if np.abs(offsets).max() > 0:
        pose = PoseControl(net, offsets, data.canonical["canonical_pose"])
    renderer = Renderer(net, data, cfg, dev)
    silent = voice.rest_in_silence(renderer, prob, cfg) if cfg.silence else None
    stats = stream_video(renderer, mel, background, wav, video, Path(frames), clip,
                         source, pose)  # fmt: skip
    stats.update({"audio": str(driving) if driving else "test split", "device": dev,
                  "config": dataclasses.asdict(cfg), "start_frame": cfg.start_frame,
                  "pose_control": pose is not None,
                  "silent_frames": None if silent is None else int(silent.sum()),
                  "denoise": noise,
                  "resting_frames": None if silent is None else 0
                  if renderer.rest_weight is None else int((renderer.rest_weight > 0).sum()),
                  "background": "test split frames" if driving is None else
                  f"ping-pong from frame {cfg.start_frame}"})  # fmt: skip
    write_json(Path(figures) if figures else video.with_suffix(".json"), stats)
    log.info("render: %d frames in %.1f s (%.1f frames/s) -> %s", stats["frames"],
             stats["seconds"], stats["frames_per_second"], video)  # fmt: skip
    return stats
