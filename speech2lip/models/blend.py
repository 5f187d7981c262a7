"""Blend-Net: a small residual U-Net over the observed mouth box (not the whole frame).

Input: the mouth box with the generated lips pasted in (3), the paste mask (1) and the hole
mask (1); output: that picture plus a learned residual. `black_holes` punches random holes
into the pasted picture (with their mask) so the net learns to fill the holes forward warping
leaves at new poses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.1),
        nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.1),
    )  # fmt: skip


class BlendNet(nn.Module):
    """`forward(pasted (B,3,H,W) in 0..1, paste_mask (B,1,H,W), holes (B,1,H,W))` -> `(B,3,H,W)`.
    H and W must be multiples of 2^(levels - 1)."""

    def __init__(self, channels: tuple[int, ...] = (32, 64, 128)) -> None:
        super().__init__()
        self.down = nn.ModuleList()
        cin = 5
        for c in channels:
            self.down.append(_block(cin, c))
            cin = c
        self.up = nn.ModuleList(
            _block(channels[i + 1] + channels[i], channels[i]) for i in range(len(channels) - 1)
        )
        self.out = nn.Conv2d(channels[0], 3, 1)
        nn.init.zeros_(self.out.weight)  # starts as the identity: output = pasted input
        nn.init.zeros_(self.out.bias)

    def forward(self, pasted: Tensor, paste_mask: Tensor, holes: Tensor) -> Tensor:
        x = torch.cat([pasted, paste_mask, holes], dim=1)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.avg_pool2d(x, 2))
            skips.append(x)
        for i in reversed(range(len(self.up))):
            x = F.interpolate(x, size=skips[i].shape[-2:], mode="bilinear", align_corners=False)
            x = self.up[i](torch.cat([x, skips[i]], dim=1))
        return pasted + self.out(x)


def black_holes(
    pasted: Tensor, probability: float = 0.5, max_holes: int = 4, generator=None
) -> tuple[Tensor, Tensor]:
    """Random rectangular holes (zeroed pixels) in a `probability` fraction of the batch.
    Returns (pasted with holes, hole mask `(B, 1, H, W)`)."""
    b, _, h, w = pasted.shape
    mask = torch.zeros(b, 1, h, w, device=pasted.device)
    r = torch.rand(b, 1 + 5 * max_holes, generator=generator).tolist()
    for i in range(b):
        if r[i][0] >= probability:
            continue
        for k in range(1 + int(r[i][1] * max_holes) % max_holes):
            fx, fy, fw, fh = r[i][2 + 4 * k : 6 + 4 * k]
            hw, hh = max(1, int(fw * w / 4)), max(1, int(fh * h / 4))
            x0, y0 = int(fx * (w - hw)), int(fy * (h - hh))
            mask[i, 0, y0 : y0 + hh, x0 : x0 + hw] = 1
    return pasted * (1 - mask), mask
