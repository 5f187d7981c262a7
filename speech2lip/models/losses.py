"""Losses: contrastive sync (with gradient-carrying negatives), SSIM, perceptual (LPIPS or a
documented SSIM fallback)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

# torchvision backbone files LPIPS needs in the torch hub cache (lpips ships its own heads).
LPIPS_BACKBONES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}


def contrastive_sync_loss(cos: Tensor, positive: Tensor) -> Tensor:
    """The paper's form: y (1 - cos) + (1 - y) max(0, cos), averaged.

    `cos` `(B,)`: cosine similarity between audio and (generated) lip embeddings; `positive`
    `(B,)` bool: matched pairs (pulled together) vs mismatched ones (pushed apart). For
    gradients on the negatives, build them from generated lips (generated lips with shifted
    audio, or shifted generated frames with the audio), never from real frames alone.
    """
    y = positive.to(cos.dtype)
    return (y * (1 - cos) + (1 - y) * torch.clamp(cos, min=0)).mean()


def _gaussian(size: int, sigma: float, device, dtype) -> Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(a: Tensor, b: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Mean SSIM of images `(B, C, H, W)` in 0..1 (Wang et al. 2004: Gaussian window 11,
    sigma 1.5, K1 0.01, K2 0.03), over the valid (unpadded) window positions."""
    c = a.shape[1]
    g = _gaussian(window, sigma, a.device, a.dtype)
    kernel = (g[:, None] * g[None, :]).expand(c, 1, window, window)

    def blur(x: Tensor) -> Tensor:
        return F.conv2d(x, kernel, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return (num / den).mean()


class SSIMLoss(nn.Module):
    """1 - SSIM: the perceptual loss's fallback when no LPIPS backbone is available."""

    name = "1 - SSIM (fallback: no LPIPS backbone weights)"

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return 1 - ssim(a, b)


class LPIPSLoss(nn.Module):
    """LPIPS distance of images in 0..1 (the `lpips` package; inputs scaled to -1..1)."""

    def __init__(self, net: str = "alex", random_backbone: bool = False) -> None:
        super().__init__()
        import warnings

        import lpips

        self.name = f"LPIPS ({net}{', random backbone' if random_backbone else ''})"
        with warnings.catch_warnings():  # lpips 0.1.4 uses torchvision's old `pretrained=`
            warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
            self.model = lpips.LPIPS(net=net, pnet_rand=random_backbone, verbose=False)
        for p in self.model.parameters():
            p.requires_grad_(False)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return self.model(a * 2 - 1, b * 2 - 1).mean()


def perceptual_loss(net: str = "alex", hub_dir: str | Path | None = None) -> nn.Module:
    """LPIPS when its backbone weights are in the torch hub cache, else `SSIMLoss` with a
    warning (never a silent change: the returned module's `name` says which, for the
    training summary). Nothing is downloaded."""
    if net not in LPIPS_BACKBONES:
        raise ValueError(f"perceptual net must be one of {sorted(LPIPS_BACKBONES)}, got {net!r}")
    folder = Path(hub_dir or torch.hub.get_dir()) / "checkpoints"
    weights = folder / LPIPS_BACKBONES[net]
    if weights.is_file():
        return LPIPSLoss(net)
    log.warning(
        "perceptual loss: %s not found, so LPIPS (%s) is off and 1 - SSIM is used instead; "
        "put torchvision's %s backbone weights there to use LPIPS",
        weights,
        net,
        net,
    )
    return SSIMLoss()
