"""The renderer (a library used by the `render` stage and the evaluation): the model's frames,
streamed into ffmpeg with the audio muxed in.

Per output frame j with background frame b(j) of the subject's video: the audio code of the
mel windows around j -> canonical lips (the render-time estimator) -> C2O with the learned
canonical depth into b's mouth box -> paste -> Blend-Net -> the mouth box replaces those pixels
of frame b (nothing else changes) -> (optionally) paste back into the original uncropped frame
-> ffmpeg (H.264, yuv420p, `crf`), the audio muxed in.

- `results/{subject}/video.mp4`: the held-out test split re-synthesised from its own audio,
  over its own frames: comparable with the ground truth frame by frame.
- `results/{subject}/driven/{name}.mp4`: any driving audio (any format ffmpeg reads, any
  sample rate; resampled to 16 kHz mono). Background frames play the subject's video from
  `start_frame`, forwards and backwards (ping-pong) when the audio is longer.
- Pose control (`pose_offset`, `pose_sweep`, `pose_file`): each background frame's head is
  re-posed by warping with the learned canonical depth (see `speech2lip.renderer.pose`).

Frames are rendered `batch_frames` at a time and written as they come: memory stays bounded
whatever the audio's length (decoders hold a few frames; nothing holds the video).
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from speech2lip.atomic import atomic_path, remove_stale_temporaries
from speech2lip.config import RenderConfig
from speech2lip.errors import Speech2LipError
from speech2lip.media import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME, crop_scale
from speech2lip.progress import Progress
from speech2lip.renderer.frames import FrameSource, SourceFrames, paste_back

log = logging.getLogger(__name__)

FIELDS = ["mouth", "mouth_origin", "relative_pose", "c2o_grid", "c2o_mask"]
MIN_RMS = 1e-4  # -80 dBFS: quieter than this is digital silence


# ----------------------------------------------------------------------------- pure functions
def check_driving_audio(wav: np.ndarray, path) -> np.ndarray:
    """Driving audio (16 kHz mono float) padded with silence to whole 25 fps frames; a clear
    error for audio that is too short. Silent audio is fine (a log line says so): with
    `render.silence` the mouth rests throughout."""
    if len(wav) < 5 * SAMPLES_PER_FRAME:
        raise Speech2LipError(
            f"driving audio {path}: {len(wav) / SAMPLE_RATE:.2f} s of audio, less than the "
            "0.2 s of one mel window; give a longer recording"
        )
    if float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) < MIN_RMS:
        log.info("driving audio %s is silent throughout (below -80 dBFS)", path)
    n = -(-len(wav) // SAMPLES_PER_FRAME)
    return np.pad(wav, (0, n * SAMPLES_PER_FRAME - len(wav))).astype(np.float32)


def load_driving_audio(path) -> np.ndarray:
    """Decode any audio (or video) file's first audio stream to 16 kHz mono, checked."""
    from speech2lip.media import probe, read_audio

    path = Path(path)
    if not path.is_file():
        raise Speech2LipError(f"driving audio {path} not found; fix subjects.<name>.driving")
    info = probe(path)
    if info.audio_codec is None:
        raise Speech2LipError(f"driving audio {path} has no audio stream")
    return check_driving_audio(read_audio(path, SAMPLE_RATE), path)


def closed_codes(data, ids: np.ndarray, k: int) -> np.ndarray:
    """The mean lip-shape codes `(k,)` of the least open quarter of frames `ids`, in the basis
    training conditioned the lips on (fitted again from the same train-split landmarks). The
    mean code of silent frames predicted from their audio is a half-open mouth (8 px on obama and
    macron, whose closed mouths measure 0.1-1.6 px): people pause with their mouths in every
    state."""
    from speech2lip.geometry.lipshape import LipShapeBasis

    points = data.read_field("landmarks", np.arange(len(data))).astype(np.float64)
    basis = LipShapeBasis.of_subject(points, data.canonical["canonical_index"],
                                     data.split_ids("train"), k)  # fmt: skip
    return basis.closed(basis.encode(points[np.asarray(ids)]), 0.25)


