"""GAMEM: the observed-to-canonical (O2C) and canonical-to-observed (C2O) mappings, in torch.

Pure, batched functions, differentiable in the depth maps, so training can use them with a
learned canonical depth D_c. One pixel convention for the whole project (see
`speech2lip.geometry`): continuous pixel coordinates with pixel (i, j) covering
[j, j+1) x [i, i+1), its centre at (j + 0.5, i + 0.5); `grid_sample(..., align_corners=False)`
uses exactly this convention once coordinates are normalised by `normalize`. The official code
mixes it with the `align_corners=True` convention and ends up half a pixel off.

Poses are 4x4 object -> camera transforms T; the relative pose from the canonical view c to an
observed view o is T_{c->o} = T_o T_c^-1, and a canonical pixel p_c with depth D_c lands at
D_o p_o = K T_{c->o} D_c K^-1 p_c (`map_pixels`).

- O2C (`o2c`): for every canonical pixel, where to sample the observed frame; gives the observed
  lips seen from the canonical view (the training target) and which pixels are valid.
- C2O (`c2o_grid` from the observed depth D_o; `c2o_grid_from_canonical` from D_c alone, by
  inverting O2C): for every observed pixel, where to sample the canonical crop.

Shapes: images `(B, C, H, W)`, depth maps `(B, H, W)` (camera z, 0 = no surface), pixel maps
`(B, h, w, 2)` as (x, y), intrinsics `(B, 3, 3)` or `(3, 3)`, poses `(B, 4, 4)`. A batch of 1
broadcasts against a batch of B.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

MIN_Z = 1e-6  # points at or behind the camera plane are invalid


def pixel_centres(
    x0: float, y0: float, width: int, height: int, *, device=None, dtype=torch.float32
) -> Tensor:
    """Centres of the pixels of the box at (x0, y0) of size width x height: `(height, width, 2)`."""
    ys = torch.arange(height, device=device, dtype=dtype) + (y0 + 0.5)
    xs = torch.arange(width, device=device, dtype=dtype) + (x0 + 0.5)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1)


def normalize(pixels: Tensor, width: int, height: int) -> Tensor:
    """Pixels -> `grid_sample` coordinates with `align_corners=False` (-1 and 1 are the image's
    outer edges, not the centres of the edge pixels)."""
    size = torch.tensor([width, height], device=pixels.device, dtype=pixels.dtype)
    return pixels * (2.0 / size) - 1.0


def denormalize(grid: Tensor, width: int, height: int) -> Tensor:
    """Inverse of `normalize`."""
    size = torch.tensor([width, height], device=grid.device, dtype=grid.dtype)
    return (grid + 1.0) * (size / 2.0)


def relative_pose(pose_o: Tensor, pose_c: Tensor) -> Tensor:
    """T_{c->o} = T_o T_c^-1: moves camera-space points of the canonical view to view o."""
    return pose_o @ torch.linalg.inv(pose_c)


def _batch(x: Tensor, dims: int) -> Tensor:
    return x if x.dim() == dims + 1 else x.unsqueeze(0)


def map_pixels(
    pixels: Tensor, depth: Tensor, k: Tensor, transform: Tensor
) -> tuple[Tensor, Tensor]:
    """`D' p' = K T D K^-1 p` for every pixel: returns (p' `(B, h, w, 2)`, D' `(B, h, w)`).

    `pixels` `(B|1, h, w, 2)`, `depth` `(B|1, h, w)`, `k` `(B|1, 3, 3)`, `transform` `(B|1, 4, 4)`.
    Where D' <= 0 (behind the camera) p' is set to -1e4 (far outside any image).
    """
    pixels, depth = _batch(pixels, 3), _batch(depth, 2)
    k, transform = _batch(k, 2), _batch(transform, 2)
    homog = torch.cat([pixels, torch.ones_like(pixels[..., :1])], dim=-1)  # (B, h, w, 3)
    # K (R D K^-1 p + t) = D (K R K^-1) p + K t; K's last row is (0, 0, 1), so uvw_z = z'.
    lin = k @ transform[:, :3, :3] @ torch.linalg.inv(k)
    shift = (k @ transform[:, :3, 3:])[..., 0]
    uvw = depth.unsqueeze(-1) * (homog @ lin.transpose(-1, -2).unsqueeze(1))
    uvw = uvw + shift[:, None, None, :]
    z = uvw[..., 2]
    ok = z > MIN_Z
    safe = torch.where(ok, z, torch.ones_like(z))
    out = uvw[..., :2] / safe.unsqueeze(-1)
    out = torch.where(ok.unsqueeze(-1), out, torch.full_like(out, -1e4))
    return out, z


def sample(image: Tensor, pixels: Tensor, mode: str = "bilinear") -> Tensor:
    """Sample `image` `(B, C, H, W)` at `pixels` `(B, h, w, 2)` -> `(B, C, h, w)`; zeros outside."""
    height, width = image.shape[-2:]
    grid = normalize(pixels, width, height).to(image.dtype)
    if grid.shape[0] != image.shape[0]:  # broadcast a batch of 1
        batch = max(grid.shape[0], image.shape[0])
        grid = grid.expand(batch, *grid.shape[1:])
        image = image.expand(batch, *image.shape[1:])
    return F.grid_sample(image, grid, mode=mode, padding_mode="zeros", align_corners=False)


def inside(pixels: Tensor, width: int, height: int) -> Tensor:
    """True where all four bilinear taps of `pixels` `(..., 2)` lie in a width x height image."""
    x, y = pixels[..., 0], pixels[..., 1]
    lo = 0.5 - 1e-3  # a rounding error on the edge pixels' centres is not "outside"
    return (x >= lo) & (x <= width - lo) & (y >= lo) & (y <= height - lo)


def _surface(depth: Tensor, pixels: Tensor) -> tuple[Tensor, Tensor]:
    """Bilinear depth at `pixels` and whether every tap touching it is on the surface (> 0)."""
    d = depth.unsqueeze(1)
    value = sample(d, pixels)[:, 0]
    covered = sample((d > 0).to(d.dtype), pixels)[:, 0] > 0.999
    return value, covered


def o2c(
    observed: Tensor,
    canonical_depth: Tensor,
    box: tuple[int, int],
    k: Tensor,
    t_co: Tensor,
    observed_depth: Tensor | None = None,
    tolerance: float = 0.01,
    mode: str = "bilinear",
) -> tuple[Tensor, Tensor, Tensor]:
    """Warp observed frames into the canonical view over a canonical box (backward warp).

    `observed` `(B, C, H, W)`; `canonical_depth` `(B|1, h, w)`: D_c over the canonical box whose
    top-left corner is `box` = (x0, y0) in canonical-frame pixels; `t_co` `(B, 4, 4)` = T_{c->o}.
    With `observed_depth` `(B, H, W)` (D_o), a pixel is valid only where every bilinear tap is
    on the observed face and the surface there is the warped point's own surface
    (|D_o - z| < `tolerance`, metres): not occluded. `mode`: `grid_sample`'s interpolation of
    the colours (bicubic keeps more of the frame's detail than bilinear; the validity is the
    same either way).
    Returns the canonical crop `(B, C, h, w)`, its validity `(B, h, w) bool` (came from inside
    the observed image and the face) and the sampling positions `(B, h, w, 2)` (observed pixels).
    """
    depth = _batch(canonical_depth, 2)
    h, w = depth.shape[-2:]
    centres = pixel_centres(*box, w, h, device=depth.device, dtype=depth.dtype)
    pixels, z = map_pixels(centres.unsqueeze(0), depth, k, t_co)
    height, width = observed.shape[-2:]
    valid = (depth > 0) & inside(pixels, width, height) & (z > MIN_Z)
    if observed_depth is not None:
        d_o = sample(observed_depth.unsqueeze(1), pixels, mode="nearest")[:, 0]
        _, covered = _surface(observed_depth, pixels)  # every bilinear tap on the face
        valid = valid & covered & ((d_o - z).abs() < tolerance)
    return sample(observed, pixels, mode), valid, pixels


def c2o_grid(
    observed_depth: Tensor,
    origin: Tensor,
    k: Tensor,
    t_oc: Tensor,
    canonical_box: tuple[int, int, int, int],
    canonical_depth: Tensor | None = None,
    tolerance: float = 0.01,
) -> tuple[Tensor, Tensor]:
    """For every pixel of an observed box, where it lies in the canonical crop (backward warp).

    `observed_depth` `(B, h, w)`: D_o over the observed box whose top-left corners are `origin`
    `(B, 2)` (observed-frame pixels); `t_oc` = T_{o->c} = T_{c->o}^-1; `canonical_box` =
    (x0, y0, width, height) of the canonical crop. With `canonical_depth` (D_c over that crop,
    `(B|1, ch, cw)`) points hidden in the canonical view are invalid.
    Returns the grid `(B, h, w, 2)` in `grid_sample` coordinates of the canonical crop (so
    `F.grid_sample(crop, grid, align_corners=False)` pastes it) and its validity `(B, h, w)`.
    """
    depth = _batch(observed_depth, 2)
    h, w = depth.shape[-2:]
    centres = pixel_centres(0, 0, w, h, device=depth.device, dtype=depth.dtype)
    pixels = centres.unsqueeze(0) + origin.to(depth.dtype)[:, None, None, :]
    canon, z = map_pixels(pixels, depth, k, t_oc)
    x0, y0, cw, ch = canonical_box
    local = canon - torch.tensor([x0, y0], device=canon.device, dtype=canon.dtype)
    valid = (depth > 0) & inside(local, cw, ch) & (z > MIN_Z)
    if canonical_depth is not None:
        d_c = sample(_batch(canonical_depth, 2).unsqueeze(1), local, mode="nearest")[:, 0]
        valid = valid & (d_c > 0) & ((d_c - z).abs() < tolerance)
    return normalize(local, cw, ch), valid


def c2o_grid_from_canonical(
    canonical_depth: Tensor,
    canonical_box: tuple[int, int, int, int],
    origin: Tensor,
    size: tuple[int, int],
    k: Tensor,
    t_co: Tensor,
    iterations: int = 8,
    tolerance_px: float = 0.05,
    init: Tensor | None = None,
    init_valid: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """C2O without D_o: invert the O2C mapping of the (learned) canonical depth.

    Solves f(p_c) = p_o for every observed pixel p_o of the box at `origin` `(B, 2)` of `size`
    (width, height), with f(p_c) = proj(K T_{c->o} D_c(p_c) K^-1 p_c) and D_c sampled
    bilinearly from `canonical_depth` `(B|1, ch, cw)` over `canonical_box`. Starts from the
    inverse of f's best affine fit, then takes damped Newton steps (at most 4 px, kept inside
    the crop) with f's own per-pixel Jacobian (by autograd). Only the last step is tracked by
    autograd, so the gradient with respect to D_c is the implicit-function gradient of the solution,
    -J^-1 df/dD_c (a test compares it with finite differences). Returns (grid `(B, h, w, 2)` as
    `c2o_grid`, validity `(B, h, w)`: inside the crop, on the canonical surface, converged
    within `tolerance_px`). A frame with no usable canonical pixel is simply all invalid.
    `init` `(B, h, w, 2)` (grid coordinates, e.g. the `warp` stage's stored D_o grid) replaces
    the affine start where `init_valid`, so a couple of iterations suffice.
    """
    depth = _batch(canonical_depth, 2)
    x0, y0, cw, ch = canonical_box
    w, h = size
    offset = torch.tensor([x0, y0], device=depth.device, dtype=depth.dtype)
    batch = max(depth.shape[0], t_co.shape[0] if t_co.dim() == 3 else 1, origin.shape[0])
    target = pixel_centres(0, 0, w, h, device=depth.device, dtype=depth.dtype).unsqueeze(0)
    target = target + origin.to(depth.dtype)[:, None, None, :]  # (B, h, w, 2) observed pixels
    eye = torch.eye(2, device=depth.device, dtype=depth.dtype)

    def forward(local: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
        value, covered = _surface(d.expand(batch, -1, -1), local)
        mapped, z = map_pixels(local + offset, value, k, t_co)
        return mapped, covered & (z > MIN_Z)

    def inverse_jacobian(where: Tensor, fallback: Tensor) -> Tensor:
        """(J_f)^-1 at `where`, by autograd (each output pixel depends on its own position
        only, so the gradient of a sum gives every pixel's derivatives); `fallback` where J
        is singular (off the surface)."""
        with torch.enable_grad():
            where = where.detach().requires_grad_(True)
            mapped = forward(where, d0)[0]
            gx = torch.autograd.grad(mapped[..., 0].sum(), where, retain_graph=True)[0]
            gy = torch.autograd.grad(mapped[..., 1].sum(), where)[0]
        jac = torch.stack([gx, gy], dim=-1)  # row-vector convention: dp_o = dp_c @ jac
        inv, info = torch.linalg.inv_ex(jac)
        return torch.where((info == 0)[..., None, None], inv, fallback)

    lo = torch.tensor([0.5, 0.5], device=depth.device, dtype=depth.dtype)
    hi = torch.tensor([cw - 0.5, ch - 0.5], device=depth.device, dtype=depth.dtype)
    d0 = depth.detach()
    with torch.no_grad():
        local = pixel_centres(0, 0, cw, ch, device=depth.device, dtype=depth.dtype)
        local = local.unsqueeze(0).expand(batch, -1, -1, -1).reshape(batch, -1, 2)
        mapped, ok = forward(local.reshape(batch, ch, cw, 2), d0)
        weight = ok.to(depth.dtype).reshape(batch, -1, 1)
        usable = weight.sum(dim=(1, 2)) >= 3  # else fit the identity: every pixel ends invalid
        src = torch.cat([local, torch.ones_like(weight)], dim=-1)
        dst = mapped.reshape(batch, -1, 2)
        src = torch.where(usable[:, None, None], src * weight, src)
        dst = torch.where(usable[:, None, None], dst * weight, local)
        affine = torch.linalg.lstsq(src, dst).solution  # p_o = p_c @ affine[:2] + affine[2]
        inv_lin, info = torch.linalg.inv_ex(affine[:, :2, :])
        inv_lin = torch.where((info == 0)[:, None, None], inv_lin, eye)[:, None, None]
        current = ((target - affine[:, None, None, 2, :]).unsqueeze(-2) @ inv_lin).squeeze(-2)
        if init is not None:
            start = denormalize(init.to(current.dtype), cw, ch)
            use = (
                init_valid if init_valid is not None else torch.ones_like(start[..., 0], dtype=bool)
            )
            current = torch.where(use[..., None], start, current)
        current = torch.minimum(torch.maximum(current, lo), hi)
    for _ in range(max(iterations - 1, 0)):  # damped Newton steps, kept inside the crop
        inv_jac = inverse_jacobian(current, inv_lin)
        with torch.no_grad():
            delta = ((target - forward(current, d0)[0]).unsqueeze(-2) @ inv_jac).squeeze(-2)
            norm = delta.norm(dim=-1, keepdim=True).clamp(min=1e-12)
            delta = delta * torch.clamp(4.0 / norm, max=1.0)  # at most 4 px per step
            current = torch.minimum(torch.maximum(current + delta, lo), hi)
    # The last Newton step is the one autograd sees: its gradient is the fixed point's.
    inv_jac = inverse_jacobian(current, inv_lin)
    mapped, ok = forward(current, depth)
    current = current + ((target - mapped).unsqueeze(-2) @ inv_jac).squeeze(-2)
    with torch.no_grad():
        residual = (forward(current.detach(), d0)[0] - target).norm(dim=-1)
    valid = ok & inside(current, cw, ch) & (residual < tolerance_px) & usable[:, None, None]
    return normalize(current, cw, ch), valid
