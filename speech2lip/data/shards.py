"""The `warp` stage's on-disk format: sharded HDF5, and the reader that training and rendering use.

Layout of `results/{subject}/warp/`:

- `index.json`: schema version, frame count, split, lip and extended boxes, and per shard its
  file, frame range [start, stop), train/test counts and size in bytes. Written last.
- `shards/canonical.h5`: what every frame shares (canonical frame and index, D_c, K, T_c, boxes).
- `shards/shard_NNNNN.h5`: per-frame datasets for frames [start, stop), first axis = frame.
  Large fields are chunked one frame per chunk; all are compressed (config) and carry HDF5's
  fletcher32 checksum, so a flipped bit is an error, not silently wrong data. Each dataset's
  `units` and `description` attributes say what it holds.

The reader never loads the whole dataset unless asked (`preload=True`): a frame costs one chunk
per field, and at most `max_open` shard files are open at a time. File handles are re-opened in a
forked process (DataLoader workers). Damaged or missing shards raise `Speech2LipError` naming the
shard and the command that rebuilds it.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from speech2lip.errors import Speech2LipError, remake

SCHEMA_VERSION = 3  # 2: the `phones` field; 3: `ppg`
SHARD_DIR = "shards"
CANONICAL_FILE = "canonical.h5"


def shard_name(number: int) -> str:
    return f"shard_{number:05d}.h5"


def shard_ranges(n_frames: int, shard_frames: int) -> list[tuple[int, int]]:
    """[start, stop) frame ranges of the shards; the last one may be shorter."""
    return [(s, min(s + shard_frames, n_frames)) for s in range(0, n_frames, shard_frames)]


@dataclass(frozen=True)
class Field:
    """One per-frame dataset: shape of one frame's value, dtype, units and meaning."""

    shape: tuple[int, ...]
    dtype: str
    units: str
    description: str


