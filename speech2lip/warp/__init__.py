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

import logging
import multiprocessing
import os
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
from speech2lip.data.phones import frame_phone_windows
from speech2lip.data.posteriors import frame_ppg_windows
from speech2lip.data.shards import (
    CANONICAL_FILE,
    SCHEMA_VERSION,
    SHARD_DIR,
    shard_name,
    shard_ranges,
)
from speech2lip.errors import Speech2LipError
from speech2lip.geometry.regions import extended_box, lip_box, lip_points
from speech2lip.inputs import read_clip_audio, read_h5, read_meta, read_npz
from speech2lip.progress import Progress
from speech2lip.warp.qa import qa_pictures
from speech2lip.warp.worker import _init_worker, _write_shard, shard_fields

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- stage
def read_geometry(path, n_points: int, n: int, width: int, height: int) -> dict:
    """The pose_depth stage's geometry.h5, checked against the frames and the landmarks."""
    out, attrs = read_h5(path, ("K", "pose", "canonical_pose", "canonical_depth", "head_mask"),
                         ("canonical_index", "n_frames", "width", "height"))  # fmt: skip
    out["canonical_index"] = int(attrs["canonical_index"])
    n_geo = int(attrs["n_frames"])
    size = (int(attrs["width"]), int(attrs["height"]))
    if not (n_points == n == n_geo == len(out["pose"])):
        raise Speech2LipError(
            f"frame counts disagree: resample {n}, landmarks {n_points}, pose_depth {n_geo}; "
            "re-run from landmarks (snakemake --forcerun landmarks)"
        )
    if size != (width, height):
        raise Speech2LipError(
            f"{path} is {size[0]}x{size[1]}, the frames are {width}x{height}; re-run pose_depth"
        )
    return out


def write_shards(shared: dict, n: int, shard_dir: Path, cfg: WarpConfig, threads: int):
    """Every shard, written in parallel by forked workers: {shard number: its results}, and
    the number of processes used."""
    ranges = shard_ranges(n, cfg.shard_frames)
    jobs = [(i, a, b, str(shard_dir)) for i, (a, b) in enumerate(ranges)]
    results: dict[int, dict] = {}
    ctx = multiprocessing.get_context("fork")  # workers inherit `shared`; no HDF5 open here
    workers = max(1, min(threads, len(jobs)))
    pool = ProcessPoolExecutor(workers, ctx, initializer=_init_worker, initargs=(shared,))
    progress, written = Progress("warp", n, "frames", log), 0
    try:
        with tqdm(total=n, desc="warp", unit="frame", disable=None) as bar:
            futures = [pool.submit(_write_shard, job) for job in jobs]
            for future in as_completed(futures):
                res = future.result()
                results[res["number"]] = res
                bar.update(res["stop"] - res["start"])
                written += res["stop"] - res["start"]
                progress.update(written)
                log.info("warp: shard %d (frames %d-%d) written, %d/%d shards", res["number"],
                         res["start"], res["stop"] - 1, len(results), len(jobs))  # fmt: skip
    except BrokenProcessPool:
        raise Speech2LipError(
            "a warp worker process died (out of memory?); lower --threads or warp.batch_frames "
            "and run again"
        ) from None
    finally:  # on an error, do not wait for the shards still queued
        pool.shutdown(wait=True, cancel_futures=True)
    return results, workers


