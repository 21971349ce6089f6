"""The rehearsal's measuring and planning arithmetic (the full-size run itself: tests/test_rehearsal.py, -m rehearsal)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.rehearsal import (complete_checkpoints, gpu_train_rate, make_plan, measure, render_markdown, stage_order,
                                stage_outputs, with_rehearsal_section)

REPO = Path(__file__).resolve().parents[2]


def test_measure_reports_a_child_s_peak_rss_and_exit_status(tmp_path):
    """Measured from a small parent, as the driver is (a child's peak RSS includes its parent's at the fork)."""
    script = f"""
import json, sys
from pathlib import Path
from pipeline.rehearsal import measure
assert "torch" not in sys.modules, "the driver must stay small"
hold = "block = bytearray(300 * 1024 * 1024); block[::4096] = b'x' * len(block[::4096]); raise SystemExit(3)"
big = measure([sys.executable, "-c", hold], Path({str(tmp_path)!r}), {{}}, Path({str(tmp_path)!r}) / "log")
small = measure([sys.executable, "-c", "pass"], Path({str(tmp_path)!r}), {{}}, Path({str(tmp_path)!r}) / "log")
print(json.dumps([big.returncode, big.peak_rss_gib, small.returncode, small.peak_rss_gib]))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    big_exit, big_rss, small_exit, small_rss = json.loads(done.stdout)
    assert big_exit == 3 and small_exit == 0
    assert big_rss > 0.28 and small_rss < 0.2  # the 300 MB it touched; a bare interpreter


def test_complete_checkpoints_are_the_renamed_folders_with_a_manifest(tmp_path):
    for name, manifest in (("step-0000001", True), ("step-0000002", False), (".tmp-step-0000003", True)):
        (tmp_path / name).mkdir()
        if manifest:
            (tmp_path / name / "trainer_state.json").write_text("{}")
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step-0000001"]


def test_stage_outputs_and_order_come_from_dvc_yaml():
    dvc_yaml = yaml.safe_load((REPO / "dvc.yaml").read_text())
    order = stage_order(dvc_yaml)
    assert order[0] == "base_models" and order.index("preprocess") < order.index("train") < order.index("report")
    outputs = stage_outputs(dvc_yaml, "train")
    assert {"models/final", "models/checkpoints", "reports/metrics/train.json"} <= set(outputs)


MEASURED = {
    "rates": {"mimi_audio_s_per_s": 2.0, "mimi_encode_seconds": 40.0, "mimi_audio_seconds_per_row": 4.0,
              "tts_audio_s_per_s": 1.5, "tts_audio_seconds_per_row": 6.0, "train_tokens_per_s": 10.0,
              "train_tokens_per_row": 200.0, "checkpoint_write_s": 36.0, "decode_tokens_per_s_stock": 2.0},
    "rows": {"train_rows": 16, "eval_rows": 4, "heldout_rows": 4, "novel_facts_rows": 4, "all_rows": 28,
             "train_eval_rows": 20},
    "stages": {"blip": {"wall_s": 3.6}, "blip_codes": {"wall_s": 7.2}, "report": {"wall_s": 3.6},
               "dataset": {"wall_s": 28.0}, "preprocess": {"wall_s": 60.0}, "eval_blip": {"wall_s": 4.0},
               "eval_screen": {"wall_s": 78.0}},
    "bytes": {"base_models": 3_000, "checkpoint": 9_000, "final_model": 3_100, "tts_cache": 280,
              "codes_cache": 20, "preprocessed": 200},
}
PRODUCTION = {"dataset": {"train_size": 3000, "eval_size": 400, "heldout_per_class": 30, "novel_facts": 60},
              "train": {"batch_size": 2, "num_processes": 2, "max_steps": 1120, "save_interval": 100,
                        "keep_checkpoints": 2},
              "eval_classes": {"max_new_tokens": 512}, "eval_narration": {"max_new_tokens": 512}}


