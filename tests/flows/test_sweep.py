"""sweep: variants from a YAML file run as DVC experiments and land on a leaderboard with the baselines."""
from __future__ import annotations

import csv
import shutil

import pytest
import yaml

from flows.sweep import load_sweep


def write_sweep(path, variants, **extra):
    path.write_text(yaml.safe_dump({"variants": variants, **extra}))
    return path


def test_two_toy_variants_make_a_two_row_leaderboard_plus_baselines(toy, prefect_api, tmp_path, repo_root):
    from prefect.artifacts import Artifact

    from flows.sweep import sweep

    (toy / "configs").mkdir()
    shutil.copy(repo_root / "configs/baselines.yaml", toy / "configs/baselines.yaml")  # v4, v4.1 from the card
    params_before = (toy / "params.yaml").read_text()
    sweep_file = write_sweep(tmp_path / "sweep.yaml", [
        {"name": "boost-1", "overrides": ["train.boost=1"]},
        {"name": "boost-7", "overrides": ["train.boost=7", "feat.v=3"]},
    ], gpus_per_experiment=1)
    sweep(sweep_file=str(sweep_file), workdir=str(toy), prescreen_variants=False)

    rows = list(csv.DictReader((toy / "reports/sweep/leaderboard.csv").open()))
    # ranked on the blip's numbers first (cb0 higher, then FPR lower: boost-1 0.001 before boost-7 0.007)
    assert [(r["name"], r["kind"], r["rank"]) for r in rows] == [
        ("v4.1", "baseline", "1"), ("boost-1", "experiment", "2"), ("boost-7", "experiment", "3"), ("v4", "baseline", "4")]
    best = rows[1]
    assert float(best["overall_accuracy"]) == pytest.approx(0.91)
    assert float(best["tool_match_accuracy"]) == pytest.approx(0.81)
    assert float(best["false_positive_rate"]) == pytest.approx(0.001)
    assert best["evaluation"] == "full" and best["decoder_items"] == "1500"  # eval_classes 1000 + eval_narration 500
    assert rows[3]["cb0_match_rate"] == ""  # v4 had no blip: unavailable, not zero
    assert float(rows[0]["overall_accuracy"]) == pytest.approx(0.95) and float(rows[0]["cb0_match_rate"]) == 0.95
    assert float(best["detector_true_positive_rate"]) == 0.9 and float(best["decision_latency_ms"]) == 160.0
    assert rows[0]["decision_latency_ms"] == ""  # the cards did not measure it
    assert float(best["experiment_s"]) > 0 and rows[0]["experiment_s"] == ""  # each experiment's wall time
    markdown = (toy / "reports/sweep/leaderboard.md").read_text()
    assert "| boost-7 | experiment | full |" in markdown and "(leaderboard.png)" in markdown
    assert (toy / "reports/sweep/leaderboard.png").read_bytes()[:4] == b"\x89PNG"
    assert "boost-7" in Artifact.get("sweep-leaderboard").data
    assert Artifact.get("sweep-leaderboard-plot").data.startswith("data:image/png;base64,")
    assert (toy / "params.yaml").read_text() == params_before  # experiments ran in temp dirs


def test_sweep_file_errors_name_the_variant(tmp_path):
    plan = load_sweep(write_sweep(tmp_path / "ok.yaml", [{"name": "a", "overrides": ["blip.repeats=2"]}]))
    assert plan.variants[0].overrides == ("blip.repeats=2",) and plan.gpus_per_experiment == 2
    with pytest.raises(ValueError, match=r"variants\[1\]: duplicate name 'a'"):
        load_sweep(write_sweep(tmp_path / "dup.yaml", [{"name": "a"}, {"name": "a"}]))
    with pytest.raises(ValueError, match=r"variants\[0\] \(b\): 'overrides'"):
        load_sweep(write_sweep(tmp_path / "bad.yaml", [{"name": "b", "overrides": ["blip.repeats"]}]))
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_sweep(tmp_path / "missing.yaml")


