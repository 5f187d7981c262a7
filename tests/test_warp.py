"""Stage `warp` and its shards: outputs, reader, bit-exactness, damaged files, bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf
from conftest import FAST_FIT, media

from speech2lip import fit3dmm, landmarks, pose_depth, resample, warp
from speech2lip.config import LandmarksConfig, PoseDepthConfig, ResampleConfig, WarpConfig
from speech2lip.data.shards import SCHEMA_VERSION, Field, WarpData, create_fields
from speech2lip.errors import Speech2LipError
from speech2lip.geometry import regions

SMALL = WarpConfig(shard_frames=32, qa_frames=4)


def run_warp(base: Path, out: Path, cfg: WarpConfig = SMALL, threads: int = 2, audio=None) -> dict:
    return warp.run(base / "resample/frames.mkv", base / "resample/meta.json",
                    audio or base / "resample/audio.wav", base / "landmarks/landmarks.npz",
                    base / "pose_depth/geometry.h5", out, cfg, threads=threads)  # fmt: skip


def test_warp_writes_shards_index_summary_and_qa(demo_warp, demo_geometry):
    meta = json.loads((demo_geometry / "resample/meta.json").read_text())
    n = meta["n_frames"]
    index = json.loads((demo_warp / "index.json").read_text())
    assert index["schema_version"] == SCHEMA_VERSION and index["n_frames"] == n
    assert [(s["start"], s["stop"]) for s in index["shards"]] == [
        (a, min(a + 32, n)) for a in range(0, n, 32)
    ]
    assert sum(s["train"] for s in index["shards"]) == index["counts"]["train"]
    assert index["counts"]["test"] == meta["split"]["test"][1] - meta["split"]["test"][0]
    for s in index["shards"]:
        assert (demo_warp / s["file"]).stat().st_size == s["bytes"]
    summary = json.loads((demo_warp / "warp.json").read_text())
    assert summary["roundtrip_psnr_db"]["median"] > 30  # O2C then C2O returns the mouth box
    assert summary["canonical_mask_fraction"] > 0.9
    assert summary["bytes_per_frame"] < 200_000  # <= 1/10 of the official 2 MB per frame
    for name in ("qa_strip", "qa_canonical_grid", "qa_roundtrip"):
        assert (demo_warp / f"{name}.png").stat().st_size > 5_000
    with h5py.File(demo_warp / index["shards"][0]["file"]) as h5:
        assert h5.attrs["schema_version"] == SCHEMA_VERSION
        assert h5["canonical_lips"].fletcher32 and h5["canonical_lips"].chunks[0] == 1
        assert h5["c2o_grid"].attrs["units"].startswith("grid_sample")
        assert h5["mel"].shape[1:] == (80, 16)
    assert not list(demo_warp.rglob(".*tmp*"))  # no temporary files left


def test_reader_random_access_streaming_and_preload(demo_warp):
    with WarpData(demo_warp / "index.json") as data:
        n = len(data)
        one = data[37]
        batch = data.read([37, 3, 37, n - 1])
        for key, value in one.items():
            assert np.array_equal(batch[key][0], value) and np.array_equal(batch[key][2], value)
        streamed = {k: np.concatenate(v) for k, v in _collect(data.stream(batch=10)).items()}
        assert streamed["mouth"].shape[0] == n
        assert np.array_equal(streamed["mouth"][37], one["mouth"])
        assert np.array_equal(data.split_ids("test"), np.flatnonzero(streamed["split"] == 1))
        context = data.mel_context(0, 2)
        assert context.shape == (5, 80, 16)
        assert np.array_equal(context[0], streamed["mel"][0]) and np.array_equal(
            context[4], streamed["mel"][2]
        )
        lips = data.canonical["lip_box"]
        assert one["canonical_lips"].shape == (lips[3], lips[2], 3)
    pre = WarpData(demo_warp / "index.json", fields=["mouth", "mel"], preload=True)
    assert set(pre[37]) == {"mouth", "mel"} and np.array_equal(pre[37]["mouth"], one["mouth"])
    with pytest.raises(IndexError):
        pre[n]
    with pytest.raises(Speech2LipError, match="no field"):
        WarpData(demo_warp / "index.json", fields=["nope"])


def _collect(stream):
    out: dict[str, list] = {}
    for _, arrays in stream:
        for k, v in arrays.items():
            out.setdefault(k, []).append(v)
    return out


def test_stored_lips_are_the_o2c_warp_of_the_frame(demo_warp, demo_geometry):
    """Recompute one frame's fields from the inputs: the shards hold exactly that."""
    from speech2lip.warp import read_one
    from speech2lip.warp.worker import warp_batch

    data = WarpData(demo_warp / "index.json")
    i = 41
    frame = read_one(demo_geometry / "resample/frames.mkv", 256, 256, i)
    with h5py.File(demo_geometry / "pose_depth/geometry.h5") as geo:
        out, bilinear = (
            warp_batch(frame[None], geo["face_depth"][i : i + 1],
                       (geo["pose"][i] @ np.linalg.inv(geo["canonical_pose"][()]))[None],
                       geo["K"][()], geo["canonical_depth"][()],
                       tuple(data.index["lip_box"]), tuple(data.index["extended_box"]),
                       SMALL.occlusion_tolerance, sampling)
            for sampling in (SMALL.sampling, "bilinear")
        )  # fmt: skip
    stored = data[i]
    for key in ("canonical_lips", "canonical_mask", "mouth", "mouth_origin", "c2o_grid"):
        assert np.array_equal(stored[key], out[key][0]), key
    # `warp.sampling` (bicubic by default) reaches the crops, and its round trip is closer
    assert SMALL.sampling == "bicubic"
    assert not np.array_equal(stored["canonical_lips"], bilinear["canonical_lips"][0])
    assert out["roundtrip_psnr"][0] > bilinear["roundtrip_psnr"][0] + 1
    x, y = stored["mouth_origin"]
    h, w = stored["mouth"].shape[:2]
    assert np.array_equal(stored["mouth"], frame[y : y + h, x : x + w])


