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
    assert [(r["name"], r["kind"], r["rank"]) for r in rows] == [
        ("boost-7", "experiment", "1"), ("v4.1", "baseline", "2"), ("v4", "baseline", "3"), ("boost-1", "experiment", "4")]
    best = rows[0]
    assert float(best["overall_accuracy"]) == pytest.approx(0.97)
    assert float(best["tool_match_accuracy"]) == pytest.approx(0.87)
    assert float(best["false_positive_rate"]) == pytest.approx(0.007)
    assert rows[2]["cb0_match_rate"] == ""  # v4 had no blip: unavailable, not zero
    assert float(rows[1]["overall_accuracy"]) == pytest.approx(0.95) and float(rows[1]["cb0_match_rate"]) == 0.95
    assert float(best["detector_true_positive_rate"]) == 0.9 and float(best["decision_latency_ms"]) == 160.0
    assert rows[1]["decision_latency_ms"] == ""  # the cards did not measure it
    assert float(best["experiment_s"]) > 0 and rows[1]["experiment_s"] == ""  # each experiment's wall time
    markdown = (toy / "reports/sweep/leaderboard.md").read_text()
    assert "| boost-7 | experiment |" in markdown and "(leaderboard.png)" in markdown
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

    rows = [{"rank": 1, "name": "v4", "kind": "baseline", "overall_accuracy": 93.3 / 100, "false_positive_rate": 1 / 60,
             "cb0_match_rate": None, "overrides": ""}]
    write_leaderboard(str(tmp_path), rows)
    [row] = list(csv.DictReader((tmp_path / "reports/sweep/leaderboard.csv").open()))
    assert (row["overall_accuracy"], row["false_positive_rate"], row["cb0_match_rate"]) == ("0.933", "0.01667", "")
    assert "| 1 | v4 | baseline | 0.933 |" in (tmp_path / "reports/sweep/leaderboard.md").read_text()


def test_a_sweep_whose_variants_were_all_rejected_exits_non_zero(prefect_api, monkeypatch, capsys, tmp_path):
    """Each rejection is in the leaderboard; the exit code must not say success when nothing was measured."""
    import flows.sweep as sweep_module

    rejected = [{"name": "v4.1", "kind": "baseline"}, {"name": "typo", "kind": "rejected", "note": "invalid variant"}]
    monkeypatch.setattr(sweep_module, "sweep", lambda **_: rejected)  # the flow itself: tested above
    assert sweep_module.main(["--sweep", "all-typos.yaml", "--workdir", str(tmp_path)]) == 1
    assert capsys.readouterr().err == "sweep failed: no variant of all-typos.yaml could run (see the leaderboard's notes)\n"
    monkeypatch.setattr(sweep_module, "sweep", lambda **_: rejected + [{"name": "ok", "kind": "experiment"}])
    assert sweep_module.main(["--sweep", "one-ran.yaml", "--workdir", str(tmp_path)]) == 0
