"""The implicit lips drawn on the train frames' mean lips (`train.model.lips_base: mean`)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from speech2lip.config import ModelSizes, TrainConfig
from speech2lip.data.shards import WarpData
from speech2lip.models.assembled import Speech2Lip, on_base
from speech2lip.train.loop import mean_lips
from speech2lip.train.presets import resolve
from tests.test_train import TINY, options

ON_BASE = dataclasses.replace(TINY, lips_base="mean")


def test_a_new_model_draws_its_base_and_its_output_moves_it_both_ways():
    canonical = {"lip_box": np.array([10, 12, 16, 8]), "extended_box": np.array([4, 4, 32, 24]),
                 "K": np.eye(3), "canonical_depth": np.ones((40, 40)),
                 "frame": np.zeros((40, 40, 3), np.uint8)}  # fmt: skip
    model = Speech2Lip(canonical, ON_BASE)
    torch.manual_seed(0)
    base = torch.rand(3, 8, 16)
    model.lips_base.copy_(base)
    code = torch.randn(2, TINY.audio_dim)
    time = torch.tensor([0.1, 0.5])
    lips = model.canonical_lips(code, time)
    assert torch.allclose(lips, base.expand_as(lips), atol=1e-6)
    coarse = model.canonical_lips(code, time, scale=2)  # L_s's grid
    assert torch.allclose(coarse, F.avg_pool2d(base[None], 2).expand_as(coarse), atol=1e-6)
    pix = torch.tensor([[0, 17, 127], [5, 5, 64]])
    drawn = model.lips_at(pix, code, time)
    assert torch.allclose(drawn, base.flatten(1).T[pix], atol=1e-6)
    # the model's 0..1 reads as a change of -1..1 (0.5: none), clamped to colours
    out = on_base(torch.tensor([0.5, 0.75, 0.0, 1.0]), torch.tensor([0.3, 0.3, 0.3, 0.3]))
    assert torch.allclose(out, torch.tensor([0.3, 0.8, 0.0, 1.0]))
    assert "lips_base" not in Speech2Lip(canonical, TINY).state_dict()  # the paper's: none


def test_the_base_is_each_pixels_mean_over_the_frames_where_it_is_valid(demo_warp):
    data = WarpData(demo_warp / "index.json", fields=["canonical_lips", "canonical_mask"])
    ids = data.split_ids("train")[:70]  # more than one chunk of 64
    lips = data.read_field("canonical_lips", ids).astype(np.float64) / 255
    mask = data.read_field("canonical_mask", ids).astype(bool)
    mean = mean_lips(data, ids[::-1])
    assert mean.shape == (3, *lips.shape[1:3]) and mean.dtype == np.float32
    y, x = np.argwhere(mask.any(0) & ~mask.all(0))[0]  # a pixel valid in some frames only
    want = lips[mask[:, y, x], y, x].mean(0)
    assert np.allclose(mean[:, y, x], want, atol=1e-6)
    assert not np.allclose(mean[:, y, x], lips[:, y, x].mean(0), atol=1e-3)


def test_a_model_on_the_base_trains_rebuilds_alone_and_old_files_draw_none(demo_warp, tmp_path):
    from speech2lip.models.checkpoint import load_model
    from speech2lip.train import run

    run(demo_warp / "index.json", tmp_path, options(steps=3, model=ON_BASE, lips_pixels=64),
        threads=1, resume="no", device="cpu")  # fmt: skip
    model = load_model(tmp_path / "model.pt")
    data = WarpData(demo_warp / "index.json", fields=["canonical_lips", "canonical_mask"])
    want = mean_lips(data, data.split_ids("train"))
    assert torch.allclose(model.lips_base, torch.from_numpy(want))
    code = torch.zeros(1, TINY.audio_dim + model.shape_dim)
    with torch.no_grad():
        drawn = model.canonical_lips(code, torch.zeros(1))[0]
    assert 0 < float((drawn - model.lips_base).abs().mean()) < 0.1  # trained: it moved, a little
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    del state["sizes"]["lips_base"]  # a file written before the key existed
    del state["model"]["lips_base"]
    torch.save(state, tmp_path / "old.pt")
    assert load_model(tmp_path / "old.pt").lips_base is None


def test_presets_fill_the_base_only_where_it_is_null():
    assert resolve(TrainConfig()).model.lips_base == "mean"
    assert resolve(TrainConfig(preset="paper")).model.lips_base == "none"
    assert resolve(TrainConfig(model=ModelSizes(lips_base="none"))).model.lips_base == "none"
