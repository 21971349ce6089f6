"""The full-size rehearsal, end to end (`pytest -m rehearsal`; ~20+ min on 2 cores, ~14 GB RAM, ~30 GB disk).

Not part of `make test`: run it before a first GPU night, after changing the training loop, the
checkpoint format, the model loading or the base model (README "Before a first GPU night").
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WORKSPACE = REPO / "runs" / "rehearsal"
FULL_PARAMETERS = 1_470_291_072  # the config's count; tied tensors are stored once: 2,907,152,264 bytes of bf16

pytestmark = pytest.mark.rehearsal


@pytest.fixture(scope="module")
def report() -> dict:
    done = subprocess.run([sys.executable, "-m", "pipeline.rehearsal", "--repo", str(REPO)], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((WORKSPACE / "reports" / "rehearsal.json").read_text())


def test_every_stage_ran_at_production_shapes_within_memory(report):
    import yaml

    order = list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    assert set(report["stages"]) == set(order) and all(s["returncode"] == 0 for s in report["stages"].values())
    assert report["peak_rss_gib"] <= 20
    config = json.loads((WORKSPACE / "models" / "final" / "config.json").read_text())
    reference = json.loads((REPO / "configs" / "lfm25-audio-1.5b.reconstructed.json").read_text())
    assert config["lfm"] == reference["lfm"] and config["encoder"] == reference["encoder"]
    # bf16: two bytes a parameter, ~2.94 GB (tied tensors stored once or twice as the base file has them)
    assert 2 * FULL_PARAMETERS * 0.98 < report["bytes"]["final_weights"] < 2 * FULL_PARAMETERS * 1.05


def test_a_full_checkpoint_was_written_and_the_killed_run_resumed_from_it(report):
    train = report["train"]
    assert train["killed"]["returncode"] == -9 and train["killed_at_step"] == 1
    assert train["resumed_from_step"] == 1 and train["steps"] == 3
    # bf16 weights + AdamW's two bf16 moments (none for weights that got no gradient: 8,587,637,787 bytes measured)
    weights = report["bytes"]["final_weights"]
    assert 2.9 * weights < report["bytes"]["checkpoint"] < 3.05 * weights


def test_rates_and_the_plan_are_measured(report):
    rates = report["rates"]
    for key in ("mimi_audio_s_per_s", "tts_audio_s_per_s", "train_tokens_per_s", "decode_items_per_s_stock",
                "decode_items_per_s_batched", "checkpoint_write_s"):
        assert rates[key] and rates[key] > 0, key
    plan = report["plan"]
    assert all(h > 0 for name, h in plan["cpu_hours"].items() if name != "base_models")
    assert plan["disk_bytes"]["checkpoints"] == (plan["production"]["keep_checkpoints"] + 1) * report["bytes"]["checkpoint"]
    assert (WORKSPACE / "reports" / "rehearsal.md").read_text().count("|") > 50
    card = (WORKSPACE / "reports" / "model_card.md").read_text()
    assert card.count("## Full-size rehearsal") == 1 and "### Plan: PROFILE=v4.1 on this machine" in card
    status = subprocess.run([sys.executable, "-m", "dvc", "status", "report"], cwd=WORKSPACE, capture_output=True,
                            text=True)
    assert "changed outs" not in status.stdout, status.stdout  # the card with its table is report's recorded output
