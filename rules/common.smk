# Shared set-up: config validation, wildcard constraints and a few path helpers.
import ast
import functools
import glob
import json
import shlex

from snakemake.exceptions import WorkflowError

from speech2lip.config import ConfigError, stage_section, validate_config, with_discovered

try:
    config.update(validate_config(with_discovered(config, "data"), source="config"))
except ConfigError as exc:
    raise WorkflowError(f"invalid configuration: {exc}") from None


wildcard_constraints:
    subject=r"[A-Za-z0-9][A-Za-z0-9_.-]*",


def _module_file(name):
    """The file of module `name` (`speech2lip.a.b`) inside this workflow, or None."""
    base = os.path.join(workflow.basedir, *name.split("."))
    for path in (f"{base}.py", os.path.join(base, "__init__.py")):
        if os.path.isfile(path):
            return path
    return None


@functools.cache
def _imports(path):
    """The `speech2lip` modules that the file at `path` imports anywhere (lazy imports too),
    with every package on the way (importing `a.b.c` runs `a` and `a.b` first)."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    package = os.path.relpath(os.path.dirname(path), workflow.basedir).replace(os.sep, ".")
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's package upwards
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # submodules
    found = set()
    for name in names:
        parts = name.split(".")
        if parts[0] != "speech2lip":
            continue
        found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return frozenset(found)


@functools.cache
def module(stage):
    """The code inputs of `stage`'s rule: every file under speech2lip/ that its module imports,
    transitively (the import closure, read from the source with `ast` when the DAG is built),
    plus the data files of the packages in it; so editing any code a stage runs re-runs that
    stage and what follows it, and editing code no stage imports re-runs nothing."""
    todo, files = [f"speech2lip.{stage}"], set()
    seen = set(todo)
    while todo:
        path = _module_file(todo.pop())
        if path is None:  # a name imported from a module, not a module itself
            continue
        files.add(path)
        if path.endswith("__init__.py"):
            files.update(glob.glob(os.path.join(os.path.dirname(path), "*.txt")))
        for name in _imports(path) - seen:
            seen.add(name)
            todo.append(name)
    if not files - {_module_file("speech2lip")}:
        raise WorkflowError(f"no module speech2lip/{stage}(.py) for the rule {stage!r}")
    return sorted(files)


def subject_video(wildcards):
    """The source video of a subject, with a clear error for an unknown name."""
    if wildcards.subject not in config["subjects"]:
        known = ", ".join(sorted(config["subjects"])) or "(none)"
        raise WorkflowError(
            f"unknown subject {wildcards.subject!r} in the target path; known subjects: "
            f"{known}. Put its video at data/{wildcards.subject}/video.mp4 (any video "
            "extension), or add it under `subjects:` in config.yaml with its video path."
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


PIPELINE = ["sample", "resample", "landmarks", "fit3dmm", "pose_depth", "warp", "sync_expert",
            "train", "render", "evaluate"]


def run_summary():
    """What a finished run says last: each subject's wall time per stage (from the rules'
    benchmark files, in pipeline order) and where its report is."""
    from speech2lip.progress import duration

    def position(path):  # render_driven_<name> sorts with render
        stage = os.path.basename(path)[: -len(".tsv")]
        return next((i for i, s in enumerate(PIPELINE) if stage.startswith(s)), len(PIPELINE))

    lines = []
    for subject in sorted(config["subjects"]):
        times = []
        paths = glob.glob(os.path.join("benchmarks", subject, "*.tsv"))
        for path in sorted(paths, key=lambda p: (position(p), p)):
            with open(path) as handle:
                rows = [row.split("\t") for row in handle.read().splitlines()]
            try:
                seconds = float(rows[1][0])  # the `s` column of the job's row
            except (IndexError, ValueError):
                continue
            times.append(f"{os.path.basename(path)[: -len('.tsv')]} {duration(seconds)}")
        if times:
            lines.append(f"speech2lip: {subject}: wall time per stage: " + ", ".join(times))
        html = os.path.join("results", subject, "evaluate", "report.html")
        if os.path.isfile(html):
            lines.append(f"speech2lip: {subject}: open {html}")
    return "\n".join(lines)
