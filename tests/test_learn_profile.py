"""The learn profile's proof: a model trained by this pipeline opens tool acks with the blip, and nothing else.

Every number of the smoke run is 0 by design (random-init model, 4 steps), so a
broken pipeline -- the blip at the wrong offset, on the wrong rows, masked out
of the loss, decoded with another schedule than the training one -- looks just
like a correct one there. Here the tiny fabricated model is trained until it
fits a handful of rows, then replies to those same rows (in-sample): the cb0 of
its first two audio frames must be the blip's on the tool_match rows and not on
the others. The v4 arm (``preprocess.blip_on: []``), trained the same way, must
not emit it, and a pipeline that misplaces the blip by one frame must fail the
same assertion.

Each stage runs as DVC would run it (``python -m tasks.<stage>`` in the
workspace), in a temporary workspace whose params.yaml is ``params.yaml`` +
``profiles/learn.yaml`` + the smaller set-up below; no DVC, no Prefect (they add
minutes, not evidence). The three arms train side by side, one per core.
Scoring is the ``eval_blip`` stage's.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.workspace import deep_merge, profile_params

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BASE_MODEL = Path("models/base/lfm2.5-audio")

# The smallest set-up measured to fit reliably: 8 rows (4 tool_match, 2 tool_miss, 2 non_tool), 120 epochs in
# 240 steps of 4 rows (train loss 0.005 with seeds 0 and 1). A step costs ~50 ms + ~40 ms a row whatever the
# context, so fewer, larger steps are cheaper; fewer epochs left the blip unlearnt (250 steps of 2 rows: loss
# 0.019, 3/4; 400 steps of 1 row: loss 0.05, 0/4). The dataset stage makes at least one row of each class;
# the tool_result_speak row is dropped before TTS (``drop_narration_rows``): it is the longest (two turns) and
# eval_blip does not score it. Up to 5 listed tools make each row's system prompt its own.
SMALL = {
    "dataset": {"train_size": 9, "eval_size": 2, "heldout_per_class": 1, "novel_facts": 1,
                "class_shares": {"tool_match": 0.45, "tool_result_speak": 0.1, "tool_miss": 0.225, "non_tool": 0.225}},  # 4/1/2/2
    "preprocess": {"max_context_length": 640},  # the longest of the 8 rows trained on has ~530 tokens
    "train": {"context_length": 640, "batch_size": 4, "max_steps": 240, "lr": 5.0e-3, "warmup_steps": 10,
              "log_interval": 60, "save_interval": 240},
}
STAGES_BEFORE_TRAINING = ("blip", "blip_codes", "dataset", "tts")
STAGES_FROM_PREPROCESS = ("preprocess", "train", "eval_classes", "eval_blip", "eval_screen")


def run_stage(root: Path, stage: str) -> None:
    """``python -m tasks.<stage>`` in the workspace ``root``, with one torch thread.

    The model is tiny (hidden size 64): a second thread saves ~20 % of a step on an idle
    2-core machine, and on a shared one its spin-waits made a step 7x slower (measured:
    0.7 s vs 5.0 s at 5x oversubscription); one thread per arm, arms side by side, wins.
    """
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", f"tasks.{stage}"], cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"stage {stage} failed in {root}:\n{done.stdout[-1500:]}\n{done.stderr[-1500:]}"


def learn_params(overrides: dict) -> dict:
    return deep_merge(profile_params(REPO, "learn"), overrides)


def make_workspace(root: Path, model_dir: Path, overrides: dict) -> Path:
    """A workspace with the fabricated base model and the stages before training run."""
    root.mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(learn_params(overrides), sort_keys=False))
    shutil.copytree(model_dir, root / BASE_MODEL)
    for stage in STAGES_BEFORE_TRAINING:
        run_stage(root, stage)
        if stage == "dataset":
            drop_narration_rows(root / "data/dataset/train.jsonl")
    return root


def drop_narration_rows(train_jsonl: Path) -> None:
    """The training rows without the tool_result_speak ones (see SMALL)."""
    lines = train_jsonl.read_text().splitlines(keepends=True)
    train_jsonl.write_text("".join(line for line in lines if json.loads(line)["class"] != "tool_result_speak"))


def train_arm(shared: Path, root: Path, blip_on: list[str], overrides: dict, preview_delay_frames: int = 0) -> dict:
    """Copy ``shared``, set ``preprocess.blip_on``, run preprocess → eval_blip; the eval_blip metrics.

    ``preview_delay_frames`` > 0 breaks the pipeline on purpose: the blip preview that
    preprocess prepends starts that many Mimi frames (80 ms each) of silence late.
    """
    shutil.copytree(shared, root)
    params = deep_merge(learn_params(overrides), {"preprocess": {"blip_on": blip_on}})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if preview_delay_frames:
        from pipeline.audio import read_wav, write_wav

        preview_wav = root / "data/blips/tool_invoke.preview.wav"
        preview, rate = read_wav(preview_wav)
        silence = np.zeros(int(preview_delay_frames * 0.08 * rate), dtype=preview.dtype)  # 80 ms a frame
        write_wav(preview_wav, np.concatenate([silence, preview]), rate)
    for stage in STAGES_FROM_PREPROCESS:
        run_stage(root, stage)
    metrics = json.loads((root / "reports/metrics/eval_blip.details.json").read_text())
    for stage in ("preprocess", "train", "eval_classes", "eval_screen"):
        metrics[stage] = json.loads((root / f"reports/metrics/{stage}.details.json").read_text())
    metrics["decisions"] = [json.loads(line) for line in (root / "reports/eval/eval_blip.jsonl").read_text().splitlines()]
    assert metrics["preprocess"]["overlong_rows"] == 0, "rows longer than SMALL's context were left out: raise it"
    return metrics


def in_sample_blip(metrics: dict) -> tuple[float, float]:
    """As eval_blip scored the replies: (share of tool_match replies whose first two audio frames carry the
    blip's cb0, the same share over non_tool + tool_miss replies)."""
    tpr, fpr = metrics["cb0_match_rate"], metrics["negative_match_rates"]["cb0"]
    assert tpr is not None and fpr is not None, f"blip rates unavailable: {metrics['unavailable']}"
    return tpr, fpr


def assert_learns_the_blip(metrics: dict) -> None:
    tpr, fpr = in_sample_blip(metrics)
    assert tpr >= 0.9 and fpr <= 0.1, f"in-sample cb0 TPR {tpr:.2f} (want >= 0.9), FPR {fpr:.2f} (want <= 0.1)"


# --------------------------------------------------------------------------- fixtures: one trained model per arm

ARMS = {  # name: (preprocess.blip_on, frames the blip preview is delayed by)
    "v4.1": (["tool_match"], 0),
    "v4": ([], 0),
    "late blip": (["tool_match"], 1),  # the pipeline broken on purpose
}


@pytest.fixture(scope="module")
def arms(tmp_path_factory, tiny_lfm_dir):
    """One trained model per arm, from one shared workspace; two arms train at a time (2 cores)."""
    base = tmp_path_factory.mktemp("learn")
    shared = make_workspace(base / "shared", tiny_lfm_dir, SMALL)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(train_arm, shared, base / name.replace(" ", "-"), blip_on, SMALL, delay)
                   for name, (blip_on, delay) in ARMS.items()}
        return {name: future.result() for name, future in futures.items()}


