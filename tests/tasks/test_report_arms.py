"""Stage report: the "v4 vs v4.1 arm" section (whenever both arms' metrics exist) and the learn profile's header."""
from __future__ import annotations

import csv

from tests.tasks.test_report import PARAMS, render, workspace

LEADERBOARD_COLUMNS = ["rank", "name", "kind", "overall_accuracy", "tool_match_accuracy", "cb0_match_rate",
                       "false_positive_rate", "prescreen_false_trigger_rate", "overrides", "note"]


def write_leaderboard(root, rows):
    path = root / "reports/sweep/leaderboard.csv"
    path.parent.mkdir(parents=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LEADERBOARD_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


V4_ARM = {"name": "v4-arm", "kind": "experiment", "overall_accuracy": 0.9, "tool_match_accuracy": 0.8,
          "cb0_match_rate": 0.05, "false_positive_rate": "", "overrides": "preprocess.blip_on=[]"}
OTHER = {"name": "long-240ms", "kind": "experiment", "overall_accuracy": 0.5, "tool_match_accuracy": 0.5,
         "cb0_match_rate": 0.5, "false_positive_rate": 0.5, "overrides": "blip.duration_ms=240"}


def arms_section(card: str) -> str:
    return card.split("## v4 vs v4.1 arm")[1].split("\n## ")[0] if "## v4 vs v4.1 arm" in card else ""


def test_a_v41_run_with_a_swept_v4_arm_shows_both_arms(tmp_path, repo_root):
    root = workspace(tmp_path, repo_root)
    write_leaderboard(root, [OTHER, V4_ARM])
    section = arms_section(render(root))
    assert "| Overall accuracy | 90.0% | 96.7% | +6.7 | 93.3% | 95.0% |" in section
    assert "| tool_match accuracy | 80.0% | 100.0% | +20.0 | 86.7% | 100.0% |" in section
    assert "| cb0 blip match on tool_match | 5.0% | 90.0% | +85.0 | — | 95.0% |" in section
    assert "| Detector false positives on non_tool/tool_miss | unavailable | 1.7% | — | — | — |" in section
    assert "v4 arm: sweep experiment 'v4-arm'" in section and "v4.1 arm: this run" in section


def test_a_v4_run_with_a_swept_v41_arm_shows_both_arms(tmp_path, repo_root):
    params = {**PARAMS, "preprocess": {"blip_on": []}}
    root = workspace(tmp_path, repo_root, params=params)
    write_leaderboard(root, [{**V4_ARM, "name": "v41-arm", "overrides": "preprocess.blip_on=[tool_match]"}])
    section = arms_section(render(root))
    assert "v4 arm: this run" in section and "v4.1 arm: sweep experiment 'v41-arm'" in section


def test_without_both_arms_there_is_no_arm_section(tmp_path, repo_root):
    root = workspace(tmp_path, repo_root)
    assert "v4 vs v4.1 arm" not in render(root)  # no sweep at all
    write_leaderboard(root, [OTHER, {**V4_ARM, "kind": "failed"},
                             {**V4_ARM, "overrides": "preprocess.blip_on=[] blip.duration_ms=240"}])
    assert "v4 vs v4.1 arm" not in render(root)  # a failed run, an arm that changes more than the blip
    turn1 = {**PARAMS, "preprocess": {"blip_on": ["tool_match", "turn1_ack"]}}
    root = workspace(tmp_path / "turn1", repo_root, params=turn1)
    write_leaderboard(root, [V4_ARM])
    assert "v4 vs v4.1 arm" not in render(root)  # this run is neither arm


def test_the_learn_card_says_its_numbers_are_an_in_sample_fit(tmp_path, repo_root):
    learn = {**PARAMS, "base_models": {"source": "fabricate"}, "report": {"profile": "learn"},
             "train": {**PARAMS["train"], "max_steps": 1200}, "dataset": {"train_size": 24},
             "eval_classes": {"rows": "data/dataset/train.jsonl"}}
    head = render(workspace(tmp_path, repo_root, params=learn)).split("\n## ")[0]
    assert "IN-SAMPLE FIT OF A TINY MODEL: IT PROVES THE MECHANISM, NOT QUALITY" in head
    assert "1200 CPU steps" in head and "24 generated training rows" in head
    assert "`eval_classes.rows: data/dataset/train.jsonl`" in head
    assert "SMOKE" not in head
