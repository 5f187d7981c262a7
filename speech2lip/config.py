"""Configuration: the JSON schema is the single source of every key, type and default.

`workflow/schemas/config.schema.yaml` is written once; each stage's frozen dataclass
(`ResampleConfig`, ..., `TrainConfig` with its nested `ModelSizes`) is generated from it at
import, so a default lives in the schema only (config.yaml restates them for the reader, and a
test keeps the two equal). `load_config` reads a YAML file, `validate_config` checks it and fills
every default, and `stage_config` turns one stage's section (with a subject's overrides merged
in) into its dataclass. Unknown keys, renamed keys and wrong types fail with the dotted path.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema import validators

from speech2lip.errors import Speech2LipError

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(Speech2LipError):
    """The configuration is unreadable or does not match the schema."""


# Keys that were renamed: an old name fails with one line naming the new one.
RENAMED = {
    "train.width": "train.model.lips_width",
    "train.depth": "train.model.lips_layers",
    "train.skip": "train.model.lips_skip",
    "train.uv_freqs": "train.model.uv_freqs",
    "train.time_freqs": "train.model.time_freqs",
    "train.audio_dim": "train.model.audio_dim",
    "train.audio_radius": "train.model.audio_radius",
    "train.blend_channels": "train.model.blend_channels",
}
RENAMED_VALUES = {("evaluate.landmarks", "fan"): "face_alignment"}
# The generated classes: stage -> name (nested sections: dotted path -> name).
CLASS_NAMES = {
    "sample": "SampleConfig", "resample": "ResampleConfig", "landmarks": "LandmarksConfig",
    "fit3dmm": "Fit3dmmConfig", "pose_depth": "PoseDepthConfig", "warp": "WarpConfig",
    "sync_expert": "SyncExpertConfig", "train": "TrainConfig", "train.model": "ModelSizes",
    "render": "RenderConfig", "evaluate": "EvaluateConfig",
}  # fmt: skip
_TYPES = {"integer": "int", "number": "float", "string": "str", "boolean": "bool",
          "array": "tuple", "null": "None"}  # fmt: skip


def _frozen(value: Any) -> Any:
    """A schema value as a dataclass value: lists become tuples (hashable, immutable)."""
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


def _annotation(spec: dict) -> str:
    """The Python type of a schema property, as text (for help and repr only)."""
    kinds = spec.get("type") or [s.get("type") for s in spec.get("oneOf", [])]
    kinds = [kinds] if isinstance(kinds, str) else kinds
    flat = [k for kind in kinds for k in ([kind] if isinstance(kind, str) else kind or [])]
    return " | ".join(dict.fromkeys(_TYPES.get(k, "Any") for k in flat)) or "Any"


def _train_digest(self) -> str:
    """Hash of everything that changes the trained weights (not the logging cadence)."""
    keep = {k: v for k, v in dataclasses.asdict(self).items()
            if k not in ("checkpoint_every", "log_every")}  # fmt: skip
    keep["steps"] = None  # a longer run may continue a shorter one
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


# Fields a class has beyond its schema section (set by the code, never by a config).
_EXTRA = {"train": [("sync_offset", "int", dataclasses.field(default=0))]}
_METHODS = {"train": {"digest": _train_digest}}


def _config_class(path: str, spec: dict) -> type:
    """The frozen dataclass of the schema object at `path` (nested objects: nested classes)."""
    fields = []
    for key, sub in spec["properties"].items():
        if sub.get("type") == "object" and "properties" in sub:
            nested = _config_class(f"{path}.{key}", sub)
            fields.append((key, nested, dataclasses.field(default_factory=nested)))
        else:
            default = dataclasses.field(default=_frozen(sub.get("default")))
            fields.append((key, _annotation(sub), default))
    cls = dataclasses.make_dataclass(CLASS_NAMES[path], fields + _EXTRA.get(path, []),
                                     frozen=True, namespace=_METHODS.get(path, {}))  # fmt: skip
    cls.__module__ = __name__
    cls.__doc__ = " ".join(str(spec.get("description", "")).split()) or None
    return cls


def load_schema() -> dict[str, Any]:
    """The config schema as a dict (read from the workflow folder of this checkout)."""
    if not SCHEMA_PATH.is_file():
        raise ConfigError(
            f"config schema not found at {SCHEMA_PATH}; install speech2lip from its checkout "
            "with `pip install -e .` so the workflow folder is next to the package"
        )
    return copy.deepcopy(_parsed_schema())  # a copy: callers may fill it in


@functools.cache
def _parsed_schema() -> dict[str, Any]:
    with SCHEMA_PATH.open() as f:
        return yaml.safe_load(f)


STAGE_CONFIGS: dict[str, type] = {
    stage: _config_class(stage, spec)
    for stage, spec in load_schema()["properties"].items()
    if stage in CLASS_NAMES
}
SampleConfig = STAGE_CONFIGS["sample"]
ResampleConfig = STAGE_CONFIGS["resample"]
LandmarksConfig = STAGE_CONFIGS["landmarks"]
Fit3dmmConfig = STAGE_CONFIGS["fit3dmm"]
PoseDepthConfig = STAGE_CONFIGS["pose_depth"]
WarpConfig = STAGE_CONFIGS["warp"]
SyncExpertConfig = STAGE_CONFIGS["sync_expert"]
TrainConfig = STAGE_CONFIGS["train"]
ModelSizes = type(TrainConfig().model)
RenderConfig = STAGE_CONFIGS["render"]
EvaluateConfig = STAGE_CONFIGS["evaluate"]


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


def _check_renamed(section: Any, stage: str, where: str, source: str) -> None:
    """Refuse a key or value of `stage`'s section (found at `where`) that has a new name."""
    if not isinstance(section, dict):
        return
    for old, new in RENAMED.items():
        old_stage, key = old.split(".", 1)
        if old_stage == stage and key in section:
            raise ConfigError(
                f"{source}: {where}.{key} was renamed: use {where}{new[len(stage) :]}"
            )
    for (path, value), new in RENAMED_VALUES.items():
        old_stage, key = path.split(".", 1)
        if old_stage == stage and section.get(key) == value:
            raise ConfigError(f"{source}: {where}.{key}: {value!r} was renamed {new!r}")


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`base` with `override`'s keys, nested sections merged key by key."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def validate_config(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Validate `config` against the schema and return a copy with every default filled.

    Per-subject overrides (e.g. `subjects.obama.resample.crop`) are merged into their stage
    section and the result is validated too, so a bad override fails here, not mid-run.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: the configuration must be a mapping of keys, got {config!r}")
    for stage in STAGE_CONFIGS:
        _check_renamed(config.get(stage), stage, stage, source)
        for name, subject in (config.get("subjects") or {}).items():
            if isinstance(subject, dict):
                _check_renamed(subject.get(stage), stage, f"subjects.{name}.{stage}", source)
    schema = load_schema()
    filled = copy.deepcopy(config)
    # First pass fills defaults (errors are collected by the plain validator below, with paths).
    for _ in _FillingValidator(schema).iter_errors(filled):
        pass
    _check(filled, schema, source)
    for name, subject in filled["subjects"].items():
        for stage in STAGE_CONFIGS:
            if stage in subject:
                try:
                    _check(merged(filled[stage], subject[stage]), schema["properties"][stage],
                           source)  # fmt: skip
                except ConfigError as exc:
                    text = str(exc).replace(f"{source}: ", f"{source}: subjects.{name}.{stage}.", 1)
                    raise ConfigError(text.replace(".(top level):", ":", 1)) from None
    return filled


