"""`dvc metrics show` stays a screen wide: each stage's DVC metrics file holds a few flat headline numbers.

DVC lists every metrics file in one table with a column per distinct key of all of them, so one nested
document (per-class counts, histograms, per-position rates) made it thousands of characters wide. The
stages write everything to ``<stage>.details.json`` beside the metrics file (``pipeline.io.write_metrics``),
a DVC-cached out: an uncached one (not a metric or plot) would turn DVC's run cache off for the stage.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.io import details_path

REPO = Path(__file__).resolve().parents[1]
MAX_WIDTH = 200  # characters of the widest line of `dvc metrics show`
MAX_KEYS = 5

# What each stage's headline() reads from its full report, with realistic widths (a real run's counts and rates).
DETAILS = {
    "dataset": {"bad_fraction": 0.0, "counts": {s: {"total": 3000} for s in ("train", "eval", "heldout", "novel_facts")}},
    "preprocess": {"splits": {"train": {"written": 3000}, "eval": {"written": 400}},
                   "blipped_turns": {"tool_match": {"turns": 1200}, "turn1_ack": {"turns": 600}},
                   "blip_prefix_match_rate": 0.998333},
    "train": {"final_train_loss": 0.70426197, "final_val_loss": 0.90129981, "tokens_per_s": 12345.678901,
              "padding_fraction": 0.123456},
    "eval_classes": {"n_evaluated": 120, "overall_accuracy": 0.966666, "per_class": {"tool_match": 1.0}},
    "eval_narration": {"n": 60, "faithful_rate": 0.966666, "mean_fact_coverage": 0.983333},
    "eval_blip": {"n_tool_match": 40, "n_negative": 60, "cb0_match_rate": 0.95, "detector_true_positive_rate": 0.95,
                  "false_positive_rate": 0.016666, "decision_latency_ms": 160.0},
}


def headline(stage: str, details: dict) -> dict:
    """The stage's own headline function (tasks never import each other; the test may)."""
    from tasks import dataset, eval_blip, eval_classes, eval_narration, preprocess, train, tts

    if stage == "tts":
        return tts.TTSMetrics(engine="espeak-ng", model_hash="x", requests=24000).headline()
    module = {"dataset": dataset, "preprocess": preprocess, "train": train, "eval_classes": eval_classes,
              "eval_narration": eval_narration, "eval_blip": eval_blip}[stage]
    return module.headline(details)


def declared_metrics() -> dict[str, list[str]]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: [next(iter(e)) if isinstance(e, dict) else e for e in spec.get("metrics", [])]
            for name, spec in stages.items() if spec.get("metrics")}


def cached_outs(stage: str) -> list[str]:
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    return [e if isinstance(e, str) else next(iter(e)) for e in spec.get("outs", [])
            if isinstance(e, str) or (next(iter(e.values())) or {}).get("cache", True)]


def test_every_stage_with_metrics_keeps_its_full_report_beside_them_in_the_dvc_cache():
    for stage, paths in declared_metrics().items():
        for path in paths:
            assert str(details_path(path)) in cached_outs(stage), f"{stage}: {details_path(path)} is not a cached out"


@pytest.fixture
def workspace(tmp_path):
    """The project's dvc.yaml in a fresh git + DVC repo, every metrics file written as its stage writes it."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    for stage, paths in declared_metrics().items():
        for path in paths:
            target = tmp_path / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(headline(stage, DETAILS.get(stage, {}))))
    return tmp_path


def test_each_metrics_file_is_a_few_flat_numbers(workspace):
    for paths in declared_metrics().values():
        for path in paths:
            numbers = json.loads((workspace / path).read_text())
            assert 0 < len(numbers) <= MAX_KEYS, path
            assert all(v is None or isinstance(v, (int, float)) for v in numbers.values()), (path, numbers)


def test_no_two_metrics_files_share_a_key(workspace):
    """`dvc exp show` would name a shared key's columns `<path>:<key>`, 35 characters each."""
    keys = [key for paths in declared_metrics().values() for path in paths
            for key in json.loads((workspace / path).read_text())]
    assert sorted(keys) == sorted(set(keys))


def test_dvc_metrics_show_fits_a_screen(workspace):
    shown = subprocess.run([sys.executable, "-m", "dvc", "metrics", "show"], cwd=workspace, check=True,
                           capture_output=True, text=True).stdout
    lines = shown.splitlines()
    assert len(lines) == 1 + sum(map(len, declared_metrics().values()))  # a header and one row per file
    assert max(map(len, lines)) <= MAX_WIDTH, shown


@pytest.mark.parametrize("stage", ["dataset", "eval_classes", "eval_narration", "eval_blip", "eval_screen"])
def test_the_stage_keeps_dvcs_run_cache(stage):
    """DVC restores a stage from its run cache (a sweep going back to an earlier variant) only when every out
    is cached or a metric/plot (dvc/stage/__init__.py: ``no_cache_outs``); these stages have nothing persistent."""
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    assert sorted(map(str, (e if isinstance(e, str) else next(iter(e)) for e in spec["outs"]))) == sorted(cached_outs(stage))
