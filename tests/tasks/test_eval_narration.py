"""Stage eval_narration: faithful/memorized over novel facts (hand-made narrations), and one tiny-model row."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from pipeline.catalog import RowMaker
from pipeline.params import parse_params
from pipeline.records import DatasetRow, write_rows
from pipeline.reply import Reply
from pipeline.user_audio import ManifestAudio
from tasks.eval_narration import EvalNarrationParams, run, score_rows, summarize, training_values

TOOLS = [{"name": "weather", "description": "get current weather and forecasts for a location"}]


def speak_row(row_id: str, facts: str, user: str = "what's the weather in Oslo") -> DatasetRow:
    return DatasetRow.from_json({
        "id": row_id, "class": "tool_result_speak", "tools": TOOLS, "user": user, "assistant": "ref", "facts": facts,
        "turn1": {"user": user, "assistant": "Sure, checking the weather.",
                  "tool_call": {"name": "weather", "arguments": {"city": "Oslo"}}}})


def reply_with(text: str) -> Reply:
    return Reply(text=text, text_tokens=[], audio_codes=np.zeros((8, 0), dtype=np.int64),
                 audio_frames_before_text_end=None, end_of_audio=False, finish_reason="im_end", layout=[])


def test_faithful_and_memorized_rates_on_hand_made_narrations():
    train = [speak_row("t1", "Paris: 14°C, light rain, wind 12 km/h", "weather in Paris"),
             speak_row("t2", "London: 9°C, overcast, wind 5 km/h", "weather in London")]
    novel = [speak_row("n1", "Oslo: -3°C, freezing fog, wind 27 km/h"),
             speak_row("n2", "Oslo: 2°C, hail, wind 31 km/h"),
             speak_row("n3", "Oslo: 4°C, sleet, wind 7 km/h"),
             speak_row("n4", "Oslo: 1°C, mist, wind 3 km/h")]
    replies = {
        "n1": reply_with("In Oslo it's minus three degrees with freezing fog and wind at 27 kilometers an hour."),  # faithful
        "n2": reply_with("Oslo: 14 degrees, light rain, wind 12 km/h."),  # memorized, not faithful
        "n3": reply_with("Oslo has sleet at 4°C, wind 7 km/h, a bit like London."),  # faithful and memorized
        "n4": "no user audio",  # skipped
    }
    results = score_rows(novel, replies, training_values(train))
    m = summarize(results, n_rows_read=4, bad=[], training=training_values(train))
    assert m["n_evaluated"] == 3 and m["n_skipped"] == 1
    assert m["faithful_rate"] == pytest.approx(2 / 3) and m["memorized_rate"] == pytest.approx(2 / 3)
    assert "light rain" in results[1].score.memorized_values and results[2].score.memorized_values == ("london",)


def test_zero_rows_is_null_with_a_reason():
    m = summarize([], n_rows_read=0, bad=[], training=training_values([]))
    assert m["faithful_rate"] is None and m["memorized_rate"] is None
    assert m["unavailable"]["faithful_rate"] == "no novel-facts row"


def stage_inputs(tmp_path, model_dir, novel, train, **params) -> tuple[EvalNarrationParams, ManifestAudio]:
    """The stage's params over these rows, and user audio (a quiet 0.2 s clip) for row nf-1."""
    write_rows(tmp_path / "novel.jsonl", novel)
    write_rows(tmp_path / "train.jsonl", train)
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(json.dumps({"id": "nf-1", "user_key": "k", "turn1_user_key": "k"}) + "\n")
    source = ManifestAudio(manifest, tmp_path, loader=lambda d, k: (np.full(4_800, 0.01, dtype=np.float32), 24_000))
    return parse_params(EvalNarrationParams, {
        "model_dir": str(model_dir), "rows": str(tmp_path / "novel.jsonl"), "train_rows": str(tmp_path / "train.jsonl"),
        "tts_manifest": str(manifest), "tts_cache_dir": str(tmp_path), "device": "cpu", **params}), source


def test_stage_on_the_tiny_model(tiny_lfm, tiny_lfm_dir, tmp_path):
    maker = RowMaker(random.Random(5), "heldout")
    novel = [maker.tool_result_speak("nf-1")]
    train = [RowMaker(random.Random(5), "train").tool_result_speak(f"tr-{i}") for i in range(5)]
    params, source = stage_inputs(tmp_path, tiny_lfm_dir, novel, train, max_new_tokens=12, max_skipped_fraction=0.0)
    metrics = run(params, tmp_path / "eval_narration.json", tmp_path / "eval_narration.jsonl", lfm=tiny_lfm,
                  audio_source=source, log=lambda _: None)
    assert metrics["n_evaluated"] == 1 and metrics["training_values"] > 0
    assert metrics["faithful_rate"] in (0.0, 1.0) and metrics["memorized_rate"] in (0.0, 1.0)
    record = json.loads((tmp_path / "eval_narration.jsonl").read_text())
    assert record["id"] == "nf-1" and record["turn1_text"] is not None and "coverage" in record["score"]
    assert set(json.loads((tmp_path / "eval_narration.details.json").read_text())) >= {"faithful_rate", "memorized_rate", "n_evaluated"}
    assert json.loads((tmp_path / "eval_narration.json").read_text()) == {"faithful": metrics["faithful_rate"]}


@pytest.mark.parametrize("max_new_tokens", [2048, 12])
def test_a_prompt_that_cannot_fit_the_models_context_is_skipped_listed_and_counted(tiny_lfm, tiny_lfm_dir, tmp_path,
                                                                                  max_new_tokens):
    """The tiny model's context is 4096 positions: a two-turn row whose prompt + 2 x 2048 new tokens would pass it is
    skipped before decoding, listed and counted; at 12 new tokens it is decoded."""
    novel = [RowMaker(random.Random(5), "heldout").tool_result_speak("nf-1")]
    params, source = stage_inputs(tmp_path, tiny_lfm_dir, novel, novel, max_new_tokens=max_new_tokens,
                                  max_skipped_fraction=1.0)
    metrics = run(params, tmp_path / "eval_narration.json", tmp_path / "eval_narration.jsonl", lfm=tiny_lfm,
                  audio_source=source, log=lambda _: None)
    record = json.loads((tmp_path / "eval_narration.jsonl").read_text())
    if max_new_tokens == 2048:
        assert metrics["n_skipped"] == 1 and metrics["n_evaluated"] == 0
        [skipped] = metrics["skipped"]
        assert skipped["id"] == "nf-1" and skipped["reason"].endswith(
            "tokens + 2 x eval_narration.max_new_tokens = 2048 is more than the model's context of 4096 positions")
        assert record["skipped"] == skipped["reason"] and record["text"] is None
    else:
        assert metrics["n_skipped"] == 0 and metrics["n_evaluated"] == 1 and record["text"] is not None


def test_a_missing_training_file_is_one_line(tmp_path, monkeypatch, capsys):
    import yaml

    from tasks.eval_narration import main

    write_rows(tmp_path / "novel.jsonl", [speak_row("n1", "Oslo: 1°C, mist, wind 3 km/h")])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"eval_narration": {
        "model_dir": "models/final", "rows": "novel.jsonl", "train_rows": "no_train.jsonl",
        "tts_manifest": "manifest.jsonl", "tts_cache_dir": "cache"}}))
    monkeypatch.chdir(tmp_path)
    assert main() == 1
    assert capsys.readouterr().err == "eval_narration: no_train.jsonl: file not found\n"
