"""Fitting the pasted lips to the frame they are pasted into (`train.model.paste_fit`).

The lip crop is drawn in the canonical frame's light; a frame whose head is turned or lit
otherwise shows it as a patch of lighter or flatter skin, and where C2O's valid region ends
inside the crop the paste stops at a hard edge. On hdtf (180 train frames) the Blend-Net passed
both through as a seam around the mouth, in every composed method. Two repairs, both applied
before the Blend-Net, in training and when rendering alike:

- `fit_colour`: per frame and colour channel, a gain (within `GAIN_RANGE`) and an offset that
  map the warped lips onto the frame over the ring where the paste fades in (least squares,
  weighted by how much of both the ring pixel shows), so the crop's skin takes the frame's tone.
- `soft_edge`: the valid region's edge fades in over `EDGE_PX` pixels instead of stopping.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

GAIN_RANGE = (0.8, 1.25)  # a channel's gain stays within this (a fit on a thin ring can swing)
MIN_RING = 20.0  # ring weight (about pixels) below which a frame keeps its colours
EDGE_PX = 4  # mouth-box pixels over which the valid region's edge fades in


def fit_colour(warped: Tensor, frame: Tensor, mask: Tensor) -> Tensor:
    """`warped` `(B, 3, H, W)` (the lips sampled into the mouth box) mapped per frame and
    channel by `a * warped + b`, with `a`, `b` the weighted least-squares fit of `frame` on
    `warped` over the paste's fade-in ring (weights `4 m (1 - m)` of the paste mask `m`
    `(B, 1, H, W)`), `a` clamped to `GAIN_RANGE`. A frame with under `MIN_RING` of ring weight
    is left as it is. The fit is a fixed colour transform: no gradient flows through `a`, `b`."""
    with torch.no_grad():
        w = (4 * mask * (1 - mask)).float()
        total = w.sum(dim=(2, 3), keepdim=True)
        x, y = warped.detach().float(), frame.float()
        mx = (w * x).sum(dim=(2, 3), keepdim=True) / total.clamp(min=1e-6)
        my = (w * y).sum(dim=(2, 3), keepdim=True) / total.clamp(min=1e-6)
        cov = (w * (x - mx) * (y - my)).sum(dim=(2, 3), keepdim=True)
        var = (w * (x - mx) ** 2).sum(dim=(2, 3), keepdim=True)
        a = (cov / var.clamp(min=1e-6)).clamp(*GAIN_RANGE)
        b = my - a * mx
        enough = total >= MIN_RING
        a = torch.where(enough, a, torch.ones_like(a)).to(warped.dtype)
        b = torch.where(enough, b, torch.zeros_like(b)).to(warped.dtype)
    return a * warped + b


def soft_edge(valid: Tensor, px: int = EDGE_PX) -> Tensor:
    """The valid region `(B, H, W)` (bool) as weights `(B, H, W)` in 0..1 that rise from the
    region's edge to 1 about `px` pixels inside it (0 outside it, as before)."""
    v = valid.float()[:, None]
    share = F.avg_pool2d(v, 2 * px + 1, stride=1, padding=px, count_include_pad=False)
    return (v * ((share - 0.5) * 2 * (2 * px + 1) / (2 * px)).clamp(0, 1))[:, 0]
