"""Landmark layouts (`speech2lip.geometry.topology`) and the shared landmark interface."""

from __future__ import annotations

import numpy as np
import pytest

from speech2lip.errors import Speech2LipError
from speech2lip.faces.landmarkers import Landmarker, landmark_frames, largest, open_landmarker
from speech2lip.geometry.regions import lip_points
from speech2lip.geometry.topology import FAN68, LAYOUTS, MEDIAPIPE, inner_lip_opening, topology


def test_layouts_are_looked_up_by_point_count():
    assert topology(np.zeros((5, 478, 3))) is MEDIAPIPE
    assert topology(np.zeros((68, 2))) is FAN68
    assert topology(68) is FAN68 and set(LAYOUTS) == {478, 68}
    with pytest.raises(Speech2LipError, match="landmarks with 100 points: not a known layout"):
        topology(np.zeros((100, 2)))


def test_fan_indices():
    assert len(FAN68.lips) == 20 and (FAN68.lips[0], FAN68.lips[-1]) == (48, 67)
    assert FAN68.inner_lips == (62, 66) and FAN68.mouth_corners == (48, 54)
    assert FAN68.eye_corners == (36, 45)


def test_mediapipe_indices_match_mediapipe():
    mp = pytest.importorskip("mediapipe")
    mesh = mp.solutions.face_mesh
    lips = sorted({i for edge in mesh.FACEMESH_LIPS for i in edge})
    assert list(MEDIAPIPE.lips) == lips and len(lips) == 40
    assert set(MEDIAPIPE.inner_lips) | set(MEDIAPIPE.mouth_corners) <= set(lips)
    eyes = {i for edge in mesh.FACEMESH_LEFT_EYE | mesh.FACEMESH_RIGHT_EYE for i in edge}
    assert set(MEDIAPIPE.eye_corners) <= eyes


def test_inner_lip_opening_and_lip_points():
    points = np.zeros((3, 478, 3), np.float32)
    points[:, 14, 1] = [0.0, 3.0, 4.0]  # the lower inner lip moves down
    points[:, 14, 0] = [0.0, 4.0, 3.0]
    np.testing.assert_allclose(inner_lip_opening(points), [0.0, 5.0, 5.0])
    assert lip_points(points).shape == (3, 40, 2)
    assert lip_points(np.zeros((68, 3))).shape == (20, 2)


class Scripted(Landmarker):
    """A backend that returns given faces, for the shared frame loop."""

    topology = FAN68

    def __init__(self, script):
        self.script, self.closed = iter(script), False

    def __call__(self, frame):
        return next(self.script)

    def close(self):
        self.closed = True


def test_landmark_frames_keeps_the_largest_face_and_counts_faces():
    small = np.zeros((68, 3))
    small[:, 0] = np.linspace(0, 1, 68)
    small[:, 1] = np.linspace(0, 1, 68)
    big = small * 10
    with Scripted([[small, big], [], [small]]) as marker:
        points, found, faces = landmark_frames([None] * 3, 3, marker)
    assert marker.closed
    assert points.shape == (3, 68, 3) and points.dtype == np.float32
    np.testing.assert_array_equal(points[0], big.astype(np.float32))
    assert found.tolist() == [True, False, True] and faces.tolist() == [2, 0, 1]
    assert not points[1].any()
    assert largest([small, big]) is big


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown landmark backend 'fan'"):
        open_landmarker("fan")


def test_mediapipe_backend_on_a_blank_frame_finds_nothing():
    pytest.importorskip("mediapipe")
    with open_landmarker("mediapipe", max_faces=1) as marker:
        assert marker.topology is MEDIAPIPE
        assert marker(np.zeros((64, 64, 3), np.uint8)) == []


def test_the_track_follows_one_of_two_similar_faces():
    """Two faces of about the same size, listed in a changing order (as a detector does): the
    track stays on the one it started with; a face far from the track is not taken for it."""
    base = np.zeros((68, 3))
    base[:, 0] = np.linspace(0, 100, 68)
    base[:, 1] = np.linspace(0, 100, 68)
    left, right = base + [100, 200, 0], base * 1.02 + [600, 200, 0]  # right is 2 % larger
    script = [[left, right], [right + [3, 0, 0], left], [left, right + [6, 0, 0]], [left]]
    with Scripted(script) as marker:
        points, found, faces = landmark_frames([None] * 4, 4, marker)
    assert found.tolist() == [True, True, True, False]  # frame 3: only the other person
    assert np.allclose(points[1:3, 0, 0], [603, 606])
    assert points[0, 0, 0] == pytest.approx(600)  # the largest where the track starts
