"""The evaluate stage: baselines, verdicts and the report on the 3-second demo."""

from __future__ import annotations

import json

import numpy as np
import pytest

from speech2lip.config import EvaluateConfig, RenderConfig
from speech2lip.evaluate import nearest_audio_ids, verdicts


def test_nearest_audio_picks_the_closest_training_window():
    rng = np.random.default_rng(0)
    mel = rng.normal(size=(50, 80, 16)).astype(np.float32)
    mel[45] = mel[7] + 0.01  # test frame 45 sounds like training frame 7
    mel[46] = mel[30] - 0.01
    got = nearest_audio_ids(mel, np.array([45, 46]), np.arange(40))
    assert got.tolist() == [7, 30]


def test_the_lip_box_is_the_lips_bounding_box_padded_and_kept_inside_the_frame():
    from speech2lip.evaluate.measure import lip_boxes_of
    from speech2lip.geometry.topology import FAN68

    points = np.zeros((2, 68, 2))
    points[:, list(FAN68.lips)] = [100, 200]
    points[0, 48], points[0, 54] = (80, 190), (120, 210)  # a 40 x 20 px mouth
    points[1, list(FAN68.lips)] = [5, 5]  # a mouth at the corner: clipped, still 16 px
    boxes = lip_boxes_of(points, 640, 480)
    assert boxes[0].tolist() == [70, 180, 130, 220]  # 25 % of the width (10 px) each side
    x0, y0, x1, y1 = boxes[1]
    assert x0 >= 0 and y0 >= 0 and x1 - x0 >= 16 and y1 - y0 >= 16


def test_verdicts_name_the_metrics_ours_loses():
    methods = {
        "speech2lip": {"psnr_db": 30.0, "ssim": 0.9, "lmd_px": 2.0},
        "static_mouth": {"psnr_db": 28.0, "ssim": 0.8, "lmd_px": 3.0},
        "nearest_audio": {"psnr_db": 31.0, "ssim": 0.8, "lmd_px": 1.5},
    }
    lines = verdicts(methods)
    assert lines[0] == ("speech2lip beats the static mouth baseline on every compared metric "
                        "(psnr_db, ssim, lmd_px; CPBD is a reference, not a goal)")  # fmt: skip
    assert lines[1] == "speech2lip does NOT beat the nearest audio baseline on: psnr_db, lmd_px"


@pytest.fixture(scope="module")
def rendered(demo_model, demo_geometry, demo_warp, tmp_path_factory):
    from speech2lip.render import run

    r = demo_geometry / "resample"
    out = tmp_path_factory.mktemp("render") / "video.mp4"
    run(model=demo_model, index=demo_warp / "index.json", frames=r / "frames.mkv",
        meta=r / "meta.json", audio=r / "audio.wav", video=out,
        cfg=RenderConfig(output_size="cropped"), device="cpu")  # fmt: skip
    return out


