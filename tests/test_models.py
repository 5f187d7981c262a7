"""Models and losses: shapes, checkpoint formats, sampling weights, gradients."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from speech2lip.errors import Speech2LipError
from speech2lip.models import (
    AudioEncoder,
    AudioSmoother,
    BlendNet,
    CanonicalDepth,
    ImplicitLips,
    PositionalEncoding,
    SyncNetColor,
    black_holes,
    load_sync_expert,
    render_points,
)
from speech2lip.models.lips import corner_offsets, crop_uv
from speech2lip.models.losses import (
    LPIPSLoss,
    SSIMLoss,
    contrastive_sync_loss,
    perceptual_loss,
    ssim,
)
from speech2lip.models.syncnet import expert_faces, sync_cosine


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def test_sync_expert_shapes_and_wav2lip_checkpoint_format(tmp_path):
    model = SyncNetColor().eval()
    mel, faces = torch.randn(2, 1, 80, 16), torch.rand(2, 15, 48, 96)
    audio, face = model(mel, faces)
    assert audio.shape == face.shape == (2, 512)
    assert torch.allclose(audio.norm(dim=1), torch.ones(2), atol=1e-5)
    # Wav2Lip saves {"state_dict": ..., "optimizer": ..., "global_step": ...}, DataParallel
    # checkpoints prefix every key with "module.".
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    path = tmp_path / "lipsync_expert.pth"
    torch.save({"state_dict": state, "global_step": 10, "global_epoch": 1}, path)
    loaded = load_sync_expert(path)
    a2, f2 = loaded(mel, faces)
    assert torch.allclose(a2, audio) and torch.allclose(f2, face)
    assert "face_encoder.0.conv_block.1.running_mean" in model.state_dict()


def test_sync_expert_loader_errors(tmp_path):
    with pytest.raises(Speech2LipError, match="not found: put Wav2Lip's lipsync_expert.pth"):
        load_sync_expert(tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(Speech2LipError, match="not a readable PyTorch checkpoint"):
        load_sync_expert(bad)
    other = tmp_path / "other.pth"
    torch.save({"state_dict": torch.nn.Linear(2, 2).state_dict()}, other)
    with pytest.raises(Speech2LipError, match="not a Wav2Lip SyncNet_color checkpoint"):
        load_sync_expert(other)


def test_expert_input_is_lower_half_bgr_frame_major():
    frames = torch.zeros(1, 5, 3, 96, 96)
    frames[0, 2, 0, 48:] = 1.0  # frame 2, red channel, lower half
    x = expert_faces(frames)
    assert x.shape == (1, 15, 48, 96)
    assert x[0, 2 * 3 + 2].min() == 1.0  # red is the third channel of BGR, frame 2
    assert x.sum() == x[0, 8].sum()  # nothing else


def test_sync_loss_values_and_gradients_on_negatives():
    cos = torch.tensor([1.0, 0.5, -0.3, 0.2])
    positive = torch.tensor([True, False, False, True])
    expected = (0 + 0.5 + 0 + 0.8) / 4
    assert torch.isclose(contrastive_sync_loss(cos, positive), torch.tensor(expected))
    # Negatives built from generated frames (mismatched audio) carry gradients to the frames.
    expert = SyncNetColor().eval()
    generated = torch.rand(3, 5, 3, 48, 96, requires_grad=True)
    shifted_mel = torch.randn(3, 1, 80, 16)
    loss = contrastive_sync_loss(sync_cosine(expert, shifted_mel, generated),
                                 torch.zeros(3, dtype=torch.bool))  # fmt: skip
    if loss.item() == 0:  # every cosine already <= 0: pick the other sign of the pairs
        loss = contrastive_sync_loss(-sync_cosine(expert, shifted_mel, generated),
                                     torch.zeros(3, dtype=torch.bool))  # fmt: skip
    loss.backward()
    assert generated.grad.abs().sum() > 0


def test_positional_encoding_and_lip_model_shapes():
    enc = PositionalEncoding(3)
    x = torch.tensor([[0.25, -0.5]])
    out = enc(x)
    assert out.shape == (1, enc.out_dim(2)) == (1, 14)
    assert torch.isclose(out[0, 2], torch.sin(torch.tensor(0.25 * np.pi)))
    model = ImplicitLips(audio_dim=8, uv_freqs=4, time_freqs=2, width=32, depth=4, skip=2)
    rgb = model(torch.rand(2, 50, 2) * 2 - 1, torch.randn(2, 8), torch.rand(2))
    assert rgb.shape == (2, 50, 3) and rgb.dtype == torch.float32
    assert rgb.min() >= 0 and rgb.max() <= 1
    with pytest.raises(ValueError, match="timestamp"):
        model(torch.rand(2, 5, 2), torch.randn(2, 8))
    no_time = ImplicitLips(audio_dim=8, uv_freqs=4, time_freqs=0, width=32, depth=4)
    assert no_time(torch.rand(2, 5, 2), torch.randn(2, 8)).shape == (2, 5, 3)


def test_audio_and_time_are_projected_once_per_frame():
    model = ImplicitLips(audio_dim=8, uv_freqs=2, time_freqs=2, width=16, depth=4, skip=2)
    seen = []
    model.frame_first.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    model.frame_skip.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    model(torch.rand(3, 1000, 2), torch.randn(3, 8), torch.rand(3))
    assert seen == [(3, 8 + 5), (3, 8 + 5)]  # per frame, not per pixel


def test_corner_weights_sum_to_one_and_reproduce_affine_fields():
    uv, cell = crop_uv(12, 8)
    uv = uv[None].expand(2, -1, -1)
    for random in (True, False):
        corners, weights = corner_offsets(uv, cell, random)
        assert torch.allclose(weights.sum(-1), torch.ones(2, 96))
        assert (weights >= 0).all()
        assert torch.allclose((corners * weights[..., None]).sum(2), uv, atol=1e-6)
    if True:  # through render_points, with a "model" that is an affine field or a constant

        def affine(points, audio, time):
            return torch.stack([points[..., 0] * 0.3 + 0.5, points[..., 1] * -0.2 + 0.1,
                                torch.full_like(points[..., 0], 0.7)], dim=-1)  # fmt: skip

        out = render_points(affine, uv, None, None, cell, random=True)
        assert torch.allclose(out, affine(uv, None, None), atol=1e-6)
    _, weights = corner_offsets(uv, cell, random=False)
    assert torch.allclose(weights, torch.full_like(weights, 0.25))


def test_audio_encoder_and_smoother():
    enc = AudioEncoder(dim=64)
    codes = enc(torch.randn(6, 80, 16))
    assert codes.shape == (6, 64)
    smooth = AudioSmoother(64, radius=2)
    same = codes[:1, None].expand(1, 5, 64)
    assert torch.allclose(smooth(same), codes[:1], atol=1e-6)  # weights sum to 1
    assert smooth(torch.randn(4, 5, 64)).shape == (4, 64)
    centre = AudioSmoother(64, radius=0)
    assert torch.equal(centre(codes[:2, None]), codes[:2])


def test_blend_net_starts_as_identity_and_black_holes():
    net = BlendNet((8, 16, 32))
    pasted = torch.rand(2, 3, 48, 64)
    zeros = torch.zeros(2, 1, 48, 64)
    assert torch.equal(net(pasted, zeros, zeros), pasted)
    holed, mask = black_holes(pasted, probability=1.0, generator=torch.Generator().manual_seed(1))
    assert mask.sum() > 0 and (holed[mask.expand_as(holed) > 0] == 0).all()
    same, none = black_holes(pasted, probability=0.0)
    assert none.sum() == 0 and torch.equal(same, pasted)


def test_canonical_depth_keeps_empty_pixels_empty_and_learns():
    init = torch.tensor([[0.5, 0.0], [0.6, 0.7]])
    depth = CanonicalDepth(init)
    assert torch.allclose(depth(), init[None])
    depth().sum().backward()
    assert depth.offset.grad.abs().sum() > 0
    with torch.no_grad():
        depth.offset.fill_(math.log(2.0))
    assert torch.allclose(depth(), 2 * init[None]) and depth()[0, 0, 1] == 0


def test_canonical_depth_stays_smooth_under_noisy_training():
    """Per-pixel noise in the loss (what the photometric loss gives) must not make D_c rough:
    a free value per pixel did (Adam moves each pixel by the learning rate), and C2O then
    failed at a third of the lip pixels."""
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(96.0), indexing="ij")
    init = 2.0 + 0.02 * torch.cos(xx / 30) * torch.cos(yy / 20)
    per_pixel = torch.nn.Parameter(init.log().clone())  # the first design, for comparison

    def train(params, surface):
        optimiser = torch.optim.Adam(params, lr=1e-3)
        noise = torch.Generator().manual_seed(0)
        for _ in range(300):
            optimiser.zero_grad()
            (surface() * torch.randn(init.shape, generator=noise)).sum().backward()
            optimiser.step()
        learned = surface().detach()
        return (learned[:, 1:] - learned[:, :-1]).abs().max(), (learned - init).abs().max()

    depth = CanonicalDepth(init)
    step, change = train(depth.parameters(), lambda: depth()[0])
    free_step, _ = train([per_pixel], lambda: per_pixel.exp())
    assert change > 1e-3  # it learns
    assert step < free_step / 4, (step, free_step)  # neighbours stay close: no speckle


def test_a_model_with_a_per_pixel_depth_loads_and_renders_as_before():
    from speech2lip.models.depth import upgrade_state

    init = torch.tensor([[0.5, 0.0, 0.4], [0.6, 0.7, 0.8]])
    learned = torch.where(init > 0, init * 1.01, torch.ones_like(init)).log()
    old = {"depth.surface": init > 0, "depth.log_depth": learned}
    depth = CanonicalDepth(init)
    depth.load_state_dict({k.removeprefix("depth."): v for k, v in upgrade_state(old).items()})
    assert torch.allclose(depth(), torch.where(init > 0, learned.exp(), 0)[None])
    assert upgrade_state({"a": 1}) == {"a": 1}


def test_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(3)
    a = rng.random((40, 50, 3)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1).astype(np.float32)
    ref = structural_similarity(a, b, channel_axis=2, data_range=1.0, gaussian_weights=True,
                                sigma=1.5, use_sample_covariance=False)  # fmt: skip
    ta, tb = (torch.from_numpy(x).permute(2, 0, 1)[None] for x in (a, b))
    assert abs(float(ssim(ta, tb)) - ref) < 2e-3
    assert float(ssim(ta, ta)) == pytest.approx(1.0)


def test_perceptual_loss_falls_back_loudly_and_lpips_runs(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        loss = perceptual_loss("alex", hub_dir=tmp_path)
    assert isinstance(loss, SSIMLoss) and "LPIPS (alex) is off" in caplog.text
    assert "fallback" in loss.name
    lp = LPIPSLoss("alex", random_backbone=True)  # lpips ships its heads; backbone random
    a = torch.rand(1, 3, 64, 64, requires_grad=True)
    assert float(lp(a.detach(), a.detach())) == pytest.approx(0.0, abs=1e-6)
    value = lp(a, torch.rand(1, 3, 64, 64))
    value.backward()
    assert value > 0 and a.grad.abs().sum() > 0
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints/alexnet-owt-7be5be79.pth").write_bytes(b"")
    with pytest.raises(ValueError, match="perceptual net"):
        perceptual_loss("squeeze", hub_dir=tmp_path)


def test_one_optimisation_step_lowers_the_loss():
    model = ImplicitLips(audio_dim=4, uv_freqs=3, time_freqs=0, width=32, depth=3, skip=0)
    uv, cell = crop_uv(16, 8)
    uv = uv[None]
    target = torch.rand(1, 128, 3)
    audio = torch.randn(1, 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = ((render_points(model, uv, audio, None, cell, False) - target) ** 2).mean()
    before.backward()
    opt.step()
    after = ((render_points(model, uv, audio, None, cell, False) - target) ** 2).mean()
    assert after < before


def test_render_lattice_is_the_centred_four_corner_estimator():
    from speech2lip.models import render_lattice

    torch.manual_seed(0)
    model = ImplicitLips(audio_dim=8, uv_freqs=4, time_freqs=2, width=32, depth=3, skip=2)
    audio, time = torch.randn(2, 8), torch.rand(2)
    uv, cell = crop_uv(12, 7)
    slow = render_points(model, uv.expand(2, -1, -1), audio, time, cell, random=False)
    fast = render_lattice(model, 12, 7, audio, time)
    assert fast.shape == slow.shape == (2, 84, 3)
    assert torch.allclose(fast, slow, atol=1e-6)
    seen = []  # half-precision codes (autocast on a GPU): the coordinates stay float32

    def probe(points, codes, t):
        seen.append(points.dtype)
        return points.new_zeros(*points.shape[:-1], 3)

    render_lattice(probe, 144, 80, audio.to(torch.bfloat16), None)
    assert seen == [torch.float32]


def test_mouth_box_expert_input_is_resized_bgr():
    frames = torch.zeros(1, 5, 3, 96, 192)
    frames[0, 4, 2] = 1.0  # frame 4, blue
    x = expert_faces(frames, lower_half=False)
    assert x.shape == (1, 15, 48, 96)
    assert torch.allclose(x[0, 12], torch.ones(48, 96)) and x.sum() == x[0, 12].sum()


def test_small_holes_are_filled_with_their_neighbours_grid_and_large_ones_kept():
    from speech2lip.models.assembled import fill_holes

    h = w = 24
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    grid = torch.stack([xs, ys], dim=-1)[None].clone()  # a smooth mapping
    valid = torch.ones(1, h, w, dtype=torch.bool)
    valid[0, :, 18:] = False  # the edge of the covered region: stays
    valid[0, 4:8, 4:8] = False  # a 4x4 speck where Newton failed: filled
    valid[0, 20, 1:17] = False  # a crack one pixel wide (a fold of the depth): closed
    valid[0, 10:18, 6:14] = False  # an 8x8 hole: its middle stays
    true = grid.clone()
    grid[~valid] = 5.0  # whatever C2O left there
    filled, v = fill_holes(grid, valid)
    assert v[0, 4:8, 4:8].all()
    step = 2 / (w - 1)  # one pixel in grid units
    assert torch.allclose(filled[0, 4:8, 4:8], true[0, 4:8, 4:8], atol=step)  # within a pixel
    assert not v[0, 13:15, 9:11].any()
    assert v[0, 20, :18].all()
    assert not v[0, :, 19:].any() and v[0, :, :18].sum() > valid[0, :, :18].sum()
    assert torch.equal(filled[valid], grid[valid])  # covered pixels keep their grid
    same, v2 = fill_holes(grid, valid, rounds=0)
    assert torch.equal(v2, valid)


def test_loading_a_model_with_a_per_pixel_depth_says_to_retrain(demo_model, tmp_path, caplog):
    from speech2lip.models.checkpoint import load_model

    state = torch.load(demo_model, weights_only=True)
    new = load_model(demo_model)
    model = state["model"]
    model["depth.log_depth"] = model.pop("depth.log_init") + new.depth.correction().detach()
    del model["depth.offset"]
    torch.save(state, tmp_path / "old.pt")
    with caplog.at_level(logging.WARNING, logger="speech2lip.models.checkpoint"):
        old = load_model(tmp_path / "old.pt")
    assert "one value per pixel" in caplog.text and "retrain it" in caplog.text
    assert torch.allclose(old.depth(), new.depth())
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="speech2lip.models.checkpoint"):
        load_model(demo_model)
    assert not caplog.text
