"""The artifact catalog and dvc.yaml name the same paths, and no product module spells one itself."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from pipeline import artifacts

ROOT = Path(__file__).resolve().parents[2]
CODE = ("pipeline/", "tasks/", "coordinator/", "flows/", "tests/")  # imports and test data: the deps check's job
PRODUCT = ("pipeline", "tasks", "coordinator", "flows")
FIXTURES: tuple[str, ...] = ()  # test pipelines live in tests/support/ (not scanned)


def declared_paths(dvc: dict) -> set[Path]:
    """Every deps/outs/metrics/plots path of every stage that is not code."""
    paths = set()
    for stage in dvc["stages"].values():
        for kind in ("deps", "outs", "metrics", "plots"):
            for entry in stage.get(kind) or []:
                path = next(iter(entry)) if isinstance(entry, dict) else entry
                if not path.startswith(CODE):
                    paths.add(Path(path))
    return paths


def test_every_dvc_yaml_artifact_is_in_the_catalog_and_back():
    declared = declared_paths(yaml.safe_load((ROOT / "dvc.yaml").read_text()))
    catalog = artifacts.pipeline_paths()
    assert sorted(map(str, declared - catalog)) == [], "dvc.yaml declares paths pipeline/artifacts.py does not name"
    assert sorted(map(str, catalog - declared)) == [], "pipeline/artifacts.py names paths no dvc.yaml stage declares"


def test_the_comparison_sees_a_path_missing_from_the_catalog():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    dvc["stages"]["blip"]["outs"].append("data/blips/tool_invoke.extra.npy")
    assert declared_paths(dvc) - artifacts.pipeline_paths() == {Path("data/blips/tool_invoke.extra.npy")}


def test_no_product_module_spells_an_artifact_path():
    spelled = re.compile("|".join(re.escape(f'"{path}"') for path in sorted(map(str, artifacts.named_paths()))))
    assert spelled.search('CODES_NPY = Path("data/blips/tool_invoke.codes.npy")')  # what the scan looks for
    offenders = [f"{py.relative_to(ROOT)}:{number}" for package in PRODUCT for py in sorted((ROOT / package).rglob("*.py"))
                 if py.name != "artifacts.py" and str(py.relative_to(ROOT)) not in FIXTURES
                 for number, line in enumerate(py.read_text().splitlines(), 1) if spelled.search(line)]
    assert offenders == []