def test_shards_are_identical_whatever_the_number_of_processes(demo_warp, demo_geometry, tmp_path):
    run_warp(demo_geometry, tmp_path, threads=1)
    index = json.loads((demo_warp / "index.json").read_text())
    for shard in index["shards"] + [{"file": index["canonical"]}]:
        with h5py.File(demo_warp / shard["file"]) as a, h5py.File(tmp_path / shard["file"]) as b:
            assert sorted(a) == sorted(b)
            for key in a:
                assert np.array_equal(a[key][()], b[key][()]), (shard["file"], key)


def _tiny_dataset(root: Path, n: int = 10, per_shard: int = 4) -> dict[str, np.ndarray]:
    """Write random per-frame arrays as shards + index with the writer's helpers."""
    rng = np.random.default_rng(1)
    fields = {
        "image": Field((6, 5, 3), "uint8", "RGB", "test image"),
        "grid": Field((6, 5, 2), "float16", "grid", "test grid"),
        "mel": Field((80, 16), "float32", "mel", "test mel"),
    }
    values = {
        "image": rng.integers(0, 256, (n, 6, 5, 3), dtype=np.uint8),
        "grid": rng.normal(size=(n, 6, 5, 2)).astype(np.float16),
        "mel": rng.normal(size=(n, 80, 16)).astype(np.float32),
    }
    (root / "shards").mkdir(parents=True)
    shards = []
    for number, start in enumerate(range(0, n, per_shard)):
        stop = min(start + per_shard, n)
        path = root / "shards" / f"shard_{number:05d}.h5"
        with h5py.File(path, "w") as h5:
            dsets = create_fields(h5, fields, stop - start, "gzip", 4)
            for key, dset in dsets.items():
                dset[:] = values[key][start:stop]
            h5.attrs.update({"start": start, "stop": stop})
        shards.append({"file": f"shards/{path.name}", "start": start, "stop": stop,
                       "bytes": path.stat().st_size})  # fmt: skip
    with h5py.File(root / "shards/canonical.h5", "w") as h5:
        h5.create_dataset("lip_box", data=np.array([1, 2, 5, 6]))
    specs = {k: {"shape": list(f.shape), "dtype": f.dtype} for k, f in fields.items()}
    index = {"schema_version": SCHEMA_VERSION, "n_frames": n, "shards": shards,
             "canonical": "shards/canonical.h5", "split": {"train": [0, 8], "test": [8, 10]},
             "fields": specs}  # fmt: skip
    (root / "index.json").write_text(json.dumps(index))
    return values


