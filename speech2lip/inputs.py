"""Reading a stage's input files made by an earlier stage, with one-line errors.

A missing, empty, truncated or foreign file (another tool's JSON, an `.npz` without the arrays
the stage needs) fails with one line that names the file, what is wrong and the command that
makes it again, instead of a traceback from `json`, `numpy` or `h5py`.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from speech2lip.errors import MAKERS, Speech2LipError, remake
from speech2lip.media import SAMPLE_RATE, SAMPLES_PER_FRAME

META_KEYS = ("n_frames", "width", "height", "fps", "split")


def bad_input(path: str | Path, problem: str) -> Speech2LipError:
    """The one-line error for an unusable input file."""
    return Speech2LipError(f"{path}: {problem}; {remake(path)}")


def _present(path: Path) -> None:
    if not path.is_file():
        raise bad_input(path, "not found")
    if path.stat().st_size == 0:
        raise bad_input(path, "empty")


def read_meta(path: str | Path) -> dict[str, Any]:
    """The resample stage's `meta.json`, checked for the keys every later stage reads."""
    path = Path(path)
    _present(path)
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_input(path, f"not valid JSON (truncated?): {exc}") from None
    missing = [k for k in META_KEYS if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise bad_input(path, f"not a resample meta.json (no {', '.join(missing)})")
    return meta


def read_npz(path: str | Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Every array of the `.npz` at `path`, which must hold `keys`."""
    path = Path(path)
    _present(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, KeyError) as exc:
        raise bad_input(path, f"not a readable .npz (truncated?): {exc}") from None
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise bad_input(path, f"has no {', '.join(missing)} (not a {MAKERS.get(path.name, '')} "
                              "output?)")  # fmt: skip
    return arrays


def read_h5(path: str | Path, datasets: tuple[str, ...], attrs: tuple[str, ...] = ()):
    """(datasets as arrays, attributes) of the HDF5 file at `path`, which must hold them."""
    import h5py

    path = Path(path)
    _present(path)
    try:
        with h5py.File(path, "r") as h5:
            missing = [k for k in datasets if k not in h5] + [a for a in attrs if a not in h5.attrs]
            if missing:
                raise bad_input(path, f"has no {', '.join(missing)} (not a "
                                      f"{MAKERS.get(path.name, '')} output?)")  # fmt: skip
            return {k: h5[k][()] for k in datasets}, {a: h5.attrs[a] for a in attrs}
    except OSError as exc:
        raise bad_input(path, f"not a readable HDF5 file (truncated?): {exc}") from None


def read_wav(path: str | Path, **kwargs) -> tuple[np.ndarray, int]:
    """(samples, rate) of the WAV file at `path` (soundfile's `read` keywords pass through)."""
    import soundfile as sf

    path = Path(path)
    _present(path)
    try:
        return sf.read(str(path), **kwargs)
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise bad_input(path, f"not a readable WAV file (truncated?): {exc}") from None


def read_clip_audio(path: str | Path, n_frames: int, dtype: str = "float32") -> np.ndarray:
    """The resample stage's audio.wav as mono `dtype` samples, checked: 16 kHz, one channel,
    exactly 640 samples per frame of its `n_frames` frames."""
    wav, rate = read_wav(path, dtype=dtype, always_2d=True)
    if rate != SAMPLE_RATE or wav.shape[1] != 1:
        raise bad_input(path, f"{rate} Hz, {wav.shape[1]} channel(s), not the resample stage's "
                              "16 kHz mono audio")  # fmt: skip
    expected = n_frames * SAMPLES_PER_FRAME
    if len(wav) != expected:
        raise bad_input(path, f"{len(wav)} samples, but {n_frames} frames need {expected} "
                              f"({SAMPLES_PER_FRAME} per frame)")  # fmt: skip
    return wav[:, 0]
