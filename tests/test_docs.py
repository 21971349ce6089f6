"""README.md and docs/ stay true: every module, repo path, function and test they quote exists.

A page that names `pipeline.io.load_params` after it moved, or cites a test that was renamed, sends a reader
to nothing; these checks catch that when the code changes, not when a newcomer trips on it.
"""
from __future__ import annotations

import ast
import importlib.util
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Top-level folders of this repo whose quoted paths must exist (data/, models/, reports/, runs/ are artifacts).
REPO_DIRS = {"tasks", "pipeline", "flows", "coordinator", "tests", "docs", "bench", "configs", "profiles", "schemas",
             "devtools"}
# Quoted paths that a command writes, not files kept in git.
WRITTEN_BY_A_COMMAND = {"bench/results/train_gpu.json"}  # bench/bench_train_gpu.py's default output

MODULE = re.compile(r"python -m ([\w.]+)")
QUOTED = re.compile(r"`([^`\s]+)`|\]\(([^)\s#]+)")
DOTTED_NAME = re.compile(r"`([A-Za-z_][\w.]*)(?:\([^`]*\))?`")
TEST_REF = re.compile(r"(tests/[\w/]+\.py)|::(test_\w+)")


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def module_file(dotted: str) -> Path | None:
    base = ROOT.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache
def defined_names(path: Path) -> frozenset[str]:
    """Top-level and nested def/class names, assigned names and imported names of a module."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return frozenset(names)


def expand_braces(path: str) -> list[str]:
    match = re.search(r"\{([^}]*)\}", path)
    if not match:
        return [path]
    return [alt for part in match.group(1).split(",")
            for alt in expand_braces(path[:match.start()] + part + path[match.end():])]


def missing_modules(text: str) -> list[str]:
    """`python -m X`: a module of this repo, or one installed in the venv (pytest, dvc, spacy ...)."""
    bad = []
    for mod in MODULE.findall(text):
        if mod.split(".")[0] in REPO_DIRS:
            if module_file(mod) is None:
                bad.append(f"python -m {mod}")
        elif importlib.util.find_spec(mod.split(".")[0]) is None:
            bad.append(f"python -m {mod} (not installed)")
    return bad


def missing_paths(text: str, page: Path) -> list[str]:
    bad = []
    for quoted, link in QUOTED.findall(text):
        if link:  # a markdown link to a page or file of the repo
            path = link
            if path.startswith(("http:", "https:", "mailto:")):
                continue
        else:
            path = quoted.split("::")[0].rstrip(".,:;")
            if "/" not in path or path.split("/")[0] not in REPO_DIRS or "<" in path or path in WRITTEN_BY_A_COMMAND:
                continue
        for alt in expand_braces(path):
            if not any(base.glob(alt) if any(c in alt for c in "*?[") else (base / alt).exists()
                       for base in (ROOT, page.parent)):
                bad.append(path)
    return bad


def missing_names(text: str) -> list[str]:
    """`pipeline.io.write_json`, `flows.retrain.Schedule`: the module exists and defines the name."""
    bad = []
    for dotted in DOTTED_NAME.findall(text):
        parts = dotted.rstrip(".").split(".")
        if parts[0] not in REPO_DIRS or len(parts) < 2:
            continue
        for i in range(len(parts), 0, -1):
            if (found := module_file(".".join(parts[:i]))) is not None:
                break
        else:
            bad.append(dotted)
            continue
        if i < len(parts) and parts[i] not in defined_names(found):
            bad.append(dotted)
    return bad


def missing_tests(text: str) -> list[str]:
    """`tests/x/test_y.py::test_z` must define test_z; a bare `::test_z` one of the test files quoted before it."""
    bad, seen = [], []
    for path, name in TEST_REF.findall(text):
        if path:
            seen.append(path)
            continue
        if not any(re.search(rf"^\s*(async )?def {name}\b", (ROOT / f).read_text(), re.M)
                   for f in seen if (ROOT / f).is_file()):
            bad.append(f"::{name} (after {seen[-1] if seen else 'no test file'})")
    return bad


def explicit_test_refs(text: str) -> list[str]:
    bad = []
    for path, name in re.findall(r"(tests/[\w/]+\.py)::(test_\w+)", text):
        if (ROOT / path).is_file() and not re.search(rf"^\s*(async )?def {name}\b", (ROOT / path).read_text(), re.M):
            bad.append(f"{path}::{name}")
    return bad


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_quoted_module_path_name_and_test_exists(page):
    text = page.read_text()
    problems = {
        "modules": missing_modules(text),
        "paths": missing_paths(text, page),
        "names": missing_names(text),
        "tests": missing_tests(text) + explicit_test_refs(text),
    }
    assert not any(problems.values()), f"{page_id(page)} quotes what does not exist: " + \
        "; ".join(f"{kind}: {', '.join(sorted(set(found)))}" for kind, found in problems.items() if found)


def test_the_checks_catch_a_stale_page():
    """Each check fails on what the issue found stale: a moved function, a renamed test, a missing module/path."""
    assert missing_names("via `pipeline.io.load_params(\"<stage>\")`") == ["pipeline.io.load_params"]
    assert missing_names("via `pipeline.params.load_stage_params`") == []
    stale = "`tests/tasks/test_train.py::test_stage_resumes_after_kill_9`"
    assert explicit_test_refs(stale) == ["tests/tasks/test_train.py::test_stage_resumes_after_kill_9"]
    assert missing_tests("`tests/tasks/test_train.py`, `::test_no_such_test`")
    assert missing_modules("`python -m tasks.no_such_stage`") == ["python -m tasks.no_such_stage"]
    assert missing_modules("`python -m tasks.blip`") == []
    assert missing_paths("`pipeline/no_such_module.py` and `pipeline/fabricate*.py`", ROOT / "README.md") == \
        ["pipeline/no_such_module.py"]
    assert missing_paths("[guide](docs/no-such-page.md)", ROOT / "README.md") == ["docs/no-such-page.md"]
