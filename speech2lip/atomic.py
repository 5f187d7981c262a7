"""Write every artefact to a temporary name beside it, and rename it into place at the end.

A killed or failed job never leaves a file that looks finished.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path, keep_if: Callable[[], bool] | None = None) -> Iterator[Path]:
    """Yield a temporary path in `path`'s folder (same suffix); rename it to `path` on success.

    On an exception, or when `keep_if()` is false at the end (e.g. the worker's parent is
    gone), the temporary file is removed and `path` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        if keep_if is not None and not keep_if():
            raise RuntimeError(f"{path}: not renamed into place (keep_if is false)")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | Path, data: Any) -> None:
    """Write `data` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def remove_stale_temporaries(path: str | Path, scratch: str = "") -> list[Path]:
    """Remove what a killed writer of `path` left beside it: `atomic_path`'s temporaries of
    that name (other than this process's) and scratch folders named `.{scratch}-{stem}-*`.
    Only one job writes an output at a time, so any other one is stale."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    mine = f".{path.stem}.tmp-{os.getpid()}{path.suffix}"
    removed = []
    for entry in path.parent.iterdir():
        name = entry.name
        temporary = name.startswith(f".{path.stem}.tmp-") and name.endswith(path.suffix)
        if temporary and name != mine and entry.is_file():
            entry.unlink(missing_ok=True)
            removed.append(entry)
        elif scratch and name.startswith(f".{scratch}-{path.stem}-") and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed
