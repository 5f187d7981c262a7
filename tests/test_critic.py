"""The patch critic on the canonical lips (`train.adversarial_weight`)."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from speech2lip.config import ConfigError, validate_config
from speech2lip.data.batches import to_tensors
from speech2lip.data.shards import WarpData
from speech2lip.models.assembled import Speech2Lip
from speech2lip.models.critic import PatchCritic, critic_loss, generator_loss
from speech2lip.train.adversarial import Adversary
from speech2lip.train.loop import losses, train
from tests.test_train import TINY, options, resumes_bit_for_bit, same_weights


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def test_each_output_judges_mostly_its_own_patch():
    """Output pixel (4, 6) of a 64 x 96 crop sees input rows 8 * 4 - 15 .. 8 * 4 + 22 and
    columns 33 .. 70 through its convolutions (38 pixels across); the instance normalisation
    adds a little of the whole crop (its mean and spread)."""
    critic = PatchCritic()
    crops = torch.rand(2, 3, 64, 96, requires_grad=True)
    out = critic(crops)
    assert out.shape == (2, 1, 8, 12) and critic.receptive_field == 38
    out[0, 0, 4, 6].backward()
    grad = crops.grad[0].abs().sum(0)
    assert grad[17:55, 33:71].sum() > 0.7 * grad.sum()
    assert crops.grad[1].abs().sum() == 0  # one crop's score sees nothing of another


def test_least_squares_losses_on_known_scores():
    ones, zeros = torch.ones(4, 1, 2, 2), torch.zeros(4, 1, 2, 2)
    assert float(critic_loss(ones, zeros)) == 0.0  # a perfect critic
    assert float(critic_loss(zeros, ones)) == 1.0
    assert float(critic_loss(torch.full_like(ones, 0.5), torch.full_like(ones, 0.5))) == 0.25
    assert float(generator_loss(ones)) == 0.0 and float(generator_loss(zeros)) == 1.0


def test_the_critic_learns_to_tell_sharp_lips_from_blurred_ones():
    """Real: crops with hard edges; drawn: the same blurred. From chance (0.25) the critic's
    loss falls well below it, and it scores the real crops higher."""
    adversary = Adversary()
    blocks = (torch.rand(8, 1, 8, 12) > 0.5).float().expand(-1, 3, -1, -1)
    real = F.interpolate(blocks, scale_factor=8, mode="nearest")
    fake = F.avg_pool2d(real, 9, stride=1, padding=4, count_include_pad=False)
    for _ in range(60):
        adversary.generator_loss(fake, real)
        last = adversary.critic_step()
    assert last < 0.15
    with torch.no_grad():
        assert adversary.critic(real).mean() > adversary.critic(fake).mean() + 0.3
    assert adversary.critic_step() is None  # nothing scored since


def test_a_critic_with_the_codes_rejects_real_lips_shown_with_other_codes():
    """Crops whose brightness follows a 1-d code (open: dark, shut: light): beside drawn
    noise, the critic also sees each real crop with another crop's code as drawn, and learns
    to score a crop with its own code above the same crop with the opposite one."""
    adversary = Adversary(cond_dim=1)
    code = torch.tensor([[1.0]] * 4 + [[-1.0]] * 4)
    real = (0.5 - 0.3 * code[:, :, None, None]).expand(-1, 3, 32, 48).contiguous()
    real = real + 0.02 * torch.randn_like(real)
    for _ in range(80):
        adversary.generator_loss(torch.rand_like(real), real, code, code)
        adversary.critic_step()
    with torch.no_grad():
        own = adversary.critic(real, code).mean(dim=(1, 2, 3))
        other = adversary.critic(real, -code).mean(dim=(1, 2, 3))
    assert bool((own > other + 0.3).all())


@pytest.mark.parametrize("shape_dim", [0, 4])
def test_the_critic_loss_reaches_the_lips_and_the_critic_step_only_the_critic(demo_warp, shape_dim):
    data = WarpData(demo_warp / "index.json")
    model = Speech2Lip(data.canonical, dataclasses.replace(TINY, shape_dim=shape_dim))
    batch = to_tensors(data, np.array([3, 20, 40]), TINY.audio_radius, "cpu")
    if shape_dim:  # lip-shape guidance: the frames' codes, which the critic sees too
        batch["lip_shape"] = torch.randn(3, shape_dim)
    opts = options(
        adversarial_weight=1.0, adversarial_start=5, adversarial_frames=2, mouth_frames=1
    )  # L_w draws 1 frame whole; the critic 2
    adversary = Adversary(cond_dim=shape_dim)
    before = losses(model, batch, opts, step=4, adversary=adversary)
    assert "adversarial" not in before and adversary.pending is None  # not started yet
    terms = losses(model, batch, opts, step=5, adversary=adversary)
    real, fake, real_cond, fake_cond = adversary.pending
    assert real.shape[0] == 3 and fake.shape[0] == 2  # every real crop; 2 drawn whole
    if shape_dim:
        assert torch.equal(real_cond, batch["lip_shape"]) and torch.equal(fake_cond, real_cond[:2])
    terms["adversarial"].backward()
    assert model.lips.first.weight.grad.abs().sum() > 0  # the lips learn from the critic
    assert model.blend.parameters().__next__().grad is None  # the critic sees no Blend-Net
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    critic = {k: v.clone() for k, v in adversary.critic.state_dict().items()}
    adversary.critic_step()
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert any(not torch.equal(critic[k], v) for k, v in adversary.critic.state_dict().items())
    assert np.isfinite(float(terms["total"]))


def test_training_with_the_critic_resumes_bit_for_bit_and_logs_both_losses(demo_warp, tmp_path):
    data = WarpData(demo_warp / "index.json")
    sub = dict(adversarial_weight=0.5, adversarial_start=1, adversarial_frames=2)
    # equal only with the critic's state restored too
    straight = resumes_bit_for_bit(data, tmp_path, options(**sub))
    assert not any(k.startswith("critic") for k in straight.state_dict())  # not in model.pt
    with open(tmp_path / "b/train_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert all(float(r["adversarial"]) > 0 and float(r["critic"]) > 0 for r in rows)
    plain, _ = train(data, tmp_path / "c", options(), resume="no")
    assert not same_weights(plain, straight)


@pytest.mark.parametrize(
    ("train_cfg", "text"),
    [({"adversarial_weight": -1}, "train.adversarial_weight"),
     ({"adversarial_frames": 0}, "train.adversarial_frames")],
)  # fmt: skip
def test_bad_critic_settings_name_the_key(train_cfg, text):
    with pytest.raises(ConfigError, match=text):
        validate_config({"train": train_cfg}, source="cfg.yaml")
