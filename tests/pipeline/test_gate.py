"""The promotion gate: floors always, allowed drops against a champion scored on the same rows, nothing unavailable
read as zero; the `promote` params group refuses unknown keys and impossible thresholds in one line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.gate import (HELD_BACK, PROMOTED, UNCHANGED, Champion, GateError, PromoteParams, champion_from_record,
                           judge, read_eval_set, read_night_metrics, unchanged)
from pipeline.params import ParamsError, parse_params
from pipeline.workspace import profile_params

REPO = Path(__file__).resolve().parents[2]
RULES = {"min_cb0_tpr": 0.8, "min_blip_tpr": 0.8, "max_fpr": 0.2, "min_faithful": None, "min_accuracy": 0.5,
         "max_latency_ms": None, "max_accuracy_drop": 0.05, "max_class_accuracy_drop": 0.1, "max_cb0_tpr_drop": 0.1,
         "max_blip_tpr_drop": 0.1, "max_fpr_rise": 0.05, "max_latency_rise_ms": 80}
EVAL_SET = {"heldout_hash": "h1", "novel_facts_hash": "n1"}


def write_night(root: Path, *, tpr: float = 1.0, cb0: float = 1.0, fpr: float = 0.0, accuracy: float = 0.9,
                tool_match: float = 1.0, heldout: str = "h1", latency: float | None = 160.0) -> Path:
    """The detail reports the eval and dataset stages write, with the numbers given."""
    metrics = root / "reports/metrics"
    metrics.mkdir(parents=True, exist_ok=True)
    (metrics / "eval_classes.details.json").write_text(json.dumps({
        "overall_accuracy": accuracy, "per_class": {"tool_match": {"accuracy": tool_match, "n": 7}, "non_tool": 0.8}}))
    (metrics / "eval_blip.details.json").write_text(json.dumps({
        "cb0_match_rate": cb0, "detector_true_positive_rate": tpr, "false_positive_rate": fpr,
        "decision_latency_ms": latency}))
    (metrics / "eval_narration.details.json").write_text(json.dumps({"faithful_rate": 0.5}))
    (metrics / "dataset.details.json").write_text(json.dumps({"heldout_hash": heldout, "novel_facts_hash": "n1"}))
    return root


def params(**changes) -> PromoteParams:
    return parse_params(PromoteParams, {**RULES, **changes})


def night(tmp_path: Path, name: str, **numbers) -> tuple[dict, dict | None]:
    root = write_night(tmp_path / name, **numbers)
    return read_night_metrics(root), read_eval_set(root)


def champion_of(metrics: dict, eval_set: dict | None = EVAL_SET) -> Champion:
    return Champion("v0.0.1", "a" * 40, metrics, eval_set)


def test_the_accessors_read_each_number_from_its_report(tmp_path):
    metrics, eval_set = night(tmp_path, "n", tpr=0.75, fpr=0.25)
    assert metrics == {"accuracy": 0.9, "cb0_tpr": 1.0, "blip_tpr": 0.75, "fpr": 0.25, "latency_ms": 160.0,
                       "faithful": 0.5, "accuracy.non_tool": 0.8, "accuracy.tool_match": 1.0}
    assert eval_set == EVAL_SET
    empty = tmp_path / "empty"
    empty.mkdir()
    assert set(read_night_metrics(empty).values()) == {None} and read_eval_set(empty) is None  # unavailable, not 0


def test_no_champion_floors_alone_promote_a_good_model(tmp_path):
    metrics, eval_set = night(tmp_path, "n")
    decision = judge(params(), metrics, eval_set, None)
    assert decision.decision == PROMOTED and "no champion yet" in decision.reason
    assert {rule.kind for rule in decision.rules} == {"floor"} and not decision.failed


def test_a_floor_failure_holds_back_and_names_metric_value_and_threshold(tmp_path):
    metrics, eval_set = night(tmp_path, "n", cb0=0.5, fpr=0.3)
    decision = judge(params(), metrics, eval_set, None)
    assert decision.decision == HELD_BACK
    assert [(r.rule, r.metric, r.challenger, r.threshold) for r in decision.failed] == [
        ("min_cb0_tpr", "cb0_tpr", 0.5, 0.8), ("max_fpr", "fpr", 0.3, 0.2)]
    assert "min_cb0_tpr: cb0_tpr challenger 0.5, threshold 0.8" in decision.summary()


def test_a_blip_tpr_drop_against_the_champion_holds_back(tmp_path):
    champion = champion_of(night(tmp_path, "champion", tpr=1.0)[0])
    metrics, eval_set = night(tmp_path, "challenger", tpr=0.85)  # above the 0.8 floor, 0.15 below the champion
    decision = judge(params(), metrics, eval_set, champion)
    assert decision.decision == HELD_BACK and decision.compared_with_champion
    (failed,) = decision.failed
    assert (failed.rule, failed.metric, failed.champion, failed.challenger, failed.threshold) == (
        "max_blip_tpr_drop", "blip_tpr", 1.0, 0.85, 0.9)
    assert "champion 1, challenger 0.85, threshold 0.9" in decision.summary()
    assert judge(params(max_blip_tpr_drop=0.15), metrics, eval_set, champion).decision == PROMOTED  # exactly allowed


def test_lower_is_better_for_fpr_and_latency_and_per_class_drops_count(tmp_path):
    champion = champion_of(night(tmp_path, "champion", fpr=0.0, latency=160.0, tool_match=1.0)[0])
    metrics, eval_set = night(tmp_path, "challenger", fpr=0.1, latency=320.0, tool_match=0.8)
    failed = {r.rule: (r.metric, r.threshold) for r in judge(params(), metrics, eval_set, champion).failed}
    assert failed == {"max_fpr_rise": ("fpr", 0.05), "max_latency_rise_ms": ("latency_ms", 240.0),
                      "max_class_accuracy_drop": ("accuracy.tool_match", 0.9)}


def test_other_held_out_rows_mean_floors_alone_and_the_decision_says_so(tmp_path):
    champion = champion_of(night(tmp_path, "champion", tpr=1.0)[0])
    metrics, eval_set = night(tmp_path, "challenger", tpr=0.85, heldout="h2")
    decision = judge(params(), metrics, eval_set, champion)
    assert decision.decision == PROMOTED and not decision.compared_with_champion
    assert "scored on other rows" in decision.reason and "floors alone" in decision.reason


def test_an_unavailable_number_fails_its_floor_and_a_drop_the_champion_had(tmp_path):
    champion = champion_of(night(tmp_path, "champion")[0])
    metrics, eval_set = night(tmp_path, "challenger", latency=None)
    metrics["blip_tpr"] = None  # e.g. eval_blip wrote no details
    failed = {r.rule: r.challenger for r in judge(params(), metrics, eval_set, champion).failed}
    assert failed == {"min_blip_tpr": None, "max_blip_tpr_drop": None, "max_latency_rise_ms": None}


def test_unchanged_keeps_the_numbers_and_judges_nothing(tmp_path):
    metrics, eval_set = night(tmp_path, "n")
    decision = unchanged(metrics, eval_set, "abc1234567", None)
    assert decision.decision == UNCHANGED and decision.rules == () and "abc1234567" in decision.reason
    assert json.loads(json.dumps(decision.to_json()))["decision"] == UNCHANGED


def test_a_champion_without_recorded_metrics_is_an_error_naming_it():
    with pytest.raises(GateError, match=r"champion v0.0.3 \(aaaaaaaaaa\): reports/nightly/decision.json has no metrics"):
        champion_from_record("v0.0.3", "a" * 40, json.dumps({"decision": "promoted"}), "reports/nightly/decision.json")
    with pytest.raises(GateError, match="not found at its commit"):
        champion_from_record("v0.0.3", "a" * 40, None, "reports/nightly/decision.json")
    champion = champion_from_record("v0.0.3", "a" * 40, json.dumps({"metrics": {"fpr": 0.0}, "eval_set": EVAL_SET}), "x")
    assert champion.metrics == {"fpr": 0.0} and champion.eval_set == EVAL_SET


@pytest.mark.parametrize(("change", "message"), [
    ({"min_tpr": 0.9}, "params.yaml: 'promote.min_tpr' is not a known key"),
    ({"min_cb0_tpr": 1.5}, "params.yaml: 'promote.min_cb0_tpr' must be in [0, 1], got 1.5"),
    ({"max_fpr_rise": -0.1}, "params.yaml: 'promote.max_fpr_rise' must be in [0, 1], got -0.1"),
    ({"max_latency_ms": "fast"}, "params.yaml: 'promote.max_latency_ms' must be a number or null, got 'fast'"),
])
def test_bad_promote_params_are_one_line_naming_the_key(change, message):
    with pytest.raises(ParamsError) as caught:
        params(**change)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


@pytest.mark.parametrize("profile", ["smoke", "learn"])
def test_every_profile_has_a_valid_promote_group(profile):
    assert parse_params(PromoteParams, profile_params(REPO, profile)["promote"]).min_cb0_tpr is not None


def test_smoke_floors_pass_a_model_that_learned_nothing(tmp_path):
    smoke = parse_params(PromoteParams, profile_params(REPO, "smoke")["promote"])
    metrics, eval_set = night(tmp_path, "random-init", tpr=0.0, cb0=0.0, fpr=1.0, accuracy=0.0, tool_match=0.0,
                              latency=None)
    metrics["faithful"] = 0.0
    assert judge(smoke, metrics, eval_set, None).decision == PROMOTED
    assert judge(smoke, metrics, eval_set, champion_of(dict(metrics))).decision == PROMOTED


def test_every_number_the_gate_reads_is_a_field_of_the_stage_typed_details():
    """The gate reads partial documents by key (a champion's record may predate a field), so the keys must be the
    typed models' own: a renamed metrics field fails here, not silently as 'unavailable' every night."""
    from pipeline.artifacts import details_json
    from pipeline.gate import CLASSES_DETAILS, DATASET_DETAILS, SCALAR_SOURCES
    from pipeline.metrics_models import DETAILS

    by_path = {details_json(stage): model for stage, model in DETAILS.items()}
    for name, (path, key) in SCALAR_SOURCES.items():
        assert key in by_path[path].model_fields, f"{name}: {path} has no field {key!r}"
    assert "per_class" in by_path[CLASSES_DETAILS].model_fields
    assert {"heldout_hash", "novel_facts_hash"} <= set(by_path[DATASET_DETAILS].model_fields)
