"""The flow's params pre-flight (flows/params_check.py) on the real pipeline: the repo's params pass it, every
profile's too, and a typo in one group is one line naming the stage and the key."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from flows.params_check import check_stage_params
from pipeline.workspace import deep_merge

REPO = Path(__file__).resolve().parents[2]
STAGES = list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])


def workspace(tmp_path: Path, overlay: dict) -> Path:
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    params = deep_merge(yaml.safe_load((REPO / "params.yaml").read_text()), overlay)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return tmp_path


@pytest.mark.parametrize("profile", ["production", "smoke", "learn", "rehearsal"])
def test_every_stage_of_every_profile_passes_the_preflight(tmp_path, profile):
    """A stage that parses a view of another stage's group (eval_screen reads eval_classes' run keys) must not
    make the pre-flight refuse that group's other keys."""
    overlay = {} if profile == "production" else yaml.safe_load((REPO / "profiles" / f"{profile}.yaml").read_text())
    assert check_stage_params(workspace(tmp_path, overlay), STAGES) == []


def test_a_typo_is_one_line_naming_the_stage_and_the_key(tmp_path):
    root = workspace(tmp_path, {})
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["eval_classes"]["max_new_tokenz"] = 48
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    problems = check_stage_params(root, STAGES)
    assert problems and all("'eval_classes.max_new_tokenz' is not a known key" in line for line in problems)
    assert {line.split(":")[0] for line in problems} >= {"eval_classes", "eval_screen", "report"}
