"""The pasted lips fitted to the frame (`train.model.paste_fit`, `speech2lip.models.seam`)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from speech2lip.config import ModelSizes, TrainConfig
from speech2lip.data.batches import to_tensors
from speech2lip.data.shards import WarpData
from speech2lip.models.assembled import Speech2Lip
from speech2lip.models.seam import GAIN_RANGE, fit_colour, soft_edge
from speech2lip.train.presets import resolve
from tests.test_train import TINY, options

FITTED = dataclasses.replace(TINY, paste_fit=True)


def ring_mask(b: int = 2, h: int = 24, w: int = 32) -> torch.Tensor:
    """A paste mask: 1 in the middle, fading to 0 over 4 pixels towards each side."""
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    edge = torch.minimum(torch.minimum(yy, h - 1 - yy), torch.minimum(xx, w - 1 - xx)).float()
    return (edge / 4).clamp(0, 1)[None, None].expand(b, 1, h, w).clone()


def test_the_fit_finds_a_frames_gain_and_offset_per_channel():
    torch.manual_seed(0)
    warped = torch.rand(2, 3, 24, 32)
    gains = torch.tensor([[0.9, 1.1, 1.0], [0.85, 1.2, 0.95]])[..., None, None]
    offsets = torch.tensor([[0.05, -0.1, 0.0], [0.1, 0.02, -0.03]])[..., None, None]
    frame = gains * warped + offsets
    fitted = fit_colour(warped, frame, ring_mask())
    assert torch.allclose(fitted, frame, atol=1e-4)  # everywhere, though fitted on the ring


def test_the_gain_is_bounded_and_a_frame_without_a_ring_keeps_its_colours():
    torch.manual_seed(0)
    warped = torch.rand(2, 3, 24, 32)
    frame = 2.0 * warped  # a gain past the range
    fitted = fit_colour(warped, frame, ring_mask())
    x = warped - warped.mean(dim=(2, 3), keepdim=True)
    y = fitted - fitted.mean(dim=(2, 3), keepdim=True)
    slope = (x * y).sum(dim=(2, 3)) / (x**2).sum(dim=(2, 3))
    assert torch.allclose(slope, torch.full_like(slope, GAIN_RANGE[1]), atol=1e-4)
    no_ring = torch.ones(2, 1, 24, 32)  # pasted fully everywhere: nothing to fit on
    assert torch.equal(fit_colour(warped, frame, no_ring), warped)
    assert torch.equal(fit_colour(warped, frame, torch.zeros(2, 1, 24, 32)), warped)


def test_the_fit_is_a_fixed_transform_for_the_gradients():
    torch.manual_seed(0)
    warped = torch.rand(1, 3, 24, 32, requires_grad=True)
    frame = 0.9 * warped.detach() + 0.05
    fit_colour(warped, frame, ring_mask(1)).sum().backward()
    grad = warped.grad[0]
    assert torch.allclose(grad, torch.full_like(grad, 0.9), atol=1e-4)  # d(a x + b)/dx = a


def test_the_valid_regions_edge_fades_in_but_not_the_boxs_border():
    valid = torch.zeros(1, 20, 20, dtype=torch.bool)
    valid[:, 4:, 6:] = True  # ends inside the box at the top and left, runs to its border
    soft = soft_edge(valid, px=3)[0]
    assert float(soft[~valid[0]].abs().max()) == 0.0  # nothing outside the region
    assert float(soft[12:, 12:].min()) == 1.0  # deep inside and at the box's own border
    ramp = soft[12, 6:12]  # from the region's left edge inwards
    assert 0 < float(ramp[0]) < 0.5 and float(ramp[3]) == 1.0
    assert bool((ramp[1:] >= ramp[:-1]).all())


@pytest.mark.parametrize("fit", [False, True])
def test_a_darker_crop_pasted_into_a_real_frame(demo_warp, fit):
    """The canonical frame's own lips, darkened by a third, pasted into real test frames: with
    the fit their ring matches the frame better than the plain paste (whose mask is the same
    shape there), and the hard edge of the valid region turns into a ramp."""
    data = WarpData(demo_warp / "index.json")
    sizes = FITTED if fit else TINY
    model = Speech2Lip(data.canonical, sizes)
    ids = np.array([5, 30, 60])
    batch = to_tensors(data, ids, sizes.audio_radius, "cpu")
    lips = batch["canonical_lips"] * 0.67
    valid = batch["c2o_mask"]
    pasted, mask = model.paste(lips, batch["mouth"], batch["c2o_grid"], valid, with_mask=True)
    plain = Speech2Lip(data.canonical, TINY)
    pasted0, mask0 = plain.paste(lips, batch["mouth"], batch["c2o_grid"], valid, with_mask=True)
    ring = (mask0 > 0.05) & (mask0 < 0.95)
    error = (pasted - batch["mouth"]).abs()[ring.expand(-1, 3, -1, -1)].mean()
    error0 = (pasted0 - batch["mouth"]).abs()[ring.expand(-1, 3, -1, -1)].mean()
    if fit:
        assert float(error) < 0.6 * float(error0)
        assert bool((mask <= mask0 + 1e-6).all())  # the soft edge only ever fades in more
    else:
        assert torch.equal(pasted, pasted0) and torch.equal(mask, mask0)


def test_a_fitted_model_trains_rebuilds_and_old_files_paste_as_before(demo_warp, tmp_path):
    from speech2lip.models.checkpoint import load_model
    from speech2lip.train import run

    run(demo_warp / "index.json", tmp_path, options(steps=2, model=FITTED), threads=1,
        resume="no", device="cpu")  # fmt: skip
    assert load_model(tmp_path / "model.pt").paste_fit
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    del state["sizes"]["paste_fit"]  # a file written before the key existed
    torch.save(state, tmp_path / "old.pt")
    assert not load_model(tmp_path / "old.pt").paste_fit


def test_presets_fill_the_key_only_where_it_is_null():
    assert resolve(TrainConfig()).model.paste_fit is False
    assert resolve(TrainConfig(preset="paper")).model.paste_fit is False
    assert resolve(TrainConfig(model=ModelSizes(paste_fit=True))).model.paste_fit is True


def test_a_bicubic_paste_puts_the_frames_own_lips_back_closer(demo_warp):
    """The test frames' own canonical lips (drawn from them with bicubic O2C, `warp.sampling`'s
    default) pasted back into their mouth boxes: the bicubic paste (the demo preset's) lands
    closer to the frame than the bilinear one, and stays within 0..1."""
    data = WarpData(demo_warp / "index.json")
    ids = np.array([5, 30, 60])
    batch = to_tensors(data, ids, TINY.audio_radius, "cpu")
    errors = {}
    for sampling in ("bilinear", "bicubic"):
        model = Speech2Lip(data.canonical, dataclasses.replace(TINY, paste_sampling=sampling))
        pasted, mask = model.paste(batch["canonical_lips"], batch["mouth"], batch["c2o_grid"],
                                   batch["c2o_mask"], with_mask=True)  # fmt: skip
        inside = (mask > 0.99).expand(-1, 3, -1, -1)
        errors[sampling] = float((pasted - batch["mouth"])[inside].square().mean())
        assert float(pasted.min()) >= 0 and float(pasted.max()) <= 1
    assert errors["bicubic"] < 0.9 * errors["bilinear"]


def test_paste_sampling_presets_and_old_files(demo_warp, tmp_path):
    from speech2lip.models.checkpoint import load_model
    from speech2lip.train import run

    assert resolve(TrainConfig()).model.paste_sampling == "bicubic"
    assert resolve(TrainConfig(preset="paper")).model.paste_sampling == "bilinear"
    sizes = ModelSizes(paste_sampling="bilinear")
    assert resolve(TrainConfig(model=sizes)).model.paste_sampling == "bilinear"
    run(demo_warp / "index.json", tmp_path, options(steps=1), threads=1, resume="no",
        device="cpu")  # fmt: skip
    assert load_model(tmp_path / "model.pt").paste_sampling == "bicubic"
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    del state["sizes"]["paste_sampling"]  # a file written before the key existed
    torch.save(state, tmp_path / "old.pt")
    assert load_model(tmp_path / "old.pt").paste_sampling == "bilinear"
