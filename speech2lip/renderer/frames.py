"""Background frames for rendering: which source frame backs each output frame (ping-pong),
random access to decoded frames with a bounded cache, and pasting results back into the
original (uncropped) video.

Frame k of `resample/frames.mkv` is the k-th 25 fps frame of the source video
(`ffmpeg -vf fps=25`); the crop box and scale in `meta.json` map its pixels to the source's.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from speech2lip.errors import Speech2LipError
from speech2lip.media import FPS, crop_scale, read_frames

log = logging.getLogger(__name__)


def pingpong(n_out: int, n_frames: int, start: int = 0) -> np.ndarray:
    """Background frame of each of `n_out` output frames: the clip played forwards from
    `start`, then backwards, then forwards again (0 1 2 .. n-1 n-2 .. 1 0 1 ..), so the
    motion never jumps. `(n_out,) int64`."""
    if n_frames < 1:
        raise ValueError("no frames to play")
    if not 0 <= start < n_frames:
        raise Speech2LipError(
            f"render.start_frame {start} is outside the subject's {n_frames} frames"
        )
    return bounce(start + np.arange(n_out), n_frames)


def bounce(steps, n_frames: int) -> np.ndarray:
    """The ping-pong background frame of each of `steps` (0, 1, 2, ...: steps through the clip
    from frame 0): 0 1 .. n-1 n-2 .. 1 0 1 .. `int64`, shaped like `steps`."""
    steps = np.asarray(steps, np.int64)
    if n_frames == 1:
        return np.zeros_like(steps)
    period = 2 * (n_frames - 1)
    phase = steps % period
    return np.where(phase < n_frames, phase, period - phase).astype(np.int64)


class FrameSource:
    """Decoded frames `(H, W, 3) uint8` of a video by index, in any order, holding at most
    `chunk` frames in memory: a miss decodes the `chunk` frames from the requested one onwards
    (or, going backwards, up to it), seeking to it first. Exact for intra-only files such as
    `frames.mkv` (FFV1, every frame a key frame); `filters` (e.g. `["fps=25"]` for a source
    video) are applied after the seek."""

    def __init__(
        self, path: str | Path, width: int, height: int, n_frames: int | None = None,
        chunk: int = 32, filters: tuple[str, ...] = (),
    ) -> None:  # fmt: skip
        self.path, self.width, self.height = Path(path), width, height
        self.n_frames, self.chunk, self.filters = n_frames, max(1, chunk), tuple(filters)
        self._start = 0
        self._frames: list[np.ndarray] = []
        self._last = -1
        self.decodes = 0  # how many chunks were decoded (for tests and the log)

    def __getitem__(self, index: int) -> np.ndarray:
        index = int(index)
        if self.n_frames is not None and not 0 <= index < self.n_frames:
            raise IndexError(f"frame {index} outside 0..{self.n_frames - 1} of {self.path}")
        if not self._start <= index < self._start + len(self._frames):
            backwards = index < self._last
            start = max(0, index - self.chunk + 1) if backwards else index
            self._load(start)
            if not self._start <= index < self._start + len(self._frames):
                raise Speech2LipError(
                    f"{self.path}: frame {index} could not be decoded (the file has fewer "
                    "frames); re-run resample"
                )
        self._last = index
        return self._frames[index - self._start]

    def _load(self, start: int) -> None:
        seek = start / FPS if start else None
        self._frames = list(read_frames(self.path, self.width, self.height, self.filters,
                                        seek=seek, limit=self.chunk))  # fmt: skip
        self._start = start
        self.decodes += 1


class SourceFrames(FrameSource):
    """Frames of the original source video at 25 fps, full size, index-aligned with
    `frames.mkv`. A seek into a compressed source can land a frame early or late after the
    `fps` filter, so each chunk is decoded from a little before, once at full size and once
    through the `resample` stage's own crop-and-scale filters, and aligned where the latter
    equals `frames.mkv`'s frame exactly."""

    SLACK = 3  # frames decoded before and after a chunk to find the alignment

    def __init__(self, source: str | Path, meta: dict, resampled: FrameSource,
                 chunk: int = 8) -> None:  # fmt: skip
        from speech2lip.media import scale_filters

        width, height = meta["crop"]["source_size"]
        super().__init__(source, width, height, meta["n_frames"], chunk, (f"fps={FPS}",))
        self.resampled = resampled
        self.match_filters = tuple(scale_filters(tuple(meta["crop"]["box"]),
                                                 meta["config"].get("size")))  # fmt: skip
        self.worst = 0.0  # largest residual of an alignment (0 when exact)

    def _load(self, start: int) -> None:
        lo = max(0, start - self.SLACK)
        seek = lo / FPS if lo else None
        limit = self.chunk + 2 * self.SLACK
        full = list(read_frames(self.path, self.width, self.height, self.filters, seek=seek,
                                limit=limit))  # fmt: skip
        ref = self.resampled[start]
        small = read_frames(self.path, ref.shape[1], ref.shape[0], self.match_filters,
                            seek=seek, limit=2 * self.SLACK + 1)  # fmt: skip
        errors = [float(np.abs(f.astype(np.int16) - ref).mean()) for f in small]
        if not errors:
            raise Speech2LipError(f"{self.path}: nothing decoded at frame {start}")
        best = int(np.argmin(errors))
        self.worst = max(self.worst, errors[best])
        self._frames, self._start = full[best : best + self.chunk], start
        self.decodes += 1


