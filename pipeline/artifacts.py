"""Every path a stage reads or writes, named once.

Product modules import these constants instead of spelling paths. dvc.yaml necessarily spells
the same paths (its ``deps``/``outs``/``metrics``/``plots``); ``tests/pipeline/test_artifacts.py``
checks that each path there is named here and each path here is in dvc.yaml, so the two cannot drift.
Paths are relative to the workspace root (stages run from it). Params keys that name a path
(``preprocess.model_dir`` and the like) default to these, and params.yaml spells them for the user.
"""
from __future__ import annotations

from pathlib import Path

# --------------------------------------------------------------------------- inputs kept in git
RECONSTRUCTED_CONFIG = Path("configs/lfm25-audio-1.5b.reconstructed.json")
ACCELERATE_CONFIG = Path("configs/accelerate_2gpu.yaml")
BASELINES_YAML = Path("configs/baselines.yaml")  # the model cards' numbers, in percent (report and sweep)
RAW_DIR = Path("data/raw")  # rows to ingest (dataset.source: ingest)

# --------------------------------------------------------------------------- base_models
BASE_LFM_DIR = Path("models/base/lfm2.5-audio")
BASE_KOKORO_DIR = Path("models/base/kokoro")

# --------------------------------------------------------------------------- blip, blip_codes
BLIP_WAV = Path("data/blips/tool_invoke.wav")
BLIP_CODES_NPY = Path("data/blips/tool_invoke.codes.npy")
BLIP_PREVIEW_WAV = Path("data/blips/tool_invoke.preview.wav")
BLIP_SIGNATURE_JSON = Path("data/blips/tool_invoke.signature.json")

# --------------------------------------------------------------------------- dataset, tts
SPLITS = ("train", "eval", "heldout", "novel_facts")
DATASET_DIR = Path("data/dataset")
QUARANTINE_JSONL = DATASET_DIR / "quarantine.jsonl"
SPLIT_IDS_JSON = DATASET_DIR / "split_ids.json"  # each split's row ids as the last run wrote them (persisted)
TTS_DIR = Path("data/tts")
TTS_CACHE_DIR = TTS_DIR / "cache"


def dataset_jsonl(split: str) -> Path:
    """``data/dataset/<split>.jsonl``: the rows of one split."""
    return DATASET_DIR / f"{split}.jsonl"


def tts_manifest(split: str) -> Path:
    """``data/tts/<split>.jsonl``: which cached clip speaks each row of one split."""
    return TTS_DIR / f"{split}.jsonl"


# --------------------------------------------------------------------------- preprocess, train
PREPROCESSED_DIR = Path("data/preprocessed")  # <split>/ for train and eval
CODES_CACHE_DIR = Path("data/codes_cache")
OVERLONG_JSONL = Path("reports/preprocess/overlong.jsonl")
FINAL_MODEL_DIR = Path("models/final")
CHECKPOINTS_DIR = Path("models/checkpoints")
TRAIN_LIVE_DIR = Path("reports/train")  # DVCLive: metrics.json (summary) and plots/metrics/
TRAIN_LIVE_SUMMARY = TRAIN_LIVE_DIR / "metrics.json"
TRAIN_LIVE_PLOTS = TRAIN_LIVE_DIR / "plots" / "metrics"

# --------------------------------------------------------------------------- evaluation, report
EVAL_CLASSES_JSONL = Path("reports/eval/eval_classes.jsonl")
EVAL_NARRATION_JSONL = Path("reports/eval/eval_narration.jsonl")
EVAL_BLIP_JSONL = Path("reports/eval/eval_blip.jsonl")
CONFUSION_PNG = Path("reports/plots/confusion_matrix.png")
BLIP_POSITIONS_PNG = Path("reports/plots/blip_positions.png")
MODEL_CARD_MD = Path("reports/model_card.md")
EVAL_SCREEN_DETAILS_JSON = Path("reports/metrics/eval_screen.details.json")  # the sweep's screening tier (no headline)
JUDGE_CASES_JSONL = Path("data/judge/judge_cases.jsonl")  # the judge's labelled replies (runtime data, kept in git)

# --------------------------------------------------------------------------- metrics documents
METRICS_DIR = Path("reports/metrics")
METRICS_STAGES = ("dataset", "tts", "preprocess", "train", "eval_classes", "eval_narration", "eval_blip")


TIMINGS_STAGES = ("dataset", "tts", "preprocess", "train", "eval_classes", "eval_narration", "eval_screen")  # stages with wall-clock readings


def timings_json(stage: str) -> Path:
    """``reports/metrics/<stage>.timings.json``: the stage's wall-clock readings (an uncached DVC metric), kept out
    of the cached details so that a forced rerun with nothing changed reproduces every cached output."""
    return METRICS_DIR / f"{stage}.timings.json"


def metrics_json(stage: str) -> Path:
    """``reports/metrics/<stage>.json``: the stage's headline numbers (DVC's metrics, tracked by git)."""
    return METRICS_DIR / f"{stage}.json"


def details_json(stage: str) -> Path:
    """``reports/metrics/<stage>.details.json``: the stage's full report (a cached out)."""
    return METRICS_DIR / f"{stage}.details.json"


# --------------------------------------------------------------------------- outside the DVC pipeline
DEMO_DIR = Path("reports/demo")  # python -m tasks.demo
DEMO_TIMELINE_PNG = Path("reports/plots/demo_timeline.png")
LAST_RUN_JSON = Path("reports/last_run.json")  # flows.retrain
SWEEP_DIR = Path("reports/sweep")  # flows.sweep
NIGHTLY_DIR = Path("reports/nightly")  # flows.nightly
REHEARSAL_JSON = Path("reports/rehearsal.json")  # python -m pipeline.rehearsal (make run PROFILE=rehearsal)
REHEARSAL_MD = Path("reports/rehearsal.md")
REHEARSAL_PARTIAL_JSON = Path("reports/rehearsal.partial.json")
REHEARSAL_LOG_DIR = Path("reports/rehearsal")
DECISION_JSON = NIGHTLY_DIR / "decision.json"  # the night's gate decision
LEADERBOARD = SWEEP_DIR / "leaderboard"  # .csv, .md and .png
SWEEP_COST_JSON = SWEEP_DIR / "cost.json"  # decoder items spent vs every variant fully evaluated


def named_paths() -> set[Path]:
    """Every path this module names (constants and the per-split, per-stage paths)."""
    named = {value for key, value in globals().items() if key.isupper() and isinstance(value, Path)}
    named |= {dataset_jsonl(split) for split in SPLITS} | {tts_manifest(split) for split in SPLITS}
    named |= {PREPROCESSED_DIR / split for split in ("train", "eval")}
    named |= {timings_json(stage) for stage in TIMINGS_STAGES}
    return named | {metrics_json(stage) for stage in METRICS_STAGES} | {details_json(stage) for stage in METRICS_STAGES}


def pipeline_paths() -> set[Path]:
    """The named paths a dvc.yaml stage declares (what the catalog test compares with dvc.yaml)."""
    outside = {REHEARSAL_JSON, REHEARSAL_MD, REHEARSAL_PARTIAL_JSON, REHEARSAL_LOG_DIR, DEMO_DIR, DEMO_TIMELINE_PNG, LAST_RUN_JSON, SWEEP_DIR, LEADERBOARD, SWEEP_COST_JSON, NIGHTLY_DIR, DECISION_JSON,
               DATASET_DIR, TTS_DIR, PREPROCESSED_DIR, METRICS_DIR, TRAIN_LIVE_DIR}
    return named_paths() - outside
