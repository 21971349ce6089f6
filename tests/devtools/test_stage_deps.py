"""dvc.yaml's code deps are exactly each stage's import closure, so the cache cannot go stale."""
from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from devtools import stage_deps

REPO = Path(__file__).resolve().parents[2]


def test_every_stage_lists_exactly_the_modules_it_imports():
    assert stage_deps.problems(REPO) == []


def _toy_project(tmp_path: Path, deps: list[str]) -> Path:
    files = {
        "tasks/__init__.py": "",
        "tasks/alpha.py": "from pipeline.io import save\n\ndef main():\n    from pipeline import helpers\n",
        "pipeline/__init__.py": "",
        "pipeline/io.py": "from .fmt import render\n",
        "pipeline/fmt.py": "",
        "pipeline/helpers.py": "import coordinator.tokens\n",
        "pipeline/unused.py": "",
        "coordinator/__init__.py": "",
        "coordinator/tokens.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    listed = "".join(f"      - {d}\n" for d in deps)
    (tmp_path / "dvc.yaml").write_text(
        "# the toy pipeline\nstages:\n  alpha:\n    cmd: python -m tasks.alpha\n    deps:\n" + listed
        + "      - data/raw  # data stays\n    outs:\n      - out\n")
    return tmp_path


FULL = ["coordinator/__init__.py", "coordinator/tokens.py", "pipeline/__init__.py", "pipeline/fmt.py",
        "pipeline/helpers.py", "pipeline/io.py", "tasks/__init__.py", "tasks/alpha.py"]


def test_closure_follows_lazy_relative_and_package_imports(tmp_path):
    root = _toy_project(tmp_path, FULL)
    closure = stage_deps.stage_closure(root, "alpha")
    assert closure.files == FULL
    assert closure.chains["coordinator/tokens.py"] == ("tasks.alpha", "pipeline.helpers", "coordinator.tokens")
    assert stage_deps.problems(root) == []


def test_a_missing_module_is_named_with_its_import_chain(tmp_path):
    root = _toy_project(tmp_path, [d for d in FULL if d != "pipeline/fmt.py"])
    assert stage_deps.problems(root) == [
        "dvc.yaml: stage 'alpha' misses dep pipeline/fmt.py (imported via tasks.alpha -> pipeline.io -> pipeline.fmt)"]


def test_a_dep_the_stage_no_longer_imports_is_reported(tmp_path):
    root = _toy_project(tmp_path, FULL + ["pipeline/unused.py"])
    assert stage_deps.problems(root) == ["dvc.yaml: stage 'alpha' lists dep pipeline/unused.py (not imported by the stage)"]


def test_a_whole_directory_dep_is_refused(tmp_path):
    """A directory dep would rerun the stage on any edit inside it."""
    root = _toy_project(tmp_path, [d for d in FULL if not d.startswith("coordinator/")] + ["coordinator"])
    found = stage_deps.problems(root)
    assert "dvc.yaml: stage 'alpha' lists dep coordinator (a directory: list its modules)" in found
    assert any("misses dep coordinator/tokens.py" in line for line in found)


def test_write_fixes_the_deps_and_keeps_comments_and_data_deps(tmp_path):
    root = _toy_project(tmp_path, ["tasks/alpha.py", "pipeline/unused.py"])
    assert stage_deps.main(["--check", "--root", str(root)]) == 1
    assert stage_deps.main(["--write", "--root", str(root)]) == 0
    assert stage_deps.main(["--check", "--root", str(root)]) == 0
    text = (root / "dvc.yaml").read_text()
    assert text.startswith("# the toy pipeline") and "- data/raw  # data stays" in text
    assert "pipeline/unused.py" not in text


def _project_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


@pytest.mark.parametrize("package", ["pipeline", "flows", "coordinator"])
def test_nothing_below_tasks_imports_tasks(package):
    offenders = [f"{p.relative_to(REPO)} imports {m}" for p in sorted((REPO / package).rglob("*.py"))
                 for m in _project_imports(p) if m == "tasks" or m.startswith("tasks.")]
    assert offenders == []


def test_no_stage_imports_another_stage():
    offenders = [f"{p.relative_to(REPO)} imports {m}" for p in sorted((REPO / "tasks").glob("*.py"))
                 for m in _project_imports(p)
                 if (m == "tasks" or m.startswith("tasks.")) and m != f"tasks.{p.stem}"]
    assert offenders == []
