"""The demo face: a real photo animated by mouth controls, head pose and blinks.

The photo is scikit-image's `astronaut()` (Eileen Collins, NASA, public domain). MediaPipe Face
Mesh locates her lips and eyelids once; every frame is then made by closed-form backward warps
(`cv2.remap`) of small regions plus one perspective warp of the whole face:

- mouth: the face is split along the inner upper lip; the lower lip and chin move by the
  difference between the wanted lip gap and the photo's own gap (so lips close over the teeth
  and open onto a dark cavity under her own upper teeth); corners move out (spreading) or in
  (rounding);
- eyes: the upper lid skin is stretched down over the eye (a blink);
- head: rotation about the face centre of a plane (a homography), plus a small shift and scale.

Coordinates are canvas pixels, x right, y down. Frames are `(size, size, 3) uint8` RGB.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# MediaPipe Face Mesh indices (478-point topology).
UPPER_INNER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
LOWER_INNER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
OUTER_CORNERS = (61, 291)
CHIN, NOSE_TIP, UPPER_OUTER = 152, 2, 0
EYES = (  # (upper lid incl. corners, lower lid incl. corners)
    ([33, 246, 161, 160, 159, 158, 157, 173, 133], [33, 7, 163, 144, 145, 153, 154, 155, 133]),
    ([362, 398, 384, 385, 386, 387, 388, 466, 263], [362, 382, 381, 380, 374, 373, 390, 249, 263]),
)


def photo() -> np.ndarray:
    """The source photo, `(512, 512, 3) uint8` RGB."""
    from skimage import data

    return data.astronaut()


def face_landmarks(image: np.ndarray) -> np.ndarray:
    """MediaPipe Face Mesh landmarks of the one face in `image`: `(478, 2) float64` pixels."""
    import mediapipe as mp

    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True) as mesh:
        found = mesh.process(np.ascontiguousarray(image)).multi_face_landmarks
    if not found:
        raise RuntimeError("MediaPipe found no face in the demo photo")
    h, w = image.shape[:2]
    return np.array([[p.x * w, p.y * h] for p in found[0].landmark])


def _curve(points: np.ndarray):
    """y(x) through `points` (sorted by x), constant beyond the ends."""
    order = np.argsort(points[:, 0])
    xs, ys = points[order, 0], points[order, 1]
    return lambda x: np.interp(x, xs, ys)


def _lens(x: np.ndarray, centre: float, half_width: np.ndarray | float) -> np.ndarray:
    """1 at `centre`, 0 beyond +-`half_width`: the shape of an opening mouth."""
    return np.clip(1 - ((x - centre) / half_width) ** 2, 0, 1) ** 0.8


@dataclass
class FaceRig:
    """Everything needed to draw frames: the upscaled photo canvas and its landmarks."""

    canvas: np.ndarray  # (C, C, 3) uint8 RGB
    landmarks: np.ndarray  # (478, 2) canvas pixels
    size: int  # output frame side; one canvas pixel = one output pixel

    @classmethod
    def build(cls, size: int = 512, view_scale: float = 1.9, margin: float = 1.35) -> FaceRig:
        """Crop the photo around the face (`view_scale` x face size, visible) and upscale it."""
        image = photo()
        lm = face_landmarks(image)
        lo, hi = lm.min(0), lm.max(0)
        centre = (lo + hi) / 2
        view = view_scale * float((hi - lo).max())
        side = view * margin
        scale = size / view
        x0, y0 = centre - side / 2
        pad = int(side)
        padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
        ix, iy, iside = int(round(x0)) + pad, int(round(y0)) + pad, int(round(side))
        crop = padded[iy : iy + iside, ix : ix + iside]
        csize = int(round(iside * scale))
        canvas = cv2.resize(crop, (csize, csize), interpolation=cv2.INTER_CUBIC)
        landmarks = (lm - [ix - pad, iy - pad]) * (csize / iside)
        return cls(canvas=canvas, landmarks=landmarks, size=size)

    @property
    def centre(self) -> np.ndarray:
        return (self.landmarks.min(0) + self.landmarks.max(0)) / 2

    def draw_mouth(self, img: np.ndarray, opening: float, spread: float, rounding: float) -> None:
        """Move lips, chin and corners of `img` (a canvas copy) in place."""
        lm = self.landmarks
        up, lo = _curve(lm[UPPER_INNER]), _curve(lm[LOWER_INNER])
        left, right = lm[OUTER_CORNERS[0]], lm[OUTER_CORNERS[1]]
        cx = (left[0] + right[0]) / 2
        hw = (right[0] - left[0]) / 2
        hwi = (lm[308, 0] - lm[78, 0]) / 2
        u_c = float(up(cx))
        gap0 = max(float(lo(cx) - u_c), 0.0)
        chin_y, nose_y = lm[CHIN, 1], lm[NOSE_TIP, 1]
        below = chin_y - u_c
        x0, x1 = int(cx - 2.6 * hw), int(cx + 2.6 * hw) + 1
        y0, y1 = int(min(nose_y, u_c - 1.7 * hw)), int(chin_y + 0.6 * below) + 1
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)

        # Horizontal: corners move out (spread) or in (rounding); a bump with compact support
        # (zero before the region's edge) so nothing jumps at its border.
        corner_shift = hw * (0.14 * spread - 0.24 * rounding)
        r2 = ((xs - cx) / (2.4 * hw)) ** 2 + ((ys - u_c) / (1.6 * hw)) ** 2
        bump = np.clip(1 - r2, 0, 1) ** 2 / (1 - (1 / 2.4) ** 2) ** 2
        xq = xs - corner_shift * np.clip((xs - cx) / hw, -1.5, 1.5) * bump

        # Vertical: split along the inner upper lip; lower part moves to give the wanted gap.
        split = up(xq)
        t = np.clip((ys - split) / below, 0, 1)
        fall = np.clip(1 - (ys - chin_y) / (0.6 * below), 0, 1)
        fall = fall * fall * (3 - 2 * fall)
        gap_max = 0.6 * hw * (1 - 0.35 * rounding)
        low_shift = (opening * gap_max - gap0) * _lens(xq, cx, hwi * (1 + 1.2 * t)) * fall
        tu = np.clip((split - ys) / max(split.mean() - nose_y, 1), 0, 1)
        up_shift = -0.12 * opening * gap_max * _lens(xq, cx, hwi * (1 + tu)) * (1 - tu) ** 2
        is_low = ys >= split
        src_y = np.where(is_low, ys - low_shift, ys - up_shift)
        roi = img[y0:y1, x0:x1]
        warped = cv2.remap(
            np.ascontiguousarray(self.canvas[y0:y1, x0:x1]),
            (xq - x0).astype(np.float32), (src_y - y0).astype(np.float32),
            cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101,
        )  # fmt: skip

        # Inside the mouth: her own teeth (static with the skull) under the upper lip, then a
        # dark cavity. Soft 1.5 px edges.
        lower_lip = lo(xq)
        inside = np.clip((lower_lip - src_y) / 1.5, 0, 1) * is_low
        depth = ys - split
        own_gap = np.maximum(lower_lip - split, 0)
        teeth = cv2.remap(
            np.ascontiguousarray(self.canvas[y0:y1, x0:x1]),
            (xq - x0).astype(np.float32), (ys - y0).astype(np.float32),
            cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101,
        ).astype(np.float64)  # fmt: skip
        shade = np.clip(depth / (opening * gap_max + 1), 0, 1)[..., None]
        cavity = np.array([105.0, 40.0, 45.0]) * (1 - 0.55 * shade)
        w_teeth = np.clip((own_gap * 0.9 - depth) / 1.5 + 0.5, 0, 1)[..., None]
        interior = w_teeth * teeth * 0.92 + (1 - w_teeth) * cavity
        a = inside[..., None]
        roi[:] = np.clip(a * interior + (1 - a) * warped, 0, 255).astype(np.uint8)

    def draw_blink(self, img: np.ndarray, closed: float) -> None:
        """Lower both upper eyelids by `closed` (0 open, 1 shut) in `img`, in place."""
        if closed <= 0:
            return
        for upper_ids, lower_ids in EYES:
            upper, lower = self.landmarks[upper_ids], self.landmarks[lower_ids]
            top_of, bottom_of = _curve(upper), _curve(lower)
            xa, xb = upper[:, 0].min(), upper[:, 0].max()
            height = float(
                np.max(bottom_of(np.linspace(xa, xb, 20)) - top_of(np.linspace(xa, xb, 20)))
            )
            band = 1.3 * height
            x0, x1 = int(xa) - 2, int(xb) + 3
            y0, y1 = int(upper[:, 1].min() - band) - 2, int(lower[:, 1].max()) + 3
            ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
            top, bottom = top_of(xs), bottom_of(xs)
            lid = top + closed * np.maximum(bottom - top, 0)
            start = top - band
            on_lid = (ys >= start) & (ys < lid)
            src_y = np.where(
                on_lid, start + (ys - start) * (top - start) / np.maximum(lid - start, 1e-6), ys
            )
            roi = img[y0:y1, x0:x1]
            warped = cv2.remap(
                np.ascontiguousarray(self.canvas[y0:y1, x0:x1]),
                (xs - x0).astype(np.float32), (src_y - y0).astype(np.float32),
                cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101,
            ).astype(np.float64)  # fmt: skip
            span = np.clip((xs - xa) / max(xb - xa, 1), 0, 1)
            lash = 0.55 * closed * np.exp(-(((ys - lid) / 1.4) ** 2)) * np.sin(np.pi * span)
            roi[:] = np.clip(warped * (1 - lash[..., None]), 0, 255).astype(np.uint8)

    def pose_matrix(
        self, yaw: float, pitch: float, roll: float, shift: np.ndarray, zoom: float
    ) -> np.ndarray:
        """3x3 homography canvas -> output frame: the face plane rotated about its centre."""
        y, p, r = np.deg2rad([yaw, pitch, roll])
        ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
        rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
        rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
        rot = rz @ rx @ ry
        c = self.centre
        f = 2.5 * self.size
        k = np.array([[f, 0, c[0]], [0, f, c[1]], [0, 0, 1.0]])
        e3 = np.array([[0.0], [0.0], [1.0]])
        plane = k @ (rot + (np.eye(3) - rot) @ e3 @ e3.T) @ np.linalg.inv(k)
        ox, oy = self.size / 2 + shift[0] - zoom * c[0], self.size / 2 + shift[1] - zoom * c[1]
        to_out = np.array([[zoom, 0, ox], [0, zoom, oy], [0, 0, 1]])
        return to_out @ plane

    def frame(self, mouth: np.ndarray, blink: float, pose: np.ndarray) -> np.ndarray:
        """One output frame. `mouth` = (opening, spread, rounding); `pose` = (yaw, pitch, roll
        degrees, dx, dy pixels, zoom)."""
        img = self.canvas.copy()
        self.draw_mouth(img, *map(float, mouth))
        self.draw_blink(img, float(blink))
        m = self.pose_matrix(pose[0], pose[1], pose[2], np.asarray(pose[3:5]), float(pose[5]))
        return cv2.warpPerspective(
            img,
            m,
            (self.size, self.size),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT_101,
        )


def head_motion(
    n_frames: int, fps: int, max_deg: float, size: int, rng: np.random.Generator
) -> np.ndarray:
    """Slow, smooth head motion `(n_frames, 6)`: yaw, pitch, roll (deg), dx, dy (px), zoom."""
    t = np.arange(n_frames) / fps
    out = np.zeros((n_frames, 6))
    limits = [max_deg, max_deg * 0.7, max_deg * 0.5, 0.02 * size, 0.015 * size, 0.015]
    for j, limit in enumerate(limits):
        freqs = rng.uniform(0.03, 0.22, 3)
        phases = rng.uniform(0, 2 * np.pi, 3)
        amps = rng.uniform(0.4, 1.0, 3)
        wave = sum(
            a * np.sin(2 * np.pi * f * t + ph) for a, f, ph in zip(amps, freqs, phases, strict=True)
        )
        out[:, j] = limit * wave / amps.sum()
    out[:, 5] += 1.0
    return out


def blinks(n_frames: int, fps: int, per_minute: float, rng: np.random.Generator) -> np.ndarray:
    """Eyelid closure per frame in [0, 1]: Poisson blinks, 80 ms closing, 180 ms opening."""
    duration = n_frames / fps
    t = (np.arange(n_frames) + 0.5) / fps
    closed = np.zeros(n_frames)
    if per_minute <= 0:
        return closed
    when = rng.uniform(0.8, 3.0)
    while when < duration:
        rel = t - when
        shape = np.where(rel < 0.08, rel / 0.08, np.where(rel < 0.12, 1.0, 1 - (rel - 0.12) / 0.18))
        closed = np.maximum(closed, np.clip(np.where((rel >= 0) & (rel < 0.3), shape, 0), 0, 1))
        when += max(1.2, rng.exponential(60.0 / per_minute))
    return closed
