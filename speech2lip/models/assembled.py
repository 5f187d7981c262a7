"""The whole Speech2Lip model: audio -> canonical lips -> C2O with the learned D_c -> paste ->
Blend-Net, plus the photometric depth loss's O2C of the static face around the mouth.

Regions (from the `warp` stage's `canonical.h5`): the canonical lip box (where the implicit
model draws) lies inside the canonical extended box (cheeks and chin, where D_c is learned and
where the depth loss compares observed frames with the canonical frame). Observed mouth boxes
have the extended box's size; their top-left corners are `mouth_origin`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speech2lip.config import ModelSizes
from speech2lip.data.batches import audio_fields, audio_rows, phone_row
from speech2lip.geometry import gamem
from speech2lip.models import (
    AudioEncoder,
    AudioSmoother,
    BlendNet,
    CanonicalDepth,
    ImplicitLips,
    render_lattice,
    render_points,
)
from speech2lip.models.convlips import ConvLips
from speech2lip.models.lips import crop_uv
from speech2lip.models.seam import fit_colour, soft_edge
from speech2lip.models.shape import ShapeRegressor

# What the audio encoder multiplies each part of its input by: mel in -4..4, phones in 0..1.
INPUT_SCALE = {"mel": 0.25, "phones": 1.0, "ppg": 1.0}
# Parts the audio code does not hear beside mel: they reach the lips through the lip-shape
# codes only. An audio code that heard the phone posteriors too (trained against the real
# lips, with the real codes beside it) narrowed obama's rendered mouth to 0.78x the real one's
# amplitude; hearing mel alone, 0.84x, with LMD 1.52 -> 1.46 px (docs/benchmarks.md).
SHAPE_ONLY = {"ppg"}


def encoder_scales(features: str | None) -> list[float]:
    """The audio encoder's input scale for each part of `features` (0: not heard)."""
    fields = audio_fields(features)
    return [0.0 if f in SHAPE_ONLY and "mel" in fields else INPUT_SCALE[f] for f in fields]


FEATHER_PX = 8.0  # canonical-crop pixels over which the pasted lips fade in at the crop's edge


HOLE_ROUNDS = 3  # `fill_holes` rounds: closes holes up to about 6 pixels across


def neighbour_sum(x: Tensor) -> Tensor:
    """Each pixel's sum over its 8 neighbours (zero outside the image), `x` `(B, C, h, w)`;
    shifted slices, a few times faster on a CPU than a 3x3 convolution."""
    p = F.pad(x, (1, 1, 1, 1))
    h, w = x.shape[-2:]
    out = p[..., 0:h, 0:w] + p[..., 0:h, 1 : w + 1] + p[..., 0:h, 2 : w + 2]
    out = out + p[..., 1 : h + 1, 0:w] + p[..., 1 : h + 1, 2 : w + 2]
    out = out + p[..., 2 : h + 2, 0:w] + p[..., 2 : h + 2, 1 : w + 1]
    return out + p[..., 2 : h + 2, 2 : w + 2]


def fill_holes(grid: Tensor, valid: Tensor, rounds: int = HOLE_ROUNDS) -> tuple[Tensor, Tensor]:
    """C2O grid `(B, h, w, 2)` and validity `(B, h, w)` with small holes filled: in each of
    `rounds` rounds, an invalid pixel with at least 4 of its 8 neighbours valid becomes valid,
    its grid the mean of theirs. Newton's inversion leaves cracks (where the canonical depth
    folds, at the lip line) and specks of a few pixels inside the lips where the depth is
    steep; the background's own mouth showed through them as lines and dots. Larger holes keep
    their middle, and the edge of the covered region stays where it is (a pixel next to a
    straight or diagonal edge has 3 valid neighbours)."""
    v = valid[:, None]
    g = torch.where(v, grid.permute(0, 3, 1, 2), torch.zeros((), dtype=grid.dtype))
    for _ in range(rounds):
        count = neighbour_sum(v.to(torch.uint8))
        new = ~v & (count >= 4)
        if not new.any():
            break
        g = torch.where(new, neighbour_sum(g) / count.clamp(min=1).to(g.dtype), g)
        v = v | new
    return g.permute(0, 2, 3, 1), v[:, 0]


