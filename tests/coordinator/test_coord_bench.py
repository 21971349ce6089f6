"""Spec: bench/bench_detector.py runs end to end and our detector agrees with the card's recipe."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_detector_smoke(tmp_path, capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_detector", REPO / "bench" / "bench_detector.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_detector", bench)  # dataclasses look their module up
    spec.loader.exec_module(bench)
    out = tmp_path / "detector.json"
    assert bench.main(["--streams", "60", "--reps", "1", "--frames", "6", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    agree = report["agreement_ours_cb0_vs_card"]
    assert agree["same_verdict"] == agree["streams_where_card_decides"] > 0
    ours = report["methods"]["ours_cb0"]
    assert set(ours["decision_frame"]) <= {"0", "1"}  # never later than the card, never undecided
    assert ours["accuracy_vs_truth_cb0"] == 1.0
    assert "card_recipe" in capsys.readouterr().out
