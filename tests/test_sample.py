"""Stage `sample`: the synthetic demo subject."""

from __future__ import annotations

import numpy as np
import pytest

from speech2lip.config import SampleConfig
from speech2lip.media import probe, read_frames
from speech2lip.sample import FPS, make_script
from speech2lip.sample.face import FaceRig
from speech2lip.sample.speech import BILABIALS, mouth_controls, viseme


def test_visemes():
    assert viseme("p") == viseme("b") == viseme("m") == (0.0, 0.0, 0.0)
    assert viseme("A:")[0] > 0.9 and viseme("u:")[2] == 1.0 and viseme("i:")[1] > 0.8
    assert viseme("_:") == viseme("_") and viseme("zz-unknown") == viseme("z")
    assert {"p", "b", "m"} == BILABIALS


def test_bilabials_close_the_mouth_and_vowels_open_it():
    sr = 1000
    # 0-0.4 s "a", 0.4-0.48 s "p", 0.48-1.0 s "a"
    phonemes = [(0, "a"), (400, "p"), (480, "a")]
    mouth = mouth_controls(phonemes, sr, n_frames=25, fps=FPS)
    assert mouth.shape == (25, 3) and mouth.dtype == np.float32
    centre = int(0.44 * FPS)  # frame nearest the bilabial's centre
    assert mouth[centre, 0] < 1e-6
    assert mouth[3, 0] > 0.9 and mouth[20, 0] > 0.9
    assert np.all(np.diff(mouth[3 : centre + 1, 0]) <= 1e-6)  # closes smoothly, no jump back


def test_script_is_deterministic_for_a_seed():
    a, b = (
        make_script(SampleConfig(duration=3, seed=5)),
        make_script(SampleConfig(duration=3, seed=5)),
    )
    c = make_script(SampleConfig(duration=3, seed=6))
    assert np.array_equal(a.speech.audio, b.speech.audio)
    for name in ("mouth", "blink", "pose"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.pose, c.pose)
    assert a.n_frames == int(np.ceil(len(a.speech.audio) / a.speech.sample_rate * FPS))
    assert np.abs(a.pose[:, :3]).max() <= 8.0 + 1e-9
    rig1, rig2 = FaceRig.build(128), FaceRig.build(128)
    for i in (0, a.n_frames // 2):
        f1 = rig1.frame(a.mouth[i], a.blink[i], a.pose[i])
        assert np.array_equal(f1, rig2.frame(a.mouth[i], a.blink[i], a.pose[i]))


def test_demo_video_format(demo_video):
    info = probe(demo_video)
    assert (info.width, info.height) == (512, 512)
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    assert info.fps == pytest.approx(25)
    assert info.duration >= 3


def mesh_landmarks(frames: list[np.ndarray]) -> list[np.ndarray | None]:
    import mediapipe as mp

    found = []
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, refine_landmarks=True) as mesh:
        for frame in frames:
            res = mesh.process(frame).multi_face_landmarks
            found.append(
                None if not res else np.array([[p.x * 512, p.y * 512] for p in res[0].landmark])
            )
    return found


def test_mediapipe_tracks_every_frame_and_the_mouth_follows_the_controls(demo_video):
    frames = [f.copy() for f in read_frames(demo_video, 512, 512)]
    marks = mesh_landmarks(frames)
    missing = [i for i, m in enumerate(marks) if m is None]
    assert missing == [], f"no face in frames {missing}"
    controls = np.load(demo_video.with_suffix(".npz"))["mouth"][:, 0]
    lm = np.stack(marks)
    gap = np.linalg.norm(lm[:, 13] - lm[:, 14], axis=1) / np.linalg.norm(
        lm[:, 10] - lm[:, 152], axis=1
    )
    r = float(np.corrcoef(gap, controls[: len(gap)])[0, 1])
    print(f"mouth opening vs control: Pearson r = {r:.3f} over {len(gap)} frames")
    assert r > 0.8
    shut = controls[: len(gap)] < 0.02
    if shut.any():
        assert gap[shut].mean() < 0.5 * gap[controls[: len(gap)] > 0.6].mean()
