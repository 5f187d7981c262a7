"""The sync expert stage: windows, negatives, the ground-truth offset check, outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from speech2lip.config import SyncExpertConfig
from speech2lip.errors import Speech2LipError
from speech2lip.models.expert import negatives, offset_curve, window_starts
from speech2lip.models.syncnet import SyncNetColor, load_sync_expert
from speech2lip.sync_expert import run, verdict


def test_window_starts_stay_inside_the_ids():
    ids = np.array([0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 20])
    assert window_starts(ids).tolist() == [0, 1, 10]


def test_negatives_are_far_enough_away():
    rng = np.random.default_rng(0)
    pool = np.arange(100)
    starts = rng.choice(pool, 500)
    neg = negatives(rng, starts, pool, 5)
    assert np.all(np.abs(neg - starts) >= 5)


class Encoder:
    """A stand-in expert whose embeddings say which frame / which audio time they saw: frame k
    of the crops holds the value k, mel window m the value m + `lag`; the embeddings are unit
    vectors at an angle proportional to that time, so the cosine peaks where times agree."""

    def __init__(self, lag: int) -> None:
        self.lag = lag

    @staticmethod
    def _unit(t: torch.Tensor) -> torch.Tensor:
        a = t * 0.2
        return torch.stack([torch.cos(a), torch.sin(a)], dim=1)

    def face_embedding(self, faces: torch.Tensor) -> torch.Tensor:
        return self._unit(faces[:, 0].mean(dim=(1, 2)))  # the first frame's value (BGR: B)

    def audio_embedding(self, mel: torch.Tensor) -> torch.Tensor:
        return self._unit(mel.mean(dim=(1, 2, 3)) - self.lag)


@pytest.mark.parametrize("lag", [0, 2, -3])
def test_offset_curve_finds_a_known_audio_lag(lag):
    n = 60
    crops = torch.arange(n, dtype=torch.float16)[:, None, None, None].expand(n, 3, 48, 96)
    mel = torch.arange(n, dtype=torch.float32)[:, None, None].expand(n, 80, 16) + lag
    starts = np.arange(10, 40)
    curve = offset_curve(Encoder(0), crops.clone(), mel.clone(), starts, search=5)
    assert int(np.argmax(curve)) - 5 == -lag  # audio `lag` frames early: best shift is -lag
    cfg = SyncExpertConfig(max_offset=1)
    assert verdict(curve, 5, 0.9, cfg)["usable"] == (abs(lag) <= 1)


def test_verdict_reasons():
    cfg = SyncExpertConfig(max_offset=1, min_confidence=0.05)
    flat = np.full(11, 0.3)
    v = verdict(flat, 5, 0.5, cfg)
    assert not v["usable"] and "confidence" in v["reason"] and "pairs" in v["reason"]
    peaked = flat.copy()
    peaked[5] = 0.6
    assert verdict(peaked, 5, 0.8, cfg) == {"offset": 0, "confidence": pytest.approx(0.3),
                                            "usable": True, "reason": "ok"}  # fmt: skip
    weak = verdict(peaked, 5, 0.55, cfg)  # better than chance, below min_pair_accuracy 0.6
    assert not weak["usable"] and weak["reason"] == "it ranks only 55% of held-out pairs right " \
        "(needed: 60%)"  # fmt: skip
    assert verdict(peaked, 5, 0.6, cfg)["usable"]


def test_load_checked_gives_the_expert_only_when_its_check_passed(tmp_path):
    from speech2lip.models.expert import load_checked

    assert load_checked(tmp_path / "expert.pt")[0] is None  # missing: no expert, no error
    for usable in (False, True):
        meta = {"usable": usable, "offset": 1}
        torch.save({"state_dict": SyncNetColor().state_dict(), "speech2lip": meta},
                   tmp_path / "expert.pt")  # fmt: skip
        model, meta, why = load_checked(tmp_path / "expert.pt")
        assert (model is not None) == usable and meta["offset"] == 1
        assert (why == "ok") == usable and (usable or "ground-truth check" in why)


def test_stage_trains_checks_and_writes_a_wav2lip_checkpoint(demo_warp, tmp_path):
    cfg = SyncExpertConfig(steps=3, batch=4, log_every=1, search_offsets=2)
    summary = run(demo_warp / "index.json", tmp_path, cfg, threads=1)
    for name in ("expert.pt", "sync_expert.json", "offset_curve.png"):
        assert (tmp_path / name).is_file()
    saved = json.loads((tmp_path / "sync_expert.json").read_text())
    assert saved["steps"] == 3 and len(saved["offset_curve"]["mean_cos"]) == 5
    assert 0 <= saved["heldout_pair_accuracy"] <= 1 and isinstance(saved["usable"], bool)
    assert saved["usable"] == (saved["reason"] == "ok") == summary["usable"]
    model = load_sync_expert(tmp_path / "expert.pt")  # Wav2Lip's loader reads it
    meta = torch.load(tmp_path / "expert.pt", weights_only=True)["speech2lip"]
    assert meta["usable"] == saved["usable"] and meta["offset"] == saved["offset"]
    assert isinstance(model, SyncNetColor)


def test_stage_checks_a_pretrained_expert_and_names_a_missing_one(demo_warp, tmp_path):
    ckpt = tmp_path / "lipsync_expert.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in SyncNetColor().state_dict().items()},
                "global_step": 1}, ckpt)  # fmt: skip
    summary = run(demo_warp / "index.json", tmp_path / "out",
                  SyncExpertConfig(pretrained=str(ckpt), search_offsets=2))  # fmt: skip
    assert summary["source"].startswith("pretrained") and summary["steps"] == 0
    assert (tmp_path / "out/expert.pt").is_file()
    with pytest.raises(Speech2LipError, match="lipsync_expert.pth"):
        run(demo_warp / "index.json", tmp_path / "x",
            SyncExpertConfig(pretrained=str(tmp_path / "nope.pth")))  # fmt: skip
    assert not (tmp_path / "x/expert.pt").exists()