def dataset_options(field: Field, n: int, compression: str, level: int) -> dict[str, Any]:
    """h5py `create_dataset` options: chunked per frame for large fields (>= 4 KiB per frame),
    in blocks of frames for small ones; compression and fletcher32 checksums."""
    per_frame = int(np.prod(field.shape, dtype=np.int64)) * np.dtype(field.dtype).itemsize
    rows = 1 if per_frame >= 4096 else max(1, min(n, 4096 // max(per_frame, 1), 256))
    opts: dict[str, Any] = {
        "shape": (n, *field.shape),
        "dtype": field.dtype,
        "chunks": (rows, *field.shape),
        "fletcher32": True,
    }
    if compression == "gzip":
        opts.update(compression="gzip", compression_opts=level, shuffle=True)
    elif compression == "lzf":
        opts.update(compression="lzf", shuffle=True)
    return opts


def create_fields(
    h5: h5py.File, fields: dict[str, Field], n: int, compression: str, level: int
) -> dict[str, h5py.Dataset]:
    """Create every per-frame dataset of a shard with its attributes."""
    out = {}
    for name, field in fields.items():
        dset = h5.create_dataset(name, **dataset_options(field, n, compression, level))
        dset.attrs["units"] = field.units
        dset.attrs["description"] = field.description
        out[name] = dset
    return out


def _damaged(path: Path, reason: str) -> Speech2LipError:
    subject_dir = path.parent.parent
    return Speech2LipError(
        f"warp shard {path} is damaged or incomplete ({reason}); rebuild it with "
        f"`snakemake --cores all {subject_dir / 'index.json'} --forcerun warp`"
    )


class WarpData:
    """Random access and streaming over a `warp` output, by frame id (0 .. n_frames - 1).

    `fields`: the per-frame datasets to read (default: all); `preload`: read them all into
    memory once (fast, costs RAM: see `index.json`'s sizes); `max_open`: shard files kept open.
    `data[i]` is a dict of one frame's arrays; `data.read(ids)` batches; `data.stream(ids)`
    iterates in order with one read per shard run; `canonical` holds the shared arrays.
    """

    def __init__(
        self,
        index_path: str | Path,
        fields: Sequence[str] | None = None,
        preload: bool = False,
        max_open: int = 64,
    ) -> None:
        self.index_path = Path(index_path)
        if not self.index_path.is_file():
            raise Speech2LipError(
                f"warp index {self.index_path} not found; run the warp stage "
                f"(snakemake --cores all {self.index_path})"
            )
        try:
            self.index = json.loads(self.index_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise Speech2LipError(
                f"warp index {self.index_path} is not valid JSON (truncated?): {exc}; "
                f"{remake(self.index_path)}"
            ) from None
        if not isinstance(self.index, dict):
            raise Speech2LipError(f"{self.index_path}: not a warp index; {remake(self.index_path)}")
        version = self.index.get("schema_version")
        if version != SCHEMA_VERSION:
            raise Speech2LipError(
                f"{self.index_path}: warp schema version {version}, this speech2lip reads "
                f"{SCHEMA_VERSION}; re-run the warp stage (snakemake --forcerun warp)"
            )
        self.root = self.index_path.parent
        self.n_frames = int(self.index["n_frames"])
        self.shards = self.index["shards"]
        self.starts = np.array([s["start"] for s in self.shards], np.int64)
        for shard in self.shards:
            path = self.root / shard["file"]
            if not path.is_file():
                raise _damaged(path, "file missing")
            if path.stat().st_size != shard["bytes"]:
                raise _damaged(path, f"{path.stat().st_size} bytes, index says {shard['bytes']}")
        self.field_specs = self.index["fields"]
        self.fields = list(fields) if fields is not None else list(self.field_specs)
        unknown = sorted(set(self.fields) - set(self.field_specs))
        if unknown:
            raise Speech2LipError(
                f"{self.index_path}: no field(s) {unknown}; fields: {sorted(self.field_specs)}"
            )
        if max_open < 1:
            raise ValueError(f"max_open must be at least 1, got {max_open}")
        self.max_open = max_open
        self._files: OrderedDict[int, h5py.File] = OrderedDict()
        self._dsets: dict[int, dict[str, h5py.Dataset]] = {}
        self._pid = os.getpid()
        self.canonical = self._read_canonical()
        self._memory: dict[str, np.ndarray] | None = None
        if preload:
            self._memory = self._preload()

    # ---------------------------------------------------------------- index facts
    def __len__(self) -> int:
        return self.n_frames

    def split_ids(self, split: str) -> np.ndarray:
        """Frame ids of the 'train' or 'test' split (contiguous, in time order)."""
        start, stop = self.index["split"][split]
        return np.arange(start, stop)

    # ---------------------------------------------------------------- reading
    def __getitem__(self, frame: int) -> dict[str, np.ndarray]:
        frame = self._check(frame)
        if self._memory is not None:
            return {name: self._memory[name][frame] for name in self.fields}
        number = self._shard_of(frame)
        local = frame - self.shards[number]["start"]
        return {k: v[0] for k, v in self._read_shard(number, local, local + 1).items()}

    def read(self, ids: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        """Frames `ids` (any order, repeats allowed) as arrays with a leading batch axis."""
        ids = np.asarray(ids, np.int64)
        if ids.ndim != 1:
            raise ValueError(f"frame ids must be a 1-D sequence, got shape {ids.shape}")
        for i in ids:
            self._check(int(i))
        if self._memory is not None and all(name in self._memory for name in self.fields):
            return {name: self._memory[name][ids] for name in self.fields}
        out = {name: np.empty((len(ids), *self._shape(name)), self._dtype(name))
               for name in self.fields}  # fmt: skip
        shard_of = np.searchsorted(self.starts, ids, side="right") - 1
        for number in np.unique(shard_of):
            rows = np.flatnonzero(shard_of == number)
            local = ids[rows] - self.shards[number]["start"]
            lo, hi = int(local.min()), int(local.max()) + 1
            if hi - lo <= 2 * len(rows):  # dense: one slice read
                block = self._read_shard(int(number), lo, hi)
                for name in self.fields:
                    out[name][rows] = block[name][local - lo]
            else:  # sparse: frame by frame (h5py's point selections are slower)
                for row, loc in zip(rows, local, strict=True):
                    block = self._read_shard(int(number), int(loc), int(loc) + 1)
                    for name in self.fields:
                        out[name][row] = block[name][0]
        return out

    def stream(
        self, ids: Sequence[int] | np.ndarray | None = None, batch: int = 32
    ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """Yield (ids, arrays) batches over `ids` (default: every frame) in the given order."""
        ids = np.arange(self.n_frames) if ids is None else np.asarray(ids, np.int64)
        for start in range(0, len(ids), batch):
            chunk = ids[start : start + batch]
            yield chunk, self.read(chunk)

    def mel_context(self, frame: int, radius: int) -> np.ndarray:
        """Mel windows of frames `frame - radius .. frame + radius` (clamped to the clip):
        `(2 * radius + 1, 80, 16)`, for smoothing the audio code over neighbouring windows."""
        from speech2lip.data.audio import context_indices

        ids = context_indices(self._check(frame), radius, self.n_frames)
        if self._memory is not None and "mel" in self._memory:
            return self._memory["mel"][ids]
        return self.read_field("mel", ids)

    def close(self) -> None:
        self._dsets.clear()
        for f in self._files.values():
            f.close()
        self._files.clear()

    def __enter__(self) -> WarpData:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:  # picklable for spawned DataLoader workers
        state = dict(self.__dict__)
        state["_files"], state["_dsets"] = OrderedDict(), {}
        return state

    # ---------------------------------------------------------------- internals
    def _check(self, frame: int) -> int:
        frame = int(frame)
        if not 0 <= frame < self.n_frames:
            raise IndexError(f"frame {frame} outside 0..{self.n_frames - 1}")
        return frame

    def _shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.field_specs[name]["shape"])

    def _dtype(self, name: str) -> np.dtype:
        return np.dtype(self.field_specs[name]["dtype"])

    def _shard_of(self, frame: int) -> int:
        return int(np.searchsorted(self.starts, frame, side="right") - 1)

    def _file(self, number: int) -> h5py.File:
        if os.getpid() != self._pid:  # forked: never share HDF5 handles across processes
            self._files, self._dsets = OrderedDict(), {}
            self._pid = os.getpid()
        if number in self._files:
            self._files.move_to_end(number)
            return self._files[number]
        path = self.root / self.shards[number]["file"]
        try:
            f = h5py.File(path, "r", rdcc_nbytes=1 << 18)  # 256 KiB chunk cache per dataset
        except OSError as exc:
            raise _damaged(path, str(exc).split("(")[0].strip() or "unreadable") from None
        shard = self.shards[number]
        if f.attrs.get("start") != shard["start"] or f.attrs.get("stop") != shard["stop"]:
            f.close()
            raise _damaged(path, "its frame range does not match index.json")
        self._files[number] = f
        self._dsets[number] = {}
        while len(self._files) > self.max_open:
            closed, handle = self._files.popitem(last=False)
            self._dsets.pop(closed, None)
            handle.close()
        return f

    def _read_shard(
        self, number: int, lo: int | np.ndarray, hi: int | None = None
    ) -> dict[str, np.ndarray]:
        """Frames [lo, hi) of shard `number`, or the sorted local frames `lo` (an array)."""
        f = self._file(number)
        path = self.root / self.shards[number]["file"]
        select = slice(lo, hi) if hi is not None else lo
        out = {}
        for name in self.fields:
            try:
                if name not in self._dsets[number]:  # looking a dataset up costs as much as
                    self._dsets[number][name] = f[name]  # reading a small one: keep it
                out[name] = self._dsets[number][name][select]
            except (OSError, KeyError, ValueError) as exc:
                raise _damaged(path, f"reading {name!r}: {exc}") from None
        return out

    def read_field(self, name: str, ids: np.ndarray) -> np.ndarray:
        """One field of frames `ids` (whatever `fields` the reader was opened with)."""
        if name not in self.field_specs:
            raise Speech2LipError(f"{self.index_path}: no field {name!r}")
        saved, self.fields = self.fields, [name]
        try:
            return self.read(ids)[name]
        finally:
            self.fields = saved

    def _preload(self) -> dict[str, np.ndarray]:
        out = {name: np.empty((self.n_frames, *self._shape(name)), self._dtype(name))
               for name in self.fields}  # fmt: skip
        for number, shard in enumerate(self.shards):
            block = self._read_shard(number, 0, shard["stop"] - shard["start"])
            for name in self.fields:
                out[name][shard["start"] : shard["stop"]] = block[name]
        self.close()
        return out

    def _read_canonical(self) -> dict[str, Any]:
        path = self.root / self.index["canonical"]
        if not path.is_file():
            raise _damaged(path, "file missing")
        try:
            with h5py.File(path, "r") as f:
                data: dict[str, Any] = {k: f[k][()] for k in f}
                data.update({k: v for k, v in f.attrs.items()})
        except (OSError, KeyError, ValueError) as exc:
            raise _damaged(path, str(exc)) from None
        return data
