"""A patch critic for the canonical lips, trained from scratch against the lip model.

Pixel losses average what one lip shape may look like (teeth shown or hidden, a lip line
sharp or soft) into one blurred mean; a critic that tells real lip crops from drawn ones, patch
by patch, gives the lip model a loss that the blurred mean does not satisfy (pix2pix's patch
discriminator, least-squares form). It sees only the canonical lip crop: the lips' shape is
set by the lip-shape codes, and the critic sees them too (as constant input channels): a real
crop shown with another frame's codes counts as drawn (a matching-aware critic), so it also
judges whether the lips match their codes, and does not pull them towards a typical real mouth
whatever the codes say. No pretrained weights. Instance normalisation, not spectral: drawn
and real crops differ by a few hundredths on average (obama: 0.03), and a critic held to slope
1 could not map that onto scores 0 and 1 (300 steps on a trained model's crops: held-out loss
0.26, chance 0.25; with instance normalisation 0.02).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class PatchCritic(nn.Module):
    """Crops `(B, 3, H, W)` in 0..1 -> realness scores `(B, 1, H / 2^n, W / 2^n)` for `n` =
    len(`channels`) strided 4x4 convolutions, each instance-normalised (each output pixel
    judges a patch `receptive_field` pixels across: 38 for 3), then a 3x3 one to one channel."""

    def __init__(self, channels: tuple[int, ...] = (32, 64, 128), cond_dim: int = 0) -> None:
        super().__init__()
        self.cond_dim = cond_dim
        layers: list[nn.Module] = []
        previous = 3 + cond_dim
        for width in channels:
            layers += [nn.Conv2d(previous, width, 4, stride=2, padding=1),
                       nn.InstanceNorm2d(width), nn.LeakyReLU(0.2)]  # fmt: skip
            previous = width
        layers.append(nn.Conv2d(previous, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)
        self.receptive_field = 3
        for _ in channels:  # back through each strided convolution
            self.receptive_field = (self.receptive_field - 1) * 2 + 4

    def forward(self, crops: Tensor, cond: Tensor | None = None) -> Tensor:
        """`cond` `(B, cond_dim)`: each crop's lip-shape codes (required when `cond_dim` > 0)."""
        x = crops * 2 - 1
        if self.cond_dim:
            planes = cond.to(x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[-2:])
            x = torch.cat([x, planes], dim=1)
        return self.net(x)


def critic_loss(real: Tensor, fake: Tensor, mismatched: Tensor | None = None) -> Tensor:
    """Least-squares critic loss: real patches towards 1, drawn ones (and real ones shown with
    other frames' codes, `mismatched`) towards 0."""
    if mismatched is None:
        return 0.5 * ((real - 1) ** 2).mean() + 0.5 * (fake**2).mean()
    return 0.5 * ((real - 1) ** 2).mean() + 0.25 * (fake**2).mean() + 0.25 * (mismatched**2).mean()


def generator_loss(fake: Tensor) -> Tensor:
    """Least-squares generator loss: drawn patches towards the critic's 'real' (1)."""
    return ((fake - 1) ** 2).mean()
