"""The sweep's "v4 vs v4.1 arm" table: both arms' experiments side by side, with the published columns."""
from __future__ import annotations

import yaml

from pipeline.arms import arms_among, arms_section

BASELINES = {"classes": {"overall": {"v4": 93.3, "v4.1": 95.0}, "tool_match": {"v4": 86.7, "v4.1": 100.0}},
             "blip": {"v4.1": {"cb0": 95.0}}}
V41 = {"name": "v4.1-default", "kind": "experiment", "overrides": "", "overall_accuracy": 0.967,
       "tool_match_accuracy": 1.0, "cb0_match_rate": 0.9, "false_positive_rate": 1 / 60}
V4 = {"name": "v4-no-blip", "kind": "experiment", "overrides": "preprocess.blip_on=[]", "overall_accuracy": 0.9,
      "tool_match_accuracy": 0.8, "cb0_match_rate": 0.05, "false_positive_rate": None}
OTHER = {"name": "long-240ms", "kind": "experiment", "overrides": "blip.duration_ms=240", "overall_accuracy": 0.5}


def test_both_arms_of_a_sweep_make_the_table_with_the_blips_effect():
    section = "\n".join(arms_section(arms_among([OTHER, V4, V41], ["tool_match"]), BASELINES))
    assert "| Overall accuracy | 90.0% | 96.7% | +6.7 | 93.3% | 95.0% |" in section
    assert "| tool_match accuracy | 80.0% | 100.0% | +20.0 | 86.7% | 100.0% |" in section
    assert "| cb0 blip match on tool_match | 5.0% | 90.0% | +85.0 | — | 95.0% |" in section
    assert "| Detector false positives on non_tool/tool_miss | unavailable | 1.7% | — | — | — |" in section
    assert "v4 arm: experiment 'v4-no-blip'; v4.1 arm: experiment 'v4.1-default'" in section


def test_without_both_arms_there_is_no_table():
    assert arms_section(arms_among([OTHER, V41], ["tool_match"]), BASELINES) == []
    failed = {**V4, "kind": "failed"}
    more_than_the_blip = {**V4, "overrides": "preprocess.blip_on=[] blip.duration_ms=240"}
    assert arms_section(arms_among([failed, more_than_the_blip, V41], ["tool_match"]), BASELINES) == []
    # a workspace whose own blip_on is neither arm: its unmodified experiment is no arm
    assert arms_section(arms_among([V4, V41], ["tool_match", "turn1_ack"]), BASELINES) == []


def test_the_sweeps_markdown_report_carries_the_table(tmp_path, repo_root):
    from flows.sweep import write_leaderboard

    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"preprocess": {"blip_on": ["tool_match"]}}))
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs/baselines.yaml").write_text((repo_root / "configs/baselines.yaml").read_text())
    write_leaderboard(str(tmp_path), [{**V41, "rank": 1}, {**V4, "rank": 2}])
    report = (tmp_path / "reports/sweep/leaderboard.md").read_text()
    assert "## v4 vs v4.1 arm" in report and "| Overall accuracy | 90.0% | 96.7% | +6.7 |" in report
