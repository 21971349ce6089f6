"""What an experiment commit must carry: every metrics and plots file of dvc.yaml that DVC does not cache,
and the uncached reports beside them (DVCLive's summary). The stages' full reports (``*.details.json``)
are DVC-cached outs, so git ignores them.

`dvc exp show`, `dvc metrics diff` and `dvc plots diff` read those files from the experiment's git
commit; a git-ignored one is missing there ("failed to load"). Checkpoints (cache: false outs) stay ignored.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _uncached(kind: str) -> list[str]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    found = []
    for spec in stages.values():
        for entry in spec.get(kind, []):
            if isinstance(entry, dict):
                (path, options), = entry.items()
                if (options or {}).get("cache") is False:
                    found.append(path)
    return found


def _ignored(path: str) -> bool:
    probe = path.rstrip("/") + ("/x.tsv" if not Path(path).suffix else "")
    return subprocess.run(["git", "check-ignore", "-q", "--no-index", probe], cwd=REPO).returncode == 0


def test_uncached_metrics_and_plots_are_committed_with_each_experiment():
    paths = _uncached("metrics") + _uncached("plots")
    assert "reports/metrics/train.json" in paths and "reports/train/plots/metrics" in paths
    assert [p for p in paths if _ignored(p)] == []


def test_uncached_reports_are_committed_with_each_experiment():
    reports = [p for p in _uncached("outs") if p.startswith("reports/")]
    assert "reports/train/metrics.json" in reports
    assert [p for p in reports if _ignored(p)] == []


def test_the_cached_full_reports_stay_out_of_git():
    assert _ignored("reports/metrics/eval_blip.details.json") and not _ignored("reports/metrics/eval_blip.json")


def test_checkpoints_stay_out_of_git():
    assert "models/checkpoints" in _uncached("outs") and _ignored("models/checkpoints")
