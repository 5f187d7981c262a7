"""A convolutional lip decoder: the whole canonical lip crop from the frame's code at once.

The articulation issue's fast, non-implicit variant (`train.model.lips_decoder: conv`). A
learned feature map at a quarter of the crop's size (for 3 levels) is brought up to the crop's
size, level by level (bilinear upsampling, two 3x3 convolutions), each level's features scaled
and shifted by the frame's code (FiLM: a linear map of the code per level, zero at
initialisation, so training starts from one code-independent mouth). Neighbouring pixels share
their convolutions' work, so a whole crop costs a fraction of what the implicit model's
per-pixel MLP does, and every pixel of every frame of a batch can be trained on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConvLips(nn.Module):
    """`forward(code (B, cond_dim))` -> lips `(B, 3, height, width)` in 0..1. `channels`: the
    features per level, coarsest first (each level twice the size of the one before, the last
    the crop's own)."""

    use_time = False  # no timestamp: the frame's code only

    def __init__(
        self, cond_dim: int, height: int, width: int, channels: tuple[int, ...] = (64, 32, 16)
    ) -> None:
        super().__init__()
        n = len(channels)
        self.shapes = [(max(1, round(height / 2 ** (n - 1 - i))),
                        max(1, round(width / 2 ** (n - 1 - i)))) for i in range(n)]  # fmt: skip
        self.start = nn.Parameter(torch.randn(1, channels[0], *self.shapes[0]) * 0.1)
        self.convs = nn.ModuleList()
        self.films = nn.ModuleList()
        previous = channels[0]
        for c in channels:
            self.convs.append(nn.ModuleList([nn.Conv2d(previous, c, 3, padding=1),
                                             nn.Conv2d(c, c, 3, padding=1)]))  # fmt: skip
            film = nn.Linear(cond_dim, 4 * c)  # scale and shift after each convolution
            nn.init.zeros_(film.weight)
            nn.init.zeros_(film.bias)
            self.films.append(film)
            previous = c
        self.out = nn.Conv2d(previous, 3, 1)

    def forward(self, code: Tensor) -> Tensor:
        x = self.start.expand(code.shape[0], -1, -1, -1)
        for i, (convs, film) in enumerate(zip(self.convs, self.films, strict=True)):
            if i:
                x = F.interpolate(x, size=self.shapes[i], mode="bilinear", align_corners=False)
            mods = film(code.to(x.dtype))[:, :, None, None].chunk(4, dim=1)
            for j, conv in enumerate(convs):
                x = F.leaky_relu(conv(x) * (1 + mods[2 * j]) + mods[2 * j + 1], 0.2)
        return torch.sigmoid(self.out(x))
