"""Audio encoder: a Wav2Lip mel window (80 x 16) -> a 64-d code, smoothed over neighbours."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class AudioEncoder(nn.Module):
    """`(B, rows, 16)` audio windows -> `(B, dim)` codes. `parts`: (rows, input scale) of each
    joined part, e.g. 80 normalised log-mel bands in -4..4 scaled by 1/4, then 14 phone-class
    shares in 0..1 as they are (`speech2lip.data.batches.AUDIO_FIELDS`).

    Convolutions along time (a 1-D conv stack over the 16 frames with the rows as channels),
    then a linear head; small enough for a CPU."""

    def __init__(
        self, dim: int = 64, hidden: int = 128, parts: tuple[tuple[int, float], ...] = ((80, 0.25),)
    ) -> None:
        super().__init__()
        scale = torch.cat([torch.full((rows,), float(k)) for rows, k in parts])
        self.register_buffer("scale", scale[:, None], persistent=False)
        rows = len(scale)
        self.net = nn.Sequential(
            nn.Conv1d(rows, hidden, 3, padding=1), nn.LeakyReLU(0.02),
            nn.Conv1d(hidden, hidden, 3, stride=2, padding=1), nn.LeakyReLU(0.02),  # 8
            nn.Conv1d(hidden, hidden, 3, stride=2, padding=1), nn.LeakyReLU(0.02),  # 4
            nn.Conv1d(hidden, hidden, 3, stride=2, padding=1), nn.LeakyReLU(0.02),  # 2
        )  # fmt: skip
        self.head = nn.Linear(hidden * 2, dim)

    def forward(self, mel: Tensor) -> Tensor:
        return self.head(self.net(mel * self.scale).flatten(1))


class AudioSmoother(nn.Module):
    """Attention over the codes of 2r + 1 neighbouring windows `(B, 2r+1, dim)` -> `(B, dim)`
    (learned weights per window, softmax-normalised); `radius = 0` passes the centre through."""

    def __init__(self, dim: int = 64, radius: int = 4) -> None:
        super().__init__()
        self.radius = radius
        n = 2 * radius + 1
        self.score = nn.Sequential(
            nn.Conv1d(dim, 16, 3, padding=1), nn.LeakyReLU(0.02),
            nn.Conv1d(16, 1, 3, padding=1),
        ) if radius > 0 else None  # fmt: skip
        self.n = n

    def forward(self, codes: Tensor) -> Tensor:
        if codes.shape[1] != self.n:
            raise ValueError(f"expected {self.n} windows, got {codes.shape[1]}")
        if self.score is None:
            return codes[:, 0]
        weights = torch.softmax(self.score(codes.transpose(1, 2)).squeeze(1), dim=1)
        return (weights.unsqueeze(-1) * codes).sum(dim=1)
