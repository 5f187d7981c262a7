"""Training presets: what the `train` config's null keys become."""

from __future__ import annotations

import dataclasses

from speech2lip.config import TrainConfig
from speech2lip.models.assembled import ModelSizes
from speech2lip.train.loop import LoopOptions

PRESETS: dict[str, dict] = {
    # Small enough that the whole demo pipeline trains in minutes on a 2-core CPU. No
    # timestamp: on the 60 s demo it lowered held-out PSNR (28.18 -> 27.54 dB at step 400),
    # the held-out frames' times lying outside the trained range.
    "demo": dict(steps=500, batch_frames=16, lips_pixels=1024, mouth_frames=1, lr=2e-3,
                 width=64, depth=4, skip=2, uv_freqs=6, time_freqs=0, audio_dim=32,
                 audio_radius=2, blend_channels=(16, 32, 64), mouth_start=150,
                 sync_weight=0.003, sync_start=350),
    # The paper's sizes (8 x 256 MLP with a skip, 64-d audio code, 8 neighbouring windows).
    "paper": dict(steps=100_000, batch_frames=8, lips_pixels=0, mouth_frames=0, lr=5e-4,
                  width=256, depth=8, skip=4,
                  uv_freqs=10, time_freqs=4, audio_dim=64, audio_radius=4,
                  blend_channels=(32, 64, 128), mouth_start=20_000,
                  sync_weight=0.003, sync_start=50_000),
}  # fmt: skip


def resolve(cfg: TrainConfig) -> LoopOptions:
    """The loop's options: the config with every null key taken from its preset."""
    values = dataclasses.asdict(cfg)
    for key, value in PRESETS[cfg.preset].items():
        if values.get(key) is None:
            values[key] = value
    size_keys = {f.name for f in dataclasses.fields(ModelSizes)}
    sizes = ModelSizes(**{k: (tuple(v) if k == "blend_channels" else v)
                          for k, v in values.items() if k in size_keys})  # fmt: skip
    loop_keys = {f.name for f in dataclasses.fields(LoopOptions)} - {"sizes"}
    return LoopOptions(sizes=sizes, **{k: v for k, v in values.items() if k in loop_keys})
