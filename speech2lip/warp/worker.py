"""The warp stage's per-frame work, run in worker processes: each worker warps a range of
frames (O2C canonical lips, mouth box, C2O grid, round-trip QA) and writes it as one shard."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import h5py
import numpy as np

from speech2lip import __version__
from speech2lip.atomic import atomic_path
from speech2lip.config import WarpConfig
from speech2lip.data import audio as audio_features
from speech2lip.data.phones import N_CLASSES
from speech2lip.data.shards import (
    SCHEMA_VERSION,
    Field,
    create_fields,
    shard_name,
)
from speech2lip.errors import Speech2LipError
from speech2lip.geometry.regions import box_origins
from speech2lip.workers import die_with_parent, parent_alive

INVALID_GRID = -2.0  # c2o_grid value where c2o_mask is 0 (outside the crop; compresses well)
_SHARED: dict | None = None  # the run's inputs, inherited by each (forked) worker


# ----------------------------------------------------------------------------- pure functions
def masked_psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (dB, peak 255) of `a` vs `b` `(h, w, C)` over `mask` `(h, w)`; nan when empty."""
    if not mask.any():
        return float("nan")
    err = (a.astype(np.float64) - b.astype(np.float64))[mask]
    mse = float(np.mean(err**2))
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def shard_fields(
    n_points: int,
    lips: tuple[int, int, int, int],
    ext: tuple[int, int, int, int],
    frame_size: tuple[int, int] | None,
) -> dict[str, Field]:
    """Per-frame datasets of a shard."""
    lw, lh, ew, eh = lips[2], lips[3], ext[2], ext[3]
    fields = {
        "split": Field((), "uint8", "", "0 = train split, 1 = test split"),
        "canonical_lips": Field((lh, lw, 3), "uint8", "RGB 0-255",
                                "observed frame warped (O2C) into the canonical lip box"),
        "canonical_mask": Field((lh, lw), "uint8", "0/1",
                                "1 where canonical_lips came from inside the observed image and "
                                "face, not hidden"),
        "mouth": Field((eh, ew, 3), "uint8", "RGB 0-255",
                       "observed frame over the observed mouth box"),
        "mouth_origin": Field((2,), "int32", "pixels (x, y)",
                              "top-left corner of the mouth box in the observed frame"),
        "c2o_grid": Field((eh, ew, 2), "float16", "grid_sample coordinates (x, y)",
                          "per mouth-box pixel, where to sample the canonical lip crop "
                          f"(align_corners=False); {INVALID_GRID} where c2o_mask is 0"),
        "c2o_mask": Field((eh, ew), "uint8", "0/1",
                          "1 where the mouth-box pixel maps inside the canonical lip crop"),
        "pose": Field((4, 4), "float64", "metres", "T_o: head (object) -> camera"),
        "relative_pose": Field((4, 4), "float64", "metres", "T_{c->o} = T_o inv(T_c)"),
        "landmarks": Field((n_points, 2), "float32", "pixels (x, y)",
                           "face landmarks in the observed frame"),
        "mel": Field((audio_features.N_MELS, audio_features.MEL_WINDOW), "float32",
                     "normalised log-mel, -4..4",
                     "Wav2Lip mel window (16 frames = 0.2 s) starting at this video frame"),
        "phones": Field((N_CLASSES, audio_features.MEL_WINDOW), "float32", "share 0..1",
                        "phone classes (pocketsphinx) over the mel window's 16 frames"),
        "ppg": Field((N_CLASSES, audio_features.MEL_WINDOW), "float32", "posterior 0..1",
                     "phone-class posteriors (pocketsphinx's acoustic model) over the same "
                     "16 frames"),
        "mfcc": Field((audio_features.MFCC_PER_FRAME, audio_features.N_MFCC), "float32",
                      "MFCC", "the frame's 4 MFCC frames (10 ms step), python_speech_features"),
    }  # fmt: skip
    if frame_size is not None:
        fields["frame"] = Field((frame_size[1], frame_size[0], 3), "uint8", "RGB 0-255",
                                "the whole observed frame")  # fmt: skip
    return fields


def _init_worker(shared: dict) -> None:
    global _SHARED
    import torch

    die_with_parent(shared["parent_pid"])
    torch.set_num_threads(1)
    _SHARED = shared


