"""retrain over a real DVC repo: DVC's order, exact reruns after a param change, failures, artifacts."""
from __future__ import annotations

import json

import pytest

from flows.dvc_graph import load_stages
from tests.support.toy import TEST_ORDER as TOY_ORDER, set_param


def last_run(root, order=TOY_ORDER) -> dict[str, str]:
    rows = json.loads((root / "reports/last_run.json").read_text())
    assert [r["stage"] for r in rows] == order
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
    assert errors["feat"] == "feat: failing on purpose" and errors["side"] is None
    assert errors["train"] == "upstream stage 'feat' failed" and errors["eval"] == "upstream stage 'train' did not run"
    assert state.message == "stage 'feat' failed: feat: failing on purpose"  # one line, the stage's own


def add_dataset_stage(root, **dataset_params) -> None:
    """A stage running the real `python -m tasks.dataset` after `feat`, its params group in params.yaml."""
    import yaml

    from tests.tasks.test_dataset import PARAMS

    pipeline = yaml.safe_load((root / "dvc.yaml").read_text())
    pipeline["stages"]["dataset"] = {"cmd": "python -m tasks.dataset", "deps": ["out/feat.json"], "params": ["dataset"],
                                     "outs": ["data/dataset"]}
    (root / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["dataset"] = {**PARAMS, **dataset_params}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_a_params_typo_fails_the_flow_before_any_stage_runs_or_any_output_is_removed(toy, prefect_api, capsys):
    """`dataset.seeds` for `seed`: DVC would remove prep's and feat's outputs rerunning them; the check comes first."""
    from flows.retrain import main, retrain

    retrain(workdir=str(toy))
    before = {p: p.read_bytes() for p in sorted((toy / "out").iterdir())}
    set_param(toy, "prep", "v", 2)  # prep and feat would rerun (DVC removes their outputs first)
    add_dataset_stage(toy, seeds=41)
    state = retrain(workdir=str(toy), return_state=True)
    assert state.is_failed()
    assert state.message.startswith("dataset: params.yaml: 'dataset.seeds'"), state.message
    assert state.message.endswith("(no stage was run)") and "\n" not in state.message
    assert set(last_run(toy, [s.name for s in load_stages(toy)]).values()) == {"not_run"}
    assert {p: p.read_bytes() for p in sorted((toy / "out").iterdir())} == before, "an output was touched"

    assert main(["--workdir", str(toy)]) == 1  # the CLI: before Prefect starts, one line per bad stage
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("retrain: dataset: params.yaml: 'dataset.seeds'") and len(err) == 2, err
    assert {p: p.read_bytes() for p in sorted((toy / "out").iterdir())} == before


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


def _intervals(root) -> dict[str, tuple]:
    from datetime import datetime

    rows = json.loads((root / "reports/last_run.json").read_text())
    return {r["stage"]: (datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"]))
            for r in rows if r["started_at"]}


def _overlap(a: tuple, b: tuple) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_independent_stages_run_side_by_side_and_a_failure_stops_only_its_dependents(toy, prefect_api):
    """feat and side both wait only for prep: they overlap. feat fails: train and eval are not run, side still runs."""
    from flows.retrain import retrain

    for stage in ("feat", "side"):
        set_param(toy, stage, "sleep", 3)
    retrain(workdir=str(toy))
    spans = _intervals(toy)
    assert _overlap(spans["feat"], spans["side"]), spans
    assert spans["prep"][1] <= min(spans["feat"][0], spans["side"][0])  # upstream first
    assert spans["eval"][0] >= max(spans["train"][1], spans["side"][1])

    set_param(toy, "feat", "fail", True)
    set_param(toy, "side", "v", 2)
    state = retrain(workdir=str(toy), return_state=True)
    assert state.is_failed()
    assert last_run(toy) == {"prep": "skipped", "feat": "failed", "side": "ran", "train": "not_run", "eval": "not_run"}
    rows = {r["stage"]: r for r in json.loads((toy / "reports/last_run.json").read_text())}
    assert rows["train"]["started_at"] is None and rows["feat"]["finished_at"] is not None


def test_gpu_stages_share_gpus_by_queue():
    """eval_classes (gpu0) and eval_narration (gpu1) start together; train holds both GPUs."""
    from flows.dvc_graph import StageSpec
    from flows.retrain import Schedule

    train = StageSpec("train", (), "gpu", "train", 2)
    ec, en = StageSpec("eval_classes", (), "gpu", "gpu0"), StageSpec("eval_narration", (), "gpu", "gpu1")
    eb = StageSpec("eval_blip", (), "gpu", "gpu0")
    cpu = [StageSpec(f"c{i}") for i in range(3)]
    schedule = Schedule([train, ec, en, eb, *cpu], cpu_limit=2)
    assert [s.name for s in schedule.ready()] == ["train", "c0", "c1"]
    schedule.running |= {"train", "c0", "c1"}
    assert schedule.ready() == []  # train holds both GPUs; two CPU stages run
    schedule.running -= {"train", "c0"}
    schedule.finished.update(train="ran", c0="ran")
    assert [s.name for s in schedule.ready()] == ["eval_classes", "eval_narration", "c2"]


def test_task_runs_are_named_after_what_dvc_did(toy, prefect_api):
    """In the Prefect UI a skipped, a restored and a rerun stage are told apart by their state names."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.retrain import retrain

    retrain(workdir=str(toy))
    set_param(toy, "side", "v", 2)
    retrain(workdir=str(toy))
    set_param(toy, "side", "v", 1)  # back to a result DVC's run-cache holds
    state = retrain(workdir=str(toy), return_state=True)
    assert last_run(toy) == {"prep": "skipped", "feat": "skipped", "side": "restored", "train": "skipped", "eval": "restored"}
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    names = {run.name: (run.state.type.value, run.state.name) for run in runs}
    assert names == {"prep": ("COMPLETED", "Skipped"), "feat": ("COMPLETED", "Skipped"), "side": ("COMPLETED", "Restored"),
                     "train": ("COMPLETED", "Skipped"), "eval": ("COMPLETED", "Restored")}


def test_the_model_card_artifact_shows_the_body_not_the_hub_metadata():
    from flows.retrain import card_body

    assert card_body("---\nbase_model: x\n---\n\n# Card\nbody\n") == "# Card\nbody\n"
    assert card_body("# Card without metadata\n") == "# Card without metadata\n"


def test_a_failure_blocks_every_stage_downstream_even_when_nothing_else_runs():
    """prep fails and nothing is running: feat and its dependents are all not_run (no wait on an empty set)."""
    from flows.dvc_graph import StageSpec
    from flows.retrain import Schedule

    chain = [StageSpec("prep"), StageSpec("feat", ("prep",)), StageSpec("train", ("feat",), "gpu", "train", 2),
             StageSpec("eval", ("train",))]
    schedule = Schedule(chain)
    schedule.finished["prep"] = "failed"
    rounds = []
    while startable := schedule.ready():
        rounds.append([s.name for s in startable])
        for spec in startable:
            schedule.finished[spec.name] = "not_run" if schedule.blocked_by(spec) else "ran"
    assert rounds == [["feat"], ["train"], ["eval"]] and schedule.done
