"""The assembled model and the training loop on the 3-second demo's warp output."""

from __future__ import annotations

import csv
import dataclasses
import math

import numpy as np
import pytest
import torch

from speech2lip.config import ModelSizes, TrainConfig
from speech2lip.data.shards import WarpData
from speech2lip.errors import Speech2LipError
from speech2lip.models.assembled import Speech2Lip
from speech2lip.train.loop import batch_ids, train

TINY = ModelSizes(audio_dim=16, audio_radius=1, uv_freqs=4, time_freqs=2, lips_width=32,
                  lips_layers=3, lips_skip=2, blend_channels=(8, 16))  # fmt: skip
# every key a preset would fill, fixed here so the loop's tests do not follow the presets
FIXED = dict(lips_pixels=0, mouth_frames=0, lr=2e-3, mouth_start=0, sync_weight=0.0, sync_start=0)


def options(**kw) -> TrainConfig:
    base = dict(steps=6, batch_frames=3, checkpoint_every=3, log_every=2, model=TINY, **FIXED)
    return TrainConfig(**{**base, **kw})


def test_model_pieces_shapes_and_gradients(demo_warp):
    data = WarpData(demo_warp / "index.json")
    model = Speech2Lip(data.canonical, TINY)
    lx, ly, lw, lh = data.index["lip_box"]
    ex, ey, ew, eh = data.index["extended_box"]
    ids = np.array([3, 40])
    from speech2lip.data.batches import to_tensors

    batch = to_tensors(data, ids, TINY.audio_radius, "cpu")
    code = model.audio_code(batch["mel_context"])
    lips = model.canonical_lips(code, batch["time"])
    assert code.shape == (2, 16) and lips.shape == (2, 3, lh, lw)
    grid, valid = model.c2o(batch["relative_pose"], batch["mouth_origin"], init=batch["c2o_grid"],
                            init_valid=batch["c2o_mask"], iterations=2)  # fmt: skip
    assert grid.shape == (2, eh, ew, 2) and valid.float().mean() > 0.1
    composed = model.compose(lips, batch["mouth"], grid, valid)
    assert composed.shape == batch["mouth"].shape
    loss = model.depth_photometric(batch["mouth"], batch["mouth_origin"], batch["relative_pose"])
    ((composed - batch["mouth"]) ** 2).mean().add(loss).backward()
    assert model.depth.offset.grad.abs().sum() > 0  # D_c learns through C2O and L_d
    assert model.lips.first.weight.grad.abs().sum() > 0


def test_batches_are_a_function_of_seed_and_step():
    ids = np.arange(100)
    assert np.array_equal(batch_ids(ids, 0, 5, 4), batch_ids(ids, 0, 5, 4))
    assert not np.array_equal(batch_ids(ids, 0, 5, 4), batch_ids(ids, 0, 6, 4))


def resumes_bit_for_bit(data, tmp_path, opts, workers: int = 0):
    """Train `opts` straight through (in `tmp_path/a`) and killed after the checkpoint of step
    3, then resumed (in `tmp_path/b`); assert both end with the same weights. Returns the
    straight run's model."""
    straight, _ = train(data, tmp_path / "a", opts, resume="no")

    def interrupt(step, history, model):
        if step == 4:  # killed after the checkpoint of step 3
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(data, tmp_path / "b", opts, resume="no", on_step=interrupt)
    resumed, _ = train(data, tmp_path / "b", opts, resume="yes", workers=workers)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(),
                            strict=True):  # fmt: skip
        assert torch.equal(a, b), name
    return straight