def warp_batch(
    frames: np.ndarray,
    face_depth: np.ndarray,
    relative: np.ndarray,
    k: np.ndarray,
    canonical_depth: np.ndarray,
    lips: tuple[int, int, int, int],
    ext: tuple[int, int, int, int],
    tolerance: float,
    sampling: str,
) -> dict[str, np.ndarray]:
    """Warp a batch of observed frames `(B, H, W, 3) uint8` with their D_o `(B, H, W)` and
    T_{c->o} `(B, 4, 4)`; `canonical_depth` is the whole D_c `(H, W)`; `sampling` the
    interpolation of the O2C colours and of the round trip's paste. Returns the per-frame
    fields (numpy) plus `roundtrip_psnr` `(B,)`: O2C then C2O against the observed mouth box."""
    import torch

    from speech2lip.geometry import gamem

    b, height, width = frames.shape[:3]
    lx, ly, lw, lh = lips
    ex, ey, ew, eh = ext
    frames = frames if frames.flags.writeable else frames.copy()
    obs = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    d_o = torch.from_numpy(face_depth.astype(np.float32))
    t_co = torch.from_numpy(relative).float()
    kk = torch.from_numpy(k).float()
    d_c = torch.from_numpy(canonical_depth.astype(np.float32))
    # O2C over the lip box: the training target and its mask.
    crop, valid, _ = gamem.o2c(obs, d_c[ly : ly + lh, lx : lx + lw], (lx, ly), kk, t_co, d_o,
                               tolerance, mode=sampling)  # fmt: skip
    # Where the canonical extended region lands in each observed frame: the mouth box.
    ext_depth = d_c[ey : ey + eh : 4, ex : ex + ew : 4]  # every 4th pixel is enough here
    centres = gamem.pixel_centres(ex, ey, ew, eh)[::4, ::4].unsqueeze(0)
    landed, z = gamem.map_pixels(centres, ext_depth.unsqueeze(0), kk, t_co)
    on = ((ext_depth > 0) & (z > 0)).expand(b, -1, -1)
    centre = np.zeros((b, 2))
    for i in range(b):
        pts = landed[i][on[i]]
        centre[i] = ((pts.min(0).values + pts.max(0).values) / 2).numpy() if len(pts) else (
            ex + ew / 2, ey + eh / 2)  # fmt: skip
    origin = box_origins(centre, (ew, eh), width, height)
    rows = origin[:, 1, None] + np.arange(eh)
    cols = origin[:, 0, None] + np.arange(ew)
    mouth = frames[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]
    d_box = d_o[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]
    grid, c2o_valid = gamem.c2o_grid(d_box, torch.from_numpy(origin), kk, torch.linalg.inv(t_co),
                                     lips, d_c[ly : ly + lh, lx : lx + lw], tolerance)  # fmt: skip
    # Round trip: paste the canonical crop back and compare with the observed mouth box.
    lips_u8 = crop.round().clamp(0, 255)
    back = torch.nn.functional.grid_sample(lips_u8, grid, mode=sampling, align_corners=False)
    back = back.clamp(0, 255)  # bicubic overshoots at edges
    taps = valid[:, None].float()
    if sampling == "bicubic":  # its 4x4 taps: the bilinear 2x2 grown by a pixel each way
        taps = -torch.nn.functional.max_pool2d(-torch.nn.functional.pad(taps, (1, 1, 1, 1)), 3,
                                               stride=1)  # fmt: skip
    covered = torch.nn.functional.grid_sample(taps, grid, align_corners=False)
    usable = (c2o_valid & (covered[:, 0] > 0.999)).numpy()
    back_np = back.permute(0, 2, 3, 1).round().numpy()
    psnr = np.array([masked_psnr(back_np[i], mouth[i], usable[i]) for i in range(b)])
    grid = torch.where(c2o_valid[..., None], grid, torch.full_like(grid, INVALID_GRID))
    return {
        "canonical_lips": lips_u8.permute(0, 2, 3, 1).numpy().astype(np.uint8),
        "canonical_mask": valid.numpy().astype(np.uint8),
        "mouth": np.ascontiguousarray(mouth),
        "mouth_origin": origin,
        "c2o_grid": grid.numpy().astype(np.float16),
        "c2o_mask": c2o_valid.numpy().astype(np.uint8),
        "roundtrip": back_np.astype(np.uint8),
        "roundtrip_mask": usable,
        "roundtrip_psnr": psnr,
    }


