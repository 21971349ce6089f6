"""A toy DVC pipeline (real git + DVC, tiny Python stages) for the flow tests and the benchmark.

Each stage `s` runs `python stage.py s out/s.json <upstream outputs>`, reads its own
params group `s` from params.yaml, and writes its params, inputs and CUDA_VISIBLE_DEVICES as JSON; a
stage fails when its params say `fail: true` and sleeps `sleep` seconds first; a `metrics` stage also writes
reports/metrics/eval_classes.json and eval_blip.json (headline metrics) and their .details.json
(numbers from the `boost` param of its first input), as the eval stages do, with the decoder items they
took; an `eval_screen` stage writes the screening tier's document (tasks/eval_screen.py) the same way.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

STAGE_SCRIPT = '''\
import json, os, pathlib, sys, time, yaml
stage, out, *deps = sys.argv[1:]
params = (yaml.safe_load(open("params.yaml")) or {}).get(stage, {})
time.sleep(params.get("sleep", 0))
if params.get("fail"):
    sys.exit(f"{stage}: failing on purpose")
print(f"{stage}: working")
inputs = [json.loads(pathlib.Path(d).read_text()) for d in deps]
pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
gpus = os.environ.get("CUDA_VISIBLE_DEVICES")  # what a worker pinned this stage to
pathlib.Path(out).write_text(json.dumps({"stage": stage, "params": params, "inputs": inputs, "gpus": gpus}))
if params.get("metrics"):
    boost = inputs[0]["params"].get("boost", 0)
    metrics = pathlib.Path("reports/metrics")
    metrics.mkdir(parents=True, exist_ok=True)
    accuracy, tool_match, fpr = 0.9 + boost / 100, 0.8 + boost / 100, boost / 1000
    # complete documents, as pipeline.metrics_models declares them (tests/pipeline/test_metrics_models.py)
    counts = {"tool_match": {"n": 30, "correct": round(30 * tool_match), "skipped": 0},
              "non_tool": {"n": 30, "correct": 30, "skipped": 0}}
    (metrics / "eval_classes.details.json").write_text(json.dumps({
        "per_class": {"tool_match": tool_match, "non_tool": 1.0}, "per_class_counts": counts,
        "overall_accuracy": accuracy, "n_rows": 60, "n_evaluated": 60, "n_correct": round(60 * accuracy),
        "n_skipped": 0, "confusion": {}, "behaviours": [], "expected_behaviour": {},
        "judge_reference_accuracy": 1.0, "mean_seconds_per_row": None, "decoder_work": {"decoder_items": 1000}}))
    (metrics / "eval_classes.json").write_text(json.dumps({"accuracy": accuracy, "tool_match": tool_match}))
    (metrics / "eval_blip.details.json").write_text(json.dumps({
        "full_match_rate": 0.0, "cb0_match_rate": 0.9, "cb0_or_cb3_match_rate": 0.9,
        "match_counts": {"cb0": {"matched": 27, "n": 30}}, "per_position": [], "per_position_n": [],
        "per_codebook_rate": [], "detector_matcher": "cb0", "detector_true_positive_rate": 0.9,
        "false_positive_rate": fpr, "false_positives": round(60 * fpr), "negative_match_rates": {},
        "decision_frame_histogram": {}, "mean_match_decision_ms": 160.0, "decision_latency_ms": 160.0,
        "matched_copy_counts": {}, "n_tool_match": 30, "n_negative": 60, "n_scorable_tool_match": 30,
        "n_unscorable": 0, "n_undecided_tool_match": 0, "n_undecided_negative": 0, "unscorable": [],
        "blip": {"n_frames": 2, "n_codebooks": 8, "cb0_across_frames": [1, 2], "frame_rate_hz": 12.5},
        "negative_classes": ["non_tool"], "source": "toy"}))
    (metrics / "eval_blip.json").write_text(json.dumps({"cb0": 0.9, "tpr": 0.9, "fpr": fpr, "latency_ms": 160.0}))
    (metrics / "eval_narration.details.json").write_text(json.dumps({"decoder_work": {"decoder_items": 500}}))
if params.get("screen"):  # the screening tier's document (tasks/eval_screen.py): eval_blip's numbers, a tenth the work
    boost = inputs[0]["params"].get("boost", 0)
    metrics = pathlib.Path("reports/metrics")
    metrics.mkdir(parents=True, exist_ok=True)
    (metrics / "eval_screen.details.json").write_text(json.dumps({
        "cb0_match_rate": 0.9, "detector_true_positive_rate": 0.9, "false_positive_rate": boost / 1000,
        "decision_latency_ms": 160.0, "decoder_work": {"decoder_items": 150}}))
'''

# name -> (upstream stages, meta); the test pipeline: prep -> feat -> train (GPU) -> eval <- side <- prep
TEST_PIPELINE = {
    "prep": ((), None),
    "feat": (("prep",), None),
    "side": (("prep",), None),
    "train": (("feat",), {"pool": "gpu", "queue": "train"}),
    "eval": (("train", "side"), None),
}
TEST_ORDER = ["prep", "feat", "side", "train", "eval"]  # DVC's order of TEST_PIPELINE, ties by name
# The shape of the real dvc.yaml (DESIGN.md): 11 stages, 4 on the GPU pool.
PIPELINE_SHAPE = {
    "base_models": ((), None),
    "blip": ((), None),
    "blip_codes": (("blip", "base_models"), None),
    "dataset": ((), None),
    "tts": (("dataset", "base_models"), None),
    "preprocess": (("tts", "blip_codes"), None),
    "train": (("preprocess",), {"pool": "gpu", "queue": "train", "gpus": 2}),
    "eval_classes": (("train",), {"pool": "gpu", "queue": "gpu0"}),
    "eval_narration": (("train",), {"pool": "gpu", "queue": "gpu1"}),
    "eval_blip": (("train",), {"pool": "gpu", "queue": "gpu0"}),
    "report": (("eval_classes", "eval_narration", "eval_blip"), None),
}
METRICS_STAGES = {"eval", "eval_classes"}
SCREEN_STAGES = {"eval_screen"}  # writes reports/metrics/eval_screen.details.json, as the screening tier does


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True)


def make_toy_repo(root: str | os.PathLike, pipeline: dict = TEST_PIPELINE) -> Path:
    """git init + dvc init + the toy pipeline in `root`, committed. Returns `root`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _git(root, "init", "-q", "-b", "main")
    _git(root, "config", "user.email", "toy@flows")
    _git(root, "config", "user.name", "toy pipeline")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True)
    stages, params = {}, {}
    for name, (upstream, meta) in pipeline.items():
        outs = [f"out/{name}.json"]
        stage = {"cmd": " ".join(["python stage.py", name, *outs, *(f"out/{u}.json" for u in upstream)]),
                 "params": [name], "outs": outs}
        if upstream:
            stage["deps"] = [f"out/{u}.json" for u in upstream]
        if meta:
            stage["meta"] = meta
        params[name] = {"v": 1, "fail": False}
        if name == "train":
            params[name]["boost"] = 0
        if name in METRICS_STAGES:
            params[name]["metrics"] = True
            stage["outs"] += [f"reports/metrics/{m}.details.json" for m in ("eval_classes", "eval_blip")]
            stage["metrics"] = [{f"reports/metrics/{m}.json": {"cache": False}} for m in ("eval_classes", "eval_blip")]
            stage["outs"].append("reports/metrics/eval_narration.details.json")
        if name in SCREEN_STAGES:
            params[name]["screen"] = True
            stage["outs"].append("reports/metrics/eval_screen.details.json")
        stages[name] = stage
    (root / "out").mkdir()
    (root / "out/.gitignore").write_text("".join(f"/{name}.json\n" for name in pipeline))  # what DVC would add
    (root / "stage.py").write_text(STAGE_SCRIPT)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    (root / ".gitignore").write_text("/reports/last_run.json\n/.prefect/\n")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "toy pipeline")
    return root


def set_param(root: str | os.PathLike, stage: str, key: str, value) -> None:
    path = Path(root) / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params[stage][key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))