@pytest.fixture(scope="module")
def v41_arm(arms) -> dict:
    return arms["v4.1"]


@pytest.fixture(scope="module")
def v4_arm(arms) -> dict:
    return arms["v4"]


@pytest.fixture(scope="module")
def late_blip_arm(arms) -> dict:
    return arms["late blip"]


# --------------------------------------------------------------------------- the proof

def test_a_trained_model_opens_tool_acks_with_the_blip_and_nothing_else(v41_arm):
    assert v41_arm["preprocess"]["blip_prefix_match_rate"] == 1.0  # every tool_match ack trained with the blip
    assert v41_arm["n_tool_match"] >= 4 and v41_arm["n_negative"] >= 4
    assert_learns_the_blip(v41_arm)


def test_the_v4_arm_trained_the_same_way_does_not_emit_the_blip(v4_arm):
    tpr, _ = in_sample_blip(v4_arm)
    assert tpr <= 0.15
    assert v4_arm["train"]["final_train_loss"] < 0.5  # it did fit its rows: no blip is what it learnt


def test_a_blip_one_frame_late_fails_the_proof(late_blip_arm):
    with pytest.raises(AssertionError, match="in-sample cb0 TPR"):
        assert_learns_the_blip(late_blip_arm)
    assert late_blip_arm["preprocess"]["blip_prefix_match_rate"] == 0.0  # preprocess's own check saw it first


# --------------------------------------------------------------------------- the screening tier

SCREENED = ("cb0_match_rate", "detector_true_positive_rate", "false_positive_rate", "decision_latency_ms",
            "decision_frame_histogram", "per_position", "n_undecided_tool_match", "n_undecided_negative")


@pytest.mark.parametrize("arm", list(ARMS))
def test_the_screen_equals_the_full_evaluation_for_a_fifth_of_the_decoding(arms, arm):
    """eval_screen on the same model: eval_blip's numbers and every row's decision frame, >= 5x fewer decoder items
    (learn's max_new_tokens: 48; the screen decodes each reply's 6 text tokens and the blip's 2 audio frames)."""
    full, screen = arms[arm], arms[arm]["eval_screen"]
    for key in SCREENED:
        assert screen[key] == full[key], f"{arm}: {key} screened {screen[key]} != full {full[key]}"
    by_id = {row["id"]: row["decision"] for row in screen["rows"]}
    assert {row["id"]: row["decision"] for row in full["decisions"]} == by_id
    spent, full_items = screen["decoder_work"]["decoder_items"], full["eval_classes"]["decoder_work"]["decoder_items"]
    assert 0 < 5 * spent <= full_items, f"{arm}: screen {spent} decoder items, full evaluation {full_items}"


def test_the_learn_profile_evaluates_on_its_training_rows():
    params = profile_params(REPO, "learn")
    assert params["eval_classes"]["rows"] == "data/dataset/train.jsonl"
    assert params["eval_classes"]["tts_manifest"] == "data/tts/train.jsonl"
    assert params["base_models"]["source"] == "fabricate" and params["report"]["profile"] == "learn"