def test_evaluate_writes_metrics_baselines_and_a_report(
    demo_model, demo_geometry, demo_warp, demo_video, rendered, tmp_path
):

    from speech2lip.evaluate import run
    from speech2lip.render import run as render

    r = demo_geometry / "resample"
    driven = tmp_path / "driven/own_voice.mp4"  # driven by the demo's own speech
    render(model=demo_model, index=demo_warp / "index.json", frames=r / "frames.mkv",
           meta=r / "meta.json", audio=r / "audio.wav", video=driven, driving=str(demo_video),
           cfg=RenderConfig(output_size="cropped"), device="cpu")  # fmt: skip
    summary = run(model=demo_model, index=demo_warp / "index.json", frames=r / "frames.mkv",
                  meta=r / "meta.json", audio=r / "audio.wav", video=rendered,
                  figures=rendered.with_suffix(".json"), expert=tmp_path / "no_expert/expert.pt",
                  loss_curve=demo_model.parent / "loss_curve.png", out_dir=tmp_path / "ev",
                  cfg=EvaluateConfig(strip_frames=3), driven=[str(driven)],
                  train_summary=demo_model.parent / "train.json", device="cpu")  # fmt: skip
    saved = json.loads((tmp_path / "ev/metrics.json").read_text())
    assert saved["guidance_note"].startswith("what the audio tells")  # from train.json
    assert "what the audio tells" in (tmp_path / "ev/report.html").read_text()
    row = saved["driven"]["own_voice"]  # the driven mouth's spread against the ground truth's
    rendered_frames = json.loads(driven.with_suffix(".json").read_text())["frames"]
    assert row["frames"] == rendered_frames and 0 < row["opening_amplitude"] < 5
    assert row["denoise"]["mode"] == "auto" and not row["denoise"]["denoised"]  # clean speech
    assert "own_voice: speech SNR about" in (tmp_path / "ev/report.html").read_text()
    # the driving file is a video of someone talking (the demo itself): its mouth is measured
    assert row["driver_faces"] > 0.9 and -5 <= row["driver_best_lag"] <= 5
    assert -1 <= row["driver_opening_r"] <= row["driver_best_r"] <= 1
    assert "opens and closes with the driving video" in (tmp_path / "ev/report.html").read_text()
    assert saved["opening_r_gaps"] == []  # a 7-frame test split: too short to tell anything
    assert saved["methods"].keys() == {"ground_truth", "ground_truth_late", "speech2lip",
                                       "static_mouth", "nearest_audio",
                                       "pitch+4", "pitch-4"}  # fmt: skip
    ours = saved["methods"]["speech2lip"]
    for name in ("pitch+4", "pitch-4"):  # cross-voice rows, measured like ours
        row, measured = saved["cross_voice"][name], saved["methods"][name]
        assert row["lmd_px"] == measured["lmd_px"] and row["opening_r"] == measured["opening_r"]
        assert row["lmd_change"] == pytest.approx(measured["lmd_px"] / ours["lmd_px"] - 1)
        assert (tmp_path / "ev" / f"{name}.mp4").is_file()
    n = saved["test_frames"]
    for name, m in saved["methods"].items():
        assert m["frames"] == (n - 1 if name == "ground_truth_late" else n), name
        assert m["cpbd"] is None or 0 <= m["cpbd"] <= 1
        if name != "ground_truth":
            assert 10 < m["psnr_db"] < 60 and 0 < m["ssim"] <= 1 and m["lmd_px"] >= 0
            assert 10 < m["lip_psnr_db"] < 60 and 0 < m["lip_ssim"] <= 1  # the tight lip box
    assert "lip-box PSNR" in (tmp_path / "ev/report.html").read_text()
    assert saved["methods"]["ground_truth"]["lmd_px"] == 0
    for name in ("speech2lip", "static_mouth", "nearest_audio"):  # articulation, vs the GT's
        m = saved["methods"][name]
        assert m["opening_r"] is None or -1 <= m["opening_r"] <= 1
        assert m["opening_amplitude"] >= 0 and -5 <= m["opening_best_lag"] <= 5
    assert "not available" in saved["sync_note"] and "not available" in saved["proxy_note"]
    assert len(saved["verdicts"]) == 2 and summary["verdicts"] == saved["verdicts"]
    for name in ("static_mouth.mp4", "nearest_audio.mp4", "report.html"):
        assert (tmp_path / "ev" / name).is_file()
    page = (tmp_path / "ev/report.html").read_text()
    assert "<table>" in page and "speech2lip (ours)" in page and "data:image/png;base64" in page
    assert "opening amplitude" in page and "best lag" in page
    assert "Other voices" in page and "ours, voice +4 semitones" in page
    assert page.count("<img") >= 3


