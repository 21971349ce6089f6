"""`dvc metrics show` stays a screen wide: each stage's DVC metrics file holds a few flat headline numbers.

DVC lists every metrics file in one table with a column per distinct key of all of them, so one nested
document (per-class counts, histograms, per-position rates) made it thousands of characters wide. The
stages write everything to ``<stage>.details.json`` beside the metrics file (``pipeline.io.write_metrics``),
a DVC-cached out: an uncached one (not a metric or plot) would turn DVC's run cache off for the stage.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.io import details_path
from pipeline.artifacts import TIMINGS_STAGES, timings_json
from pipeline.metrics_models import DETAILS
from tests.pipeline.test_metrics_models import EXAMPLES

REPO = Path(__file__).resolve().parents[1]
MAX_WIDTH = 200  # characters of the widest line of `dvc metrics show`
MAX_KEYS = 5



def headline(stage: str) -> dict:
    """The stage's headline, from a complete details document as the stage writes it (realistic widths)."""
    return DETAILS[stage].model_validate(EXAMPLES[stage]).headline().model_dump()


def declared_metrics(timings: bool = False) -> dict[str, list[str]]:
    """Each stage's headline metrics files (or, with ``timings``, its wall-clock timings files)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    files = {name: [next(iter(e)) if isinstance(e, dict) else e for e in spec.get("metrics", [])]
             for name, spec in stages.items() if spec.get("metrics")}
    return {name: kept for name, paths in files.items()
            if (kept := [p for p in paths if p.endswith(".timings.json") == timings])}


def test_timings_files_are_the_stages_with_wall_clock_readings():
    assert {stage: paths for stage, paths in declared_metrics(timings=True).items()} == {
        stage: [str(timings_json(stage))] for stage in TIMINGS_STAGES}


def cached_outs(stage: str) -> list[str]:
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    return [e if isinstance(e, str) else next(iter(e)) for e in spec.get("outs", [])
            if isinstance(e, str) or (next(iter(e.values())) or {}).get("cache", True)]


def test_every_stage_with_metrics_keeps_its_full_report_beside_them_in_the_dvc_cache():
    for stage, paths in declared_metrics().items():
        for path in paths:
            assert str(details_path(path)) in cached_outs(stage), f"{stage}: {details_path(path)} is not a cached out"


@pytest.fixture
def workspace(tmp_path):
    """The project's dvc.yaml in a fresh git + DVC repo, every metrics file written as its stage writes it."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    for stage, paths in declared_metrics().items():
        for path in paths:
            target = tmp_path / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(headline(stage)))
    for stage, paths in declared_metrics(timings=True).items():  # what pipeline.io moves out of the details
        (tmp_path / paths[0]).write_text(json.dumps({"wall_seconds": 123.4}))
    return tmp_path


def test_each_metrics_file_is_a_few_flat_numbers(workspace):
    for paths in declared_metrics().values():
        for path in paths:
            numbers = json.loads((workspace / path).read_text())
            assert 0 < len(numbers) <= MAX_KEYS, path
            assert all(v is None or isinstance(v, (int, float)) for v in numbers.values()), (path, numbers)


def test_no_two_metrics_files_share_a_key(workspace):
    """`dvc exp show` would name a shared key's columns `<path>:<key>`, 35 characters each."""
    keys = [key for paths in declared_metrics().values() for path in paths
            for key in json.loads((workspace / path).read_text())]
    assert sorted(keys) == sorted(set(keys))


def test_dvc_metrics_show_fits_a_screen(workspace):
    """The headline files (the timings files, wall clock, are shown with `dvc metrics show reports/metrics/*.timings.json`)."""
    headlines = [path for paths in declared_metrics().values() for path in paths]
    shown = subprocess.run([sys.executable, "-m", "dvc", "metrics", "show", *headlines], cwd=workspace, check=True,
                           capture_output=True, text=True).stdout
    lines = shown.splitlines()
    assert len(lines) == 1 + len(headlines)  # a header and one row per file
    assert max(map(len, lines)) <= MAX_WIDTH, shown


@pytest.mark.parametrize("stage", ["dataset", "eval_classes", "eval_narration", "eval_blip", "eval_screen"])
def test_the_stage_keeps_dvcs_run_cache(stage):
    """DVC restores a stage from its run cache (a sweep going back to an earlier variant) only when every out
    is cached or a metric/plot (dvc/stage/__init__.py: ``no_cache_outs``); these stages have nothing persistent."""
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    assert sorted(map(str, (e if isinstance(e, str) else next(iter(e)) for e in spec["outs"]))) == sorted(cached_outs(stage))
