"""The learned canonical depth D_c over the canonical extended region."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CELL = 8  # pixels per cell of the learned correction's grid


def grid_shape(h: int, w: int) -> tuple[int, int, int, int]:
    """The correction grid's shape for a `(h, w)` depth map: nodes every `CELL` pixels, past
    both edges."""
    return (1, 1, math.ceil(h / CELL) + 1, math.ceil(w / CELL) + 1)


class CanonicalDepth(nn.Module):
    """D_c `(h, w)` in metres: `pose_depth`'s canonical head depth times a smooth learned
    factor, trained by the photometric depth loss (and through C2O by the mouth loss).

    The factor is exp of a coarse grid of log-depth offsets (one per `CELL` pixels, bilinear in
    between). A free value per pixel, as first built, turned rough in training (Adam moves every
    pixel by about the learning rate whatever its gradient's size: 1.5 cm of pixel-to-pixel
    noise on obama); inverting such a surface (C2O) fails at 15-35 % of the lip pixels, and the
    background's own mouth showed through there. Pixels with no surface stay 0.
    `forward()` returns the depth map `(1, h, w)`."""

    def __init__(self, init: Tensor) -> None:
        super().__init__()
        surface = init > 0
        h, w = init.shape
        self.register_buffer("surface", surface)
        self.register_buffer("log_init", torch.where(surface, init, torch.ones_like(init)).log())
        self.offset = nn.Parameter(torch.zeros(grid_shape(h, w)))

    def correction(self) -> Tensor:
        """The learned log-depth offset at every pixel `(h, w)`: the grid, bilinear, with grid
        node (i, j) at pixel centre (CELL j, CELL i)."""
        h, w = self.log_init.shape
        gh, gw = self.offset.shape[-2:]
        size = ((gh - 1) * CELL + 1, (gw - 1) * CELL + 1)
        fine = F.interpolate(self.offset, size=size, mode="bilinear", align_corners=True)
        return fine[0, 0, :h, :w]

    def forward(self) -> Tensor:
        depth = (self.log_init + self.correction()).exp()
        return torch.where(self.surface, depth, torch.zeros_like(depth))[None]


def upgrade_state(state: dict) -> dict:
    """A `model.pt` state dict written when D_c was a free value per pixel (`depth.log_depth`)
    in today's form: that depth as the base and no correction (it renders as before)."""
    if "depth.log_depth" not in state:
        return state
    state = dict(state)
    base = state.pop("depth.log_depth")
    h, w = base.shape
    state["depth.log_init"] = base
    state["depth.offset"] = torch.zeros(grid_shape(h, w))
    return state
