"""Config: schema validation, defaults, and agreement between the schema and the dataclasses."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from conftest import ROOT

from speech2lip.config import (
    STAGE_CONFIGS,
    ConfigError,
    load_config,
    load_schema,
    merged,
    section_from_json,
    stage_config,
    stage_section,
    validate_config,
)


def test_shipped_config_is_valid_and_matches_defaults():
    config = load_config(ROOT / "config.yaml")
    assert config["subjects"]["sample"]["video"] == "data/sample/video.mp4"
    for stage, cls in STAGE_CONFIGS.items():
        assert stage_config(stage, config[stage]) == cls()


def test_defaults_are_filled():
    config = validate_config({"subjects": {"may": {"video": "may.mp4"}}})
    assert config["resample"]["crop"] == "auto"
    assert config["sample"]["duration"] == 60
    assert config["subjects"]["may"]["driving"] == []
    assert validate_config({})["subjects"] == {
        "sample": {"video": "data/sample/video.mp4", "driving": []}
    }


@pytest.mark.parametrize(
    ("config", "text"),
    [
        ({"resampel": {}}, "unknown key 'resampel'"),
        ({"resample": {"crop_margn": 1}}, "resample: unknown key 'crop_margn'"),
        ({"resample": {"size": "big"}}, "resample.size: 'big' is not of type"),
        ({"resample": {"crop": "atuo"}}, "resample.crop: 'atuo' is not valid"),
        ({"resample": {"crop": [1, 2, 3]}}, "resample.crop"),
        ({"resample": {"test_fraction": 0.9}}, "resample.test_fraction"),
        ({"sample": {"size": 511}}, "sample.size: 511 is not a multiple of 2"),
        ({"subjects": {"x": {}}}, "subjects.x: 'video' is a required property"),
        (
            {"subjects": {"x": {"video": "a.mp4", "resample": {"crop": "x"}}}},
            "subjects.x.resample.crop",
        ),
        ({"subjects": {"bad name": {"video": "a.mp4"}}}, "subjects"),
    ],
)
def test_bad_config_names_the_key(config, text):
    with pytest.raises(ConfigError, match=None) as err:
        validate_config(config, source="cfg.yaml")
    assert text in str(err.value)
    assert str(err.value).startswith("cfg.yaml: ")


def test_unreadable_config_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("resample:\n  crop: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML at line \d+"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(listy)


def test_subject_overrides_merge_into_the_stage_section():
    config = validate_config(
        {"subjects": {"o": {"video": "o.mp4", "resample": {"crop": [1, 2, 30, 40]}}}}
    )
    section = stage_section(config, "resample", "o")
    assert section["crop"] == [1, 2, 30, 40] and section["size"] == 512
    assert stage_config("resample", section).crop == (1, 2, 30, 40)


def test_section_from_json_validates():
    assert section_from_json("resample", '{"size": null}')["size"] is None
    with pytest.raises(ConfigError, match="not valid JSON"):
        section_from_json("resample", "{")
    with pytest.raises(ConfigError, match="unknown key 'sise'"):
        section_from_json("resample", '{"sise": 3}')


def test_dataclass_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="unknown key"):
        stage_config("resample", {"nope": 1})


@pytest.mark.parametrize("stage", sorted(STAGE_CONFIGS))
def test_dataclasses_are_the_schema(stage):
    """The classes are generated from the schema: same keys (nested sections nested), the
    schema's defaults, plus only the fields the code sets itself."""

    def check(cls, schema, path):
        assert schema["additionalProperties"] is False, path
        fields = {f.name: f for f in dataclasses.fields(cls)}
        assert set(fields) - set(schema["properties"]) <= {"sync_offset"}, path
        for name, spec in schema["properties"].items():
            if spec.get("type") == "object":
                check(fields[name].type, spec, f"{path}.{name}")
                continue
            default = spec["default"]
            assert fields[name].default == (tuple(default) if isinstance(default, list)
                                            else default), f"{path}.{name}"  # fmt: skip

    check(STAGE_CONFIGS[stage], load_schema()["properties"][stage], stage)


def test_shipped_config_restates_every_default():
    """config.yaml repeats the schema's defaults for the reader: it must not drift."""

    def walk(shipped, schema, path):
        assert set(shipped) == set(schema["properties"]), path
        for key, spec in schema["properties"].items():
            if spec.get("type") == "object" and "properties" in spec:
                walk(shipped[key], spec, f"{path}.{key}")
            else:
                assert shipped[key] == spec["default"], f"{path}.{key}"

    text = yaml.safe_load((ROOT / "config.yaml").read_text())
    for stage in STAGE_CONFIGS:
        walk(text[stage], load_schema()["properties"][stage], stage)