VIDEO_EXTENSIONS = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv",
                    ".flv", ".ts", ".mts", ".3gp"}  # fmt: skip
AUDIO_EXTENSIONS = {".wav", ".mp3", ".flac", ".m4a", ".aac", ".ogg", ".opus", ".wma", ".aiff"}


def discover_subjects(data_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Subjects found as `data/<name>/video.<ext>` (any common video extension), each with its
    candidate videos and the audio files of `data/<name>/driving/` (sorted)."""
    found: dict[str, dict[str, Any]] = {}
    root = Path(data_dir)
    if not root.is_dir():
        return found
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        videos = sorted(str(f) for f in folder.iterdir() if f.is_file() and f.stem == "video"
                        and f.suffix.lower() in VIDEO_EXTENSIONS)  # fmt: skip
        if not videos:
            continue
        driving_dir = folder / "driving"
        audio = sorted(driving_dir.iterdir()) if driving_dir.is_dir() else []
        driving = [str(f) for f in audio if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS]
        found[folder.name] = {"videos": videos, "driving": driving}
    return found


def with_discovered(config: dict[str, Any], data_dir: str | Path = "data") -> dict[str, Any]:
    """`config` with the subjects found under `data_dir` added; a subject in the config keeps
    its own video and driving audio (and adds its settings)."""
    if not isinstance(config, dict):
        return config
    given = config.get("subjects")
    if given is None:
        given = copy.deepcopy(load_schema()["properties"]["subjects"]["default"])
    if not isinstance(given, dict):
        return config
    subjects = dict(given)
    for name, found in discover_subjects(data_dir).items():
        entry = dict(subjects.get(name) or {})
        if "video" not in entry:
            if len(found["videos"]) > 1:
                raise ConfigError(
                    f"{Path(data_dir) / name}: {len(found['videos'])} videos for one subject "
                    f"({', '.join(Path(v).name for v in found['videos'])}); keep one, or name "
                    f"it under subjects.{name}.video in config.yaml"
                )
            entry["video"] = found["videos"][0]
        if "driving" not in entry and found["driving"]:
            entry["driving"] = found["driving"]
        subjects[name] = entry
    return {**config, "subjects": subjects}


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
        section = merged(section, config["subjects"][subject].get(stage, {}))
    return section


def section_from_json(stage: str, text: str) -> dict[str, Any]:
    """Parse and validate a stage section given as JSON (how Snakemake rules pass params)."""
    try:
        section = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--params for {stage}: not valid JSON: {exc}") from None
    _check_renamed(section, stage, stage, f"{stage} params")
    schema = load_schema()["properties"][stage]
    for _ in _FillingValidator(schema).iter_errors(section):
        pass
    _check(section, schema, f"{stage} params")
    return section


def _build(cls: type, section: dict[str, Any], where: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(section) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {sorted(fields)})"
        )
    values = {}
    for key, value in section.items():
        nested = fields[key].type
        if isinstance(nested, type) and dataclasses.is_dataclass(nested):
            values[key] = _build(nested, value or {}, f"{where}.{key}")
        else:
            values[key] = _frozen(value)
    return cls(**values)


def stage_config(stage: str, section: dict[str, Any]) -> Any:
    """Build the frozen dataclass of `stage` from its (validated) section; unknown keys raise."""
    return _build(STAGE_CONFIGS[stage], section, stage)
