"""Stage `warp`: GAMEM mappings, audio features and the HDF5 shards training and rendering read.

For every frame o, with the canonical frame c, its pose T_c and canonical depth D_c (from
`pose_depth`):

- `canonical_lips`: the observed frame warped into the canonical view over the canonical lip
  box (O2C, the lip model's training target) and `canonical_mask`, its valid pixels (landed
  inside the observed image, on the face, not hidden);
- `mouth`: the observed frame over the observed mouth box (the canonical extended region,
  cheeks and chin, carried into frame o; fixed size, top-left corner `mouth_origin`);
- `c2o_grid` / `c2o_mask`: for every mouth-box pixel, where to sample the canonical lip crop
  (C2O, from D_o), in `grid_sample` coordinates of that crop;
- `pose` T_o, `relative_pose` T_{c->o}, `landmarks`, `mel` (Wav2Lip window starting at the
  frame) and `mfcc` (SyncNet features of the frame), `split` (0 train, 1 test).

Geometry and pixel conventions: `speech2lip.geometry` and `speech2lip.warp.gamem`; audio:
`speech2lip.warp.audio`; file format and reader: `speech2lip.warp.shards`.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from speech2lip import __version__
from speech2lip.atomic import atomic_path, write_json
from speech2lip.config import WarpConfig
from speech2lip.data import audio as audio_features
from speech2lip.data.shards import (
    CANONICAL_FILE,
    SCHEMA_VERSION,
    SHARD_DIR,
    Field,
    create_fields,
    shard_name,
    shard_ranges,
)
from speech2lip.errors import Speech2LipError
from speech2lip.geometry.regions import box_origins, extended_box, lip_box, lip_points
from speech2lip.warp.qa import qa_pictures

log = logging.getLogger(__name__)

INVALID_GRID = -2.0  # c2o_grid value where c2o_mask is 0 (outside the crop; compresses well)


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
        "mfcc": Field((audio_features.MFCC_PER_FRAME, audio_features.N_MFCC), "float32",
                      "MFCC", "the frame's 4 MFCC frames (10 ms step), python_speech_features"),
    }  # fmt: skip
    if frame_size is not None:
        fields["frame"] = Field((frame_size[1], frame_size[0], 3), "uint8", "RGB 0-255",
                                "the whole observed frame")  # fmt: skip
    return fields


# ----------------------------------------------------------------------------- shard worker
_SHARED: dict | None = None


def _init_worker(shared: dict) -> None:
    global _SHARED
    import torch

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
) -> dict[str, np.ndarray]:
    """Warp a batch of observed frames `(B, H, W, 3) uint8` with their D_o `(B, H, W)` and
    T_{c->o} `(B, 4, 4)`; `canonical_depth` is the whole D_c `(H, W)`. Returns the per-frame
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
                               tolerance)  # fmt: skip
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
    back = torch.nn.functional.grid_sample(lips_u8, grid, align_corners=False)
    covered = torch.nn.functional.grid_sample(valid[:, None].float(), grid, align_corners=False)
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
        atomic_path(path) as tmp,
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
                             cfg.occlusion_tolerance)  # fmt: skip
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


