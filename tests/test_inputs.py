"""Stage input files made by earlier stages: missing, empty, truncated or foreign -> one line."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

from speech2lip.cli import main

INPUTS = {  # file -> the stages that read it
    "resample/meta.json": ["landmarks", "fit3dmm", "pose_depth", "warp", "render", "evaluate"],
    "landmarks/landmarks.npz": ["fit3dmm", "pose_depth", "warp"],
    "fit3dmm/fit.npz": ["pose_depth"],
    "pose_depth/geometry.h5": ["warp"],
    "resample/audio.wav": ["warp", "render", "evaluate"],
}
DAMAGE = ["missing", "empty", "truncated", "foreign"]


def argv(stage: str, base, warp, model, out) -> list[str]:
    """The stage's command line over the demo's outputs (`base`: the geometry stages')."""
    r = {"frames": base / "resample/frames.mkv", "meta": base / "resample/meta.json",
         "audio": base / "resample/audio.wav", "landmarks": base / "landmarks/landmarks.npz",
         "fit": base / "fit3dmm/fit.npz", "geometry": base / "pose_depth/geometry.h5",
         "index": warp / "index.json", "model": model, "video": out / "video.mp4",
         "expert": out / "expert.pt", "out_dir": out / "out"}  # fmt: skip
    names = {"landmarks": ["frames", "meta", "out_dir"],
             "fit3dmm": ["landmarks", "meta", "out_dir"],
             "pose_depth": ["frames", "meta", "landmarks", "fit", "out_dir"],
             "warp": ["frames", "meta", "audio", "landmarks", "geometry", "out_dir"],
             "render": ["model", "index", "frames", "meta", "audio", "video"],
             "evaluate": ["model", "index", "frames", "meta", "audio", "video", "expert",
                          "out_dir"]}[stage]  # fmt: skip
    args = [stage]
    for name in names:
        args += [f"--{name.replace('_', '-')}", str(r[name])]
    return args + (["--device", "cpu"] if stage in ("render", "evaluate") else [])


def damage(path, how: str) -> None:
    if how == "missing":
        path.unlink()
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif path.suffix == ".json":
        path.write_text(json.dumps({"made_by": "another tool"}))
    elif path.suffix == ".wav":  # another recording: 8 kHz stereo
        import soundfile as sf

        sf.write(path, np.zeros((8000, 2), np.float32), 8000)
    elif path.suffix == ".npz":
        np.savez(path.with_suffix(""), other=np.zeros(3))  # numpy adds .npz
    else:
        with h5py.File(path, "w") as h5:
            h5.create_dataset("other", data=np.zeros(3))


CASES = [(f, s, d) for f, stages in INPUTS.items() for s in stages for d in DAMAGE]


@pytest.mark.parametrize(("name", "stage", "how"), CASES)
def test_a_bad_input_is_one_line_naming_the_file_and_the_fix(
    demo_geometry, demo_warp, demo_model, tmp_path, capsys, name, stage, how
):
    base = tmp_path / "base"
    for part in ("resample", "landmarks", "fit3dmm", "pose_depth"):  # a copy to damage
        shutil.copytree(demo_geometry / part, base / part)
    damage(base / name, how)
    (tmp_path / "video.mp4").write_bytes(b"")  # evaluate checks that ours exists first
    code = main(argv(stage, base, demo_warp, demo_model, tmp_path))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1, err
    assert len(err) == 1 and err[0].startswith(f"speech2lip {stage}: error: {base / name}: ")
    maker = {"resample": "resample", "landmarks": "landmarks", "fit3dmm": "fit3dmm",
             "pose_depth": "pose_depth"}[name.split("/")[0]]  # fmt: skip
    assert f"snakemake --cores all {base / name} --forcerun {maker}" in err[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("how", ["empty", "truncated", "foreign"])
def test_a_bad_warp_index_names_the_command_that_remakes_it(demo_warp, tmp_path, how):
    from speech2lip.data.shards import WarpData
    from speech2lip.errors import Speech2LipError

    index = tmp_path / "index.json"
    shutil.copy2(demo_warp / "index.json", index)
    damage(index, how)
    with pytest.raises(Speech2LipError) as err:
        WarpData(index)
    assert str(err.value).startswith(f"{index}") or f"warp index {index}" in str(err.value)
    assert "--forcerun warp" in str(err.value) and "\n" not in str(err.value)


def test_a_damaged_frames_file_names_the_stage_that_remakes_it(demo_geometry, tmp_path):
    from speech2lip.errors import Speech2LipError
    from speech2lip.media import read_frames

    frames = tmp_path / "frames.mkv"
    data = (demo_geometry / "resample/frames.mkv").read_bytes()
    frames.write_bytes(data[: len(data) // 2])
    meta = json.loads((demo_geometry / "resample/meta.json").read_text())
    with pytest.raises(Speech2LipError, match="--forcerun resample$"):
        list(read_frames(frames, meta["width"], meta["height"]))
