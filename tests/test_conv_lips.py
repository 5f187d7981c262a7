"""The convolutional lip decoder (`train.model.lips_decoder: conv`)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from speech2lip.config import ModelSizes, TrainConfig
from speech2lip.data.batches import to_tensors
from speech2lip.data.shards import WarpData
from speech2lip.models.assembled import Speech2Lip
from speech2lip.models.convlips import ConvLips
from speech2lip.train.loop import losses
from speech2lip.train.presets import resolve
from tests.test_train import TINY, options

CONV = dataclasses.replace(TINY, lips_decoder="conv", time_freqs=0)


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


@pytest.mark.parametrize(("height", "width"), [(64, 96), (80, 144), (65, 97)])
def test_the_decoder_draws_the_crop_at_its_own_size(height, width):
    out = ConvLips(8, height, width)(torch.randn(3, 8))
    assert out.shape == (3, 3, height, width) and 0 <= float(out.min()) <= float(out.max()) <= 1


def test_it_starts_deaf_and_learns_to_draw_what_each_code_says():
    """Two codes, two pictures (a dark open mouth, a light shut one): at initialisation the
    FiLM maps are zero, so both codes draw the same; after 150 steps each code draws its own."""
    model = ConvLips(2, 32, 48, channels=(16, 8))
    codes = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    yy, xx = np.mgrid[0:32, 0:48]
    inside = ((yy - 16) / 8) ** 2 + ((xx - 24) / 16) ** 2 < 1
    open_ = np.where(inside, 0.1, 0.7)
    shut = np.where(np.abs(yy - 16) < 1, 0.3, 0.7)
    target = torch.as_tensor(np.stack([open_, shut]), dtype=torch.float32)[:, None].expand(
        -1, 3, -1, -1
    )
    with torch.no_grad():
        assert torch.equal(model(codes)[0], model(codes)[1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = ((model(codes) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        drawn = model(codes)
    assert float(((drawn - target) ** 2).mean()) < 2e-3
    assert float(drawn[0, :, 16, 24].mean()) < 0.25 < 0.6 < float(drawn[1, :, 10, 24].mean())


def test_a_conv_model_trains_on_every_pixel_and_one_step_lowers_the_loss(demo_warp):
    data = WarpData(demo_warp / "index.json")
    model = Speech2Lip(data.canonical, CONV)
    lx, ly, lw, lh = data.index["lip_box"]
    batch = to_tensors(data, np.array([3, 20, 40]), CONV.audio_radius, "cpu")
    code, _ = model.condition(batch["mel_context"])
    assert model.canonical_lips(code, None).shape == (3, 3, lh, lw)
    assert model.canonical_lips(code, None, scale=2).shape == (3, 3, lh // 2, lw // 2)
    opts = options(lips_pixels=64, mouth_frames=1, lr=1e-3)  # lips_pixels: ignored by conv
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    first = losses(model, batch, opts, step=0)
    opt.zero_grad()
    first["total"].backward()
    assert model.lips.films[0].weight.grad.abs().sum() > 0  # the code reaches the picture
    opt.step()
    with torch.no_grad():
        assert float(losses(model, batch, opts, step=0)["lips"]) < float(first["lips"])


def test_a_conv_model_rebuilds_from_model_pt_and_old_files_stay_implicit(demo_warp, tmp_path):
    from speech2lip.models.checkpoint import load_model
    from speech2lip.train import run

    cfg = TrainConfig(steps=3, batch_frames=2, model=CONV, mouth_start=0, sync_weight=0.0)
    run(demo_warp / "index.json", tmp_path, cfg, threads=1, resume="no", device="cpu")
    model = load_model(tmp_path / "model.pt")
    assert isinstance(model.lips, ConvLips) and model.conv_lips
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    sizes = {**state["sizes"], "blend_channels": tuple(state["sizes"]["blend_channels"])}
    implicit = dataclasses.replace(ModelSizes(**sizes), lips_decoder="implicit")
    canonical = {k: v.numpy() for k, v in state["canonical"].items()}
    state["model"] = Speech2Lip(canonical, implicit).state_dict()
    del state["sizes"]["lips_decoder"]  # a file written before the key existed
    torch.save(state, tmp_path / "old.pt")
    assert not load_model(tmp_path / "old.pt").conv_lips


def test_presets_draw_with_the_implicit_model():
    assert resolve(TrainConfig()).model.lips_decoder == "implicit"
    assert resolve(TrainConfig(preset="paper")).model.lips_decoder == "implicit"
    conv = TrainConfig(model=ModelSizes(lips_decoder="conv"))
    assert resolve(conv).model.lips_decoder == "conv"
