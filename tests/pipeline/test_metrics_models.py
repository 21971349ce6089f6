"""Metrics documents: one frozen typed model per stage; a document that does not match is refused in one line.

``EXAMPLES`` holds one complete details document per stage, shaped as the stage writes it; other tests
(the report, the DVC metrics width) build their documents from it with :func:`example`.
"""
from __future__ import annotations

import copy
import json

import pytest
from pydantic import ValidationError

from pipeline.artifacts import METRICS_STAGES
from pipeline.metrics_models import (DETAILS, EvalClassesDetails, EvalClassesHeadline, MetricsError, load_document,
                                     read_document, write_stage_metrics)

CLASSES = ("tool_match", "tool_result_speak", "tool_miss", "non_tool")
EXAMPLES = {
    "dataset": {
        "source": "generate", "rows_read": 0, "bad_rows": 0, "bad_fraction": 0.0, "max_bad_fraction": 0.01,
        "counts": {s: {**dict.fromkeys(CLASSES, 750), "total": 3000} for s in ("train", "eval", "heldout", "novel_facts")},
        "hard_negative_fraction": {"train": 0.5, "eval": 0.5, "heldout": 0.5, "novel_facts": None},
        "heldout_generated": dict.fromkeys(CLASSES, 30), "catalog": {"tools": 40, "ack_templates": 24, "refusal_templates": 20},
    },
    "tts": {"engine": "espeak-ng", "model_hash": "x", "requests": 24000, "syntheses": 10, "cache_hits": 23990,
            "hit_rate": 0.9996, "audio_seconds": 86400.0, "audio_seconds_synthesized": 36.0, "wall_seconds": 12.5,
            "rows": {"train": 3000}, "shards_written": [], "max_clip_seconds": 41.0, "n_skipped": 1,
            "skipped": [{"split": "train", "id": "r9", "field": "assistant", "seconds": 160.0, "predicted": True,
                         "reason": "assistant text is at least 160.0 s of audio (its letters and digits), more than "
                                   "tts.max_clip_seconds = 41"}],
            "cache_repair": {"damaged": [], "migrated": []}},
    "preprocess": {
        "blip_on": ["tool_match"], "splits": {"train": {"written": 3000}, "eval": {"written": 400}},
        "blipped_turns": {"tool_match": {"turns": 1200}, "turn1_ack": {"turns": 600}},
        "unblipped_turns": 4000, "unblipped_detection_rate": 0.0, "blip_prefix_match_rate": 0.998333,
        "blip_prefix_full_match_rate": 0.99, "blip_prefix_codebook_match_rates": [1.0] * 8,
        "blip_prefix_mismatched_ids": ["m7"], "overlong_rows": 0,
        "codes_cache": {"hits": 10, "misses": 0, "hit_rate": 1.0}, "interleave": {"n_text": 6, "n_audio": 12, "first_text": 6},
    },
    "train": {"steps": 1120, "max_steps": 1120, "resumed_from_step": None, "final_train_loss": 0.70426197,
              "final_val_loss": 0.90129981, "tokens_per_s": 12345.678901, "real_tokens": 10_000_000,
              "padding_fraction": 0.123456, "train_seconds": 3600.0, "peak_memory_gib": 60.5,
              "peak_memory_kind": "cuda_max_allocated", "world_size": 2, "global_batch_size": 4},
    "eval_classes": {
        "per_class": {"tool_match": 1.0, "tool_result_speak": 1.0, "tool_miss": 29 / 30, "non_tool": 0.9},
        "per_class_counts": {c: {"n": 30, "correct": k, "skipped": 0} for c, k in
                             (("tool_match", 30), ("tool_result_speak", 30), ("tool_miss", 29), ("non_tool", 27))},
        "overall_accuracy": 116 / 120, "n_rows": 120, "n_evaluated": 120, "n_correct": 116, "n_skipped": 0,
        "skipped": [], "bad_lines": [],
        "confusion": {c: {"ack": 30 if c == "tool_match" else 0, "narration": 0, "refusal": 0, "chat": 0} for c in CLASSES},
        "behaviours": ["ack", "narration", "refusal", "chat"],
        "expected_behaviour": {"tool_match": "ack", "tool_result_speak": "narration", "tool_miss": "refusal",
                               "non_tool": "chat"},
        "judge_reference_accuracy": 1.0, "judge_reference_misjudged": [], "mean_seconds_per_row": 1.5,
        "unavailable": {}, "generation": {"max_new_tokens": 512}, "model_dir": "models/final", "wall_seconds": 180.0,
    },
    "eval_narration": {"faithful_rate": 58 / 60, "memorized_rate": 0.0, "n_evaluated": 60, "n_faithful": 58,
                       "n_memorized": 0, "mean_fact_coverage": 0.983333, "n_rows": 60, "n_skipped": 0, "skipped": [],
                       "bad_lines": [], "training_values": 900, "unavailable": {}, "generation": {"max_new_tokens": 512},
                       "wall_seconds": 90.0},
    "eval_blip": {
        "full_match_rate": 0.0, "cb0_match_rate": 0.9, "cb0_or_cb3_match_rate": None,
        "match_counts": {"full": {"matched": 0, "n": 30}, "cb0": {"matched": 27, "n": 30}, "cb0_or_cb3": {"matched": 0, "n": 0}},
        "per_position": [[0.9, 0.9]] + [[0.5, 0.5]] * 7, "per_position_n": [30, 30],
        "per_codebook_rate": [0.9, 0.5, 0.1, 0.8, 0, 0, 0, 0], "detector_matcher": "CodebookMatch(codebooks=[0])",
        "detector_true_positive_rate": 0.9, "false_positive_rate": 1 / 60, "false_positives": 1,
        "negative_match_rates": {"full": 0.0, "cb0": 0.0, "cb0_or_cb3": 0.0},
        "decision_frame_histogram": {"tool_match": {"match": {"1": 27}, "no_match": {"0": 3}},
                                     "negative": {"match": {"1": 1}, "no_match": {"0": 59}}},
        "mean_match_decision_ms": 160.0, "decision_latency_ms": 160.0, "matched_copy_counts": {"0": 27},
        "n_tool_match": 30, "n_negative": 60, "n_scorable_tool_match": 30, "n_unscorable": 0,
        "n_undecided_tool_match": 0, "n_undecided_negative": 0, "unscorable": [],
        "blip": {"n_frames": 2, "n_codebooks": 8, "cb0_across_frames": [1, 2], "frame_rate_hz": 12.5, "copies": []},
        "unavailable": {"cb0_or_cb3_match_rate": "made up for the test"}, "negative_classes": ["non_tool", "tool_miss"],
        "source": "reports/eval/eval_classes.jsonl", "records_problems": [],
        "cb0_match_rate_judged_ack": 0.9, "cb0_match_rate_judged_not_ack": None,
    },
}