def test_shard_write_read_round_trip_is_bit_exact(tmp_path):
    values = _tiny_dataset(tmp_path)
    data = WarpData(tmp_path / "index.json")
    got = data.read(np.arange(10))
    for key, value in values.items():
        assert got[key].dtype == value.dtype and np.array_equal(got[key], value)
    assert data.split_ids("test").tolist() == [8, 9]
    # Unsorted, repeated, cross-shard, sparse ids, with one open file at a time (LRU eviction).
    small = WarpData(tmp_path / "index.json", max_open=1)
    for ids in ([9, 0, 4, 3, 7], [1, 1, 9, 1], [0, 3], [2, 8, 2, 5, 6, 0]):
        got = small.read(ids)
        for key, value in values.items():
            assert np.array_equal(got[key], value[ids]), (ids, key)
        for i in ids:
            assert np.array_equal(small[i]["mel"], values["mel"][i])
    pre = WarpData(tmp_path / "index.json", fields=["grid"], preload=True)
    assert np.array_equal(pre.mel_context(9, 1), values["mel"][[8, 9, 9]])  # mel not preloaded
    with pytest.raises(ValueError, match="1-D"):
        data.read(np.zeros((2, 2), int))
    with pytest.raises(ValueError, match="max_open"):
        WarpData(tmp_path / "index.json", max_open=0)


def test_a_corrupted_shard_is_a_clear_error(tmp_path):
    _tiny_dataset(tmp_path)
    path = tmp_path / "shards/shard_00001.h5"
    raw = bytearray(path.read_bytes())
    with h5py.File(path) as h5:
        offset = h5["mel"].id.get_chunk_info(0).byte_offset
    raw[offset + 100 : offset + 140] = bytes(40)  # zero 40 bytes inside a compressed chunk
    path.write_bytes(bytes(raw))
    data = WarpData(tmp_path / "index.json")
    assert data[0]["mel"].shape == (80, 16)  # other shards still read
    with pytest.raises(
        Speech2LipError, match=r"shard_00001\.h5 is damaged.*index\.json --forcerun warp`"
    ):
        data[4]


def test_truncated_or_missing_shards_and_old_schemas_are_clear_errors(tmp_path):
    _tiny_dataset(tmp_path)
    path = tmp_path / "shards/shard_00002.h5"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(Speech2LipError, match=r"shard_00002\.h5 is damaged.*500 bytes"):
        WarpData(tmp_path / "index.json")
    index = json.loads((tmp_path / "index.json").read_text())
    index["shards"][2]["bytes"] = 500  # an index that agrees with the truncated file
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(Speech2LipError, match=r"shard_00002\.h5 is damaged"):
        WarpData(tmp_path / "index.json")[9]
    path.unlink()
    with pytest.raises(Speech2LipError, match="file missing"):
        WarpData(tmp_path / "index.json")
    index["schema_version"] = 0
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(Speech2LipError, match="schema version 0"):
        WarpData(tmp_path / "index.json")
    with pytest.raises(Speech2LipError, match="not found; run the warp stage"):
        WarpData(tmp_path / "nothing.json")


def test_frame_and_audio_counts_must_agree(demo_geometry, tmp_path):
    wav, rate = sf.read(demo_geometry / "resample/audio.wav")
    short = tmp_path / "short.wav"
    sf.write(short, wav[:-640], rate)
    with pytest.raises(Speech2LipError, match="samples, but .* frames need"):
        run_warp(demo_geometry, tmp_path / "out", audio=short)
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.stack([wav, wav], 1), rate)
    with pytest.raises(Speech2LipError, match="16 kHz mono"):
        run_warp(demo_geometry, tmp_path / "out", audio=stereo)
    assert not (tmp_path / "out/index.json").exists()
    base = tmp_path / "base"
    shutil.copytree(demo_geometry, base)
    meta = json.loads((base / "resample/meta.json").read_text())
    meta["n_frames"] -= 1
    (base / "resample/meta.json").write_text(json.dumps(meta))
    with pytest.raises(Speech2LipError, match="frame counts disagree"):
        run_warp(base, tmp_path / "out")


