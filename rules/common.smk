# Shared set-up: config validation, wildcard constraints and a few path helpers.
import glob
import json
import shlex

from snakemake.exceptions import WorkflowError

from speech2lip.config import ConfigError, stage_section, validate_config

try:
    config.update(validate_config(config, source="config"))
except ConfigError as exc:
    raise WorkflowError(f"invalid configuration: {exc}") from None


wildcard_constraints:
    subject=r"[A-Za-z0-9][A-Za-z0-9_.-]*",


def module(stage):
    """The stage's Python source (a module, or every file of a package), as rule inputs, so
    editing the stage's code re-runs it (Snakemake does not follow imports)."""
    path = os.path.join(workflow.basedir, "speech2lip", stage)
    if os.path.isfile(f"{path}.py"):
        return [f"{path}.py"]
    return sorted(glob.glob(os.path.join(path, "*.py")) + glob.glob(os.path.join(path, "*.txt")))


def subject_video(wildcards):
    """The source video of a subject, with a clear error for a name not in config.yaml."""
    if wildcards.subject not in config["subjects"]:
        known = ", ".join(sorted(config["subjects"])) or "(none)"
        raise WorkflowError(
            f"unknown subject {wildcards.subject!r} in the target path; subjects in the config: "
            f"{known}. Add it under `subjects:` in config.yaml with its video path."
        )
    return config["subjects"][wildcards.subject]["video"]


def params_json(stage):
    """A rule's params: its stage section (with the subject's overrides) as one JSON string."""
    if stage == "sample":
        return json.dumps(config[stage], sort_keys=True)
    return lambda wildcards: json.dumps(stage_section(config, stage, wildcards.subject), sort_keys=True)


def driving_name(path):
    """The name a driving audio's video gets under driven/: the file's stem."""
    return os.path.splitext(os.path.basename(path))[0]


def driving_audio(wildcards):
    """The driving audio of `subjects.<subject>.driving` whose stem is the target's name."""
    paths = config["subjects"].get(wildcards.subject, {}).get("driving", [])
    for path in paths:
        if driving_name(path) == wildcards.name:
            return path
    known = ", ".join(driving_name(p) for p in paths) or "(none)"
    raise WorkflowError(
        f"no driving audio named {wildcards.name!r} for subject {wildcards.subject!r}; its "
        f"driving audio: {known}. List the file under subjects.{wildcards.subject}.driving."
    )


def driven_paths(subject):
    """The subject's driven videos: one per driving audio listed for it."""
    paths = config["subjects"][subject].get("driving", [])
    return [f"results/{subject}/driven/{driving_name(p)}.mp4" for p in paths]


def driven_videos(wildcards):
    """`driven_paths` of the job's subject (an input function, for the evaluation)."""
    return driven_paths(wildcards.subject)