def test_plan_scales_each_stage_by_what_its_cost_depends_on():
    plan = make_plan(MEASURED, PRODUCTION, None)
    hours = plan["cpu_hours"]
    assert plan["production"]["all_rows"] == 3580 and plan["production"]["checkpoint_saves"] == 12
    assert hours["base_models"] is None and hours["blip"] == pytest.approx(0.001)
    assert hours["dataset"] == pytest.approx(28.0 * 3580 / 28 / 3600)
    assert hours["tts"] == pytest.approx(6.0 * 3580 / 1.5 / 3600)
    assert hours["preprocess"] == pytest.approx((4.0 * 3400 / 2.0 + 20.0 * 3400 / 20) / 3600)
    # 1120 steps x 4 rows x 200 tokens at 10 tokens/s, plus 12 checkpoint writes of 36 s
    assert plan["production"]["train_tokens"] == 896_000
    assert hours["train"] == pytest.approx((896_000 / 10 + 12 * 36) / 3600)
    assert hours["eval_classes"] == pytest.approx(120 * 512 / 2.0 / 3600)
    assert hours["eval_narration"] == pytest.approx(60 * 512 / 2.0 / 3600)
    assert hours["eval_screen"] == pytest.approx(78.0 * 120 / 4 / 3600)  # a few frames a row: scales with the rows
    assert plan["gpu_train"] is None


def test_disk_plan_counts_keep_plus_one_checkpoints_and_the_caches_per_row():
    disk = make_plan(MEASURED, PRODUCTION, None)["disk_bytes"]
    assert disk["checkpoints"] == 3 * 9_000 and disk["final_model"] == 3_100 and disk["base_models"] == 3_000
    assert disk["tts_cache"] == 10 * 3580 and disk["codes_cache"] == 1 * 3400 and disk["preprocessed"] == 10 * 3400
    assert disk["total"] == 27_000 + 3_100 + 3_000 + 35_800 + 3_400 + 34_000
    assert disk["total_with_dvc_cache"] == disk["total"] + 3_000 + 3_100 + 35_800 + 3_400 + 34_000


def test_gpu_training_uses_the_bench_results_and_names_the_card(tmp_path):
    (tmp_path / "train_gpu_x.json").write_text(json.dumps(
        {"context_length": 512, "results": [{"variant": "stock", "device": "NVIDIA H200", "tokens_per_s": 4000.0},
                                            {"variant": "ours", "device": "NVIDIA H200", "tokens_per_s": 5000.0}]}))
    gpu = gpu_train_rate(tmp_path)
    assert gpu["tokens_per_s"] == 5000.0 and gpu["device"] == "NVIDIA H200" and gpu["source"].endswith("train_gpu_x.json")
    plan = make_plan(MEASURED, PRODUCTION, gpu)
    assert plan["gpu_train"]["card"] == "NVIDIA H200"
    assert plan["gpu_train"]["train_hours_one_card"] == pytest.approx(896_000 / 5000 / 3600)
    assert gpu_train_rate(REPO / "bench" / "results")["device"]  # the repo's own GPU bench results name their card


def markdown_report() -> dict:
    plan = make_plan(MEASURED, PRODUCTION, None)
    stages = {name: {"wall_s": 1.0, "peak_rss_gib": 0.5, "bytes_written": 10, "returncode": 0}
              for name in ("base_models", "train", "report")}
    report = {"host": {"cpus": 2, "device": "cpu", "torch": "2.11.0", "load_average_before": [1, 1, 1],
                       "load_average_after": [2, 2, 2]}, "total_wall_s": 600, "peak_rss_gib": 13.5,
              "stages": stages, "bytes": {**MEASURED["bytes"], "final_weights": 2_900},
              "rates": {**MEASURED["rates"], "decode_items_per_s_stock": 0.1, "decode_items_per_s_batched": 0.3},
              "train": {"killed": {"wall_s": 100, "peak_rss_gib": 13.0}, "killed_at_step": 1, "resumed_from_step": 1},
              "plan": plan}
    return report


def test_markdown_shows_every_stage_and_the_plan():
    text = render_markdown(markdown_report())
    assert "| train (killed after step 1) | 100 |" in text and "| train (resumed from step 1) |" in text
    assert "| base_models | n/a (download) |" in text and "| checkpoints | 27,000 |" in text


def test_the_tables_go_on_the_model_card_as_its_last_section_once():
    tables = render_markdown(markdown_report())
    card = "# Model card\n\n## Training\n\n- steps: 3\n"
    with_table = with_rehearsal_section(card, tables)
    assert with_table.startswith(card) and with_table.count("## Full-size rehearsal") == 1
    assert "\n### Plan: PROFILE=v4.1 on this machine" in with_table  # the tables' headings one level down
    assert "| train (killed after step 1) | 100 |" in with_table
    assert with_rehearsal_section(with_table, tables) == with_table  # a second rehearsal replaces the section
