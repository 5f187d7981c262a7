"""`model.pt`: save and rebuild the trained model (weights, sizes, canonical data, options);
the compute device choice (`auto` | `cpu` | `cuda`)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from speech2lip import __version__
from speech2lip.atomic import atomic_path
from speech2lip.errors import Speech2LipError

log = logging.getLogger(__name__)

# model.pt files written before the train config nested the sizes under `train.model`
OLD_SIZE_NAMES = {"width": "lips_width", "depth": "lips_layers", "skip": "lips_skip"}


def pick_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise Speech2LipError("--device cuda: no CUDA device is visible (use --device auto)")
    return name


def save_model(path: Path, model, opts, data) -> None:
    """`model.pt`: weights + sizes + canonical data + options: `load_model` needs nothing else."""
    import torch

    canonical = {k: np.asarray(data.canonical[k]) for k in
                 ("lip_box", "extended_box", "K", "canonical_depth", "frame")}  # fmt: skip
    canonical["canonical_index"] = np.asarray(int(data.canonical["canonical_index"]))
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in canonical.items()}
    state = {"model": model.state_dict(), "sizes": dataclasses.asdict(opts.model),
             "canonical": tensors,
             "options": json.dumps(dataclasses.asdict(opts)), "digest": opts.digest(),
             "n_frames": len(data), "version": __version__}  # fmt: skip
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_model(path: str | Path, device: str = "cpu"):
    """Rebuild the trained `Speech2Lip` from `model.pt` alone."""
    import torch

    from speech2lip.config import ModelSizes
    from speech2lip.models.assembled import Speech2Lip
    from speech2lip.models.depth import upgrade_state

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise Speech2LipError(f"{path} not found; run the train stage first") from None
    except Exception as exc:
        raise Speech2LipError(f"{path}: not a readable model ({exc}); re-run train") from None
    sizes = {OLD_SIZE_NAMES.get(k, k): v for k, v in state["sizes"].items()}
    sizes["blend_channels"] = tuple(sizes["blend_channels"])
    sizes.setdefault("features", "mel")  # written before phone features existed
    sizes.setdefault("lips_decoder", "implicit")  # ... and before the convolutional decoder
    sizes.setdefault("paste_fit", False)  # ... and before the paste was fitted to the frame
    sizes.setdefault("lips_base", "none")  # ... and before the lips were drawn on a base
    sizes.setdefault("paste_sampling", "bilinear")  # ... and before a bicubic paste
    canonical = {k: v.numpy() for k, v in state["canonical"].items()}
    model = Speech2Lip(canonical, ModelSizes(**sizes))
    if "depth.log_depth" in state["model"]:
        log.warning("%s has a learned depth of one value per pixel (trained before 2026-12-03): "
                    "part of its lips show the background frame's own mouth; retrain it "
                    "(snakemake ... --forcerun train)", path)  # fmt: skip
    model.load_state_dict(upgrade_state(state["model"]))
    # For inference: the Blend-Net's convolutions run about 30 % faster on CPUs with
    # channels-last tensors (the same numbers, to float rounding).
    model.blend.to(memory_format=torch.channels_last)
    return model.to(device).eval()
