"""The whole Speech2Lip model: audio -> canonical lips -> C2O with the learned D_c -> paste ->
Blend-Net, plus the photometric depth loss's O2C of the static face around the mouth.

Regions (from the `warp` stage's `canonical.h5`): the canonical lip box (where the implicit
model draws) lies inside the canonical extended box (cheeks and chin, where D_c is learned and
where the depth loss compares observed frames with the canonical frame). Observed mouth boxes
have the extended box's size; their top-left corners are `mouth_origin`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speech2lip.models import (
    AudioEncoder,
    AudioSmoother,
    BlendNet,
    CanonicalDepth,
    ImplicitLips,
    render_points,
)
from speech2lip.models.lips import crop_uv
from speech2lip.warp import gamem


@dataclass(frozen=True)
class ModelSizes:
    """Sizes of the sub-models (the `train` config's `model` part)."""

    audio_dim: int = 64
    audio_radius: int = 4
    uv_freqs: int = 10
    time_freqs: int = 4
    width: int = 256
    depth: int = 8
    skip: int = 4
    blend_channels: tuple[int, ...] = (32, 64, 128)


class Speech2Lip(nn.Module):
    """Built from the warp output's canonical data (`WarpData.canonical`) and `ModelSizes`."""

    def __init__(self, canonical: dict, sizes: ModelSizes) -> None:
        super().__init__()
        self.sizes = sizes
        lx, ly, lw, lh = (int(v) for v in canonical["lip_box"])
        ex, ey, ew, eh = (int(v) for v in canonical["extended_box"])
        self.lip_box, self.ext_box = (lx, ly, lw, lh), (ex, ey, ew, eh)
        self.lip_in_ext = (lx - ex, ly - ey)
        depth = torch.as_tensor(np.asarray(canonical["canonical_depth"]), dtype=torch.float32)
        frame = torch.as_tensor(np.asarray(canonical["frame"]), dtype=torch.float32) / 255
        self.register_buffer("k", torch.as_tensor(np.asarray(canonical["K"]), dtype=torch.float32))
        self.register_buffer("canonical_ext", frame[ey : ey + eh, ex : ex + ew].permute(2, 0, 1))
        static = torch.ones(eh, ew, dtype=torch.bool)  # the face around the lips: no speech
        static[ly - ey : ly - ey + lh, lx - ex : lx - ex + lw] = False
        self.register_buffer("static", static)
        uv, cell = crop_uv(lw, lh)
        self.register_buffer("uv", uv)
        self.register_buffer("cell", cell)
        self.audio = AudioEncoder(sizes.audio_dim)
        self.smoother = AudioSmoother(sizes.audio_dim, sizes.audio_radius)
        self.lips = ImplicitLips(sizes.audio_dim, sizes.uv_freqs, sizes.time_freqs, sizes.width,
                                 sizes.depth, sizes.skip)  # fmt: skip
        self.depth = CanonicalDepth(depth[ey : ey + eh, ex : ex + ew])
        self.blend = BlendNet(sizes.blend_channels)

    # ------------------------------------------------------------------ pieces
    def audio_code(self, mel_context: Tensor) -> Tensor:
        """`(B, 2r+1, 80, 16)` mel windows around each frame -> `(B, audio_dim)`."""
        b, n = mel_context.shape[:2]
        codes = self.audio(mel_context.flatten(0, 1)).reshape(b, n, -1)
        return self.smoother(codes)

    def canonical_lips(self, code: Tensor, time: Tensor | None, random: bool) -> Tensor:
        """The lips in the canonical view `(B, 3, lh, lw)` in 0..1 (4-corner sampling)."""
        lw, lh = self.lip_box[2], self.lip_box[3]
        uv = self.uv.unsqueeze(0).expand(code.shape[0], -1, -1)
        rgb = render_points(self.lips, uv, code, time if self.lips.use_time else None,
                            self.cell, random)  # fmt: skip
        return rgb.reshape(-1, lh, lw, 3).permute(0, 3, 1, 2)

    def lip_depth(self) -> Tensor:
        """The learned D_c over the lip box `(1, lh, lw)`."""
        x, y = self.lip_in_ext
        return self.depth()[:, y : y + self.lip_box[3], x : x + self.lip_box[2]]

    def c2o(
        self,
        t_co: Tensor,
        origin: Tensor,
        init: Tensor | None = None,
        init_valid: Tensor | None = None,
        iterations: int = 8,
    ) -> tuple[Tensor, Tensor]:
        """Where each mouth-box pixel samples the canonical lip crop, from the learned D_c
        (`init`: a starting grid, e.g. the warp stage's D_o grid, so fewer iterations do)."""
        size = (self.ext_box[2], self.ext_box[3])
        return gamem.c2o_grid_from_canonical(self.lip_depth(), self.lip_box, origin, size,
                                             self.k, t_co, iterations=iterations, init=init,
                                             init_valid=init_valid)  # fmt: skip

    def compose(
        self, lips: Tensor, mouth: Tensor, grid: Tensor, valid: Tensor, holes: Tensor | None = None
    ) -> Tensor:
        """Paste `lips` `(B,3,lh,lw)` into the observed mouth boxes `(B,3,eh,ew)` (0..1) where
        `valid`, optionally punch `holes` `(B,1,eh,ew)`, and repair with the Blend-Net."""
        mask = valid[:, None].to(lips.dtype)
        pasted = F.grid_sample(lips, grid.to(lips.dtype), align_corners=False)
        pasted = pasted * mask + mouth * (1 - mask)
        if holes is None:
            holes = torch.zeros_like(mask)
        return self.blend(pasted * (1 - holes), mask, holes)

    def depth_photometric(self, mouth: Tensor, origin: Tensor, t_co: Tensor) -> Tensor:
        """L_d: the static face around the lips, warped from each observed mouth box into the
        canonical view with the learned D_c (O2C), against the canonical frame (L1)."""
        ex, ey, ew, eh = self.ext_box
        centres = gamem.pixel_centres(ex, ey, ew, eh, device=mouth.device).unsqueeze(0)
        pixels, z = gamem.map_pixels(centres, self.depth(), self.k, t_co)
        local = pixels - origin.to(pixels.dtype)[:, None, None, :]
        warped = gamem.sample(mouth, local)
        valid = gamem.inside(local, ew, eh) & (z > 0) & self.static & (self.depth() > 0)
        err = (warped - self.canonical_ext).abs().mean(dim=1)
        return (err * valid).sum() / valid.sum().clamp(min=1)
