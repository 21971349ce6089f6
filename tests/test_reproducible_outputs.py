"""A forced rerun with nothing changed writes every data output byte for byte (DVC's md5s in dvc.lock agree).

What one invocation measured and did - wall clock, memory, the checkpoint it resumed from, its cache hits
(`pipeline.io.INVOCATION_KEYS`) - lives only in each stage's `reports/metrics/<stage>.timings.json` and in
the headline metrics (DVC metrics, never cached), so it cannot make two identical runs differ. Compared:
every `outs` entry of every stage of the smoke profile, in dvc.yaml's order (the details documents,
DVCLive's summary and the checkpoints included); the model card too, but for its three lines quoting
train's timings (it states how long training took, by design).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.artifacts import MODEL_CARD_MD
from pipeline.io import INVOCATION_KEYS
from pipeline.workspace import profile_params, source_files

pytestmark = pytest.mark.reproducibility  # ~7 min on the shared 2-core machine: not part of `make test`

# The card's lines that quote train.timings.json (tasks/report.py, "Train <label>: <value>"; a run resumed at its
# last step trains no token, so it has no tokens/s line).
CARD_TIMING_LINE = re.compile(r"^- Train (tokens/s|peak memory GiB|seconds): .*\n", re.MULTILINE)


@pytest.fixture(autouse=True)
def only_when_selected(request):
    if "reproducibility" not in (request.config.getoption("-m") or ""):
        pytest.skip("run with: .venv/bin/python -m pytest -m reproducibility tests/test_reproducible_outputs.py")


def dvc(ws: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=ws, env=env, capture_output=True, text=True,
                          timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def stages(ws: Path) -> list[str]:
    return list(yaml.safe_load((ws / "dvc.yaml").read_text())["stages"])  # in dependency order


def data_outputs(ws: Path) -> dict[str, str]:
    """path -> md5 in dvc.lock of every stage's outs (metrics and plots are not outs)."""
    lock = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    pipeline = yaml.safe_load((ws / "dvc.yaml").read_text())["stages"]
    found = {}
    for name, spec in pipeline.items():
        outs = {entry if isinstance(entry, str) else next(iter(entry)) for entry in spec.get("outs", [])}
        for out in lock[name]["outs"]:
            if out["path"] in outs:
                found[out["path"]] = out["md5"]
    return found


def card_without_timings(ws: Path) -> str:
    return CARD_TIMING_LINE.sub("", (ws / MODEL_CARD_MD).read_text())


def test_a_forced_rerun_of_each_stage_reproduces_its_data_outputs_byte_for_byte(repo_root, tmp_path):
    ws = tmp_path / "ws"
    for rel in source_files(repo_root):
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo_root / rel, ws / rel)
    (ws / "params.yaml").write_text(yaml.safe_dump(profile_params(repo_root, "smoke"), sort_keys=False))
    for git in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "ws"]):
        subprocess.run(["git", *git], cwd=ws, check=True)  # DVCLive (train) needs a commit
    dvc(ws, "repro")
    first, first_card = data_outputs(ws), card_without_timings(ws)
    every_out = {str(MODEL_CARD_MD), "models/final", "models/checkpoints", "reports/train/metrics.json",
                 "data/preprocessed/train", "reports/eval/eval_classes.jsonl", "reports/metrics/tts.details.json",
                 "reports/metrics/preprocess.details.json", "reports/metrics/eval_screen.details.json"}
    assert every_out <= set(first)
    assert len(CARD_TIMING_LINE.findall((ws / MODEL_CARD_MD).read_text())) >= 1

    changed = {}
    for stage in stages(ws):
        dvc(ws, "repro", "--force", "--single-item", stage)
        now = data_outputs(ws)
        changed[stage] = sorted(path for path in first if now.get(path) != first[path] and path != str(MODEL_CARD_MD))
        first.update(now)  # each stage is judged on its own outputs
    assert not {stage: paths for stage, paths in changed.items() if paths}, "a forced rerun changed its outputs"
    assert card_without_timings(ws) == first_card

    for details in sorted((ws / "reports" / "metrics").glob("*.details.json")):
        held = INVOCATION_KEYS & set(json.loads(details.read_text()))
        assert not held, f"{details}: a reading of one invocation in a cached output: {sorted(held)}"
    tts_run = json.loads((ws / "reports" / "metrics" / "tts.timings.json").read_text())
    assert tts_run["hit_rate"] == 1.0 and tts_run["syntheses"] == 0  # the rerun voiced nothing: all from the cache
    train_run = json.loads((ws / "reports" / "metrics" / "train.timings.json").read_text())
    assert train_run["resumed_from_step"] is not None  # the rerun resumed from the final checkpoint ...
    assert (ws / "models" / "final" / "model.safetensors").exists()  # ... and exported the same weights