def test_the_shipped_v42_sweep_file_parses(repo_root):
    names = [v.name for v in load_sweep(repo_root / "flows/sweeps/v4.2-blip.yaml").variants]
    assert "double-blip" in names and len(names) == len(set(names))
    assert {"v4.1-default", "v4-no-blip", "blip-on-tool-match-turn1-ack", "text-preamble-2"} <= set(names)


def test_a_variant_with_invalid_params_is_rejected_not_fatal(toy, prefect_api, tmp_path):
    from prefect import flow

    from flows.sweep import Variant, prescreen

    @flow
    def screen_one(workdir: str):
        return prescreen(workdir, Variant("typo", ("blip.duraton_ms=200",)), [], 0.0)

    (toy / "params.yaml").write_text("blip: {duration_ms: 160}\n")
    result = screen_one(str(toy))
    assert not result.passed and "invalid variant" in result.reason and "blip.duraton_ms" in result.reason


def test_leaderboard_floats_are_shown_rounded_not_as_binary_noise(tmp_path):
    from flows.sweep import write_leaderboard

    rows = [{"rank": 1, "name": "v4", "kind": "baseline", "evaluation": "published", "overall_accuracy": 93.3 / 100, "false_positive_rate": 1 / 60,
             "cb0_match_rate": None, "overrides": ""}]
    write_leaderboard(str(tmp_path), rows)
    [row] = list(csv.DictReader((tmp_path / "reports/sweep/leaderboard.csv").open()))
    assert (row["overall_accuracy"], row["false_positive_rate"], row["cb0_match_rate"]) == ("0.933", "0.01667", "")
    assert "| 1 | v4 | baseline | published | 0.933 |" in (tmp_path / "reports/sweep/leaderboard.md").read_text()


# --------------------------------------------------------------------------- the screening tier and the cost

# prep -> train (GPU) -> eval (the full evaluation: eval_classes/eval_blip/eval_narration documents)
#                     -> eval_screen (the screening tier's document: a tenth of the decoder items)
SCREEN_PIPELINE = {"prep": ((), None), "train": (("prep",), {"pool": "gpu", "queue": "train"}),
                   "eval": (("train",), None), "eval_screen": (("train",), None)}


@pytest.fixture
def screen_toy(tmp_path, repo_root):
    """The toy with a screening stage, its workspace reproduced (dvc status clean) at params train.boost=0."""
    import subprocess
    import sys

    from flows.dvc_graph import dvc_env
    from tests.support.toy import make_toy_repo

    root = make_toy_repo(tmp_path / "screen-toy", SCREEN_PIPELINE)
    (root / "configs").mkdir()
    shutil.copy(repo_root / "configs/baselines.yaml", root / "configs/baselines.yaml")
    subprocess.run([sys.executable, "-m", "dvc", "repro", "-q"], cwd=root, check=True, env=dvc_env())
    return root


def sweep_rows(root):
    return {r["name"]: r for r in csv.DictReader((root / "reports/sweep/leaderboard.csv").open())}


def test_screen_then_confirm_the_best_and_reuse_the_workspace_for_the_baseline(screen_toy, prefect_api, tmp_path):
    import json

    from flows.sweep import sweep

    sweep_file = write_sweep(tmp_path / "sweep.yaml", [
        {"name": "default", "overrides": []},  # the workspace's own params: its results, nothing rerun
        {"name": "boost-7", "overrides": ["train.boost=7"]},
        {"name": "boost-1", "overrides": ["train.boost=1"]},
        {"name": "same-again", "overrides": ["train.boost=0"]},  # = params.yaml too
    ], gpus_per_experiment=1)
    sweep(sweep_file=str(sweep_file), workdir=str(screen_toy), prescreen_variants=False, confirm=1)

    rows = sweep_rows(screen_toy)
    assert [r["name"] for r in rows.values()][:5] == ["v4.1", "default", "same-again", "boost-1", "boost-7"]
    assert (rows["default"]["evaluation"], rows["default"]["decoder_items"]) == ("full (workspace)", "0")
    assert rows["same-again"]["evaluation"] == "full (workspace)"
    # boost-1 screened best (FPR 0.001 < 0.007) and was confirmed: the full numbers, both experiments' work
    assert (rows["boost-1"]["evaluation"], rows["boost-1"]["decoder_items"]) == ("full", str(150 + 1500))
    assert float(rows["boost-1"]["overall_accuracy"]) == pytest.approx(0.91)
    assert (rows["boost-7"]["evaluation"], rows["boost-7"]["decoder_items"]) == ("screen", "150")
    assert rows["boost-7"]["overall_accuracy"] == ""  # the screen has no accuracy (its file at the exp is the baseline's)
    assert float(rows["boost-7"]["false_positive_rate"]) == pytest.approx(0.007)
    cost = json.loads((screen_toy / "reports/sweep/cost.json").read_text())
    assert cost["decoder_items"] == 150 + 1500 + 150
    assert cost["decoder_items_if_all_full"] == 4 * 1500 and cost["if_all_full_estimated_for"] == ["boost-7"]
    assert sorted(cost["retrained"]) == ["boost-1", "boost-7"]  # the baseline was neither retrained nor re-evaluated
    markdown = (screen_toy / "reports/sweep/leaderboard.md").read_text()
    assert "| boost-7 | experiment | screen |" in markdown and "| boost-1 | experiment | full |" in markdown