def example(stage: str, **changes) -> dict:
    """A complete details document of ``stage`` with top-level keys changed."""
    return {**copy.deepcopy(EXAMPLES[stage]), **changes}


def test_every_stage_with_metrics_has_a_model_and_an_example():
    assert set(DETAILS) == set(METRICS_STAGES) == set(EXAMPLES)
    for stage, model in DETAILS.items():
        document = model.model_validate(EXAMPLES[stage])
        assert model.model_validate(document.model_dump(mode="json")) == document  # what is written reads back


def test_headlines_are_flat_numbers():
    for stage, model in DETAILS.items():
        headline = model.model_validate(EXAMPLES[stage]).headline()
        assert all(value is None or isinstance(value, (int, float)) for value in headline.model_dump().values()), stage


@pytest.mark.parametrize("change", [{"n": 120}, {"overall_accuracy": "0.9"}, {"overall_accuracy": float("nan")},
                                    {"per_class_counts": {"tool_match": {"n": 30}}}])
def test_a_document_with_an_unknown_key_a_wrong_type_or_a_missing_field_is_refused(change):
    with pytest.raises(ValidationError):
        EvalClassesDetails.model_validate(example("eval_classes", **change))
    document = example("eval_classes")
    del document["n_evaluated"]
    with pytest.raises(ValidationError):
        EvalClassesDetails.model_validate(document)


def test_documents_are_frozen():
    document = EvalClassesDetails.model_validate(EXAMPLES["eval_classes"])
    with pytest.raises(ValidationError):
        document.overall_accuracy = 1.0


def test_written_documents_read_back_and_a_bad_one_is_one_line(tmp_path):
    path = tmp_path / "reports/metrics/eval_classes.json"
    write_stage_metrics(EvalClassesDetails.model_validate(EXAMPLES["eval_classes"]), path)
    assert read_document(EvalClassesHeadline, path) == EvalClassesHeadline(accuracy=116 / 120, tool_match=1.0)
    details = tmp_path / "reports/metrics/eval_classes.details.json"
    assert read_document(EvalClassesDetails, details).n_evaluated == 120
    details.write_text(json.dumps(example("eval_classes", n=120)))
    document, why = load_document(EvalClassesDetails, details)
    assert document is None and why == f"{details}: 'n' extra inputs are not permitted"
    with pytest.raises(MetricsError, match="not found"):
        read_document(EvalClassesDetails, tmp_path / "absent.json")