def write_canonical(path: Path, frame: np.ndarray, geo: dict, lips, ext, landmarks) -> None:
    """The canonical file: the canonical frame, its depth and head mask, K, pose and boxes."""
    height, width = frame.shape[:2]
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset("frame", data=frame, compression="gzip")
        h5.create_dataset("canonical_depth", data=geo["canonical_depth"].astype(np.float32),
                          compression="gzip")  # fmt: skip
        h5.create_dataset("head_mask", data=geo["head_mask"], compression="gzip")
        h5.create_dataset("K", data=geo["K"])
        h5.create_dataset("canonical_pose", data=geo["canonical_pose"])
        h5.create_dataset("lip_box", data=np.array(lips, np.int32))
        h5.create_dataset("extended_box", data=np.array(ext, np.int32))
        h5.create_dataset("landmarks", data=landmarks.astype(np.float32))
        h5.attrs.update({
            "schema_version": SCHEMA_VERSION, "canonical_index": geo["canonical_index"],
            "width": width, "height": height, "depth_units": "metres (camera z), 0 = empty",
            "boxes": "[x0, y0, width, height] in canonical-frame pixels",
            "image": "pixels, x right, y down, origin top-left corner, centres at i + 0.5",
            "pose": "T maps head (object) to camera: X_cam = R X + t; T_{c->o} = T_o inv(T_c)",
        })  # fmt: skip


def shard_entries(results: dict, split: np.ndarray) -> list[dict]:
    """index.json's `shards`: file, frame range, split counts and size of each shard."""
    shards = []
    for i in sorted(results):
        r = results[i]
        n_test = int(split[r["start"] : r["stop"]].sum())
        shards.append({"file": f"{SHARD_DIR}/{shard_name(i)}", "start": r["start"],
                       "stop": r["stop"], "train": r["stop"] - r["start"] - n_test,
                       "test": n_test, "bytes": r["bytes"]})  # fmt: skip
    return shards