def test_resume_continues_bit_for_bit(demo_warp, tmp_path):
    data = WarpData(demo_warp / "index.json")
    sub = dict(lips_pixels=64, mouth_frames=2)  # random pixels for L_m, 2 whole frames for L_w
    resumes_bit_for_bit(data, tmp_path, options(**sub), workers=1)
    with open(tmp_path / "b/train_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [2, 4, 6]  # the log continues, without repeats


def test_resume_refuses_other_options_and_damaged_checkpoints(demo_warp, tmp_path):
    data = WarpData(demo_warp / "index.json")
    train(data, tmp_path, options(steps=3), resume="no")
    with pytest.raises(Speech2LipError, match="trained with other options"):
        train(data, tmp_path, options(lr=1e-4), resume="yes")
    (tmp_path / "ckpt/last.pt").write_bytes(b"garbage")
    with pytest.raises(Speech2LipError, match="unreadable.*delete it"):
        train(data, tmp_path, options(), resume="auto")
    with pytest.raises(Speech2LipError, match="no checkpoint"):
        train(data, tmp_path / "fresh", options(), resume="yes")


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_checkpoint_past_the_requested_steps_is_not_resumed(demo_warp, tmp_path, caplog):
    data = WarpData(demo_warp / "index.json")
    fresh, _ = train(data, tmp_path / "fresh", options(steps=3), resume="no")
    train(data, tmp_path / "run", options(steps=6), resume="no")
    with pytest.raises(Speech2LipError, match="at step 6, past train.steps = 3"):
        train(data, tmp_path / "run", options(steps=3), resume="yes")
    with caplog.at_level("INFO", logger="speech2lip.train.loop"):
        shorter, losses = train(data, tmp_path / "run", options(steps=3), resume="auto")
    assert "past train.steps = 3: starting over" in caplog.text
    assert losses and same_weights(fresh, shorter)
    again, logged = train(data, tmp_path / "run", options(steps=3), resume="auto")  # done already
    assert logged.keys() == losses.keys()  # the finished run's last losses, not {}
    assert same_weights(shorter, again)


def test_held_out_psnr_and_the_static_baseline(demo_warp):
    from speech2lip.train.heldout import lips_psnr, static_psnr

    data = WarpData(demo_warp / "index.json")
    canon = int(data.canonical["canonical_index"])
    assert static_psnr(data, np.array([canon])) > 100  # the canonical frame against itself
    test_ids = data.split_ids("test")
    assert 10 < static_psnr(data, test_ids) < 100
    model = Speech2Lip(data.canonical, TINY)
    assert 0 < lips_psnr(model, data, test_ids, TINY.audio_radius, "cpu") < 40
    from speech2lip.train.heldout import mean_mouth_psnr

    lips = data.read_field("canonical_lips", test_ids).astype(np.float64)
    mask = data.read_field("canonical_mask", test_ids).astype(bool)
    mean = data.read_field("canonical_lips", test_ids).astype(np.float64).mean(axis=0)
    mse = (((lips - mean) / 255) ** 2)[mask].mean()  # by hand, all three channels per pixel
    assert mean_mouth_psnr(data, test_ids, test_ids) == pytest.approx(10 * np.log10(1 / mse))


def test_train_stage_writes_a_model_that_rebuilds_alone(demo_warp, tmp_path):
    import json

    from speech2lip.config import TrainConfig
    from speech2lip.data.batches import to_tensors
    from speech2lip.models.checkpoint import load_model
    from speech2lip.train import run

    sizes = ModelSizes(lips_width=16, lips_layers=2, lips_skip=0, uv_freqs=2, audio_dim=8,
                       audio_radius=1, blend_channels=(4, 8))  # fmt: skip
    cfg = TrainConfig(steps=4, batch_frames=2, model=sizes, checkpoint_every=2, log_every=2,
                      mouth_start=0)  # fmt: skip
    summary = run(demo_warp / "index.json", tmp_path, cfg, threads=1, resume="no", device="cpu")
    for name in ("model.pt", "train.json", "loss_curve.png", "train_log.csv", "heldout.csv",
                 "ckpt/last.pt", "previews/step_000004.png"):  # fmt: skip
        assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "train.json").read_text())["steps"] == 4
    assert summary["static_mouth_psnr_db"] > 0 and "mouth" in summary["final_losses"]
    assert summary["mean_mouth_psnr_db"] > 0 and "beats_mean_mouth" in summary
    assert summary["heldout_lip_coverage"] > 0.95  # the lips cover their crop
    data = WarpData(demo_warp / "index.json")
    model = load_model(tmp_path / "model.pt")  # no config, no data needed
    batch = to_tensors(data, np.array([5, 6]), 1, "cpu", model.sizes.features)
    with torch.no_grad():
        cond, _ = model.condition(batch["mel_context"])
        lips = model.canonical_lips(cond, batch["time"])
    from speech2lip.train.heldout import lips_psnr

    assert lips.shape[0] == 2
    assert lips_psnr(model, data, data.split_ids("test"), 1, "cpu") == pytest.approx(
        summary["heldout_lips_psnr_db"], abs=1.0
    )
    with pytest.raises(Speech2LipError, match="run the train stage"):
        load_model(tmp_path / "missing.pt")
    # Snakemake re-runs the stage after a config change: other options start over ('auto'),
    # and the held-out log starts over with them instead of following the old run's rows
    run(demo_warp / "index.json", tmp_path, dataclasses.replace(cfg, seed=1), threads=1,
        device="cpu")  # fmt: skip
    with open(tmp_path / "heldout.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [2, 4]


def test_step_logs_are_trimmed_to_the_resumed_step(tmp_path):
    from speech2lip.train.resume import trim_step_log

    path = tmp_path / "heldout.csv"
    path.write_text("step,psnr\n2,20.0\n4,21.0\n6,22.0\n")
    trim_step_log(path, 4)  # resumed at 4: the killed run's step 6 goes
    assert path.read_text().split() == ["step,psnr", "2,20.0", "4,21.0"]
    trim_step_log(tmp_path / "none.csv", 4)  # nothing to trim
    trim_step_log(path, 0)  # starting over
    assert not path.exists()


def test_presets_fill_only_null_keys():
    from speech2lip.train.presets import PRESETS, resolve

    demo = resolve(TrainConfig())
    assert demo.steps == PRESETS["demo"].steps
    assert demo.model.lips_width == PRESETS["demo"].model.lips_width
    paper = resolve(TrainConfig(preset="paper", model=ModelSizes(lips_width=128)))
    assert paper.model.lips_width == 128 and paper.model.lips_layers == 8
    assert paper.model.lips_skip == 4 and paper.lips_focus == TrainConfig().lips_focus
    for preset in PRESETS.values():  # a preset fills every key a config may leave null
        filled = resolve(dataclasses.replace(preset, steps=None))
        unset = [k for k, v in dataclasses.asdict(filled).items() if v is None]
        assert unset == ["minutes"]  # null: no time budget
        assert None not in dataclasses.asdict(filled.model).values()


@pytest.mark.slow
def test_a_short_run_beats_the_static_mouth_on_held_out_speech(demo_warp, tmp_path):
    """Hold out the 13 training frames where the mouth moves most (the demo's test split ends
    on a closed mouth, where the static mouth is nearly exact), train on the rest, and compare
    the canonical lips on the held-out frames with the canonical frame's lips pasted there."""
    from speech2lip.train.heldout import lips_psnr, static_psnr

    data = WarpData(demo_warp / "index.json")
    train_split = data.split_ids("train")
    lips = data.read_field("canonical_lips", train_split).astype(np.float64)
    canon = data[int(data.canonical["canonical_index"])]["canonical_lips"].astype(np.float64)
    motion = np.abs(lips - canon).mean(axis=(1, 2, 3))
    window = np.convolve(motion, np.ones(13), mode="valid")  # 13-frame sums
    first = int(train_split[window.argmax()])
    held = np.arange(first, first + 13)
    rest = train_split[(train_split < first - 3) | (train_split >= first + 16)]
    opts = options(steps=300, batch_frames=4, lr=3e-3, mouth_start=10**9, depth_weight=0.0,
                   checkpoint_every=300, log_every=100,
                   model=ModelSizes(audio_dim=16, audio_radius=1, uv_freqs=4, time_freqs=0,
                                    lips_width=32, lips_layers=3, lips_skip=0,
                                    blend_channels=(8, 16)))  # fmt: skip
    model, _ = train(data, tmp_path, opts, resume="no", train_ids=rest)
    ours = lips_psnr(model, data, held, 1, "cpu")
    static = static_psnr(data, held)
    print(f"held-out frames {first}-{first + 12}: ours {ours:.2f} dB, static mouth {static:.2f} dB")
    assert ours > static + 0.5


def test_sync_loss_reaches_the_lips_through_in_and_off_sync_pairs(demo_warp):
    from speech2lip.data.batches import to_device
    from speech2lip.models.expert import window_starts
    from speech2lip.models.syncnet import SyncNetColor
    from speech2lip.train.sync import read_sync_batch, sync_loss, sync_windows

    data = WarpData(demo_warp / "index.json")
    model = Speech2Lip(data.canonical, TINY)
    expert = SyncNetColor().eval().requires_grad_(False)
    starts, wrong = sync_windows(window_starts(data.split_ids("train")), 0, 3, 2)
    assert np.all(np.abs(wrong - starts) >= 5)
    batch = to_device(read_sync_batch(data, starts, wrong, TINY.audio_radius, 0), "cpu")
    assert batch["sync_mouth"].shape[0] == 10 and batch["sync_mel"].shape == (2, 80, 16)
    loss = sync_loss(model, batch, options(sync_weight=1.0), expert)
    loss.backward()
    assert torch.isfinite(loss) and model.lips.first.weight.grad.abs().sum() > 0
    assert model.blend.out.weight.grad is None  # L_s shapes the lips, not the Blend-Net


def test_whole_crops_are_drawn_as_rendering_draws_them(demo_warp):
    """L_w's frames and L_s's windows are drawn with the render-time estimator (the target at
    each pixel's centre), not at random places: two draws of one batch agree, and they are the
    lips rendering shows."""
    from speech2lip.data.batches import to_device, to_tensors
    from speech2lip.models.expert import window_starts
    from speech2lip.models.syncnet import SyncNetColor
    from speech2lip.train.loop import losses, masked_mse
    from speech2lip.train.sync import read_sync_batch, sync_loss, sync_windows

    data = WarpData(demo_warp / "index.json")
    model = Speech2Lip(data.canonical, TINY)
    expert = SyncNetColor().eval().requires_grad_(False)
    opts = options(mouth_frames=2, holes_probability=0.0, sync_weight=1.0)
    batch = to_tensors(data, np.array([3, 40, 77]), TINY.audio_radius, "cpu")
    starts, wrong = sync_windows(window_starts(data.split_ids("train")), 0, 3, 2)
    windows = to_device(read_sync_batch(data, starts, wrong, TINY.audio_radius, 0), "cpu")
    drawn = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        with torch.no_grad():
            out = losses(model, batch, opts, step=0)
            drawn.append((out["lips"], out["mouth"], sync_loss(model, windows, opts, expert)))
    for a, b in zip(*drawn, strict=True):
        assert torch.equal(a, b)
    with torch.no_grad():  # L_m on the two whole frames (lips_pixels 0): rendering's lips
        _, shown = model.render_mouth(batch["mel_context"][:2], batch["time"][:2],
                                      batch["mouth"][:2], batch["mouth_origin"][:2],
                                      batch["relative_pose"][:2])  # fmt: skip
    want = masked_mse(shown, batch["canonical_lips"][:2], batch["canonical_mask"][:2])
    assert torch.allclose(drawn[0][0], want, atol=1e-7)


def test_a_step_batch_reads_only_the_frames_it_composes(demo_warp):
    """A step's batch holds the mouth boxes, poses and C2O grids of its `mouth_frames` frames
    alone (and L_s's windows only what `sync_loss` composes with), and its losses are those
    of the batch read whole."""
    from speech2lip.data.batches import WHOLE_FIELDS, to_device, to_tensors
    from speech2lip.models.syncnet import SyncNetColor
    from speech2lip.train.loop import StepBatches, losses

    data = WarpData(demo_warp / "index.json")
    model = Speech2Lip(data.canonical, TINY)
    expert = SyncNetColor().eval().requires_grad_(False)
    opts = options(batch_frames=3, mouth_frames=2, lips_pixels=16, sync_weight=1.0)
    train_ids = data.split_ids("train")
    _, arrays = StepBatches(data, train_ids, opts)[1]
    ids = batch_ids(train_ids, opts.seed, 1, 3)
    assert all(len(arrays[name]) == 2 for name in WHOLE_FIELDS)
    assert len(arrays["canonical_lips"]) == len(arrays["mel_context"]) == 3
    sync = {k for k in arrays if k.startswith("sync_") and not k.endswith("mel")}
    assert sync == {"sync_mouth", "sync_c2o_grid", "sync_c2o_mask", "sync_mel_context",
                    "sync_time"}  # fmt: skip
    full = to_tensors(data, ids, TINY.audio_radius, "cpu")
    full.update({k: v for k, v in to_device(arrays, "cpu").items() if k.startswith("sync_")})
    got = []
    for batch in (to_device(arrays, "cpu"), full):
        torch.manual_seed(0)
        with torch.no_grad():
            got.append(losses(model, batch, opts, step=1, expert=expert))
    assert got[0].keys() == got[1].keys() >= {"lips", "mouth", "depth", "sync"}
    for key in got[0]:
        assert torch.equal(got[0][key], got[1][key]), key


def test_loop_with_the_sync_loss_and_bf16_autocast(demo_warp, tmp_path):
    from speech2lip.models.syncnet import SyncNetColor

    data = WarpData(demo_warp / "index.json")
    opts = options(steps=4, sync_weight=0.1, sync_start=2, precision="bf16", lips_pixels=64,
                   mouth_frames=2)  # fmt: skip
    _, last = train(data, tmp_path, opts, resume="no", expert=SyncNetColor())
    assert "sync" in last and all(np.isfinite(v) for v in last.values())
    with open(tmp_path / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[-1]["sync"] and not rows[0]["sync"]  # on from step 2


def test_compiled_lip_model_matches_eager():
    from speech2lip.models import ImplicitLips

    torch.manual_seed(0)

    model = ImplicitLips(audio_dim=8, uv_freqs=2, time_freqs=0, width=16, depth=2, skip=0)
    uv, audio = torch.rand(2, 30, 2) * 2 - 1, torch.randn(2, 8)
    eager = model(uv, audio)
    model.compile()
    assert torch.allclose(model(uv, audio), eager, atol=1e-5)
    assert not any("_orig_mod" in k for k in model.state_dict())  # checkpoint keys unchanged


def test_lr_schedule_and_where_the_lips_loss_looks(demo_warp):
    from speech2lip.train.loop import lips_pixel_prob, lr_scale

    assert lr_scale(0, 100, 0.1) == 1.0 and lr_scale(99, 100, 0.1) == pytest.approx(0.1)
    assert lr_scale(49, 100, 0.1) == pytest.approx(0.55, abs=0.02)
    data = WarpData(demo_warp / "index.json")
    prob = lips_pixel_prob(data, data.split_ids("train"), 0.5)
    lx, ly, lw, lh = data.index["lip_box"]
    assert prob.shape == (lw * lh,) and prob.sum() == pytest.approx(1.0)
    assert prob.min() >= 0.5 / (lw * lh) - 1e-12  # every pixel keeps its uniform share
    lips = data.read_field("canonical_lips", data.split_ids("train")).astype(np.float32)
    moving = lips.std(axis=0).mean(axis=-1).reshape(-1)
    assert prob[moving.argmax()] > prob[moving.argmin()]  # more where the lips move
    assert np.allclose(lips_pixel_prob(data, data.split_ids("train"), 0.0), 1 / (lw * lh))


def test_sync_setup_uses_only_a_checked_expert_at_its_measured_offset(tmp_path):
    from speech2lip.models.syncnet import SyncNetColor
    from speech2lip.train import sync_setup

    opts = options(sync_weight=0.01)
    path = tmp_path / "expert.pt"
    for usable, offset in ((False, 0), (True, -1)):
        torch.save({"state_dict": SyncNetColor().state_dict(),
                    "speech2lip": {"usable": usable, "offset": offset}}, path)  # fmt: skip
        expert, got, why = sync_setup(str(path), opts)
        if usable:
            assert isinstance(expert, SyncNetColor) and got.sync_weight == 0.01
            assert got.sync_offset == -1 and why.startswith("on (") and "-1 frames" in why
        else:
            assert expert is None and got.sync_weight == 0 and "ground-truth check" in why
    assert sync_setup("", opts)[1].sync_weight == 0  # no expert: L_s off, said so
    with pytest.raises(Speech2LipError, match="missing.pt not found: run the sync_expert stage"):
        sync_setup(str(tmp_path / "missing.pt"), opts)


def test_lowering_steps_through_the_cli_trains_again(demo_warp, tmp_path):
    import json

    from conftest import TINY_SIZES, TINY_TRAIN

    from speech2lip.cli import main

    params = json.dumps({**TINY_TRAIN, "model": {**TINY_SIZES, "blend_channels": [4, 8]},
                         "checkpoint_every": 2, "log_every": 2})  # fmt: skip
    argv = ["train", "--index", str(demo_warp / "index.json"), "--out-dir", str(tmp_path),
            "--params", params, "--threads", "1", "--device", "cpu"]  # fmt: skip
    assert main([*argv, "--steps", "6"]) == 0
    assert main([*argv, "--steps", "4"]) == 0  # --resume auto, as the rule runs it
    summary = json.loads((tmp_path / "train.json").read_text())
    assert summary["steps"] == 4 and summary["final_losses"]
    with open(tmp_path / "train_log.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [2, 4]  # the new run's rows


def test_a_time_budget_stops_training_and_the_schedule_follows_the_clock(demo_warp, tmp_path):
    import json

    from speech2lip.train import run
    from speech2lip.train.loop import lr_scale
    from speech2lip.train.resume import load_checkpoint

    assert lr_scale(10, 100, 0.1, spent=1.0) == pytest.approx(0.1)  # out of time: decayed
    assert lr_scale(99, 100, 0.1, spent=0.2) == pytest.approx(0.1)  # out of steps first
    sizes = ModelSizes(lips_width=16, lips_layers=2, lips_skip=0, uv_freqs=2, audio_dim=8,
                       audio_radius=1, blend_channels=(4, 8))  # fmt: skip
    cfg = TrainConfig(steps=500, minutes=1e-6, batch_frames=2, model=sizes, checkpoint_every=200,
                      log_every=100, mouth_start=0, sync_weight=0.0)  # fmt: skip
    summary = run(demo_warp / "index.json", tmp_path, cfg, threads=1, resume="no", device="cpu")
    assert summary["steps"] == 1 and summary["minutes"] == 1e-6  # the first step spent it all
    assert load_checkpoint(tmp_path / "ckpt/last.pt")["step"] == 1
    assert (tmp_path / "previews/step_000001.png").is_file()  # held-out scores at the stop
    with open(tmp_path / "heldout.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1]
    assert json.loads((tmp_path / "train.json").read_text())["steps"] == 1


def test_a_checkpoint_of_other_code_data_or_layout_is_not_resumed(demo_warp, tmp_path, caplog,
                                                                  monkeypatch):  # fmt: skip
    """The train stage re-runs when its code or its data changed: a finished checkpoint of
    the same options must not be handed back then (it would be the old model)."""
    import json

    import speech2lip.train.resume as resume

    data = WarpData(demo_warp / "index.json")
    train(data, tmp_path, options(steps=3), resume="no")
    state = torch.load(tmp_path / "ckpt/last.pt", weights_only=True)

    def reasons(run_data, mode="auto") -> str:
        caplog.clear()
        with caplog.at_level("INFO", logger="speech2lip.train.loop"):
            train(run_data, tmp_path, options(steps=3), resume=mode)
        return caplog.text

    assert "resuming from" in reasons(data)  # same everything: the finished run, re-exported
    monkeypatch.setattr(resume, "code_fingerprint", lambda: "0123456789abcdef")
    assert "was written by other speech2lip code: starting over" in reasons(data)
    with pytest.raises(Speech2LipError, match="other speech2lip code; remove"):
        torch.save(state, tmp_path / "ckpt/last.pt")
        train(data, tmp_path, options(steps=3), resume="yes")
    monkeypatch.undo()

    moved = tmp_path / "warp"  # the same shards, another index (a warp re-run)
    moved.mkdir()
    for item in demo_warp.iterdir():
        if item.name != "index.json":
            (moved / item.name).symlink_to(item)
    index = json.loads((demo_warp / "index.json").read_text())
    index["n_frames_note"] = "re-run"
    (moved / "index.json").write_text(json.dumps(index, indent=1))
    torch.save(state, tmp_path / "ckpt/last.pt")
    assert "was trained on other data" in reasons(WarpData(moved / "index.json"))

    state["model"]["depth.log_depth"] = state["model"].pop("depth.offset")  # an older layout
    torch.save(state, tmp_path / "ckpt/last.pt")
    assert "holds a model of another layout: starting over" in reasons(data)


def test_lip_coverage_sees_the_background_show_through_a_rough_depth(demo_warp):
    """The held-out figure that caught it: a canonical depth with pixel noise (what a free
    per-pixel depth became in training) leaves holes in C2O once the head turns (seen before
    any filling; the paste's `fill_holes` then fills the small ones)."""
    from speech2lip.data.batches import to_tensors
    from speech2lip.train.heldout import lip_coverage

    data = WarpData(demo_warp / "index.json")
    b = to_tensors(data, data.split_ids("test")[:4], TINY.audio_radius, "cpu", TINY.features)
    depth = np.asarray(data.canonical["canonical_depth"])
    z0, turn = float(np.median(depth[depth > 0])), math.radians(10)  # 10 degrees of yaw
    yaw = torch.tensor([[math.cos(turn), 0, math.sin(turn)], [0, 1, 0],
                        [-math.sin(turn), 0, math.cos(turn)]])  # fmt: skip
    about_head = torch.eye(4)
    about_head[:3, :3] = yaw
    about_head[:3, 3] = (torch.eye(3) - yaw) @ torch.tensor([0.0, 0.0, z0])
    b["relative_pose"] = about_head @ b["relative_pose"]
    torch.manual_seed(0)
    model = Speech2Lip(data.canonical, TINY).eval()
    covered, inside = lip_coverage(model, b, fill_rounds=0)
    with torch.no_grad():
        noise = torch.randn(model.depth.log_init.shape, generator=torch.Generator().manual_seed(0))
        model.depth.log_init += 0.03 * noise  # about 6 cm at 2 m
    rough, _ = lip_coverage(model, b, fill_rounds=0)
    assert inside > 1000 and covered / inside > 0.98 and rough / inside < 0.9, (covered, rough)
    filled, _ = lip_coverage(model, b)  # rendering fills specks: never less
    assert filled > rough


def test_heldout_scores_solve_c2o_once_per_batch(demo_warp):
    """The coverage re-uses the C2O the batch was drawn with: the same figure as solving it
    again, at half the solves."""
    from speech2lip.data.batches import to_tensors
    from speech2lip.train.heldout import heldout_scores, lip_coverage

    data = WarpData(demo_warp / "index.json")
    ids = data.split_ids("test")[:6]
    torch.manual_seed(0)
    model = Speech2Lip(data.canonical, TINY).eval()
    calls = []
    solve = model.c2o
    model.c2o = lambda *a, **k: calls.append(1) or solve(*a, **k)
    scores = heldout_scores(model, data, ids, TINY.audio_radius, "cpu")
    assert len(calls) == 1
    b = to_tensors(data, ids, TINY.audio_radius, "cpu", TINY.features)
    covered, inside = lip_coverage(model, b)  # solved afresh
    assert len(calls) == 2
    assert scores["lip_coverage"] == pytest.approx(covered / inside, abs=1e-6)
