"""Configuration: the JSON schema is the single source of truth; dataclasses give typed access.

`load_config` reads a YAML file, `validate_config` checks it against
`workflow/schemas/config.schema.yaml` and fills every default, and `stage_config` turns one
stage's section (with a subject's overrides merged in) into a frozen dataclass. Unknown keys and
wrong types fail with the key's dotted path.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema import validators

from speech2lip.errors import Speech2LipError

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(Speech2LipError):
    """The configuration is unreadable or does not match the schema."""


@dataclass(frozen=True)
class SampleConfig:
    """The built-in demo subject (see the schema for each field's meaning)."""

    seed: int = 0
    duration: float = 60
    size: int = 512
    voice: str = "en-us"
    words_per_minute: int = 160
    head_motion_deg: float = 8
    blink_rate: float = 15
    crf: int = 16


@dataclass(frozen=True)
class ResampleConfig:
    """Source video -> 25 fps lossless frames + 16 kHz mono audio."""

    crop: str | tuple[int, int, int, int] = "auto"
    crop_margin: float = 0.6
    detect_frames: int = 16
    size: int | None = 512
    min_duration: float = 2.0
    test_fraction: float = 0.1


@dataclass(frozen=True)
class LandmarksConfig:
    """Per-frame dense face landmarks."""

    backend: str = "mediapipe"
    fan_type: str = "2D"
    min_confidence: float = 0.5
    max_gap: int = 12
    max_missing: float = 0.05
    min_face_size: int = 64


@dataclass(frozen=True)
class Fit3dmmConfig:
    """Subject morphable face model and its per-frame fit."""

    model: str = "subject"
    bfm_path: str = ""
    bfm_landmarks: str = ""
    n_expression: int = 16
    eye_distance_m: float = 0.09
    focal: float | None = None
    iterations: int = 60
    refine_rounds: int = 1
    robust_px: float = 2.0
    expression_weight: float = 0.01
    smooth_window: int = 7
    smooth_order: int = 2


@dataclass(frozen=True)
class PoseDepthConfig:
    """Canonical frame, per-frame face depth and the canonical full-head depth."""

    canonical: str | int = "auto"
    head_grow: float = 0.35
    qa_frames: int = 16


@dataclass(frozen=True)
class WarpConfig:
    """GAMEM mappings, audio features and HDF5 shards."""

    lip_size: str | tuple[int, int] = "auto"
    lip_margin: int = 8
    extended_scale: tuple[float, float] = (1.5, 2.0)
    occlusion_tolerance: float = 0.01
    shard_frames: int = 250
    compression: str = "gzip"
    compression_level: int = 4
    store_frames: bool = False
    batch_frames: int = 16
    qa_frames: int = 8


@dataclass(frozen=True)
class SyncExpertConfig:
    """The lip-sync expert: a user's Wav2Lip checkpoint, or one trained on the subject."""

    pretrained: str = ""
    steps: int = 200
    batch: int = 16
    lr: float = 0.0003
    negative_gap: int = 5
    search_offsets: int = 7
    max_offset: int = 1
    min_confidence: float = 0.02
    min_pair_accuracy: float = 0.6
    log_every: int = 50
    seed: int = 0


@dataclass(frozen=True)
class TrainConfig:
    """Training (None = the preset's value; see `speech2lip.train.presets`)."""

    preset: str = "demo"
    steps: int | None = None
    batch_frames: int | None = None
    lips_pixels: int | None = None
    lips_focus: float = 0.5
    mouth_frames: int | None = None
    lr: float | None = None
    lr_final: float = 0.1
    depth_lr: float = 0.0001
    width: int | None = None
    depth: int | None = None
    skip: int | None = None
    uv_freqs: int | None = None
    time_freqs: int | None = None
    audio_dim: int | None = None
    audio_radius: int | None = None
    blend_channels: tuple[int, ...] | None = None
    lips_weight: float = 1.0
    perceptual_weight: float = 0.0
    mouth_weight: float = 1.0
    mouth_start: int | None = None
    depth_weight: float = 0.1
    holes_probability: float = 0.5
    c2o_iterations: int = 2
    sync_weight: float | None = None
    sync_start: int | None = None
    sync_windows: int = 1
    precision: str = "auto"
    compile: bool = False
    checkpoint_every: int = 200
    log_every: int = 50
    seed: int = 0


@dataclass(frozen=True)
class RenderConfig:
    """Rendering: C2O composition into background frames, streamed into ffmpeg."""

    output_size: str = "source"
    crf: int = 18
    encoder_preset: str = "medium"
    batch_frames: int = 8
    c2o_iterations: int = 4
    start_frame: int = 0
    pose_offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
    pose_sweep: tuple[float, float, float] = (0.0, 0.0, 0.0)
    pose_period: float = 4.0
    pose_file: str = ""


@dataclass(frozen=True)
class EvaluateConfig:
    """Evaluation: metrics, baselines and the report."""

    syncnet: str = ""
    landmarks: str = "mediapipe"
    cpbd_edges: str = "python-cpbd"
    baselines: bool = True
    strip_frames: int = 6


STAGE_CONFIGS: dict[str, type] = {
    "sample": SampleConfig,
    "resample": ResampleConfig,
    "landmarks": LandmarksConfig,
    "fit3dmm": Fit3dmmConfig,
    "pose_depth": PoseDepthConfig,
    "warp": WarpConfig,
    "sync_expert": SyncExpertConfig,
    "train": TrainConfig,
    "render": RenderConfig,
    "evaluate": EvaluateConfig,
}


def load_schema() -> dict[str, Any]:
    """The config schema as a dict (read from the workflow folder of this checkout)."""
    if not SCHEMA_PATH.is_file():
        raise ConfigError(
            f"config schema not found at {SCHEMA_PATH}; install speech2lip from its checkout "
            "with `pip install -e .` so the workflow folder is next to the package"
        )
    with SCHEMA_PATH.open() as f:
        return yaml.safe_load(f)


def _with_defaults(validator_class: type) -> type:
    """A validator class that fills `default` values of object properties while validating."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if validator.is_type(instance, "object"):
            for name, subschema in properties.items():
                if isinstance(subschema, dict) and "default" in subschema:
                    instance.setdefault(name, copy.deepcopy(subschema["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})


_FillingValidator = _with_defaults(jsonschema.Draft202012Validator)


def _describe(error: jsonschema.ValidationError, source: str) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"{source}: {where}: unknown key {', '.join(map(repr, extra))}{hint}"
    if error.validator == "oneOf" and error.context:
        reasons = "; or ".join(sorted({e.message for e in error.context}))
        return f"{source}: {where}: {error.instance!r} is not valid: {reasons}"
    return f"{source}: {where}: {error.message}"


def _check(instance: Any, schema: dict, source: str) -> None:
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(instance),
        key=lambda e: list(map(str, e.absolute_path)),
    )
    if errors:
        lines = [_describe(e, source) for e in errors]
        more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
        raise ConfigError(lines[0] + more + ("\n" + "\n".join(lines[1:]) if more else ""))


def validate_config(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Validate `config` against the schema and return a copy with every default filled.

    Per-subject overrides (e.g. `subjects.obama.resample.crop`) are merged into their stage
    section and the result is validated too, so a bad override fails here, not mid-run.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: the configuration must be a mapping of keys, got {config!r}")
    schema = load_schema()
    filled = copy.deepcopy(config)
    # First pass fills defaults (errors are collected by the plain validator below, with paths).
    for _ in _FillingValidator(schema).iter_errors(filled):
        pass
    _check(filled, schema, source)
    for name, subject in filled["subjects"].items():
        for stage in STAGE_CONFIGS:
            if stage in subject:
                merged = {**filled[stage], **subject[stage]}
                try:
                    _check(merged, schema["properties"][stage], source)
                except ConfigError as exc:
                    raise ConfigError(
                        str(exc).replace(f"{source}: ", f"{source}: subjects.{name}.{stage}.", 1)
                    ) from None
    return filled


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a syntax error names the file, line and column."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (copy config.yaml from the repository)")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; expected a YAML config") from None


def load_config(path: str | Path) -> dict[str, Any]:
    """Read and validate a YAML config file; errors name the file and the key."""
    return validate_config(read_yaml(path) or {}, source=str(path))


def stage_section(config: dict[str, Any], stage: str, subject: str | None = None) -> dict[str, Any]:
    """One stage's section of a validated config, with `subject`'s overrides merged in."""
    section = dict(config[stage])
    if subject is not None:
        section.update(config["subjects"][subject].get(stage, {}))
    return section


def section_from_json(stage: str, text: str) -> dict[str, Any]:
    """Parse and validate a stage section given as JSON (how Snakemake rules pass params)."""
    try:
        section = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--params for {stage}: not valid JSON: {exc}") from None
    schema = load_schema()["properties"][stage]
    for _ in _FillingValidator(schema).iter_errors(section):
        pass
    _check(section, schema, f"{stage} params")
    return section


def stage_config(stage: str, section: dict[str, Any]) -> Any:
    """Build the frozen dataclass of `stage` from its (validated) section; unknown keys raise."""
    cls = STAGE_CONFIGS[stage]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(section) - names)
    if unknown:
        raise ConfigError(
            f"{stage}: unknown key(s) {', '.join(unknown)} (allowed: {sorted(names)})"
        )
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in section.items()}
    return cls(**values)
