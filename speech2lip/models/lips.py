"""The implicit lip model f(u, v, audio, t) -> rgb and its continuous (4-corner) sampling.

Coordinates (u, v) are `grid_sample` coordinates of the canonical lip crop (-1 and 1 are the
crop's outer edges, `align_corners=False`; pixel centres at -1 + (2i + 1) / size). Audio codes
come from `AudioEncoder`; the timestamp is the source frame index of the background frame
divided by the clip's frame count, so it means the same in training and rendering.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PositionalEncoding(nn.Module):
    """gamma(x) = [x, sin(2^k pi x), cos(2^k pi x)] for k < n_freqs, per input dimension."""

    def __init__(self, n_freqs: int) -> None:
        super().__init__()
        self.register_buffer("scales", (2.0 ** torch.arange(n_freqs)) * math.pi, persistent=False)
        self.n_freqs = n_freqs

    def out_dim(self, in_dim: int) -> int:
        return in_dim * (1 + 2 * self.n_freqs)

    def forward(self, x: Tensor) -> Tensor:
        angles = (x.unsqueeze(-1) * self.scales).flatten(-2)
        return torch.cat([x, torch.sin(angles), torch.cos(angles)], dim=-1)


class GridEncoding(nn.Module):
    """A learned multi-resolution encoding of (u, v) (Instant-NGP / ER-NeRF style, dense: a 2-D
    crop is small enough to need no hashing): `levels` grids of `features` learned values,
    `base` x `base` cells at the coarsest and twice as many per side at each finer level,
    sampled bilinearly at (u, v) and concatenated. A sine encoding spreads a few fixed
    frequencies over the whole crop; the grid gives each place of the crop its own values,
    fine detail (teeth, the lip line) at the cost of a lookup."""

    def __init__(self, levels: int, features: int = 4, base: int = 16) -> None:
        super().__init__()
        self.levels = nn.ParameterList(
            nn.Parameter(torch.empty(1, features, base << i, base << i).uniform_(-1e-2, 1e-2))
            for i in range(levels)
        )  # fmt: skip
        self.out_dim = levels * features

    def forward(self, uv: Tensor) -> Tensor:
        """`uv` `(..., 2)` -> `(..., levels * features)`."""
        flat = uv.reshape(1, -1, 1, 2).to(self.levels[0].dtype)
        parts = [F.grid_sample(grid, flat, padding_mode="border", align_corners=False)[0, :, :, 0].T
                 for grid in self.levels]  # fmt: skip
        return torch.cat(parts, dim=-1).reshape(*uv.shape[:-1], self.out_dim)


class ImplicitLips(nn.Module):
    """MLP f(gamma(u, v), audio code, time code) -> rgb in 0..1.

    `depth` layers of `width` with one skip (the input features re-enter at layer `skip`).
    Audio and time enter through per-frame projections computed once per frame and added to
    the first and the skip layer: `forward(uv (B, P, 2), audio (B, A), time (B,) or None)`
    -> `(B, P, 3)`. `time_freqs = 0` turns the timestamp off. `grid_levels` > 0 adds a
    learned multi-resolution grid encoding of (u, v) (`GridEncoding`) beside gamma.
    """

    def __init__(
        self,
        audio_dim: int = 64,
        uv_freqs: int = 10,
        time_freqs: int = 4,
        width: int = 256,
        depth: int = 8,
        skip: int = 4,
        grid_levels: int = 0,
    ) -> None:
        super().__init__()
        self.uv_enc = PositionalEncoding(uv_freqs)
        self.grid = GridEncoding(grid_levels) if grid_levels > 0 else None
        self.use_time = time_freqs > 0
        self.time_enc = PositionalEncoding(time_freqs) if self.use_time else None
        frame_dim = audio_dim + (self.time_enc.out_dim(1) if self.time_enc else 0)
        uv_dim = self.uv_enc.out_dim(2) + (self.grid.out_dim if self.grid else 0)
        self.skip = skip if 0 < skip < depth else None
        self.first = nn.Linear(uv_dim, width)
        self.frame_first = nn.Linear(frame_dim, width, bias=False)
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(depth - 1))
        if self.skip is not None:
            self.skip_uv = nn.Linear(uv_dim, width, bias=False)
            self.frame_skip = nn.Linear(frame_dim, width, bias=False)
        self.out = nn.Linear(width, 3)

    def frame_features(self, audio: Tensor, time: Tensor | None) -> Tensor:
        """Per-frame conditioning `(B, A + T)`."""
        if not self.use_time:
            return audio
        if time is None:
            raise ValueError("this model was built with a timestamp: pass `time`")
        return torch.cat([audio, self.time_enc(time[:, None])], dim=-1)

    def forward(self, uv: Tensor, audio: Tensor, time: Tensor | None = None) -> Tensor:
        cond = self.frame_features(audio, time)
        enc = self.uv_enc(uv)
        if self.grid is not None:
            enc = torch.cat([enc, self.grid(uv).to(enc.dtype)], dim=-1)
        h = torch.relu(self.first(enc) + self.frame_first(cond)[:, None])
        for i, layer in enumerate(self.hidden, start=1):
            h = layer(h)
            if i == self.skip:
                h = h + self.skip_uv(enc) + self.frame_skip(cond)[:, None]
            h = torch.relu(h)
        return torch.sigmoid(self.out(h))


def corner_offsets(uv: Tensor, cell: Tensor, random: bool) -> tuple[Tensor, Tensor]:
    """The four corners `(B, P, 4, 2)` of a rectangle around each target `uv` `(B, P, 2)` and
    their weights `(B, P, 4)`: each corner weighted by the area of the sub-rectangle opposite
    to it (bilinear weights), so the weights sum to 1 and an affine field is reproduced exactly.

    `cell` `(2,)` is one pixel in uv units. Training (`random`): the rectangle is one cell in
    size and the target lies at a uniformly random place inside it. Rendering: the target is at
    the rectangle's centre (each weight 1/4): the estimator's value at the mean placement.
    """
    frac = torch.rand_like(uv) if random else torch.full_like(uv, 0.5)  # target's place
    lo = uv - frac * cell
    hi = lo + cell
    xs = torch.stack([lo[..., 0], hi[..., 0], lo[..., 0], hi[..., 0]], dim=-1)
    ys = torch.stack([lo[..., 1], lo[..., 1], hi[..., 1], hi[..., 1]], dim=-1)
    corners = torch.stack([xs, ys], dim=-1)
    wx = torch.stack([1 - frac[..., 0], frac[..., 0]], dim=-1)  # weight of the lo/hi x corner
    wy = torch.stack([1 - frac[..., 1], frac[..., 1]], dim=-1)
    weights = (wy[..., :, None] * wx[..., None, :]).flatten(-2)  # order: (lo,lo) (hi,lo) ...
    return corners, weights


def render_points(
    model: ImplicitLips,
    uv: Tensor,
    audio: Tensor,
    time: Tensor | None,
    cell: Tensor,
    random: bool,
) -> Tensor:
    """Continuous sampling: rgb `(B, P, 3)` at targets `uv` as the weighted sum of the model at
    the four corners (one forward pass over B x 4P points)."""
    corners, weights = corner_offsets(uv, cell, random)
    b, p = uv.shape[:2]
    rgb = model(corners.reshape(b, p * 4, 2), audio, time).reshape(b, p, 4, 3)
    return (rgb * weights.unsqueeze(-1)).sum(dim=2)


def crop_uv(width: int, height: int, device=None) -> tuple[Tensor, Tensor]:
    """uv of every pixel centre of a width x height crop `(H * W, 2)` and one cell `(2,)`."""
    xs = (torch.arange(width, device=device) * 2 + 1) / width - 1
    ys = (torch.arange(height, device=device) * 2 + 1) / height - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    cell = torch.tensor([2.0 / width, 2.0 / height], device=device)
    return torch.stack([gx, gy], dim=-1).reshape(-1, 2), cell


def render_lattice(
    model: ImplicitLips, width: int, height: int, audio: Tensor, time: Tensor | None
) -> Tensor:
    """The render-time estimator of `render_points` (`random=False`) over every pixel of a
    width x height crop, `(B, height * width, 3)`, at a quarter of the cost: with the target at
    the centre, the four corners of a pixel's rectangle are that pixel's corners, which it
    shares with its neighbours, so the model runs once per corner of the pixel lattice
    ((height + 1) x (width + 1) points) and each pixel averages its four corners. Training's
    whole crops (L_w, L_s) are drawn with it too, so they see the lips as rendering draws them."""
    xs = torch.arange(width + 1, device=audio.device) * (2.0 / width) - 1
    ys = torch.arange(height + 1, device=audio.device) * (2.0 / height) - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    corners = torch.stack([gx, gy], dim=-1).reshape(1, -1, 2).expand(audio.shape[0], -1, -1)
    rgb = model(corners, audio, time).reshape(-1, height + 1, width + 1, 3)
    mean = (rgb[:, :-1, :-1] + rgb[:, :-1, 1:] + rgb[:, 1:, :-1] + rgb[:, 1:, 1:]) / 4
    return mean.reshape(-1, height * width, 3)