def _write_shard(job: tuple[int, int, int, str]) -> dict:
    """Worker: warp frames [start, stop) and write shard `number` (temp name, then rename)."""
    from speech2lip.media import read_frames

    number, start, stop, out_dir = job
    s = _SHARED
    assert s is not None
    cfg: WarpConfig = s["cfg"]
    n = stop - start
    width, height = s["width"], s["height"]
    fields = shard_fields(s["landmarks"].shape[1], s["lips"], s["ext"],
                          (width, height) if cfg.store_frames else None)  # fmt: skip
    path = Path(out_dir) / shard_name(number)
    psnr = np.zeros(n)
    fractions = np.zeros((n, 2))
    qa: dict[int, dict[str, np.ndarray]] = {}
    stream = read_frames(s["frames_path"], width, height,
                         seek=start / audio_features.FPS if start else None, limit=n)  # fmt: skip
    with (
        h5py.File(s["geometry_path"], "r") as geo,
        atomic_path(path, keep_if=partial(parent_alive, s["parent_pid"])) as tmp,
        h5py.File(tmp, "w") as h5,
    ):
        dsets = create_fields(h5, fields, n, cfg.compression, cfg.compression_level)
        h5.attrs.update({"schema_version": SCHEMA_VERSION, "start": start, "stop": stop,
                         "shard": number, "speech2lip_version": __version__})  # fmt: skip
        sl = slice(start, stop)
        dsets["split"][:] = s["split"][sl]
        dsets["pose"][:] = s["pose"][sl]
        dsets["relative_pose"][:] = s["relative"][sl]
        dsets["landmarks"][:] = s["landmarks"][sl]
        dsets["mel"][:] = s["mel"][sl]
        dsets["phones"][:] = s["phones"][sl]
        dsets["ppg"][:] = s["ppg"][sl]
        dsets["mfcc"][:] = s["mfcc"][sl]
        done = 0
        batch: list[np.ndarray] = []
        for frame in stream:
            batch.append(frame)
            if len(batch) < cfg.batch_frames and done + len(batch) < n:
                continue
            lo, hi = done, done + len(batch)
            frames = np.stack(batch)
            out = warp_batch(frames, geo["face_depth"][start + lo : start + hi],
                             s["relative"][start + lo : start + hi], s["K"],
                             s["canonical_depth"], s["lips"], s["ext"],
                             cfg.occlusion_tolerance, cfg.sampling)  # fmt: skip
            for name in ("canonical_lips", "canonical_mask", "mouth", "mouth_origin",
                         "c2o_grid", "c2o_mask"):  # fmt: skip
                dsets[name][lo:hi] = out[name]
            if cfg.store_frames:
                dsets["frame"][lo:hi] = frames
            psnr[lo:hi] = out["roundtrip_psnr"]
            fractions[lo:hi, 0] = out["canonical_mask"].mean(axis=(1, 2))
            fractions[lo:hi, 1] = out["c2o_mask"].mean(axis=(1, 2))
            for j in range(hi - lo):
                if start + lo + j in s["qa_ids"]:
                    qa[start + lo + j] = {
                        "frame": frames[j], "lips": out["canonical_lips"][j],
                        "mask": out["canonical_mask"][j], "mouth": out["mouth"][j],
                        "origin": out["mouth_origin"][j], "back": out["roundtrip"][j],
                        "back_mask": out["roundtrip_mask"][j],
                    }  # fmt: skip
                if start + lo + j in s["grid_ids"]:
                    qa.setdefault(start + lo + j, {})["lips"] = out["canonical_lips"][j]
            done = hi
            batch = []
        if done != n:
            raise Speech2LipError(
                f"{s['frames_path']}: decoded {done} frames for shard {number}, expected {n} "
                "(frames.mkv is shorter than meta.json says); re-run resample"
            )
    return {"number": number, "start": start, "stop": stop, "psnr": psnr,
            "fractions": fractions, "qa": qa, "bytes": path.stat().st_size}  # fmt: skip
