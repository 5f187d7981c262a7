"""Live mode's renderer: one frame at a time from a frame's mel context, with everything that
does not depend on the audio computed once at start-up.

The background plays `frames` frames of the subject's video from `start_frame`, forwards and
backwards (ping-pong, as `render` does). For each of them the mouth box, its C2O grid (from the
learned canonical depth: the costliest audio-free step) and the decoded frame are kept in
memory, so a frame costs only the audio code, the lips, the paste and the Blend-Net.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np

from speech2lip.config import RenderConfig
from speech2lip.data.phones import N_CLASSES
from speech2lip.errors import Speech2LipError

log = logging.getLogger(__name__)


def subject_files(model: str | Path) -> dict[str, Path]:
    """The subject's pipeline outputs next to `results/<subject>/train/model.pt`, checked."""
    model = Path(model)
    if not model.is_file():
        raise Speech2LipError(f"model {model} not found; train one first, e.g. `snakemake "
                              "--cores 2 results/<subject>/train/model.pt`")  # fmt: skip
    base = model.absolute().parent.parent
    files = {"model": model, "index": base / "warp/index.json",
             "frames": base / "resample/frames.mkv", "meta": base / "resample/meta.json",
             "audio": base / "resample/audio.wav"}  # fmt: skip
    for path in files.values():
        if not path.exists():
            raise Speech2LipError(
                f"{path} not found: live mode reads the subject's pipeline outputs next to the "
                f"model ({base}/{{resample,warp,train}}); re-run the pipeline for it"
            )
    return files


def output_size(width: int, height: int, size: int | None) -> tuple[int, int]:
    """The live video's (width, height): the longer side `size` (never larger than the
    subject's frames), the aspect kept, both even (VP8/H.264 4:2:0)."""
    scale = 1.0 if not size else min(1.0, size / max(width, height))
    w, h = round(width * scale), round(height * scale)
    return max(2, w - w % 2), max(2, h - h % 2)


