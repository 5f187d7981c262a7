"""The `warp` stage's QA pictures: what to look at before training on a subject."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from speech2lip.pictures import save_png


def _fit(img: np.ndarray, height: int) -> np.ndarray:
    w = max(1, round(img.shape[1] * height / img.shape[0]))
    return cv2.resize(img, (w, height), interpolation=cv2.INTER_AREA)


def qa_pictures(out_dir: Path, qa: dict[int, dict], ext_box) -> None:
    """qa_strip.png, qa_canonical_grid.png and qa_roundtrip.png (see the README)."""
    strip_ids = sorted(i for i, v in qa.items() if "frame" in v)
    rows = []
    for i in strip_ids:
        v = qa[i]
        frame = v["frame"].copy()
        x, y = v["origin"]
        cv2.rectangle(frame, (int(x), int(y)), (int(x) + ext_box[2] - 1, int(y) + ext_box[3] - 1),
                      (255, 255, 0), 2)  # fmt: skip
        lips = v["lips"].copy()
        lips[v["mask"] == 0] = lips[v["mask"] == 0] // 3  # invalid pixels darkened
        rows.append(np.hstack([_fit(frame, 256), _fit(v["mouth"], 256), _fit(lips, 256)]))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0))) for r in rows]
    save_png(out_dir / "qa_strip.png", np.vstack(rows))
    grid_ids = sorted(qa)
    tiles = [qa[i]["lips"] for i in grid_ids]
    cols = 6
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    grid = np.vstack([np.hstack(tiles[r : r + cols]) for r in range(0, len(tiles), cols)])
    save_png(out_dir / "qa_canonical_grid.png", grid)
    trips = []
    for i in strip_ids:
        v = qa[i]
        mask = v["back_mask"][..., None]
        diff = np.abs(v["back"].astype(np.int16) - v["mouth"].astype(np.int16)) * mask
        diff = np.clip(diff * 4, 0, 255).astype(np.uint8)  # x4 so small errors show
        trips.append(np.hstack([v["mouth"], (v["back"] * mask).astype(np.uint8), diff]))
    save_png(out_dir / "qa_roundtrip.png", np.vstack(trips))