def on_base(drawn: Tensor, base: Tensor) -> Tensor:
    """Lip colours drawn as differences from `base` (`lips_base: mean`): the model's output
    in 0..1 is read as a change of -1..1, 0.5 meaning none."""
    return (base + 2 * drawn - 1).clamp(0, 1)


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
        # The whole head's D_c at initialisation (pose control re-poses the head with it, the
        # learned extended region pasted in); rebuilt from `canonical`, so not in the weights.
        self.register_buffer("head_depth", depth, persistent=False)
        self.register_buffer("canonical_ext", frame[ey : ey + eh, ex : ex + ew].permute(2, 0, 1))
        static = torch.ones(eh, ew, dtype=torch.bool)  # the face around the lips: no speech
        static[ly - ey : ly - ey + lh, lx - ex : lx - ex + lw] = False
        self.register_buffer("static", static)
        uv, cell = crop_uv(lw, lh)
        self.register_buffer("uv", uv)
        self.register_buffer("cell", cell)
        rows = audio_rows(sizes.features)
        scales = encoder_scales(sizes.features)
        self.audio = AudioEncoder(sizes.audio_dim, parts=tuple(zip(rows, scales, strict=True)))
        self.smoother = AudioSmoother(sizes.audio_dim, sizes.audio_radius)
        # Lip-shape guidance: the lips are conditioned on the frame's lip-shape codes too (the
        # ground truth's in training, the audio's prediction when rendering); 0 = audio only.
        self.shape_dim = int(sizes.shape_dim or 0)
        windows = 2 * sizes.audio_radius + 1
        n_audio = windows * sum(rows) * 16
        closure_row = phone_row(sizes.features, "lips_closed")
        self.shape = (ShapeRegressor(n_audio, self.shape_dim, closure_row)
                      if self.shape_dim else None)  # fmt: skip
        self.conv_lips = sizes.lips_decoder == "conv"
        if self.conv_lips:  # the whole crop at once (`ConvLips`)
            self.lips = ConvLips(sizes.audio_dim + self.shape_dim, lh, lw)
        else:
            self.lips = ImplicitLips(sizes.audio_dim + self.shape_dim, sizes.uv_freqs,
                                     sizes.time_freqs, sizes.lips_width, sizes.lips_layers,
                                     sizes.lips_skip, int(sizes.lips_grid or 0))  # fmt: skip
        # `lips_base: mean`: the implicit lips are drawn as differences from the train frames'
        # mean canonical lips (set by training, saved with the weights), so the skin speech
        # does not move keeps the video's detail instead of the small MLP's blur
        self.register_buffer("lips_base", None)
        if sizes.lips_base == "mean" and not self.conv_lips:
            self.lips_base = torch.zeros(3, lh, lw)
            with torch.no_grad():  # start from the base itself: no difference drawn
                self.lips.out.weight.zero_()
                self.lips.out.bias.zero_()
        self.depth = CanonicalDepth(depth[ey : ey + eh, ex : ex + ew])
        self.paste_fit = bool(sizes.paste_fit)  # the paste's colours and edge fitted to the frame
        self.paste_sampling = sizes.paste_sampling or "bilinear"  # C2O's interpolation
        self.blend = BlendNet(sizes.blend_channels)

    # ------------------------------------------------------------------ pieces
    def audio_code(self, mel_context: Tensor) -> Tensor:
        """`(B, 2r+1, rows, 16)` audio windows around each frame (`sizes.features`: mel and/or
        phone rows) -> `(B, audio_dim)`."""
        b, n = mel_context.shape[:2]
        codes = self.audio(mel_context.flatten(0, 1)).reshape(b, n, -1)
        return self.smoother(codes)

    def condition(
        self, mel_context: Tensor, shape: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """What the lip model is conditioned on per frame `(B, audio_dim + shape_dim)`, and the
        lip-shape codes in it: `shape` `(B, shape_dim)` (training: the ground truth's) or, when
        None, their prediction from the audio (None without lip-shape guidance)."""
        code = self.audio_code(mel_context)
        if self.shape is None:
            return code, None
        if shape is None:
            shape = self.shape(mel_context)
        return torch.cat([code, shape.to(code.dtype)], dim=-1), shape

    def canonical_lips(self, code: Tensor, time: Tensor | None, scale: int = 1) -> Tensor:
        """The lips in the canonical view `(B, 3, lh / scale, lw / scale)` in 0..1, drawn with
        the render-time estimator (4-corner sampling, the target centred; `scale` > 1 draws a
        coarser grid over the same crop, e.g. for L_s). Training's random places are L_m's
        alone (`lips_at`). The convolutional decoder draws the whole crop (pooled when
        `scale` > 1)."""
        lw, lh = self.lip_box[2] // scale, self.lip_box[3] // scale
        time = time if self.lips.use_time else None
        if self.conv_lips:
            lips = self.lips(code)
            return lips if scale == 1 else F.adaptive_avg_pool2d(lips, (lh, lw))
        rgb = render_lattice(self.lips, lw, lh, code, time)
        lips = rgb.reshape(-1, lh, lw, 3).permute(0, 3, 1, 2)
        if self.lips_base is None:
            return lips
        base = self.lips_base if scale == 1 else F.adaptive_avg_pool2d(self.lips_base, (lh, lw))
        return on_base(lips, base[None])

    def lips_at(self, pix: Tensor, code: Tensor, time: Tensor | None) -> Tensor:
        """The implicit lips at pixels `pix` `(B, P)` (flat indices into the lip crop) of
        each frame, `(B, P, 3)` (training's random-pixel L_m)."""
        time = time if self.lips.use_time else None
        rgb = render_points(self.lips, self.uv[pix], code, time, self.cell, random=True)
        if self.lips_base is None:
            return rgb
        return on_base(rgb, self.lips_base.flatten(1).T[pix])

    def lip_depth(self) -> Tensor:
        """The learned D_c over the lip box `(1, lh, lw)`."""
        x, y = self.lip_in_ext
        return self.depth()[:, y : y + self.lip_box[3], x : x + self.lip_box[2]]

    def full_depth(self) -> Tensor:
        """The canonical frame's depth over the whole image `(H, W)`, detached on the model's
        device: the learned D_c inside the extended box, the fitted head depth outside it."""
        full = self.head_depth.detach().clone()
        ex, ey, ew, eh = self.ext_box
        with torch.no_grad():
            full[ey : ey + eh, ex : ex + ew] = self.depth()[0]
        return full

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
        with torch.autocast(origin.device.type, enabled=False):  # geometry in float32
            return gamem.c2o_grid_from_canonical(
                self.lip_depth(), self.lip_box, origin, size, self.k, t_co.float(),
                iterations=iterations, init=None if init is None else init.float(),
                init_valid=init_valid,
            )  # fmt: skip

    def compose(
        self, lips: Tensor, mouth: Tensor, grid: Tensor, valid: Tensor,
        holes: Tensor | None = None, fill_rounds: int = HOLE_ROUNDS,
    ) -> Tensor:  # fmt: skip
        """Paste `lips` `(B,3,lh,lw)` into the observed mouth boxes `(B,3,eh,ew)` (0..1) where
        `valid` (its holes filled over `fill_rounds` rounds), optionally punch `holes`
        `(B,1,eh,ew)`, and repair with the Blend-Net.

        The paste fades in over the `FEATHER_PX` canonical pixels next to the lip crop's edge,
        so the crop leaves no hard seam for the Blend-Net to hide."""
        if holes is None:
            holes = torch.zeros_like(mouth[:, :1])
        pasted, mask = self.paste(lips, mouth, grid, valid, with_mask=True,
                                  fill_rounds=fill_rounds)  # fmt: skip
        return self.blend(pasted * (1 - holes), mask, holes)

    def paste(
        self, lips: Tensor, mouth: Tensor, grid: Tensor, valid: Tensor, with_mask: bool = False,
        fill_rounds: int = HOLE_ROUNDS,
    ):  # fmt: skip
        """The mouth boxes with the lips pasted in, before the Blend-Net (and the paste mask).
        `fill_rounds`: `fill_holes` rounds (training uses 1, which closes cracks: each round
        costs tens of ms per batch on a CPU, and the Blend-Net learns to repair holes anyway)."""
        lw, lh = self.lip_box[2], self.lip_box[3]  # in full-size canonical pixels
        grid, valid = fill_holes(grid, valid, fill_rounds)
        edge = torch.minimum(
            (1 - grid[..., 0].abs()) * (lw / 2), (1 - grid[..., 1].abs()) * (lh / 2)
        )
        weight = soft_edge(valid) if self.paste_fit else valid
        mask = (weight.to(lips.dtype) * (edge / FEATHER_PX).clamp(0, 1).to(lips.dtype))[:, None]
        # bicubic: the crop's edge pixels repeated outside it (zeros would darken the fade-in),
        # the result clamped (it overshoots a little at edges)
        bicubic = self.paste_sampling == "bicubic"
        pasted = F.grid_sample(lips, grid.to(lips.dtype), mode=self.paste_sampling,
                               padding_mode="border" if bicubic else "zeros",
                               align_corners=False)  # fmt: skip
        pasted = pasted.clamp(0, 1) if bicubic else pasted
        if self.paste_fit:
            pasted = fit_colour(pasted, mouth, mask)
        pasted = pasted * mask + mouth * (1 - mask)
        return (pasted, mask) if with_mask else pasted

    def render_mouth(
        self,
        mel_context: Tensor,
        time: Tensor | None,
        mouth: Tensor,
        origin: Tensor,
        t_co: Tensor,
        grid_init: Tensor | None = None,
        valid_init: Tensor | None = None,
        iterations: int = 4,
        lips: Tensor | None = None,
        cond: Tensor | None = None,
        c2o: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Render time: audio (`mel_context` `(B, 2r+1, 80, 16)`) -> canonical lips (the
        render-time estimator) -> C2O from the learned D_c into background mouth boxes
        `mouth` `(B, 3, eh, ew)` at `origin` with poses `t_co` -> paste -> Blend-Net.
        `lips` `(B, 3, lh, lw)` replaces the generated lips (baselines); `cond` the
        conditioning computed from `mel_context` (the renderer's rest blend); `c2o` the
        (grid, validity) of `self.c2o` for these frames, when the caller has them. Returns
        (mouth boxes in 0..1, the canonical lips)."""
        if lips is None:
            if cond is None:
                cond, _ = self.condition(mel_context)
            lips = self.canonical_lips(cond, time)
        if c2o is None:
            c2o = self.c2o(t_co, origin, init=grid_init, init_valid=valid_init,
                           iterations=iterations)  # fmt: skip
        grid, valid = c2o
        return self.compose(lips, mouth, grid, valid).clamp(0, 1), lips

    def depth_photometric(self, mouth: Tensor, origin: Tensor, t_co: Tensor) -> Tensor:
        """L_d: the static face around the lips, warped from each observed mouth box into the
        canonical view with the learned D_c (O2C), against the canonical frame (L1)."""
        with torch.autocast(mouth.device.type, enabled=False):  # geometry in float32
            return self._depth_photometric(mouth.float(), origin, t_co.float())

    def _depth_photometric(self, mouth: Tensor, origin: Tensor, t_co: Tensor) -> Tensor:
        ex, ey, ew, eh = self.ext_box
        centres = gamem.pixel_centres(ex, ey, ew, eh, device=mouth.device).unsqueeze(0)
        pixels, z = gamem.map_pixels(centres, self.depth(), self.k, t_co)
        local = pixels - origin.to(pixels.dtype)[:, None, None, :]
        warped = gamem.sample(mouth, local)
        valid = gamem.inside(local, ew, eh) & (z > 0) & self.static & (self.depth() > 0)
        err = (warped - self.canonical_ext).abs().mean(dim=1)
        return (err * valid).sum() / valid.sum().clamp(min=1)