class LiveEngine:
    """The model, the subject's background frames and its rest mouth, ready to render."""

    def __init__(self, model: str | Path, size: int | None = 512, start_frame: int = 0,
                 frames: int = 250, silence: bool = True, cfg: RenderConfig | None = None,
                 device: str = "cpu") -> None:  # fmt: skip
        import torch

        from speech2lip.data.batches import audio_fields, timestamps, to_device
        from speech2lip.data.shards import WarpData
        from speech2lip.inputs import read_meta
        from speech2lip.models.checkpoint import load_model
        from speech2lip.renderer import FIELDS, Renderer, SubjectVoice
        from speech2lip.renderer.frames import FrameSource

        t_start = time.monotonic()
        self.cfg = cfg or RenderConfig()
        files = subject_files(model)
        self.model = load_model(files["model"], device)
        self.fields = audio_fields(self.model.sizes.features)
        if "phones" in self.fields:
            raise Speech2LipError(
                f"{model} hears {self.model.sizes.features}: live mode computes mel and phone "
                "posteriors, not decoded phones (decoding needs whole utterances); train with "
                "train.model.features: mel, ppg or mel+ppg"
            )
        self.radius = self.model.sizes.audio_radius
        self.device = device
        meta = read_meta(files["meta"])
        data = WarpData(files["index"], fields=FIELDS + ["mel"])
        n = len(data)
        if not 0 <= start_frame < n:
            raise Speech2LipError(f"--start-frame {start_frame} is outside the subject's {n} "
                                  "frames")  # fmt: skip
        self.ids = np.arange(start_frame, min(n, start_frame + max(1, frames)))
        self.width, self.height = meta["width"], meta["height"]
        self.size = output_size(self.width, self.height, size)

        arrays = data.read(self.ids)
        b = to_device({k: arrays[k] for k in FIELDS}, device)
        self.mouth, self.origin = b["mouth"], arrays["mouth_origin"].astype(int)
        self.time = torch.as_tensor(timestamps(self.ids, n), device=device)
        grids, valids = [], []
        with torch.no_grad():
            for lo in range(0, len(self.ids), 16):
                s = slice(lo, lo + 16)
                g, v = self.model.c2o(b["relative_pose"][s], b["mouth_origin"][s],
                                      init=b["c2o_grid"][s], init_valid=b["c2o_mask"][s],
                                      iterations=self.cfg.c2o_iterations)  # fmt: skip
                grids.append(g)
                valids.append(v)
        self.grid, self.valid = torch.cat(grids), torch.cat(valids)
        source = FrameSource(files["frames"], self.width, self.height, n, chunk=32)
        self.backgrounds = [source[int(k)] for k in self.ids]

        self.voice = SubjectVoice(data, files["audio"])
        # the phone posteriors' starting mean: the subject's own (its train split's, as offline)
        self.cepstral_mean = self.voice.cepstral_mean if "ppg" in self.fields else None
        self.rest = self.rest_lips = None
        if silence:
            from speech2lip.data.voice import rest_frames

            rest_ids = rest_frames(self.voice.prob, data.split_ids("train"))
            renderer = Renderer(self.model, data, self.cfg, device)
            self.rest = renderer.rest_condition(rest_ids)
            self.rest_lips = renderer.real_rest_lips(rest_ids)
        self.previous, self.change = None, 0.0  # the last mouth box, and how much it changed
        quiet = {"mel": np.full((80, 16), -4.0, np.float32),
                 "ppg": np.eye(N_CLASSES, 1, dtype=np.float32).repeat(16, axis=1)}  # fmt: skip
        silent = np.stack([np.concatenate([quiet[f] for f in self.fields])] * (2 * self.radius + 1))
        for i in range(3):  # the first calls are slow (allocations, kernels chosen): not live
            self.render(i, silent, 0.0)
        self.previous, self.change = None, 0.0
        log.info("live: %s ready in %.1f s: %d background frames from frame %d, %dx%d output",
                 files["model"], time.monotonic() - t_start, len(self.ids), start_frame,
                 *self.size)  # fmt: skip

    def background(self, i: int) -> int:
        """Output frame `i`'s position in the background cycle: forwards, then backwards
        (ping-pong, as `render` plays driven videos)."""
        from speech2lip.renderer.frames import bounce

        return int(bounce(i, len(self.ids)))

    def render(self, i: int, context: np.ndarray, rest_weight: float = 0.0) -> np.ndarray:
        """Output frame `i` from its audio context `(2r+1, rows, 16)` (mel and/or phone
        posteriors, `self.fields`): `(h, w, 3) uint8` RGB at the output size; `rest_weight`
        blends the lips (their conditioning, then the drawn lips) towards the rest mouth."""
        import torch

        from speech2lip.renderer import blend_rest, paste

        k = self.background(i)
        with torch.no_grad():
            ctx = torch.as_tensor(context[None], device=self.device)
            cond, _ = self.model.condition(ctx)
            resting = self.rest is not None and rest_weight > 0
            if resting:
                cond = torch.lerp(cond, self.rest.to(cond.dtype)[None], float(rest_weight))
            lips = self.model.canonical_lips(cond, self.time[k : k + 1])
            if resting:
                w = torch.full((1,), float(rest_weight), device=self.device)
                lips = blend_rest(lips, self.rest_lips, w)
            out = self.model.compose(lips, self.mouth[k : k + 1], self.grid[k : k + 1],
                                     self.valid[k : k + 1]).clamp(0, 1)  # fmt: skip
        patch = (out[0] * 255).round().byte().permute(1, 2, 0).cpu().numpy()
        if self.previous is not None and self.previous.shape == patch.shape:
            self.change = float(np.abs(patch.astype(np.int16) - self.previous).mean())
        self.previous = patch
        frame = paste(self.backgrounds[k], patch, self.origin[k])
        if self.size != (self.width, self.height):
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        return frame