# ----------------------------------------------------------------------------- stage
def _read_wav(path: Path, n_frames: int) -> np.ndarray:
    import soundfile as sf

    try:
        wav, rate = sf.read(str(path), dtype="float64", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise Speech2LipError(f"cannot read audio {path}: {exc}; re-run resample") from None
    if rate != audio_features.SAMPLE_RATE or wav.shape[1] != 1:
        raise Speech2LipError(
            f"{path}: {rate} Hz, {wav.shape[1]} channel(s); the warp stage needs the resample "
            "stage's 16 kHz mono audio (re-run resample)"
        )
    expected = n_frames * audio_features.SAMPLES_PER_FRAME
    if len(wav) != expected:
        raise Speech2LipError(
            f"frame/audio counts disagree: {path} has {len(wav)} samples, {n_frames} frames need "
            f"{expected} (640 per frame); re-run resample (snakemake --forcerun resample)"
        )
    return wav[:, 0]


def run(
    frames_path,
    meta_path,
    audio_path,
    landmarks_path,
    geometry_path,
    out_dir,
    cfg: WarpConfig,
    threads: int = 1,
) -> dict:
    """Warp every frame, compute audio features, write shards, `index.json`, summary and QA."""
    t0 = time.monotonic()
    out_dir = Path(out_dir)
    meta = json.loads(Path(meta_path).read_text())
    n, width, height = meta["n_frames"], meta["width"], meta["height"]
    points = np.load(landmarks_path)["points"]
    with h5py.File(geometry_path, "r") as geo:
        n_geo = int(geo.attrs["n_frames"])
        k, pose = geo["K"][()], geo["pose"][()]
        canonical_pose, canonical_depth = geo["canonical_pose"][()], geo["canonical_depth"][()]
        head_mask, canon = geo["head_mask"][()], int(geo.attrs["canonical_index"])
        geo_size = (int(geo.attrs["width"]), int(geo.attrs["height"]))
    if not (len(points) == n == n_geo == len(pose)):
        raise Speech2LipError(
            f"frame counts disagree: resample {n}, landmarks {len(points)}, pose_depth {n_geo}; "
            "re-run from landmarks (snakemake --forcerun landmarks)"
        )
    if geo_size != (width, height):
        raise Speech2LipError(
            f"{geometry_path} is {geo_size[0]}x{geo_size[1]}, the frames are {width}x{height}; "
            "re-run pose_depth"
        )
    wav = _read_wav(Path(audio_path), n)
    log.info("warp: %d frames %dx%d, audio features", n, width, height)
    mel = audio_features.frame_mel_windows(wav, n)
    mfcc = audio_features.frame_mfcc(wav, n)
    split = np.ones(n, np.uint8)
    split[slice(*meta["split"]["train"])] = 0
    lips_all = lip_points(points)
    lips, too_big = lip_box(lips_all[canon], lips_all[split == 0], cfg.lip_size, cfg.lip_margin,
                            width, height)  # fmt: skip
    ext = extended_box(lips, cfg.extended_scale, width, height)
    if too_big > 0.01:
        log.warning("warp: the lips are larger than the %dx%d lip box in %.1f%% of the frames; "
                    "raise warp.lip_size", lips[2], lips[3], 100 * too_big)  # fmt: skip
    relative = pose @ np.linalg.inv(canonical_pose)
    qa_ids = set(np.linspace(0, n - 1, cfg.qa_frames).round().astype(int).tolist())
    grid_ids = set(np.linspace(0, n - 1, 24).round().astype(int).tolist())
    shared = {
        "cfg": cfg, "width": width, "height": height, "frames_path": str(frames_path),
        "geometry_path": str(geometry_path), "K": k, "relative": relative, "pose": pose,
        "canonical_depth": canonical_depth, "lips": lips, "ext": ext, "split": split,
        "landmarks": points[..., :2].astype(np.float32), "mel": mel, "mfcc": mfcc,
        "qa_ids": qa_ids, "grid_ids": grid_ids,
    }  # fmt: skip
    shard_dir = out_dir / SHARD_DIR
    shard_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "index.json").unlink(missing_ok=True)  # an old index must not outlive its shards
    ranges = shard_ranges(n, cfg.shard_frames)
    jobs = [(i, a, b, str(shard_dir)) for i, (a, b) in enumerate(ranges)]
    results: dict[int, dict] = {}
    ctx = multiprocessing.get_context("fork")  # workers inherit `shared`; no HDF5 open here
    workers = max(1, min(threads, len(jobs)))
    pool = ProcessPoolExecutor(workers, ctx, initializer=_init_worker, initargs=(shared,))
    try:
        with tqdm(total=n, desc="warp", unit="frame", disable=None) as bar:
            futures = [pool.submit(_write_shard, job) for job in jobs]
            for future in as_completed(futures):
                res = future.result()
                results[res["number"]] = res
                bar.update(res["stop"] - res["start"])
                log.info("warp: shard %d (frames %d-%d) written, %d/%d shards", res["number"],
                         res["start"], res["stop"] - 1, len(results), len(jobs))  # fmt: skip
    except BrokenProcessPool:
        raise Speech2LipError(
            "a warp worker process died (out of memory?); lower --threads or warp.batch_frames "
            "and run again"
        ) from None
    finally:  # on an error, do not wait for the shards still queued
        pool.shutdown(wait=True, cancel_futures=True)
    canonical_frame = read_one(frames_path, width, height, canon)
    with atomic_path(shard_dir / CANONICAL_FILE) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset("frame", data=canonical_frame, compression="gzip")
        h5.create_dataset("canonical_depth", data=canonical_depth.astype(np.float32),
                          compression="gzip")  # fmt: skip
        h5.create_dataset("head_mask", data=head_mask, compression="gzip")
        h5.create_dataset("K", data=k)
        h5.create_dataset("canonical_pose", data=canonical_pose)
        h5.create_dataset("lip_box", data=np.array(lips, np.int32))
        h5.create_dataset("extended_box", data=np.array(ext, np.int32))
        h5.create_dataset("landmarks", data=points[canon, :, :2].astype(np.float32))
        h5.attrs.update({
            "schema_version": SCHEMA_VERSION, "canonical_index": canon, "width": width,
            "height": height, "depth_units": "metres (camera z), 0 = empty",
            "boxes": "[x0, y0, width, height] in canonical-frame pixels",
            "image": "pixels, x right, y down, origin top-left corner, centres at i + 0.5",
            "pose": "T maps head (object) to camera: X_cam = R X + t; T_{c->o} = T_o inv(T_c)",
        })  # fmt: skip
    shards = []
    fields = shard_fields(points.shape[1], lips, ext, (width, height) if cfg.store_frames else None)
    for i in sorted(results):
        r = results[i]
        n_test = int(split[r["start"] : r["stop"]].sum())
        shards.append({"file": f"{SHARD_DIR}/{shard_name(i)}", "start": r["start"],
                       "stop": r["stop"], "train": r["stop"] - r["start"] - n_test,
                       "test": n_test, "bytes": r["bytes"]})  # fmt: skip
    total = sum(s["bytes"] for s in shards)
    index = {
        "schema_version": SCHEMA_VERSION,
        "n_frames": n, "fps": audio_features.FPS, "width": width, "height": height,
        "canonical": f"{SHARD_DIR}/{CANONICAL_FILE}", "canonical_index": canon,
        "lip_box": list(lips), "extended_box": list(ext),
        "split": {"train": list(meta["split"]["train"]), "test": list(meta["split"]["test"])},
        "counts": {"train": int((split == 0).sum()), "test": int(split.sum())},
        "shards": shards, "bytes": total,
        "fields": {k_: {"shape": list(f.shape), "dtype": f.dtype, "units": f.units}
                   for k_, f in fields.items()},
        "audio": {"sample_rate": audio_features.SAMPLE_RATE, "mel_fps": audio_features.MEL_FPS,
                  "mel_window": audio_features.MEL_WINDOW,
                  "mel_start": "int(80 * frame / 25), Wav2Lip's crop_audio_window"},
        "compression": cfg.compression, "speech2lip_version": __version__,
    }  # fmt: skip
    psnr = np.concatenate([results[i]["psnr"] for i in sorted(results)])
    fractions = np.concatenate([results[i]["fractions"] for i in sorted(results)])
    qa = {k_: v for r in results.values() for k_, v in r["qa"].items()}
    qa_pictures(out_dir, qa, ext)
    finite = psnr[np.isfinite(psnr)]
    elapsed = time.monotonic() - t0
    summary = {
        "n_frames": n, "shards": len(shards), "bytes": total, "bytes_per_frame": total / n,
        "lip_box": list(lips), "extended_box": list(ext), "lips_larger_than_box": too_big,
        "canonical_mask_fraction": float(fractions[:, 0].mean()),
        "c2o_mask_fraction": float(fractions[:, 1].mean()),
        "roundtrip_psnr_db": {
            "mean": float(finite.mean()) if len(finite) else None,
            "median": float(np.median(finite)) if len(finite) else None,
            "p5": float(np.percentile(finite, 5)) if len(finite) else None,
        },
        "seconds": elapsed, "frames_per_second": n / elapsed, "processes": workers,
    }  # fmt: skip
    keep = {Path(s_["file"]).name for s_ in shards} | {CANONICAL_FILE}
    for stale in [*shard_dir.glob("shard_*.h5"), *shard_dir.glob(".*.tmp-*.h5")]:
        if stale.name not in keep:  # left by an earlier run with other settings, or killed
            stale.unlink(missing_ok=True)
    write_json(out_dir / "warp.json", summary)
    write_json(out_dir / "index.json", index)  # last: its presence means the output is whole
    log.info("warp: %d frames in %.1f s (%.1f frames/s), %.0f KB/frame, round-trip PSNR "
             "%.1f dB (median)", n, elapsed, n / elapsed, total / n / 1024,
             summary["roundtrip_psnr_db"]["median"] or float("nan"))  # fmt: skip
    return summary


def read_one(frames_path, width: int, height: int, index: int) -> np.ndarray:
    """Decode the single frame `index` `(H, W, 3) uint8`."""
    from speech2lip.media import read_frames

    seek = index / audio_features.FPS if index else None
    frames = list(read_frames(frames_path, width, height, seek=seek, limit=1))
    if not frames:
        raise Speech2LipError(f"{frames_path}: no frame {index}; re-run resample")
    return frames[0]