def test_lip_and_extended_boxes():
    lips = np.array([[100, 200], [140, 210], [120, 190], [120, 222]], float)
    box, too_big = regions.lip_box(lips, np.stack([lips, lips * 1.0]), "auto", 8, 512, 512)
    assert box == (88, 182, 64, 48) and too_big == 0  # 40x32 + 2x8 -> 56x48 -> 64x48
    box, too_big = regions.lip_box(lips, lips[None], (32, 16), 8, 512, 512)
    assert box[2:] == (32, 16) and too_big == 1.0
    box, _ = regions.lip_box(lips - np.array([100, 200]), lips[None], (64, 48), 8, 512, 512)
    assert box[:2] == (0, 0)  # kept inside the image
    ext = regions.extended_box((88, 174, 64, 48), (1.5, 2.0), 512, 512)
    assert ext == (72, 158, 96, 96)  # 16 px each side, 16 above, 32 below (chin)
    origins = regions.box_origins(np.array([[10.0, 500.0], [256, 256]]), (96, 96), 512, 512)
    assert origins.tolist() == [[0, 416], [208, 208]]


@pytest.mark.media
@pytest.mark.slow
@pytest.mark.parametrize("name", ["hdtf_woman_512.mp4", "vfr_office.mp4"])
def test_real_clip_round_trip(tmp_path, name):
    src = media(name)
    resample.run(src, tmp_path / "resample", ResampleConfig(size=256))
    landmarks.run(tmp_path / "resample/frames.mkv", tmp_path / "resample/meta.json",
                  tmp_path / "landmarks", LandmarksConfig())  # fmt: skip
    fit3dmm.run(tmp_path / "landmarks/landmarks.npz", tmp_path / "resample/meta.json",
                tmp_path / "fit3dmm", FAST_FIT)  # fmt: skip
    pose_depth.run(tmp_path / "resample/frames.mkv", tmp_path / "resample/meta.json",
                   tmp_path / "landmarks/landmarks.npz", tmp_path / "fit3dmm/fit.npz",
                   tmp_path / "pose_depth", PoseDepthConfig(qa_frames=4), threads=2)  # fmt: skip
    summary = run_warp(tmp_path, tmp_path / "warp", WarpConfig(qa_frames=4))
    psnr = summary["roundtrip_psnr_db"]
    print(f"{name} at 256 px: O2C->C2O round-trip PSNR in the mouth box {psnr}")
    assert psnr["median"] > 28 and summary["canonical_mask_fraction"] > 0.8


def test_store_frames_keeps_whole_frames_and_lzf_works(demo_geometry, tmp_path):
    from speech2lip.media import read_frames

    n = json.loads((demo_geometry / "resample/meta.json").read_text())["n_frames"]
    run_warp(demo_geometry, tmp_path, WarpConfig(shard_frames=20, qa_frames=2))
    assert len(list((tmp_path / "shards").glob("shard_*.h5"))) == -(-n // 20)
    run_warp(demo_geometry, tmp_path, WarpConfig(shard_frames=40, qa_frames=2, store_frames=True,
                                                 compression="lzf"))  # fmt: skip
    assert len(list((tmp_path / "shards").glob("shard_*.h5"))) == -(-n // 40)  # none stale
    frames = np.stack(list(read_frames(demo_geometry / "resample/frames.mkv", 256, 256)))
    data = WarpData(tmp_path / "index.json", fields=["frame"])
    assert np.array_equal(data.read(np.arange(len(frames)))["frame"], frames)
    with h5py.File(tmp_path / data.index["shards"][0]["file"]) as h5:
        assert h5["frame"].compression == "lzf" and h5["frame"].fletcher32
