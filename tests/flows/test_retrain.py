"""retrain over a real DVC repo: DVC's order, exact reruns after a param change, failures, artifacts."""
from __future__ import annotations

import json

import pytest

from flows.dvc_graph import load_stages
from flows.toy import TEST_ORDER as TOY_ORDER, set_param


def last_run(root) -> dict[str, str]:
    rows = json.loads((root / "reports/last_run.json").read_text())
    assert [r["stage"] for r in rows] == TOY_ORDER
    return {r["stage"]: r["status"] for r in rows}


def test_graph_comes_from_dvc_with_meta(toy):
    stages = {s.name: s for s in load_stages(toy)}
    assert [s.name for s in load_stages(toy)] == TOY_ORDER
    assert stages["eval"].upstream == ("side", "train")
    assert (stages["train"].pool, stages["train"].queue) == ("gpu", "train")
    assert [s.name for s in load_stages(toy, targets=["train"])] == ["prep", "feat", "train"]
    with pytest.raises(ValueError, match="unknown stage"):
        load_stages(toy, targets=["nope"])


def test_runs_in_dvc_order_then_reruns_exactly_the_downstream_stages(toy, prefect_api):
    from flows.retrain import retrain

    rows = retrain(workdir=str(toy))
    assert [r["stage"] for r in rows] == TOY_ORDER
    assert set(last_run(toy).values()) == {"ran"}
    assert_artifacts()


    set_param(toy, "feat", "v", 2)
    retrain(workdir=str(toy))
    assert last_run(toy) == {"prep": "skipped", "feat": "ran", "side": "skipped", "train": "ran", "eval": "ran"}

    retrain(workdir=str(toy), inproc_check=False)  # every stage through the dvc CLI: same answer
    assert set(last_run(toy).values()) == {"skipped"}


def test_targets_and_force(toy, prefect_api):
    from flows.retrain import retrain

    retrain(workdir=str(toy), targets=["feat"])
    rows = json.loads((toy / "reports/last_run.json").read_text())
    assert [(r["stage"], r["status"]) for r in rows] == [("prep", "ran"), ("feat", "ran")]

    retrain(workdir=str(toy), targets=["feat"], force=["prep"])  # same output, so feat stays unchanged
    rows = json.loads((toy / "reports/last_run.json").read_text())
    assert [(r["stage"], r["status"]) for r in rows] == [("prep", "ran"), ("feat", "skipped")]


def test_failed_stage_fails_the_flow_and_its_dependents_are_not_run(toy, prefect_api):
    from flows.retrain import retrain

    set_param(toy, "feat", "fail", True)
    state = retrain(workdir=str(toy), return_state=True)
    assert state.is_failed()
    assert "stage 'feat' failed" in state.message and "failing on purpose" in state.message
    # side does not depend on feat: it still runs
    assert last_run(toy) == {"prep": "ran", "feat": "failed", "side": "ran", "train": "not_run", "eval": "not_run"}
    errors = {r["stage"]: r["error"] for r in json.loads((toy / "reports/last_run.json").read_text())}
    assert "feat" in errors["feat"] and errors["train"] == "upstream stage 'feat' failed" and errors["side"] is None


def assert_artifacts():
    from prefect.artifacts import Artifact

    stages = Artifact.get("retrain-stages")
    assert stages.type == "table" and "prep" in stages.data
    classes = Artifact.get("eval-classes")
    assert classes.type == "table" and "tool_match" in classes.data and "overall" in classes.data
    assert Artifact.get("eval-blip").type == "table"
    card = Artifact.get("model-card")  # the toy pipeline writes no model card
    assert card.type == "markdown" and "unavailable" in card.data
    assert Artifact.get("retrain-progress").data == 100.0


def test_bad_meta_names_the_stage(toy):
    text = (toy / "dvc.yaml").read_text().replace("pool: gpu", "pool: GPU")
    (toy / "dvc.yaml").write_text(text)
    with pytest.raises(ValueError, match=r"dvc.yaml: stage 'train': meta.pool must be 'cpu' or 'gpu', got 'GPU'"):
        load_stages(toy)