def test_an_experiment_restored_from_dvcs_cache_costs_no_decoder_items(screen_toy, prefect_api, tmp_path):
    import json

    from flows.dvc_graph import experiment_rev, read_json_at
    from flows.sweep import sweep

    sweep_file = write_sweep(tmp_path / "sweep.yaml", [{"name": "boost-3", "overrides": ["train.boost=3"]}],
                             gpus_per_experiment=1)
    sweep(sweep_file=str(sweep_file), workdir=str(screen_toy), prescreen_variants=False, confirm=0)
    assert sweep_rows(screen_toy)["boost-3"]["decoder_items"] == "150"
    sweep(sweep_file=str(sweep_file), workdir=str(screen_toy), prescreen_variants=False, confirm=0)  # all cached now
    again = sweep_rows(screen_toy)["boost-3"]
    assert (again["evaluation"], again["decoder_items"]) == ("screen", "0")
    cost = json.loads((screen_toy / "reports/sweep/cost.json").read_text())
    assert cost["decoder_items"] == 0 and cost["retrained"] == []
    # the document the experiment holds still says 150: the 0 is "nothing ran", not a missing number
    document, _ = read_json_at(str(screen_toy), "reports/metrics/eval_screen.details.json",
                               experiment_rev(str(screen_toy), "boost-3"))
    assert document["decoder_work"]["decoder_items"] == 150


def test_a_workspace_that_is_not_up_to_date_is_not_reused(screen_toy):
    from flows.sweep import is_workspace_params, workspace_row
    from tests.support.toy import set_param

    assert is_workspace_params(str(screen_toy), ()) and is_workspace_params(str(screen_toy), ("train.boost=0",))
    assert not is_workspace_params(str(screen_toy), ("train.boost=2",))
    assert not is_workspace_params(str(screen_toy), ("+train.new_key=1",))
    assert workspace_row(str(screen_toy))["evaluation"] == "full (workspace)"
    set_param(screen_toy, "eval", "v", 2)  # params changed since the last repro: its results are stale
    assert workspace_row(str(screen_toy)) is None



def test_a_sweep_whose_variants_were_all_rejected_exits_non_zero(prefect_api, monkeypatch, capsys, tmp_path):
    """Each rejection is in the leaderboard; the exit code must not say success when nothing was measured."""
    import flows.sweep as sweep_module

    rejected = [{"name": "v4.1", "kind": "baseline"}, {"name": "typo", "kind": "rejected", "note": "invalid variant"}]
    monkeypatch.setattr(sweep_module, "sweep", lambda **_: rejected)  # the flow itself: tested above
    assert sweep_module.main(["--sweep", "all-typos.yaml", "--workdir", str(tmp_path)]) == 1
    assert capsys.readouterr().err == "sweep failed: no variant of all-typos.yaml could run (see the leaderboard's notes)\n"
    monkeypatch.setattr(sweep_module, "sweep", lambda **_: rejected + [{"name": "ok", "kind": "experiment"}])
    assert sweep_module.main(["--sweep", "one-ran.yaml", "--workdir", str(tmp_path)]) == 0
