"""Training presets: typed `TrainConfig` values that a config's null keys are taken from."""

from __future__ import annotations

import dataclasses

from speech2lip.config import ModelSizes, TrainConfig

PRESETS: dict[str, TrainConfig] = {
    # Small enough that the whole demo pipeline trains in minutes on a 2-core CPU. No
    # timestamp: on the 60 s demo it lowered held-out PSNR (28.18 -> 27.54 dB at step 400),
    # the held-out frames' times lying outside the trained range. 1000 steps, not 500: with
    # lip-shape guidance the lips kept learning to follow the codes (obama's opening r 0.63 ->
    # 0.73, amplitude 0.82x -> 0.94x), in under 5 minutes on 2 cores. Mel and phone posteriors:
    # the regression's cross-validated opening r over the train frames rose on every clip
    # (obama 0.60 -> 0.64, macron 0.58 -> 0.65, demo 0.85 -> 0.87), and the rendered test
    # splits' r by 0.01-0.03 (docs/benchmarks.md). Lips drawn on the train frames' mean lips:
    # over two seeds the demo's LMD 1.71 / 2.16 -> 1.55 / 1.62 px, macron's -8 to -9 %, obama's
    # opening r +0.03 (but its LMD +5-7 % and PSNR -0.1 to -0.4 dB). Seven sine frequencies
    # of (u, v) (the finest a period of 1.5-2.3 crop pixels), not eight: over two seeds the
    # real clips' opening r +0.04-0.05 on obama and +0.01-0.04 on macron, LMD -4.2 / +0.3 %
    # and -6 / -4 %, the demo's LMD +1 to +3 % (docs/benchmarks.md; six drew softer lips).
    "demo": TrainConfig(
        preset="demo", steps=1000, batch_frames=16, lips_pixels=1024, mouth_frames=1, lr=2e-3,
        mouth_start=150, sync_weight=0.003, sync_start=350,
        model=ModelSizes(lips_width=64, lips_layers=4, lips_skip=2, uv_freqs=7, time_freqs=0,
                         lips_grid=0, lips_decoder="implicit", audio_dim=32, audio_radius=2,
                         blend_channels=(16, 32, 64), shape_dim=8, features="mel+ppg",
                         paste_fit=False, lips_base="mean", paste_sampling="bicubic"),
    ),
    # The paper's sizes (8 x 256 MLP with a skip, 64-d audio code, 8 neighbouring windows).
    "paper": TrainConfig(
        preset="paper", steps=100_000, batch_frames=8, lips_pixels=0, mouth_frames=0, lr=5e-4,
        mouth_start=20_000, sync_weight=0.003, sync_start=50_000,
        model=ModelSizes(lips_width=256, lips_layers=8, lips_skip=4, uv_freqs=10, time_freqs=4,
                         lips_grid=0, lips_decoder="implicit", audio_dim=64, audio_radius=4,
                         blend_channels=(32, 64, 128), shape_dim=0, features="mel",
                         paste_fit=False, lips_base="none", paste_sampling="bilinear"),
    ),
}  # fmt: skip


def _filled(value, preset):
    """`value` (a config dataclass) with each None field taken from `preset`, recursively."""
    changes = {}
    for f in dataclasses.fields(value):
        mine, theirs = getattr(value, f.name), getattr(preset, f.name)
        if dataclasses.is_dataclass(mine):
            changes[f.name] = _filled(mine, theirs)
        elif mine is None:
            changes[f.name] = theirs
    return dataclasses.replace(value, **changes)


def resolve(cfg: TrainConfig) -> TrainConfig:
    """The options training runs with: `cfg` with every null key taken from its preset."""
    return _filled(cfg, PRESETS[cfg.preset])