def test_the_driving_videos_mouth_is_measured_on_the_output_frames(demo_video, demo_geometry,
                                                                   tmp_path):  # fmt: skip
    import subprocess

    from conftest import encode

    from speech2lip.evaluate.voices import driver_opening
    from speech2lip.geometry.topology import inner_lip_opening
    from speech2lip.media import probe

    points = np.load(demo_geometry / "landmarks/landmarks.npz")["points"]
    truth = inner_lip_opening(points[..., :2].astype(np.float64))  # the resampled frames'
    opening, found = driver_opening(demo_video, len(truth))
    assert found == 1.0 and np.corrcoef(opening, truth)[0, 1] > 0.95  # same frames, same mouth
    for late in ("1:v", "1:a"):  # the picture, or the sound, starts about 0.2 s late
        path = tmp_path / f"late_{late[-1]}.mp4"
        other = "0:a" if late == "1:v" else "0:v"
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(demo_video), "-itsoffset", "0.2",
                        "-i", str(demo_video), "-map", late, "-map", other, "-c", "copy",
                        str(path)], check=True)  # fmt: skip
        info = probe(path)  # (AAC's packets put the sound's start near 0.15 s, not 0.2 s)
        k = round((info.video_start - info.audio_start) * 25)
        assert abs(k) >= 3
        shifted, _ = driver_opening(path, len(truth))
        if k > 0:  # output frame i shows the speaker's frame i - k
            assert np.corrcoef(shifted[k:], truth[:-k])[0, 1] > 0.95
        else:  # frame i + |k|; past the picture's end, no face
            assert np.corrcoef(shifted[:k], truth[-k:])[0, 1] > 0.95
            assert np.isnan(shifted[k:]).all()
    assert driver_opening(demo_geometry / "resample/audio.wav", 10) is None  # no picture
    blank = encode(tmp_path / "blank.mp4", np.full((25, 64, 64, 3), 90, np.uint8))
    assert driver_opening(blank, 25) is None  # no face


def test_gap_lines_say_whether_the_test_split_tells_ours_from_a_baseline():
    from speech2lip.evaluate.report import gap_lines

    gap = "opening_r_gap_interval"
    methods = {"speech2lip": {"opening_r": 0.6},
               "static_mouth": {"opening_r": 0.0, gap: [0.2, 0.8]},
               "nearest_audio": {"opening_r": 0.7, gap: [-0.3, 0.05]}}  # fmt: skip
    assert gap_lines(methods) == [
        "opening r, ours minus static mouth: +0.60 (95 % interval +0.20 to +0.80): told apart",
        "opening r, ours minus nearest audio: -0.10 (95 % interval -0.30 to +0.05): NOT told "
        "apart by these frames",
    ]
    methods["nearest_audio"][gap] = None  # too few frames: nothing said
    assert len(gap_lines(methods)) == 1


def test_the_report_says_what_the_audio_predicts_of_the_mouth(tmp_path):
    from speech2lip.errors import Speech2LipError
    from speech2lip.evaluate.report import guidance_note

    path = tmp_path / "train.json"
    assert guidance_note(None) is None and guidance_note(path) is None  # no summary: no line

    def note(guidance):
        path.write_text(json.dumps({"lip_shape_guidance": guidance}))
        return guidance_note(path)

    good = note({"cv_opening_r": 0.64, "cv_r_per_code": [0.5], "gain": 1.46})
    assert "r = 0.64" in good and "scaled by 1.46" in good
    assert "pulled" not in good  # no P/B/M pull recorded (older, or no phone rows)
    pulled = note({"cv_opening_r": 0.64, "cv_r_per_code": [0.5], "gain": 1.46, "closure": 0.5})
    assert "scaled by 1.46" in pulled and "pulled 0.50 of the way to the closed mouth" in pulled
    weak = note({"cv_opening_r": 0.01, "cv_r_per_code": [0.4], "gain": 1.0})
    assert "r = 0.01" in weak and "only a little" in weak and "longer clip" in weak
    assert "mean shape" in note({"cv_opening_r": None, "cv_r_per_code": [0.0], "gain": 0.0})
    assert "scaled by" not in note({"cv_opening_r": 0.5, "cv_r_per_code": [0.5]})  # older
    assert "off" in note(None)  # the paper's model: no guidance
    path.write_text('{"lip_shape_guidance": ')  # cut short: one line naming the file
    with pytest.raises(Speech2LipError, match="train.json: not a readable train summary"):
        guidance_note(path)
    path.write_text("[1, 2]")  # valid JSON, not a summary
    with pytest.raises(Speech2LipError, match="run the train stage again"):
        guidance_note(path)
