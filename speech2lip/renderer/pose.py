"""Pose-controllable synthesis: re-pose each background frame's head with the learned canonical
depth D_c, then draw the mouth for the new pose.

A background frame b has pose T_b; the new pose rotates the head about its own origin by
(yaw, pitch, roll): T' = T_b R, so T_{c->b'} = T_{c->b} T_c R T_c^-1. For every pixel p' of a
box around the head in the new view, C2O from D_c (Newton, `gamem.c2o_grid_from_canonical`
over the whole canonical frame) finds the canonical point that lands there, and O2C of that
point into view b says where frame b shows it: the head is warped from frame b to the new pose
(a backward warp driven by the learned depth, so each new pixel gets exactly one source).
Pixels the old head covered and the new one does not are holes: inside the new mouth box the
Blend-Net fills them (it was trained on random black holes), elsewhere OpenCV's inpainting does.
The mouth is composed for the new pose directly: C2O of the generated canonical lips with
T_{c->b'}, in a mouth box moved by as much as the projected extended region moved.

Sensible range: about ±15 degrees of yaw and ±10 of pitch and roll. Further out, the sides of
the head that the canonical frame never saw (and the depth there) show.

Angles: yaw about the head's y axis (image down), pitch about its x axis (image right), roll
about its z axis (away from the camera), in degrees, applied as R = R_z(roll) R_x(pitch) R_y(yaw).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import cv2
import numpy as np
import torch

from speech2lip.data.batches import timestamps
from speech2lip.errors import Speech2LipError
from speech2lip.geometry import gamem
from speech2lip.geometry.regions import box_origins
from speech2lip.media import FPS


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """`(4, 4)` rotation R_z(roll) R_x(pitch) R_y(yaw), angles in degrees."""
    y, p, r = (math.radians(a) for a in (yaw, pitch, roll))
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    out = np.eye(4)
    out[:3, :3] = rz @ rx @ ry
    return out


def read_pose_file(path) -> np.ndarray:
    """A pose trajectory CSV (header `yaw,pitch,roll`, degrees, one row per output frame)."""
    path = Path(path)
    if not path.is_file():
        raise Speech2LipError(f"render.pose_file {path} not found")
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        out = np.array([[float(r["yaw"]), float(r["pitch"]), float(r["roll"])] for r in rows])
    except (KeyError, ValueError, TypeError) as exc:
        raise Speech2LipError(
            f"render.pose_file {path}: expected a CSV with columns yaw,pitch,roll (degrees): {exc}"
        ) from None
    if not len(out):
        raise Speech2LipError(f"render.pose_file {path} has no rows")
    return out


def pose_schedule(n: int, cfg) -> np.ndarray:
    """Pose offsets `(n, 3)` (yaw, pitch, roll degrees) of every output frame: `pose_offset`
    + `pose_sweep` sin(2 pi t / `pose_period`) + the `pose_file` rows (the last row holds)."""
    t = np.arange(n) / FPS
    out = np.asarray(cfg.pose_offset, np.float64)[None] + np.asarray(cfg.pose_sweep)[None] * (
        np.sin(2 * np.pi * t / cfg.pose_period)[:, None])  # fmt: skip
    if cfg.pose_file:
        rows = read_pose_file(cfg.pose_file)
        out = out + rows[np.minimum(np.arange(n), len(rows) - 1)]
    return out


class PoseControl:
    """Renders re-posed frames (see the module docstring). `offsets` `(n, 3)` degrees."""

    def __init__(self, model, offsets: np.ndarray, canonical_pose: np.ndarray) -> None:
        self.model, self.offsets = model, np.asarray(offsets, np.float64)
        self.t_c = np.asarray(canonical_pose, np.float64)
        dev = model.k.device
        self.depth = model.full_depth()
        self.height, self.width = self.depth.shape
        ys, xs = np.nonzero(self.depth.cpu().numpy()[::4, ::4] > 0)
        self.head = gamem.pixel_centres(0, 0, self.width, self.height, device=dev)[::4, ::4][
            torch.as_tensor(ys), torch.as_tensor(xs)]  # fmt: skip
        self.head_depth = self.depth[::4, ::4][torch.as_tensor(ys), torch.as_tensor(xs)]

    def active(self, out_ids: np.ndarray) -> bool:
        return bool(np.abs(self.offsets[out_ids]).max() > 0)

    def new_pose(self, t_cb: np.ndarray, out_id: int) -> np.ndarray:
        """T_{c->b'} for output frame `out_id` over background pose T_{c->b}."""
        r = rotation(*self.offsets[out_id])
        return t_cb @ self.t_c @ r @ np.linalg.inv(self.t_c)

    def _landed(self, pixels: torch.Tensor, depth: torch.Tensor, t_co: torch.Tensor):
        mapped, z = gamem.map_pixels(pixels[None, None], depth[None, None], self.model.k,
                                     t_co[None])  # fmt: skip
        return mapped[0, 0][z[0, 0] > 0]

    def head_box(self, t_co_list) -> tuple[int, int, int, int]:
        """A box around the head in every view of `t_co_list` (x0, y0, w, h), 8 px margin."""
        pts = torch.cat([self._landed(self.head, self.head_depth, t) for t in t_co_list])
        x0, y0 = (pts.min(0).values - 8).floor().clamp(min=0).int().tolist()
        x1 = int(min(self.width, float(pts[:, 0].max()) + 8))
        y1 = int(min(self.height, float(pts[:, 1].max()) + 8))
        return x0, y0, max(1, x1 - x0), max(1, y1 - y0)

    def _covered(self, box, t_co: torch.Tensor):
        """For the pixels of `box` in view `t_co`: the canonical points landing there (pixels
        `(h, w, 2)`) and where that worked."""
        x0, y0, w, h = box
        origin = torch.tensor([[x0, y0]], dtype=torch.float32, device=self.depth.device)
        grid, valid = gamem.c2o_grid_from_canonical(
            self.depth, (0, 0, self.width, self.height), origin, (w, h), self.model.k,
            t_co[None], iterations=16, tolerance_px=0.25,
        )  # fmt: skip
        return gamem.denormalize(grid[0], self.width, self.height), valid[0]

    def mouth_origin(self, stored: np.ndarray, t_cb: torch.Tensor, t_new: torch.Tensor):
        """The new mouth box: the stored one moved as the projected extended region moves."""
        ex, ey, ew, eh = self.model.ext_box
        sub = (slice(ey, ey + eh, 4), slice(ex, ex + ew, 4))
        pix = gamem.pixel_centres(0, 0, self.width, self.height, device=self.depth.device)[sub]
        d = self.depth[sub]
        on = d > 0
        centres = []
        for t in (t_cb, t_new):
            pts = self._landed(pix[on], d[on], t)
            centres.append((pts.min(0).values + pts.max(0).values) / 2)
        shift = (centres[1] - centres[0]).cpu().numpy()
        moved = stored + np.round(shift)
        return box_origins(moved[None] + np.array([ew, eh]) / 2, (ew, eh), self.width,
                           self.height)[0]  # fmt: skip

    def render(self, renderer, ctx: np.ndarray, bg: np.ndarray, out_ids: np.ndarray, frames,
               lips=None) -> list[tuple[np.ndarray, tuple[int, int]]]:  # fmt: skip
        """The re-posed frames of output frames `out_ids`, as (patch `(h, w, 3)` uint8, its
        top-left corner): the part of the background frame that changed."""
        model, dev = self.model, self.depth.device
        arrays = renderer.data.read(bg)
        with torch.no_grad():
            if lips is None:
                time_ = torch.as_tensor(timestamps(bg, renderer.n_frames), device=dev)
                cond = renderer.condition(torch.as_tensor(ctx, device=dev), out_ids)
                lips = renderer.rested(model.canonical_lips(cond, time_), out_ids)
            else:
                lips = torch.as_tensor(lips, device=dev)
        out = []
        for i, (b, j) in enumerate(zip(bg, out_ids, strict=True)):
            t_cb = arrays["relative_pose"][i]
            t_cb_t = torch.as_tensor(t_cb, dtype=torch.float32, device=dev)
            t_new = torch.as_tensor(self.new_pose(t_cb, j), dtype=torch.float32, device=dev)
            frame = frames[b]
            box = self.head_box([t_cb_t, t_new])
            with torch.no_grad():
                canvas, holes = self._warp_head(frame, box, t_cb_t, t_new)
                origin = self.mouth_origin(arrays["mouth_origin"][i], t_cb_t, t_new)
                canvas = self._mouth(canvas, holes, lips[i : i + 1], origin, t_new)
            ew, eh = model.ext_box[2:]
            x0, y0 = min(box[0], int(origin[0])), min(box[1], int(origin[1]))
            x1 = max(box[0] + box[2], int(origin[0]) + ew)
            y1 = max(box[1] + box[3], int(origin[1]) + eh)
            out.append((canvas[y0:y1, x0:x1], (x0, y0)))
        return out

    def _warp_head(self, frame: np.ndarray, box, t_cb: torch.Tensor, t_new: torch.Tensor):
        """Frame b's head warped to the new pose (a copy of the frame) and the hole mask."""
        x0, y0, w, h = box
        canon_new, valid_new = self._covered(box, t_new)
        _, valid_old = self._covered(box, t_cb)
        depth_at = gamem.sample(self.depth[None, None], canon_new[None])[0, 0]
        src, z = gamem.map_pixels(canon_new[None], depth_at[None], self.model.k, t_cb[None])
        image = torch.from_numpy(frame.copy()).to(self.depth.device).permute(2, 0, 1)[None].float()
        warped = gamem.sample(image, src)[0].permute(1, 2, 0)
        ok = (valid_new & gamem.inside(src[0], self.width, self.height) & (z[0] > 0)).cpu()
        okn = ok.numpy()
        # The new head: where the warp landed, with pinholes closed (pixels whose Newton solve
        # did not converge inside the face are filled from their neighbours, not holes).
        head = cv2.morphologyEx(okn.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))
        canvas = frame.copy()
        region = canvas[y0 : y0 + h, x0 : x0 + w]
        region[okn] = warped.round().clamp(0, 255).byte().cpu().numpy()[okn]
        pinholes = (head > 0) & ~okn
        if pinholes.any():
            region[:] = cv2.inpaint(np.ascontiguousarray(region), pinholes.astype(np.uint8), 2,
                                    cv2.INPAINT_TELEA)  # fmt: skip
        holes = np.zeros(frame.shape[:2], bool)  # disocclusions: the old head, not the new one
        holes[y0 : y0 + h, x0 : x0 + w] = valid_old.cpu().numpy() & (head == 0)
        return canvas, holes

    def _mouth(self, canvas, holes, lips, origin, t_new: torch.Tensor) -> np.ndarray:
        """Compose the mouth for the new pose into `canvas`; fill the holes left elsewhere."""
        model, dev = self.model, self.depth.device
        ex, ey, ew, eh = model.ext_box
        x, y = int(origin[0]), int(origin[1])
        box = torch.as_tensor(canvas[y : y + eh, x : x + ew], device=dev)
        box = box.permute(2, 0, 1)[None].float() / 255
        hole = torch.as_tensor(holes[y : y + eh, x : x + ew], device=dev)[None, None].float()
        grid, valid = model.c2o(t_new[None], torch.tensor([[x, y]], device=dev), iterations=8)
        mouth = model.compose(lips, box, grid, valid, hole).clamp(0, 1)
        canvas[y : y + eh, x : x + ew] = (mouth[0] * 255).round().byte().permute(1, 2, 0).cpu()
        rest = holes.copy()
        rest[y : y + eh, x : x + ew] = False
        if rest.any():
            canvas = cv2.inpaint(canvas, rest.astype(np.uint8), 5, cv2.INPAINT_TELEA)
        return canvas
