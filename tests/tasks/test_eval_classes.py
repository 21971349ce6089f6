"""Stage eval_classes: the real inference path on the tiny model, and the metrics on hand-made replies."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import yaml

from pipeline.catalog import RowMaker
from pipeline.generation import GenerationParams
from pipeline.params import ParamsError, parse_params
from pipeline.records import write_rows
from pipeline.reply import Reply
from pipeline.user_audio import ManifestAudio, TooManySkipped
from tasks.eval_classes import EvalClassesParams, evaluate, plot_confusion, run, select_rows, summarize

PARAMS = {
    "model_dir": "models/final", "rows": "data/dataset/heldout.jsonl", "tts_manifest": "data/tts/heldout.jsonl",
    "tts_cache_dir": "data/tts_cache", "max_new_tokens": 16, "device": "cpu", "dtype": "bfloat16",
    "max_rows": None, "max_skipped_fraction": 0.0,
}


def one_row_per_class(seed=3):
    maker = RowMaker(random.Random(seed), "heldout")
    return [maker.tool_match("h-m"), maker.tool_result_speak("h-s"), maker.tool_miss("h-x", hard=True), maker.non_tool("h-n")]


def reply_with(text: str, frames: int = 3) -> Reply:
    codes = np.arange(8 * frames, dtype=np.int64).reshape(8, frames)
    return Reply(text=text, text_tokens=[65, 130], audio_codes=codes, audio_frames_before_text_end=0,
                 end_of_audio=True, finish_reason="im_end", layout=[["t", 2], ["a", frames + 1]])


def write_inputs(tmp_path, rows, with_audio):
    rows_path = tmp_path / "heldout.jsonl"
    write_rows(rows_path, rows)
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(
        json.dumps({"id": r.id, "user_key": f"k-{r.id}", "assistant_key": "a",
                    "turn1_user_key": f"k-{r.id}" if r.turn1 else None, "turn1_assistant_key": None}) + "\n"
        for r in rows if r.id in with_audio))
    rng = np.random.default_rng(0)

    def loader(cache_dir, key):
        return (0.05 * rng.standard_normal(9_600)).astype(np.float32), 24_000

    return rows_path, ManifestAudio(manifest, tmp_path / "cache", loader=loader)


def test_stage_runs_the_tiny_model_and_writes_every_output(tiny_lfm, tiny_lfm_dir, tmp_path):
    rows = one_row_per_class()
    rows_path, source = write_inputs(tmp_path, rows, with_audio={"h-m", "h-s", "h-x"})  # h-n has no audio
    params = parse_params(EvalClassesParams, {**PARAMS, "model_dir": str(tiny_lfm_dir), "rows": str(rows_path),
                                              "max_skipped_fraction": 0.3})
    out = tmp_path / "reports"
    metrics = run(params, out / "metrics/eval_classes.json", out / "plots/confusion_matrix.png",
                  out / "eval/eval_classes.jsonl", lfm=tiny_lfm, audio_source=source, log=lambda _: None)
    written = json.loads((out / "metrics/eval_classes.details.json").read_text())
    assert json.loads((out / "metrics/eval_classes.json").read_text()) == {  # DVC's headline
        "accuracy": written["overall_accuracy"], "tool_match": written["per_class"]["tool_match"]}
    assert written["n_rows"] == 4 and written["n_evaluated"] == 3 and written["n_skipped"] == 1
    assert set(written["per_class"]) == {"tool_match", "tool_result_speak", "tool_miss", "non_tool"}
    assert written["per_class"]["non_tool"] is None and "per_class.non_tool" in written["unavailable"]
    assert all(isinstance(written["per_class"][c], float) for c in ("tool_match", "tool_result_speak", "tool_miss"))
    assert written["judge_reference_accuracy"] == 1.0
    assert written["generation"]["max_new_tokens"] == 16 and metrics["overall_accuracy"] == written["overall_accuracy"]
    assert (out / "plots/confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    records = [json.loads(line) for line in (out / "eval/eval_classes.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == ["h-m", "h-s", "h-x", "h-n"]
    for r in records[:3]:
        codes = np.asarray(r["reply"]["audio_codes"])
        assert codes.shape[0] == 8 and r["behaviour"] in ("ack", "refusal", "direct", "narration", "other")
        assert isinstance(r["reason"], str) and r["reply"]["layout"]
    assert records[1]["reply"]["turn1"] is not None  # tool_result_speak: turn 1 kept
    assert records[3]["reply"] is None and "no entry" in records[3]["skipped"]


def test_missing_audio_past_the_threshold_fails_before_generating(tmp_path):
    rows = one_row_per_class()
    rows_path, source = write_inputs(tmp_path, rows, with_audio={"h-m"})
    params = parse_params(EvalClassesParams, {**PARAMS, "rows": str(rows_path), "max_skipped_fraction": 0.5})
    with pytest.raises(TooManySkipped, match="3 rows without user audio"):
        run(params, tmp_path / "m.json", tmp_path / "p.png", tmp_path / "r.jsonl", lfm=object(), audio_source=source)


@pytest.mark.parametrize("bounded", [True, False])
def test_a_prompt_past_max_prompt_tokens_is_skipped_listed_and_counted(tiny_lfm, tiny_lfm_dir, tmp_path, bounded):
    """The bound at the other rows' longest prompt: the tool_result_speak row (its facts turn on top) is skipped
    before any decoding, with its reason; lifted (the production 4096), every row is decoded."""
    from pipeline.generation import prompt_tokens

    rows = one_row_per_class()
    rows_path, source = write_inputs(tmp_path, rows, with_audio={r.id for r in rows})
    tokens = {r.id: prompt_tokens(tiny_lfm, r, source.audio_for(r)) for r in rows}
    bound = max(n for row_id, n in tokens.items() if row_id != "h-s")
    assert tokens["h-s"] > bound
    params = parse_params(EvalClassesParams, {**PARAMS, "model_dir": str(tiny_lfm_dir), "rows": str(rows_path),
                                              "max_new_tokens": 4, "max_skipped_fraction": 0.25,
                                              **({"max_prompt_tokens": bound} if bounded else {})})
    out = tmp_path / "reports"
    metrics = run(params, out / "m.json", out / "cm.png", out / "r.jsonl", lfm=tiny_lfm, audio_source=source,
                  log=lambda _: None)
    records = {r["id"]: r for r in map(json.loads, (out / "r.jsonl").read_text().splitlines())}
    if bounded:
        reason = f"prompt of {tokens['h-s']} tokens, more than eval_classes.max_prompt_tokens = {bound}"
        assert metrics["n_skipped"] == 1 and metrics["skipped"] == [{"id": "h-s", "reason": reason}]
        assert metrics["per_class_counts"]["tool_result_speak"] == {"n": 0, "correct": 0, "skipped": 1}
        assert records["h-s"]["reply"] is None and records["h-s"]["skipped"] == reason
        assert metrics["n_evaluated"] == 3
    else:
        assert metrics["n_skipped"] == 0 and metrics["n_evaluated"] == 4 and records["h-s"]["reply"] is not None
    with pytest.raises(TooManySkipped, match="1 rows without user audio \\(or past a prompt bound\\)"):
        run(parse_params(EvalClassesParams, {**PARAMS, "rows": str(rows_path), "max_prompt_tokens": bound}),
            out / "m.json", out / "cm.png", out / "r.jsonl", lfm=tiny_lfm, audio_source=source, log=lambda _: None)


def test_metrics_from_hand_made_replies(tmp_path):
    rows = one_row_per_class()
    texts = {
        "h-m": "Sure, one moment, I'm on it.",  # ack: correct
        "h-s": "Sure, let me check that.",  # an ack instead of the narration: wrong
        "h-x": "Sorry, I don't have access to that tool here.",  # refusal: correct
        "h-n": "\x04\x04\x04",  # gibberish: other
    }
    audio = {r.id: (np.zeros(10, dtype=np.float32), 24_000) for r in rows}
    results = evaluate(rows, audio, lambda row, wave: reply_with(texts[row.id]), log=lambda _: None)
    m = summarize(results, n_rows_read=4)
    assert m["per_class"] == {"tool_match": 1.0, "tool_result_speak": 0.0, "tool_miss": 1.0, "non_tool": 0.0}
    assert m["overall_accuracy"] == 0.5 and m["n_correct"] == 2
    assert m["confusion"]["tool_result_speak"]["ack"] == 1 and m["confusion"]["non_tool"]["other"] == 1
    assert m["per_class_counts"]["tool_match"] == {"n": 1, "correct": 1, "skipped": 0}
    plot_confusion(m, tmp_path / "cm.png")
    assert (tmp_path / "cm.png").stat().st_size > 1000


def test_no_rows_gives_null_not_zero():
    m = summarize([], n_rows_read=0)
    assert m["overall_accuracy"] is None and m["per_class"]["tool_match"] is None
    assert "overall_accuracy" in m["unavailable"]


def test_select_rows_keeps_every_class():
    maker = RowMaker(random.Random(0), "heldout")
    rows = [maker.tool_match(f"m{i}") for i in range(5)] + [maker.non_tool(f"n{i}") for i in range(5)]
    picked = select_rows(rows, 4)
    assert sorted(r.id for r in picked) == ["m0", "m1", "n0", "n1"]


def test_params_errors_name_the_key():
    with pytest.raises(ParamsError, match="eval_classes.rows"):
        parse_params(EvalClassesParams, {k: v for k, v in PARAMS.items() if k != "rows"})
    with pytest.raises(ParamsError, match="eval_classes.max_rows"):
        parse_params(EvalClassesParams, {**PARAMS, "max_rows": 0})
    with pytest.raises(ParamsError, match="eval_classes.dtype"):
        parse_params(EvalClassesParams, {**PARAMS, "dtype": "int8"})
    with pytest.raises(ParamsError, match="eval_classes.max_prompt_tokens"):
        parse_params(EvalClassesParams, {**PARAMS, "max_prompt_tokens": 0})
    with pytest.raises(ParamsError, match="eval_classes.narration_min_coverage"):
        parse_params(EvalClassesParams, {**PARAMS, "narration_min_coverage": 0})
    assert parse_params(EvalClassesParams, PARAMS).generation == GenerationParams(max_new_tokens=16)


@pytest.mark.parametrize("change, message", [
    ({"model_dir": "no/such/model"}, "no/such/model: model folder not found (run the base_models stage first)"),
    ({"dtype": "int8"}, "params.yaml: 'eval_classes.dtype' must be one of 'bfloat16', 'float32', 'float16', got 'int8'"),
    ({"max_skipped_fraction": 0.5}, "4 rows without user audio (or past a prompt bound) and 0 bad lines out of 4 "
                                    "exceed max_skipped_fraction=0.5"),
])
def test_an_expected_failure_is_one_line_naming_the_cause(tmp_path, monkeypatch, capsys, change, message):
    from tasks.eval_classes import main

    rows_path, _ = write_inputs(tmp_path, one_row_per_class(), with_audio=set())
    raw = {**PARAMS, "rows": str(rows_path), "tts_manifest": str(tmp_path / "manifest.jsonl"),
           "tts_cache_dir": str(tmp_path / "cache"), "max_skipped_fraction": 1.0, **change}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"eval_classes": raw}))
    monkeypatch.chdir(tmp_path)
    assert main() == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"eval_classes: {message}")
    assert not (tmp_path / "reports").exists()  # nothing written


def test_a_model_folder_with_a_bad_interleave_record_is_one_line(tiny_lfm_dir, tmp_path, monkeypatch, capsys):
    import shutil

    from tasks.eval_classes import main

    model = tmp_path / "models" / "final"
    shutil.copytree(tiny_lfm_dir, model)
    (model / "interleave.json").write_text('{"first_text": 2}')
    rows_path, _ = write_inputs(tmp_path, one_row_per_class(), with_audio=set())
    raw = {**PARAMS, "model_dir": "models/final", "rows": str(rows_path), "tts_manifest": str(tmp_path / "manifest.jsonl"),
           "tts_cache_dir": str(tmp_path / "cache"), "max_skipped_fraction": 1.0}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"eval_classes": raw}))
    monkeypatch.chdir(tmp_path)
    assert main() == 1
    assert capsys.readouterr().err == ("eval_classes: models/final/interleave.json: not a valid interleave record "
                                       "(expected the keys first_text, n_text, n_audio, got {'first_text': 2})\n")
    assert not (tmp_path / "reports").exists()


def test_batch_size_4_gives_exactly_the_replies_of_batch_size_1(tiny_lfm_dir, tmp_path):
    import torch

    from pipeline.models import load_lfm

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # shared CI cores: more threads only thrash
    try:
        lfm = load_lfm(tiny_lfm_dir, dtype=torch.float32)
        maker = RowMaker(random.Random(7), "heldout")
        rows = one_row_per_class() + [maker.tool_match("h-m2"), maker.non_tool("h-n2")]
        rows_path, _ = write_inputs(tmp_path, rows, with_audio={r.id for r in rows} - {"h-n"})

        def loader(cache_dir, key):  # the same waveform for a key on every read, lengths differing by row
            rng = np.random.default_rng(sum(key.encode()))
            return (0.05 * rng.standard_normal(int(rng.integers(6_000, 16_000)))).astype(np.float32), 24_000

        source = ManifestAudio(tmp_path / "manifest.jsonl", tmp_path / "cache", loader=loader)
        records = {}
        for batch_size in (1, 4):
            params = parse_params(EvalClassesParams, {**PARAMS, "model_dir": str(tiny_lfm_dir), "rows": str(rows_path),
                                                      "dtype": "float32", "max_skipped_fraction": 0.3,
                                                      "batch_size": batch_size})
            out = tmp_path / f"bs{batch_size}"
            run(params, out / "m.json", out / "cm.png", out / "r.jsonl", lfm=lfm, audio_source=source, log=lambda _: None)
            lines = [json.loads(line) for line in (out / "r.jsonl").read_text().splitlines()]
            for r in lines:
                for reply in (r["reply"], (r["reply"] or {}).get("turn1")):
                    assert not reply or "seconds" not in reply  # wall clock: only in eval_classes.timings.json
            records[batch_size] = lines
    finally:
        torch.set_num_threads(before)
    assert records[4] == records[1]
    assert sum(r["reply"] is not None for r in records[1]) == 5


def test_batch_size_is_bounded_and_greedy_only():
    assert parse_params(EvalClassesParams, PARAMS).batch_size == 1
    with pytest.raises(ParamsError, match="eval_classes.batch_size"):
        parse_params(EvalClassesParams, {**PARAMS, "batch_size": 0})
    with pytest.raises(ParamsError, match="'eval_classes.batch_size' is 4, but the batched decoder is greedy only"):
        parse_params(EvalClassesParams, {**PARAMS, "batch_size": 4, "audio_temperature": 1.0})
