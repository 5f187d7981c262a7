"""GAMEM mappings on hand-made and synthetic geometry: conventions, accuracy, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from speech2lip.geometry import gamem

F = 300.0
SIZE = 160
K = torch.tensor([[F, 0, SIZE / 2], [0, F, SIZE / 2], [0, 0, 1.0]], dtype=torch.float64)


def pose(yaw=0.0, pitch=0.0, roll=0.0, t=(0.0, 0.0, 0.5)) -> torch.Tensor:
    """4x4 object -> camera transform from Euler angles (degrees) and a translation (metres)."""
    y, p, r = (math.radians(a) for a in (yaw, pitch, roll))
    ry = torch.tensor([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = torch.tensor([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    rz = torch.tensor([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    out = torch.eye(4, dtype=torch.float64)
    out[:3, :3] = (rz @ ry @ rx).double()
    out[:3, 3] = torch.tensor(t, dtype=torch.float64)
    return out


def render_disk(t: torch.Tensor, radius: float = 0.06) -> tuple[torch.Tensor, torch.Tensor]:
    """Analytic render of a textured disk (the object plane z = 0, |x, y| < radius) seen with
    pose `t`: image `(1, 3, H, W)` and depth `(1, H, W)` (0 off the disk)."""
    centres = gamem.pixel_centres(0, 0, SIZE, SIZE, dtype=torch.float64)
    rays = torch.cat([centres, torch.ones_like(centres[..., :1])], -1) @ torch.linalg.inv(K).T
    r, trans = t[:3, :3], t[:3, 3]
    normal = r[:, 2]
    s = (normal @ trans) / (rays @ normal)
    obj = (rays * s[..., None] - trans) @ r  # R^T (X - t)
    x, y = obj[..., 0], obj[..., 1]
    on = (x**2 + y**2 < radius**2) & (s > 0)
    channels = [  # periods of 20-30 px: smooth enough for bilinear sampling
        0.5 + 0.2 * torch.sin(2 * math.pi * x / 0.042 + ph) * torch.cos(2 * math.pi * y / 0.054)
        + 0.1 * torch.sin(2 * math.pi * (x + 2 * y) / 0.034 + 2 * ph)
        for ph in (0.0, 1.0, 2.0)
    ]  # fmt: skip
    image = torch.stack(channels) * on
    return image[None].float(), (s * on)[None].float()


CANON = pose(t=(0.0, 0.0, 0.5))
OBSERVED = pose(yaw=10, pitch=-6, roll=4, t=(0.012, -0.006, 0.53))
BOX = (50, 55, 60, 40)  # x0, y0, w, h inside the canonical disk


def crop(t: torch.Tensor, box=BOX) -> torch.Tensor:
    x0, y0, w, h = box
    return t[..., y0 : y0 + h, x0 : x0 + w]


def test_pixel_convention_matches_grid_sample():
    centres = gamem.pixel_centres(0, 0, 4, 3)
    assert centres[0, 0].tolist() == [0.5, 0.5] and centres[2, 3].tolist() == [3.5, 2.5]
    grid = gamem.normalize(centres, 4, 3)
    assert torch.allclose(grid[0, 0], torch.tensor([-0.75, -2 / 3]))
    assert torch.allclose(gamem.denormalize(grid, 4, 3), centres)


def test_identity_pose_is_the_identity_mapping():
    image = torch.rand(2, 3, 32, 40)
    depth = torch.full((1, 10, 12), 0.5)
    eye = torch.eye(4).expand(2, 4, 4)
    out, valid, _ = gamem.o2c(image, depth, (7, 5), K.float(), eye)
    assert valid.all()
    assert torch.allclose(out, image[:, :, 5:15, 7:19], atol=1e-4)
    assert torch.allclose(
        gamem.relative_pose(OBSERVED, OBSERVED), torch.eye(4, dtype=torch.float64)
    )
    # C2O with the identity: the grid pastes the crop back exactly where it came from.
    grid, ok = gamem.c2o_grid(torch.full((2, 10, 12), 0.5), torch.tensor([[7, 5], [7, 5]]),
                              K.float(), eye, (7, 5, 12, 10))  # fmt: skip
    assert ok.all()
    back = torch.nn.functional.grid_sample(out, grid, align_corners=False)
    assert torch.allclose(back, image[:, :, 5:15, 7:19], atol=1e-4)


@pytest.mark.parametrize("shift", [3.0, -2.0, 0.5])
def test_a_pure_translation_shifts_by_f_dx_over_z(shift):
    z = 0.5
    image = torch.rand(1, 1, 24, 30, dtype=torch.float64).float()
    t = torch.eye(4)
    t[0, 3] = shift * z / F  # x moves by `shift` pixels
    out, valid, pixels = gamem.o2c(image, torch.full((1, 8, 10), z), (10, 8), K.float(), t[None])
    assert valid.all()
    expect_x = gamem.pixel_centres(10, 8, 10, 8)[..., 0] + shift
    assert torch.allclose(pixels[0, ..., 0], expect_x, atol=1e-4)
    if shift == int(shift):  # whole pixels: exact copies (a half-pixel convention error blurs)
        s = int(shift)
        assert torch.allclose(out[0, 0], image[0, 0, 8:16, 10 + s : 20 + s], atol=1e-4)
    else:  # half a pixel: the mean of the two neighbours
        mean = (image[0, 0, 8:16, 10:20] + image[0, 0, 8:16, 11:21]) / 2
        assert torch.allclose(out[0, 0], mean, atol=1e-4)


def test_bicubic_o2c_copies_whole_pixels_and_keeps_more_of_a_fine_pattern():
    """`mode="bicubic"`: whole-pixel shifts still copy the frame exactly; a quarter-pixel
    shift of one-pixel stripes keeps more of their contrast than bilinear does (0.84 / 0.16
    against 0.75 / 0.25)."""
    z, image = 0.5, torch.zeros(1, 1, 24, 30)
    image[..., ::2] = 1.0  # stripes one pixel wide
    for shift in (2.0, 0.25):
        t = torch.eye(4)
        t[0, 3] = shift * z / F
        crops = [gamem.o2c(image, torch.full((1, 8, 10), z), (10, 8), K.float(), t[None],
                           mode=mode)[0][0, 0] for mode in ("bilinear", "bicubic")]  # fmt: skip
        if shift == 2.0:
            for out in crops:
                assert torch.allclose(out, image[0, 0, 8:16, 12:22], atol=1e-4)
        else:
            assert crops[0].std() == pytest.approx(0.25, abs=0.01)
            assert crops[1].std() == pytest.approx(0.34, abs=0.01)
    with pytest.raises(ValueError):
        gamem.o2c(image, torch.full((1, 8, 10), z), (10, 8), K.float(), torch.eye(4)[None],
                  mode="cubic")  # fmt: skip


def test_o2c_recovers_the_canonical_view_of_synthetic_geometry():
    canon_img, canon_depth = render_disk(CANON)
    obs_img, obs_depth = render_disk(OBSERVED)
    t_co = gamem.relative_pose(OBSERVED, CANON).float()[None]
    out, valid, pixels = gamem.o2c(obs_img, crop(canon_depth), BOX[:2], K.float(), t_co, obs_depth)
    assert valid.float().mean() > 0.95
    # Where each canonical pixel lands, computed through object coordinates instead.
    rays = (
        torch.cat(
            [
                gamem.pixel_centres(*BOX[:2], BOX[2], BOX[3], dtype=torch.float64),
                torch.ones(BOX[3], BOX[2], 1, dtype=torch.float64),
            ],
            -1,
        )
        @ torch.linalg.inv(K).T
    )
    cam_c = rays * crop(canon_depth)[0, ..., None].double()
    obj = (cam_c - CANON[:3, 3]) @ CANON[:3, :3]
    cam_o = obj @ OBSERVED[:3, :3].T + OBSERVED[:3, 3]
    expect = (cam_o @ K.T)[..., :2] / (cam_o @ K.T)[..., 2:]
    assert (pixels[0][valid[0]].double() - expect[valid[0]]).norm(dim=-1).max() < 1e-3
    err = (out - crop(canon_img)).abs()[:, :, valid[0]]
    assert err.mean() < 0.004 and err.max() < 0.03
    # The inverse relative pose (the official release's depth-loss convention) is far off.
    wrong = gamem.relative_pose(CANON, OBSERVED).float()[None]
    bad, bad_valid, _ = gamem.o2c(obs_img, crop(canon_depth), BOX[:2], K.float(), wrong)
    both = valid[0] & bad_valid[0]
    assert (bad - crop(canon_img)).abs()[:, :, both].mean() > 10 * err.mean()


def test_o2c_then_c2o_returns_the_observed_lips():
    canon_img, canon_depth = render_disk(CANON)
    obs_img, obs_depth = render_disk(OBSERVED)
    t_co = gamem.relative_pose(OBSERVED, CANON).float()[None]
    lips, valid, pixels = gamem.o2c(obs_img, crop(canon_depth), BOX[:2], K.float(), t_co, obs_depth)
    origin = pixels[0][valid[0]].min(0).values.floor().int()[None] - 4
    box_w, box_h = 72, 56
    d_box = obs_depth[:, origin[0, 1] : origin[0, 1] + box_h, origin[0, 0] : origin[0, 0] + box_w]
    grid, ok = gamem.c2o_grid(
        d_box, origin, K.float(), torch.linalg.inv(t_co), BOX, crop(canon_depth)
    )
    assert ok.float().mean() > 0.4
    back = torch.nn.functional.grid_sample(lips, grid, align_corners=False)
    covered = torch.nn.functional.grid_sample(valid[:, None].float(), grid, align_corners=False)
    use = ok & (covered[:, 0] > 0.999)
    target = obs_img[:, :, origin[0, 1] : origin[0, 1] + box_h, origin[0, 0] : origin[0, 0] + box_w]
    err = (back - target).abs()[:, :, use[0]]
    assert use.sum() > 1000 and err.mean() < 0.006 and err.max() < 0.05


def test_c2o_from_the_canonical_depth_alone_matches_c2o_from_the_observed_depth():
    _, canon_depth = render_disk(CANON)
    _, obs_depth = render_disk(OBSERVED)
    t_co = gamem.relative_pose(OBSERVED, CANON).float()[None]
    origin = torch.tensor([[40, 45]])
    d_box = obs_depth[:, 45:109, 40:120]
    ref, ref_ok = gamem.c2o_grid(d_box, origin, K.float(), torch.linalg.inv(t_co), BOX)
    inv, inv_ok = gamem.c2o_grid_from_canonical(crop(canon_depth), BOX, origin, (80, 64), K.float(),
                                                t_co)  # fmt: skip
    both = ref_ok & inv_ok
    assert both.sum() > 0.9 * ref_ok.sum()
    px = (gamem.denormalize(inv, BOX[2], BOX[3]) - gamem.denormalize(ref, BOX[2], BOX[3])).norm(
        dim=-1
    )
    assert px[both].max() < 0.1 and px[both].median() < 0.001
    # Started from the D_o grid (what training does), two iterations reach the same answer.
    fast, fast_ok = gamem.c2o_grid_from_canonical(crop(canon_depth), BOX, origin, (80, 64),
                                                  K.float(), t_co, iterations=2, init=ref,
                                                  init_valid=ref_ok)  # fmt: skip
    px = gamem.denormalize(fast, BOX[2], BOX[3]) - gamem.denormalize(inv, BOX[2], BOX[3])
    gap = px.norm(dim=-1)[fast_ok & inv_ok]
    assert (fast_ok == inv_ok).float().mean() > 0.99 and gap.median() < 1e-3 and gap.max() < 0.1


def test_mappings_are_differentiable_in_the_canonical_depth():
    _, canon_depth = render_disk(CANON)
    obs_img, _ = render_disk(OBSERVED)
    t_co = gamem.relative_pose(OBSERVED, CANON).float()[None]
    depth = crop(canon_depth).clone().requires_grad_(True)
    out, valid, _ = gamem.o2c(obs_img, depth, BOX[:2], K.float(), t_co)
    (out * valid[:, None]).sum().backward()
    assert torch.isfinite(depth.grad).all() and depth.grad.abs().sum() > 0
    depth.grad = None
    grid, ok = gamem.c2o_grid_from_canonical(depth, BOX, torch.tensor([[40, 45]]), (80, 64),
                                             K.float(), t_co)  # fmt: skip
    (grid * ok[..., None]).sum().backward()
    assert torch.isfinite(depth.grad).all() and depth.grad.abs().sum() > 0


def test_the_c2o_gradient_matches_finite_differences():
    """d(grid)/d(D_c) of the inverted mapping is the implicit-function gradient, pixel by pixel,
    also at a large pose where f is far from affine."""
    _, canon_depth = render_disk(CANON)
    ys, xs = torch.meshgrid(torch.arange(BOX[3]), torch.arange(BOX[2]), indexing="ij")
    base = crop(canon_depth).double() * (1 + 0.3 * ((xs - 30.0) / 30.0) ** 2)[None]  # curved
    bump = torch.exp(-((xs - 30.0) ** 2 + (ys - 20.0) ** 2) / 200.0)[None].double()
    large = pose(yaw=35, pitch=10, t=(0.02, 0.0, 0.5))
    for observed, origin in ((OBSERVED, (30, 40)), (large, (80, 40))):
        t_co = gamem.relative_pose(observed, CANON)[None]
        for direction in (torch.ones_like(base), xs[None].double() / BOX[2], bump):
            direction = direction * (base > 0)

            def grid_of(d, t_co=t_co, origin=origin):
                return gamem.c2o_grid_from_canonical(d, BOX, torch.tensor([origin]), (100, 70),
                                                     K, t_co)  # fmt: skip

            _, keep = grid_of(base)
            eps = 1e-6
            plus, ok_p = grid_of(base + eps * direction)
            minus, ok_m = grid_of(base - eps * direction)
            keep = keep & ok_p & ok_m
            assert keep.sum() > 1000
            numeric = (plus - minus)[keep] / (2 * eps)
            _, analytic = torch.autograd.functional.jvp(lambda d: grid_of(d)[0], base, direction)
            err = (analytic[keep] - numeric).norm(dim=-1)
            assert err.max() < 0.01 * numeric.norm(dim=-1).max()


def test_a_batch_equals_frame_by_frame():
    _, canon_depth = render_disk(CANON)
    poses = [OBSERVED, pose(yaw=-5, t=(0.0, 0.01, 0.5)), pose(pitch=8, t=(-0.01, 0.0, 0.55))]
    images = [render_disk(p) for p in poses]
    obs = torch.cat([i for i, _ in images])
    depth = torch.cat([d for _, d in images])
    t_co = torch.stack([gamem.relative_pose(p, CANON) for p in poses]).float()
    batch, valid, _ = gamem.o2c(obs, crop(canon_depth), BOX[:2], K.float(), t_co, depth)
    for i in range(3):
        one, one_valid, _ = gamem.o2c(obs[i : i + 1], crop(canon_depth), BOX[:2], K.float(),
                                      t_co[i : i + 1], depth[i : i + 1])  # fmt: skip
        assert torch.allclose(batch[i], one[0], atol=1e-6)
        assert torch.equal(valid[i], one_valid[0])
    # C2O, both ways, with one frame whose head is behind the camera (no usable pixel).
    behind = torch.eye(4)
    behind[2, 3] = -2.0
    t_all = torch.cat([t_co, behind[None]])
    origins = torch.tensor([[40, 45], [42, 40], [38, 50], [40, 45]])
    d_box = torch.cat([depth[:, 45:109, 40:120]] * 1 + [depth[:1, 45:109, 40:120]])
    ref, ref_ok = gamem.c2o_grid(d_box, origins, K.float(), torch.linalg.inv(t_all), BOX)
    inv, inv_ok = gamem.c2o_grid_from_canonical(crop(canon_depth), BOX, origins, (80, 64),
                                                K.float(), t_all)  # fmt: skip
    assert not inv_ok[3].any()
    for i in range(3):
        one, one_ok = gamem.c2o_grid(d_box[i : i + 1], origins[i : i + 1], K.float(),
                                     torch.linalg.inv(t_all[i : i + 1]), BOX)  # fmt: skip
        assert torch.allclose(ref[i], one[0], atol=1e-6) and torch.equal(ref_ok[i], one_ok[0])
        one, one_ok = gamem.c2o_grid_from_canonical(
            crop(canon_depth), BOX, origins[i : i + 1], (80, 64), K.float(), t_all[i : i + 1]
        )
        assert torch.allclose(inv[i][one_ok[0]], one[0][one_ok[0]], atol=1e-5)
        assert torch.equal(inv_ok[i], one_ok[0])


def test_points_behind_the_camera_and_outside_the_image_are_invalid():
    image = torch.rand(1, 3, 20, 20)
    t = torch.eye(4)
    t[2, 3] = -1.0  # everything moves behind the camera
    _, valid, _ = gamem.o2c(image, torch.full((1, 4, 4), 0.5), (8, 8), K.float(), t[None])
    assert not valid.any()
    t = torch.eye(4)
    t[0, 3] = 0.05  # 30 px to the right: off a 20 px image
    _, valid, _ = gamem.o2c(image, torch.full((1, 4, 4), 0.5), (8, 8), K.float(), t[None])
    assert not valid.any()
    assert np.isclose(float(gamem.MIN_Z), 1e-6)
