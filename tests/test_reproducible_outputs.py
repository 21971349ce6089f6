"""A forced rerun with nothing changed writes every data output byte for byte (DVC's md5s in dvc.lock agree).

Wall-clock readings (`seconds`, `tokens_per_s`, `peak_memory_gib`, ...) live only in each stage's
`reports/metrics/<stage>.timings.json` (a DVC metric, never cached), so they cannot make two identical
runs differ. Compared: every `outs` entry of dvc.yaml except the stage reports `reports/metrics/*`
(the cache hit counts of tts/preprocess differ by design between a first run and a rerun) - metrics and
plots are not outs. The CPU stages of the smoke profile up to tts; the GPU stages are checked by
`make run` + the command in docs/reliability.md.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.io import TIMING_KEYS
from pipeline.workspace import profile_params, source_files

pytestmark = pytest.mark.reproducibility  # 15 min on the shared 2-core machine: not part of `make test`


@pytest.fixture(autouse=True)
def only_when_selected(request):
    if "reproducibility" not in (request.config.getoption("-m") or ""):
        pytest.skip("run with: .venv/bin/python -m pytest -m reproducibility tests/test_reproducible_outputs.py")

STAGES = ["dataset", "blip", "base_models", "blip_codes", "tts"]


def dvc(ws: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=ws, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def data_outputs(ws: Path) -> dict[str, str]:
    """path -> md5 in dvc.lock of every data output (outs, not the reports under reports/metrics/)."""
    lock = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    pipeline = yaml.safe_load((ws / "dvc.yaml").read_text())["stages"]
    found = {}
    for name in STAGES:
        outs = {entry if isinstance(entry, str) else next(iter(entry)) for entry in pipeline[name].get("outs", [])}
        for out in lock[name]["outs"]:
            if out["path"] in outs and not out["path"].startswith("reports/metrics/"):
                found[out["path"]] = out["md5"]
    return found


def test_a_forced_rerun_of_each_stage_reproduces_its_data_outputs_byte_for_byte(repo_root, tmp_path):
    ws = tmp_path / "ws"
    for rel in source_files(repo_root):
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo_root / rel, ws / rel)
    (ws / "params.yaml").write_text(yaml.safe_dump(profile_params(repo_root, "smoke"), sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    dvc(ws, "repro", *STAGES)
    first = data_outputs(ws)
    assert {"data/dataset/train.jsonl", "data/tts/train.jsonl", "data/blips/tool_invoke.codes.npy"} <= set(first)
    for stage in STAGES:
        dvc(ws, "repro", "--force", "--single-item", stage)
    assert data_outputs(ws) == first
    for details in sorted((ws / "reports" / "metrics").glob("*.details.json")):
        assert not TIMING_KEYS & set(json.loads(details.read_text())), f"{details}: a timing field in a cached output"
    timings = json.loads((ws / "reports" / "metrics" / "tts.timings.json").read_text())
    assert set(timings) == {"wall_seconds"} and timings["wall_seconds"] > 0
