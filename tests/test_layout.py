"""The code's layout: a library floor under the stages (read from the source with `ast`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGE = ROOT / "speech2lip"
STAGES = {"sample", "resample", "landmarks", "fit3dmm", "pose_depth", "warp", "sync_expert",
          "train", "render", "evaluate"}  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every speech2lip module `path` imports (submodules named in `from` lists included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:  # `from pkg import submodule` needs the submodule only
                sub = f"{node.module}.{alias.name}"
                names.add(sub if module_file(sub) else node.module)
    return {n for n in names if n.startswith("speech2lip.") and module_file(n)}


def module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def stage_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else None


GRAPH = {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


def closure(name: str) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        for dep in GRAPH.get(todo.pop(), ()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def test_no_stage_imports_another_stage():
    wrong = [f"{mod} -> {dep}" for mod, deps in GRAPH.items() if mod != "speech2lip.cli"
             for dep in deps if stage_of(dep) and stage_of(dep) != stage_of(mod)]  # fmt: skip
    assert not wrong


@pytest.mark.parametrize("stage", ["render", "evaluate"])
def test_render_and_evaluate_import_no_training_code(stage):
    assert not {m for m in closure(f"speech2lip.{stage}") if stage_of(m) == "train"}


def test_live_mode_stands_on_the_library_floor():
    assert not {m for m in closure("speech2lip.live.server") if stage_of(m)}


def test_no_import_circles():
    for mod in GRAPH:
        assert mod not in closure(mod), mod


def test_files_and_stage_runs_stay_small():
    for path in PACKAGE.rglob("*.py"):
        lines = path.read_text().count("\n")
        assert lines <= 400, f"{path}: {lines} lines"
    for stage in STAGES:
        tree = ast.parse(module_file(f"speech2lip.{stage}").read_text())
        run = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run")
        body = run.end_lineno - run.body[0].lineno + 1  # the signature aside
        assert body <= 60, f"{stage}.run: {body} lines"
