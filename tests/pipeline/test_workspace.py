"""Profile workspaces: runs/<profile>/ is a DVC workspace of the working tree; params.yaml is never touched."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.params import ParamsError
from pipeline.workspace import deep_merge, profile_params, source_files, sync


def test_overlay_merges_key_by_key():
    base = {"blip": {"tones_hz": [1200, 1800], "duration_ms": 160}, "train": {"steps": 1120}}
    merged = deep_merge(base, {"blip": {"duration_ms": 240}})
    assert merged == {"blip": {"tones_hz": [1200, 1800], "duration_ms": 240}, "train": {"steps": 1120}}
    assert base["blip"]["duration_ms"] == 160  # the base is not modified


def test_overlay_typo_is_an_error_naming_the_key():
    with pytest.raises(ParamsError, match="blip.duraton_ms"):
        deep_merge({"blip": {"duration_ms": 160}}, {"blip": {"duraton_ms": 240}})


def test_smoke_profile_fabricates_models(repo_root):
    params = profile_params(repo_root, "smoke")
    assert params["base_models"]["source"] == "fabricate"
    assert yaml.safe_load((repo_root / "params.yaml").read_text())["base_models"]["source"] == "hub"


def test_unknown_profile_lists_the_known_ones(repo_root):
    with pytest.raises(ParamsError, match="known: .*smoke"):
        profile_params(repo_root, "nightly-typo")


@pytest.fixture()
def scratch_repo(repo_root, tmp_path) -> Path:
    """A git repo holding the working tree's files, as a fresh clone plus local edits would."""
    repo = tmp_path / "repo"
    for rel in source_files(repo_root) + ["params.yaml"]:
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo_root / rel, repo / rel)
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    return repo


def test_sync_copies_code_merges_params_and_shares_the_cache(scratch_repo):
    params_before = (scratch_repo / "params.yaml").read_bytes()
    workspace = sync(scratch_repo, "smoke")
    assert workspace.root == scratch_repo / "runs" / "smoke"
    assert (workspace.root / "dvc.yaml").read_bytes() == (scratch_repo / "dvc.yaml").read_bytes()
    assert yaml.safe_load((workspace.root / "params.yaml").read_text())["base_models"]["source"] == "fabricate"
    assert (scratch_repo / "params.yaml").read_bytes() == params_before
    assert str(scratch_repo / ".dvc" / "cache") in (workspace.root / ".dvc" / "config.local").read_text()

    (scratch_repo / "tasks" / "blip.py").unlink()
    again = sync(scratch_repo, "smoke")
    assert again.removed == 1 and not (workspace.root / "tasks" / "blip.py").exists()


@pytest.mark.slow
def test_dvc_repro_in_the_workspace_runs_then_skips(scratch_repo):
    """Issue 2's done-when: `dvc repro blip_codes` works on its own and skips when nothing changed."""
    workspace = sync(scratch_repo, "smoke")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    repro = lambda: subprocess.run(["dvc", "repro", "blip_codes"], cwd=workspace.root, env=env,
                                   capture_output=True, text=True)
    first = repro()
    assert first.returncode == 0, first.stdout + first.stderr
    for artifact in ("tool_invoke.wav", "tool_invoke.codes.npy", "tool_invoke.preview.wav", "tool_invoke.signature.json"):
        assert (workspace.root / "data" / "blips" / artifact).exists()
    second = repro()
    assert second.returncode == 0
    for stage in ("base_models", "blip", "blip_codes"):
        assert f"Stage '{stage}' didn't change, skipping" in second.stdout
