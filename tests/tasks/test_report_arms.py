"""Stage report: the learn profile's header, and no sweep table on the card (the sweep's own report has it)."""
from __future__ import annotations

from tests.tasks.test_report import PARAMS, render, workspace


def test_the_card_never_reads_the_sweep_leaderboard(tmp_path, repo_root):
    """reports/sweep/leaderboard.csv exists only after a sweep, so it cannot be the report stage's DVC dep."""
    root = workspace(tmp_path, repo_root)
    before = render(root)
    (root / "reports/sweep").mkdir(parents=True)
    (root / "reports/sweep/leaderboard.csv").write_text(
        "rank,name,kind,overall_accuracy,overrides\n1,v4-no-blip,experiment,0.9,preprocess.blip_on=[]\n")
    assert render(root) == before and "v4 vs v4.1 arm" not in before


def test_the_learn_card_says_its_numbers_are_an_in_sample_fit(tmp_path, repo_root):
    learn = {**PARAMS, "base_models": {"source": "fabricate"}, "report": {"profile": "learn"},
             "train": {**PARAMS["train"], "max_steps": 1200}, "dataset": {"train_size": 24},
             "eval_classes": {"rows": "data/dataset/train.jsonl"}}
    head = render(workspace(tmp_path, repo_root, params=learn)).split("\n## ")[0]
    assert "IN-SAMPLE FIT OF A TINY MODEL: IT PROVES THE MECHANISM, NOT QUALITY" in head
    assert "1200 CPU steps" in head and "24 generated training rows" in head
    assert "`eval_classes.rows: data/dataset/train.jsonl`" in head
    assert "SMOKE" not in head
