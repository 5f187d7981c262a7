"""The learned canonical depth D_c over the canonical extended region."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class CanonicalDepth(nn.Module):
    """D_c `(h, w)` in metres, initialised from `pose_depth`'s canonical head depth and trained
    by the photometric depth loss. Stored as log-depth (always positive) where `init > 0`;
    pixels with no surface stay 0. `forward()` returns the depth map `(1, h, w)`."""

    def __init__(self, init: Tensor) -> None:
        super().__init__()
        surface = init > 0
        self.register_buffer("surface", surface)
        self.log_depth = nn.Parameter(torch.where(surface, init, torch.ones_like(init)).log())

    def forward(self) -> Tensor:
        return torch.where(self.surface, self.log_depth.exp(), torch.zeros_like(self.log_depth))[
            None
        ]
