# speech2lip: personalised lip-sync video as a staged, cached Snakemake pipeline.
# Run `snakemake --cores 8` (every subject in config.yaml) or name a target, e.g.
# `snakemake --cores 8 results/sample/warp/index.json`. See README.md.
import os

from speech2lip.config import ConfigError, read_yaml

if os.path.exists("config.yaml"):  # a YAML syntax error, named with its line, before anything
    try:
        read_yaml("config.yaml")
    except ConfigError as exc:
        raise WorkflowError(str(exc)) from None


configfile: "config.yaml"


include: "rules/common.smk"


onsuccess:
    print(run_summary())


rule all:
    input:
        expand("results/{subject}/video.mp4", subject=list(config["subjects"])),
        expand("results/{subject}/evaluate/report.html", subject=list(config["subjects"])),
        [path for subject in config["subjects"] for path in driven_paths(subject)],
    default_target: True


include: "rules/sample.smk"
include: "rules/resample.smk"
include: "rules/landmarks.smk"
include: "rules/fit3dmm.smk"
include: "rules/pose_depth.smk"
include: "rules/warp.smk"
include: "rules/sync_expert.smk"
include: "rules/train.smk"
include: "rules/render.smk"
include: "rules/evaluate.smk"