@pytest.mark.parametrize(
    ("config", "text"),
    [
        ({"train": {"width": 64}}, "cfg.yaml: train.width was renamed: use train.model.lips_width"),
        ({"train": {"depth": 4}}, "train.depth was renamed: use train.model.lips_layers"),
        ({"evaluate": {"landmarks": "fan"}},
         "evaluate.landmarks: 'fan' was renamed 'face_alignment'"),
    ],
)  # fmt: skip
def test_an_old_key_name_names_the_new_one(config, text):
    with pytest.raises(ConfigError) as err:
        validate_config(config, source="cfg.yaml")
    assert text in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="was renamed"):  # the rules' --params path too
        section_from_json("train", '{"blend_channels": [4, 8]}')


def test_nested_model_sizes_merge_and_build():
    config = validate_config({"train": {"model": {"lips_width": 96}}})
    assert config["train"]["model"]["lips_layers"] is None  # nested defaults filled
    assert merged({"model": {"a": 1, "b": 2}, "c": 3}, {"model": {"b": 5}}) == {
        "model": {"a": 1, "b": 5}, "c": 3}  # fmt: skip
    section = stage_section(config, "train")
    section["model"]["lips_layers"] = 6
    cfg = stage_config("train", section)
    assert cfg.model.lips_width == 96 and cfg.model.lips_layers == 6 and cfg.model.lips_skip is None
    with pytest.raises(ConfigError, match="train.model.lips_width: 2 is less than"):
        validate_config({"train": {"model": {"lips_width": 2}}}, source="x")
    with pytest.raises(ConfigError, match=r"train.model: unknown key\(s\) width"):
        stage_config("train", {"model": {"width": 3}})


def test_every_schema_key_is_typed_and_described():
    def walk(node, path):
        if isinstance(node, dict) and "properties" in node:
            assert node.get("additionalProperties") is False or "additionalProperties" in node, path
            for key, sub in node["properties"].items():
                assert "description" in sub, f"{path}.{key}"
                assert "type" in sub or "oneOf" in sub, f"{path}.{key}"
                walk(sub, f"{path}.{key}")

    walk(load_schema(), "config")


def test_shipped_config_mentions_every_stage_key():
    text = yaml.safe_load((ROOT / "config.yaml").read_text())
    for stage, cls in STAGE_CONFIGS.items():
        assert set(text[stage]) == {f.name for f in dataclasses.fields(cls)} - {"sync_offset"}


def test_subjects_are_found_in_data(tmp_path):
    from speech2lip.config import discover_subjects, with_discovered

    (tmp_path / "may" / "driving").mkdir(parents=True)
    (tmp_path / "may" / "video.MOV").write_bytes(b"x")  # any common extension, any case
    (tmp_path / "may" / "driving" / "hello.wav").write_bytes(b"x")
    (tmp_path / "may" / "driving" / "notes.txt").write_text("not audio")
    (tmp_path / "bob").mkdir()
    (tmp_path / "bob" / "video.mp4").write_bytes(b"x")
    (tmp_path / "empty").mkdir()  # no video: not a subject
    found = discover_subjects(tmp_path)
    assert set(found) == {"may", "bob"}
    assert found["may"]["driving"] == [str(tmp_path / "may" / "driving" / "hello.wav")]
    given = {"subjects": {"bob": {"video": "elsewhere/bob.mkv", "train": {"steps": 900}}}}
    config = validate_config(with_discovered(given, tmp_path))
    assert config["subjects"]["may"]["video"] == str(tmp_path / "may" / "video.MOV")
    assert config["subjects"]["bob"]["video"] == "elsewhere/bob.mkv"  # the config wins
    assert stage_section(config, "train", "bob")["steps"] == 900
    assert "sample" in validate_config(with_discovered({}, tmp_path))["subjects"]  # the default
    (tmp_path / "may" / "video.mp4").write_bytes(b"x")
    with pytest.raises(
        ConfigError, match=r"may: 2 videos for one subject \(video.MOV, video.mp4\)"
    ):
        with_discovered({}, tmp_path)
    with_discovered({"subjects": {"may": {"video": "data/may/video.mp4"}}}, tmp_path)  # named


@pytest.mark.parametrize(
    ("override", "text"),
    [({"train": {"stepz": 1}}, "subjects.a.train: unknown key 'stepz'"),
     ({"render": {"crf": "high"}}, "subjects.a.render.crf: 'high' is not of type"),
     ({"pose_depth": {"head_grow": -1}}, "subjects.a.pose_depth.head_grow: -1 is less than"),
     ({"train": {"model": {"lips_width": 2}}}, "subjects.a.train.model.lips_width: 2 is less"),
     ({"sample": {"seed": 1}}, "subjects.a: unknown key 'sample'")],
)  # fmt: skip
def test_every_stage_can_be_overridden_per_subject_and_is_checked(override, text):
    with pytest.raises(ConfigError) as err:
        validate_config({"subjects": {"a": {"video": "a.mp4", **override}}}, source="cfg")
    assert text in str(err.value)