def source_patch_box(
    box: tuple[int, int, int, int], crop: dict, size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """The source-video pixels `(x0, y0, x1, y1)` covered by box `(x, y, w, h)` of the
    resampled frame (crop box `crop["box"]`, scale per axis `crop["scale"]`), clipped to `size`."""
    cx, cy = crop["box"][:2]
    sx, sy = crop_scale(crop)
    x, y, w, h = box
    x0 = int(np.floor(cx + x / sx))
    y0 = int(np.floor(cy + y / sy))
    x1 = int(np.ceil(cx + (x + w) / sx))
    y1 = int(np.ceil(cy + (y + h) / sy))
    return max(0, x0), max(0, y0), min(size[0], x1), min(size[1], y1)


def paste_back(
    source: np.ndarray, patch: np.ndarray, origin: tuple[int, int], crop: dict
) -> np.ndarray:
    """Paste `patch` `(h, w, 3)` (the resampled frame's pixels at `origin`) into the source
    frame `source` `(H, W, 3)` (modified in place and returned), resampled through the crop's
    scale with bilinear interpolation; the outermost patch pixel is blended half-and-half with
    the source so the seam does not show."""
    h, w = patch.shape[:2]
    sx, sy = crop_scale(crop)
    cx, cy = crop["box"][:2]
    x0, y0, x1, y1 = source_patch_box((*origin, w, h), crop, (source.shape[1], source.shape[0]))
    if x1 <= x0 or y1 <= y0:
        return source
    # source pixel centre (X + 0.5) <-> resampled coordinate ((X + 0.5 - cx) s - 0.5) - origin
    ox, oy = origin
    matrix = np.array([[sx, 0, (x0 + 0.5 - cx) * sx - 0.5 - ox],
                       [0, sy, (y0 + 0.5 - cy) * sy - 0.5 - oy]], np.float64)  # fmt: skip
    size = (x1 - x0, y1 - y0)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpAffine(patch, matrix, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
    alpha = np.ones((h, w), np.float32)
    alpha[[0, -1], :] = alpha[:, [0, -1]] = 0.5
    weight = cv2.warpAffine(alpha, matrix, size, flags=flags, borderValue=0.0)[..., None]
    region = source[y0:y1, x0:x1].astype(np.float32)
    source[y0:y1, x0:x1] = np.clip(region + weight * (warped - region) + 0.5, 0, 255).astype(
        np.uint8
    )
    return source