def index_of(clip: dict, canon: int, lips, ext, split, shards, fields, cfg: WarpConfig) -> dict:
    """index.json: what the shards hold and where (the reader's entry point)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "n_frames": clip["n_frames"], "fps": audio_features.FPS, "width": clip["width"],
        "height": clip["height"], "canonical": f"{SHARD_DIR}/{CANONICAL_FILE}",
        "canonical_index": canon, "lip_box": list(lips), "extended_box": list(ext),
        "split": {"train": list(clip["split"]["train"]), "test": list(clip["split"]["test"])},
        "counts": {"train": int((split == 0).sum()), "test": int(split.sum())},
        "shards": shards, "bytes": sum(s["bytes"] for s in shards),
        "fields": {k_: {"shape": list(f.shape), "dtype": f.dtype, "units": f.units}
                   for k_, f in fields.items()},
        "audio": {"sample_rate": audio_features.SAMPLE_RATE, "mel_fps": audio_features.MEL_FPS,
                  "mel_window": audio_features.MEL_WINDOW,
                  "mel_start": "int(80 * frame / 25), Wav2Lip's crop_audio_window"},
        "compression": cfg.compression, "speech2lip_version": __version__,
    }  # fmt: skip


def summary_of(results: dict, index: dict, too_big: float, elapsed: float, workers: int) -> dict:
    """warp.json: sizes, boxes, mask fractions, round-trip PSNR and speed."""
    n, total = index["n_frames"], index["bytes"]
    psnr = np.concatenate([results[i]["psnr"] for i in sorted(results)])
    fractions = np.concatenate([results[i]["fractions"] for i in sorted(results)])
    finite = psnr[np.isfinite(psnr)]
    return {
        "n_frames": n, "shards": len(index["shards"]), "bytes": total,
        "bytes_per_frame": total / n, "lip_box": index["lip_box"],
        "extended_box": index["extended_box"], "lips_larger_than_box": too_big,
        "canonical_mask_fraction": float(fractions[:, 0].mean()),
        "c2o_mask_fraction": float(fractions[:, 1].mean()),
        "roundtrip_psnr_db": {
            "mean": float(finite.mean()) if len(finite) else None,
            "median": float(np.median(finite)) if len(finite) else None,
            "p5": float(np.percentile(finite, 5)) if len(finite) else None,
        },
        "seconds": elapsed, "frames_per_second": n / elapsed, "processes": workers,
    }  # fmt: skip


def remove_stale(shard_dir: Path, shards: list[dict]) -> None:
    """Delete shards an earlier run with other settings (or a killed one) left behind."""
    keep = {Path(s_["file"]).name for s_ in shards} | {CANONICAL_FILE}
    for stale in [*shard_dir.glob("shard_*.h5"), *shard_dir.glob(".*.tmp-*.h5")]:
        if stale.name not in keep:
            stale.unlink(missing_ok=True)


def run(
    frames,
    meta,
    audio,
    landmarks,
    geometry,
    out_dir,
    cfg: WarpConfig,
    threads: int = 1,
) -> dict:
    """Warp every frame, compute audio features, write shards, `index.json`, summary and QA."""
    t0 = time.monotonic()
    out_dir = Path(out_dir)
    clip = read_meta(meta)
    n, width, height = clip["n_frames"], clip["width"], clip["height"]
    points = read_npz(landmarks, ("points",))["points"]
    geo = read_geometry(geometry, len(points), n, width, height)
    canon = geo["canonical_index"]
    wav = read_clip_audio(audio, n, dtype="float64")
    log.info("warp: %d frames %dx%d, audio features", n, width, height)
    split = np.ones(n, np.uint8)
    split[slice(*clip["split"]["train"])] = 0
    lips_all = lip_points(points)
    lips, too_big = lip_box(lips_all[canon], lips_all[split == 0], cfg.lip_size, cfg.lip_margin,
                            width, height)  # fmt: skip
    ext = extended_box(lips, cfg.extended_scale, width, height)
    if too_big > 0.01:
        log.warning("warp: the lips are larger than the %dx%d lip box in %.1f%% of the frames; "
                    "raise warp.lip_size", lips[2], lips[3], 100 * too_big)  # fmt: skip
    shared = {
        "cfg": cfg, "parent_pid": os.getpid(), "width": width, "height": height,
        "frames_path": str(frames),
        "geometry_path": str(geometry), "K": geo["K"], "pose": geo["pose"],
        "relative": geo["pose"] @ np.linalg.inv(geo["canonical_pose"]),
        "canonical_depth": geo["canonical_depth"], "lips": lips, "ext": ext, "split": split,
        "landmarks": points[..., :2].astype(np.float32),
        "mel": audio_features.frame_mel_windows(wav, n), "mfcc": audio_features.frame_mfcc(wav, n),
        "phones": frame_phone_windows(wav, n, source=str(audio)),
        "ppg": frame_ppg_windows(wav, n),
        "qa_ids": set(np.linspace(0, n - 1, cfg.qa_frames).round().astype(int).tolist()),
        "grid_ids": set(np.linspace(0, n - 1, 24).round().astype(int).tolist()),
    }  # fmt: skip
    shard_dir = out_dir / SHARD_DIR
    shard_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "index.json").unlink(missing_ok=True)  # an old index must not outlive its shards
    results, workers = write_shards(shared, n, shard_dir, cfg, threads)
    write_canonical(shard_dir / CANONICAL_FILE, read_one(frames, width, height, canon), geo,
                    lips, ext, points[canon, :, :2])  # fmt: skip
    shards = shard_entries(results, split)
    fields = shard_fields(points.shape[1], lips, ext, (width, height) if cfg.store_frames else None)
    index = index_of(clip, canon, lips, ext, split, shards, fields, cfg)
    qa_pictures(out_dir, {k_: v for r in results.values() for k_, v in r["qa"].items()}, ext)
    elapsed = time.monotonic() - t0
    summary = summary_of(results, index, too_big, elapsed, workers)
    remove_stale(shard_dir, shards)
    write_json(out_dir / "warp.json", summary)
    write_json(out_dir / "index.json", index)  # last: its presence means the output is whole
    log.info("warp: %d frames in %.1f s (%.1f frames/s), %.0f KB/frame, round-trip PSNR "
             "%.1f dB (median)", n, elapsed, n / elapsed, index["bytes"] / n / 1024,
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