def rest_lips(data, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """The subject's rest mouth as it looks: the canonical lips `(lh, lw, 3)` (uint8 RGB) and
    valid pixels `(lh, lw)` (bool) of one real frame among `ids` (its silent train frames), and
    that frame. Of their least open tenth (inner-lip opening; at least 3 frames), the frame
    whose aligned lips are nearest that tenth's mean shape: a typical closed mouth, drawn from
    the video itself, as open as the subject's 10th-percentile mouth or less. The lip model
    draws closed codes a few pixels open (given a train frame's own codes it drew obama's
    openings 0.82x as wide as they are), and MediaPipe read them open by 0.4-5.9 px; the rest
    mouth of a real closed frame reads as that frame's own opening."""
    from speech2lip.geometry.lipshape import align
    from speech2lip.geometry.topology import inner_lip_opening, topology

    ids = np.asarray(ids)
    points = data.read_field("landmarks", ids).astype(np.float64)
    reference = data.read_field("landmarks", [int(data.canonical["canonical_index"])])[0]
    layout = topology(points)
    lips = align(points, reference.astype(np.float64), layout.stable)[:, list(layout.lips)]
    opening = inner_lip_opening(points[..., :2])
    closed = np.flatnonzero(opening <= np.quantile(opening, 0.1))
    if len(closed) < 3:
        closed = np.argsort(opening, kind="stable")[: min(3, len(ids))]
    mean = lips[closed].mean(axis=0)
    best = int(ids[closed[np.argmin(np.linalg.norm(lips[closed] - mean, axis=-1).mean(-1))]])
    image = data.read_field("canonical_lips", [best])[0]
    valid = data.read_field("canonical_mask", [best])[0].astype(bool)
    return image, valid, best


def mel_contexts(mel: np.ndarray, radius: int) -> np.ndarray:
    """The lip model's audio input for every output frame: `(n, 2r+1, rows, 16)`, the audio
    windows `(n, rows, 16)` around it (the training loop's `AUDIO_OFFSET` centring)."""
    from speech2lip.data.audio import context_indices
    from speech2lip.data.batches import AUDIO_OFFSET

    return mel[context_indices(np.arange(len(mel)) + AUDIO_OFFSET, radius, len(mel))]


# ----------------------------------------------------------------------------- rendering
class Renderer:
    """Mouth boxes for batches of (output frame, background frame) pairs, on `device`."""

    def __init__(self, model, data, cfg: RenderConfig, device: str) -> None:
        self.model, self.data, self.cfg, self.device = model, data, cfg, device
        self.n_frames = len(data)
        self.rest_cond = None  # (D,): what the lips are conditioned on at rest
        self.rest_lips = None  # (4, lh, lw): the rest mouth's real lips (rgb, valid)
        self.rest_weight = None  # (n_out,): per output frame, 0 speech .. 1 rest

    def set_rest(self, rest_ids: np.ndarray, weights: np.ndarray) -> None:
        """Blend each output frame towards the rest mouth by `weights`: the lips'
        conditioning towards `rest_condition(rest_ids)`, and the lips drawn from it towards
        the real lips of a closed frame among `rest_ids` (`rest_lips`)."""
        self.rest_cond = self.rest_condition(rest_ids)
        self.rest_lips = self.real_rest_lips(rest_ids)
        self.rest_weight = np.asarray(weights, np.float32)

    def real_rest_lips(self, rest_ids: np.ndarray):
        """`rest_lips` of frames `rest_ids` as one tensor `(4, lh, lw)` on the device: rgb in
        0..1, then 1 where valid."""
        import torch

        image, valid, frame = rest_lips(self.data, rest_ids)
        log.info("render: the rest mouth's lips are frame %d's", frame)
        rgba = np.concatenate([image / 255.0, valid[..., None]], axis=-1)
        return torch.as_tensor(rgba, dtype=torch.float32, device=self.device).permute(2, 0, 1)

    def rest_condition(self, rest_ids: np.ndarray):
        """What the lips are conditioned on at rest `(D,)`: the mean conditioning of the
        subject's own frames `rest_ids` (its silent train frames), with closed lips' shape."""
        import torch

        from speech2lip.data.audio import context_indices
        from speech2lip.data.batches import AUDIO_OFFSET, read_audio

        radius = self.model.sizes.audio_radius
        idx = context_indices(np.asarray(rest_ids) + AUDIO_OFFSET, radius, self.n_frames)
        needed, where = np.unique(idx, return_inverse=True)
        ctx = read_audio(self.data, needed, self.model.sizes.features)[where.reshape(idx.shape)]
        with torch.no_grad():
            cond, _ = self.model.condition(torch.as_tensor(ctx, device=self.device))
        rest = cond.mean(0)
        k = self.model.shape_dim
        if k:  # the lips' shape: closed, not the mean prediction for silence (half open)
            closed = closed_codes(self.data, rest_ids, k)
            rest[-k:] = torch.as_tensor(closed, dtype=rest.dtype, device=rest.device)
        return rest

    def clear_rest(self) -> None:
        """Back to the audio's own lips everywhere (undo `set_rest`)."""
        self.rest_cond = self.rest_lips = self.rest_weight = None

    def condition(self, mel_ctx, out_ids=None):
        """The lips' conditioning `(B, D)` of mel windows `mel_ctx` (a tensor), blended
        towards the rest mouth for output frames `out_ids` where `set_rest` says so."""
        import torch

        cond, _ = self.model.condition(mel_ctx)
        if self.rest_cond is None or out_ids is None:
            return cond
        w = torch.as_tensor(self.rest_weight[out_ids], dtype=cond.dtype, device=cond.device)
        return torch.lerp(cond, self.rest_cond.to(cond.dtype).expand_as(cond), w[:, None])

    def resting(self, out_ids) -> bool:
        """Whether any of output frames `out_ids` moves towards the rest mouth (`set_rest`)."""
        return (
            self.rest_lips is not None
            and out_ids is not None
            and bool(self.rest_weight[out_ids].any())
        )

    def rested(self, lips, out_ids):
        """Drawn lips `(B, 3, lh, lw)` of output frames `out_ids` blended towards the rest
        mouth's real lips by `set_rest`'s weights (unchanged where there are none)."""
        import torch

        if not self.resting(out_ids):
            return lips
        w = torch.as_tensor(self.rest_weight[out_ids], device=lips.device)
        return blend_rest(lips, self.rest_lips, w)

    def mouths(self, mel_ctx: np.ndarray, background: np.ndarray, lips=None, out_ids=None):
        """`mel_ctx` `(B, 2r+1, 80, 16)`, background ids `(B,)` -> (mouth boxes `(B, eh, ew,
        3)` uint8, origins `(B, 2)`). `lips` `(B, 3, lh, lw)` in 0..1
        replaces the generated lips (the baselines). `out_ids`: the output frames (for the
        rest blend)."""
        import torch

        from speech2lip.data.batches import timestamps, to_device

        arrays = self.data.read(background)
        b = to_device({k: arrays[k] for k in FIELDS}, self.device)
        mel = torch.as_tensor(mel_ctx, device=self.device)
        t = torch.as_tensor(timestamps(background, self.n_frames), device=self.device)
        if lips is not None:
            lips = torch.as_tensor(lips, device=self.device)
        with torch.no_grad():
            cond = self.condition(mel, out_ids) if lips is None else None
            if cond is not None and self.resting(out_ids):
                lips = self.rested(self.model.canonical_lips(cond, t), out_ids)
            out, _ = self.model.render_mouth(mel, t, b["mouth"], b["mouth_origin"],
                                             b["relative_pose"], b["c2o_grid"], b["c2o_mask"],
                                             self.cfg.c2o_iterations, lips, cond)  # fmt: skip
        img = (out * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return img, arrays["mouth_origin"]


def blend_rest(lips, rest, weight):
    """Lips `(B, 3, lh, lw)` moved towards the rest mouth's real lips `rest` `(4, lh, lw)` (rgb,
    valid) by `weight` `(B,)`, where those are valid (elsewhere the drawn lips stay)."""
    w = weight.to(lips.dtype)[:, None, None, None] * rest[3:].to(lips.dtype)
    return lips + (rest[:3].to(lips.dtype) - lips) * w


def clean_speech(
    wav: np.ndarray, cfg, source: str, need_prob: bool
) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Driving audio `wav` (16 kHz) as the features hear it: denoised under `cfg.denoise`
    (`speech2lip.data.denoise`), with its speech probability per frame when `need_prob` (of
    the denoised audio when it was denoised: voice activity reads cleaned speech better), and
    what was done."""
    from speech2lip.data.denoise import denoise
    from speech2lip.data.voice import speech_probability

    n = len(wav) // SAMPLES_PER_FRAME
    prob = speech_probability(wav, n) if need_prob or cfg.denoise != "never" else None
    wav, done = denoise(wav, cfg.denoise, prob, source)
    if done["denoised"] and need_prob:
        prob = speech_probability(wav, n)
    return wav, prob if need_prob else None, done


class SubjectVoice:
    """The subject's own voice, for driving audio: where its clip has speech (silero-vad, per
    frame), how loud its speech is and its cepstral mean (the phone posteriors' prior) over
    the train split. Computed once per render."""

    def __init__(self, data, audio) -> None:
        from speech2lip.data.posteriors import cepstra, cepstral_mean
        from speech2lip.data.voice import speech_level, speech_probability
        from speech2lip.inputs import read_clip_audio

        self.data = data
        wav = read_clip_audio(audio, len(data))
        self.prob = speech_probability(wav, len(data))
        train = data.split_ids("train")
        lo, hi = train[0] * SAMPLES_PER_FRAME, (train[-1] + 1) * SAMPLES_PER_FRAME
        self.level_db = speech_level(wav[lo:hi], self.prob[train])
        self.cepstral_mean = cepstral_mean(*cepstra(wav[lo:hi]))

    def heard(self, wav: np.ndarray, prob: np.ndarray, features: str, source: str, cfg):
        """The model's audio windows of driving `wav` (speech probability `prob` per frame):
        with `cfg.match_level`, of `wav` brought to the subject's speech level first."""
        from speech2lip.data.voice import match_level

        if cfg.match_level:
            wav, gain = match_level(wav, prob, self.level_db)
            if gain:
                log.info("render: driving speech %+.1f dB to the subject's level (%.1f dBFS) "
                         "for the features", gain, self.level_db)  # fmt: skip
        from speech2lip.data.batches import audio_windows

        return audio_windows(wav, features, source, self.cepstral_mean)

    def rest_in_silence(self, renderer: Renderer, prob: np.ndarray, cfg: RenderConfig):
        """The silent runs of output frames with speech probability `prob`: their mouths move to
        the subject's rest mouth (the real lips of a closed one of its silent train frames).
        Returns the silent frames `(n,)`."""
        from speech2lip.data.voice import rest_frames, rest_weights, silent_frames

        n = len(prob)
        silent = silent_frames(prob, cfg.silence_min_frames)
        if not silent.any():
            log.info("render: no silent span of %d+ frames in the audio", cfg.silence_min_frames)
            return silent
        rest = rest_frames(self.prob, self.data.split_ids("train"))
        weights = rest_weights(silent, cfg.silence_ramp, cfg.silence_margin)
        renderer.set_rest(rest, weights)
        log.info("render: %d of %d frames silent (%.1f s): the mouth rests in %d of them, past "
                 "the %d next to speech (a closed one of %d silent train frames)%s", silent.sum(),
                 n, silent.sum() / FPS, (weights > 0).sum(), cfg.silence_margin, len(rest),
                 "; the audio is silent throughout" if silent.all() else "")  # fmt: skip
        return silent


def paste(frame: np.ndarray, mouth: np.ndarray, origin) -> np.ndarray:
    """`frame` with `mouth` `(eh, ew, 3)` written at `origin` (x, y) (a copy)."""
    out = frame.copy()
    x, y = int(origin[0]), int(origin[1])
    out[y : y + mouth.shape[0], x : x + mouth.shape[1]] = mouth
    return out


def stream_video(
    renderer: Renderer,
    mel: np.ndarray,
    background: np.ndarray,
    wav: np.ndarray,
    out_path: Path,
    frames_path: Path,
    meta: dict,
    source_video: str | None,
    pose=None,
    lips_for=None,
    desc: str = "render",
) -> dict:
    """Render output frames (audio windows `mel` `(n, rows, 16)`, as the model hears them:
    `speech2lip.data.batches.join_audio`; backgrounds `(n,)`), stream them
    into ffmpeg with `wav` (16 kHz mono, n * 640 samples) muxed, write `out_path` atomically.
    `pose`: a `speech2lip.renderer.pose.PoseControl` or None. `lips_for(out_ids, bg_ids)`: the
    lips to paste instead of the model's (baselines)."""
    from speech2lip.media import FrameWriter

    cfg = renderer.cfg
    n = len(background)
    width, height = meta["width"], meta["height"]
    radius = renderer.model.sizes.audio_radius
    ctx = mel_contexts(mel, radius)
    frame_bytes = width * height * 3
    frames = FrameSource(frames_path, width, height, meta["n_frames"],
                         chunk=max(4, min(32, (64 << 20) // frame_bytes)))  # fmt: skip
    crop = meta["crop"]
    cropped = tuple(crop["box"]) != (0, 0, *crop["source_size"]) or crop_scale(crop) != (1, 1)
    to_source = cfg.output_size == "source" and source_video is not None and cropped
    source = None
    if to_source:
        source = SourceFrames(
            source_video, meta, FrameSource(frames_path, width, height, meta["n_frames"], chunk=8)
        )
        width, height = crop["source_size"]
    width, height = width - width % 2, height - height % 2  # H.264 4:2:0 needs even sizes
    t0 = time.monotonic()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_temporaries(out_path, "render"):  # left by a killed render
        log.info("render: removed %s, left by an earlier run", stale)
    scratch_prefix = f".render-{out_path.stem}-"
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=scratch_prefix) as scratch, \
            atomic_path(out_path) as tmp:  # fmt: skip
        wav_tmp = Path(scratch) / "audio.wav"
        sf.write(wav_tmp, wav, SAMPLE_RATE, subtype="PCM_16", format="WAV")
        with FrameWriter(tmp, width, height, FPS, "h264", cfg.crf, audio=wav_tmp,
                         preset=cfg.encoder_preset) as writer:  # fmt: skip
            bar = tqdm(total=n, desc=desc, unit="frame", disable=None)
            progress = Progress(desc, n, "frames", log)
            for lo in range(0, n, cfg.batch_frames):
                out_ids = np.arange(lo, min(n, lo + cfg.batch_frames))
                bg = background[out_ids]
                lips = lips_for(out_ids, bg) if lips_for is not None else None
                if pose is not None and pose.active(out_ids):
                    boxes = pose.render(renderer, ctx[out_ids], bg, out_ids, frames, lips)
                else:
                    mouths, origins = renderer.mouths(ctx[out_ids], bg, lips, out_ids)
                    boxes = [(m, o) for m, o in zip(mouths, origins, strict=True)]
                for (patch, origin), b in zip(boxes, bg, strict=True):
                    if source is not None:
                        img = paste_back(source[b].copy(), patch, origin, crop)
                    else:
                        img = paste(frames[b], patch, origin)
                    writer.write(img[:height, :width])
                bar.update(len(out_ids))
                progress.update(lo + len(out_ids))
            bar.close()
    seconds = time.monotonic() - t0
    stats = {"frames": n, "seconds": seconds, "frames_per_second": n / max(seconds, 1e-9),
             "width": width, "height": height, "pasted_back": to_source}  # fmt: skip
    if source is not None and source.worst > 0:
        log.warning("%s: a source frame could not be aligned exactly with frames.mkv (mean "
                    "difference %.2f grey levels)", desc, source.worst)  # fmt: skip
    return stats
