"""Stage eval_blip: reads eval_classes records and a blip signature written like the blip_codes stage does."""
from __future__ import annotations

import hashlib
import json

import numpy as np

from tests.support.scripted import card_like_blip_codes
from tasks.eval_blip import EvalBlipParams, run

BLIP = card_like_blip_codes()


def write_signature(tmp_path, codebooks=(0,)):
    npy = tmp_path / "tool_invoke.codes.npy"
    np.save(npy, BLIP)
    sig = tmp_path / "tool_invoke.signature.json"
    sig.write_text(json.dumps({
        "axes": ["batch", "codebook", "frame"], "shape": list(BLIP.shape), "n_frames": 2, "n_codebooks": 8,
        "detection": {"codebooks": list(codebooks), "frames": [0, 1]}, "frame_rate_hz": 12.5, "sample_rate": 24000,
        "cb0_across_frames": BLIP[0, 0].tolist(), "codes_sha256": hashlib.sha256(npy.read_bytes()).hexdigest()}))
    return npy, sig


def record(row_id, row_class, codes, behaviour="ack", finish="im_end"):
    reply = None if codes is None else {
        "text": "x", "text_tokens": [], "audio_codes": np.asarray(codes).tolist(), "end_of_audio": True,
        "finish_reason": finish, "layout": [], "audio_frames_before_text_end": 0}
    return {"id": row_id, "class": row_class, "behaviour": behaviour, "correct": True, "reply": reply,
            "skipped": None if codes is not None else "no user audio"}


def test_stage_writes_metrics_heatmap_and_rows(tmp_path):
    npy, sig = write_signature(tmp_path)
    rng = np.random.default_rng(0)
    blip_open = rng.integers(0, 2048, size=(8, 5))
    blip_open[:, :2] = BLIP[0]  # bit-exact opening
    cb0_open = rng.integers(0, 2048, size=(8, 5))
    cb0_open[0, :2] = BLIP[0, 0]
    miss = rng.integers(0, 2047, size=(8, 5))
    miss[0, 0] = 1049  # the card's non-tool opening
    records = [record("m1", "tool_match", blip_open), record("m2", "tool_match", cb0_open),
               record("m3", "tool_match", np.zeros((8, 0))), record("m4", "tool_match", None),
               record("n1", "non_tool", miss, "direct"), record("x1", "tool_miss", cb0_open, "refusal"),
               record("s1", "tool_result_speak", miss, "narration")]
    src = tmp_path / "eval_classes.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    m = run(EvalBlipParams(), src, npy, sig, tmp_path / "eval_blip.json", tmp_path / "blip_positions.png",
            tmp_path / "eval_blip.jsonl")
    assert m["n_tool_match"] == 3 and m["n_negative"] == 2  # m4 has no reply; tool_result_speak is neither
    assert m["full_match_rate"] == 0.5 and m["cb0_match_rate"] == 1.0 and m["cb0_or_cb3_match_rate"] == 1.0
    assert m["n_unscorable"] == 1 and m["unscorable"][0]["reason"] == "no audio in the reply"
    assert m["false_positive_rate"] == 0.5  # the tool_miss reply opens with the blip's cb0
    assert len(m["per_position"]) == 8 and len(m["per_position"][0]) == 2 and m["per_position"][0] == [1.0, 1.0]
    assert m["decision_frame_histogram"]["tool_match"] == {"match": {"1": 2}, "no_match": {"0": 1}}
    assert m["decision_latency_ms"] == 160.0 and m["matched_copy_counts"] == {"0": 2}  # 2 frames of 80 ms
    assert any("m4" in p for p in m["records_problems"])
    assert m["cb0_match_rate_judged_ack"] == 1.0 and m["cb0_match_rate_judged_not_ack"] is None
    assert json.loads((tmp_path / "eval_blip.json").read_text()) == {  # DVC's headline
        "cb0": 1.0, "tpr": m["detector_true_positive_rate"], "fpr": 0.5, "latency_ms": 160.0}
    on_disk = json.loads((tmp_path / "eval_blip.details.json").read_text())
    assert {"full_match_rate", "cb0_match_rate", "cb0_or_cb3_match_rate", "false_positive_rate", "per_position",
            "decision_frame_histogram", "n_tool_match", "n_negative"} <= set(on_disk)
    assert (tmp_path / "blip_positions.png").read_bytes()[:4] == b"\x89PNG"
    rows = [json.loads(line) for line in (tmp_path / "eval_blip.jsonl").read_text().splitlines()]
    assert {r["id"] for r in rows} == {"m1", "m2", "m3", "n1", "x1", "s1"}


def test_a_double_blip_reports_the_copy_that_fired_and_its_latency(tmp_path):
    codes = np.full((1, 8, 5), 7, dtype=np.int64)
    codes[0, 0] = [430, 127, 900, 431, 128]
    npy, sig = tmp_path / "tool_invoke.codes.npy", tmp_path / "tool_invoke.signature.json"
    np.save(npy, codes)
    sig.write_text(json.dumps({
        "axes": ["batch", "codebook", "frame"], "shape": [1, 8, 5], "n_frames": 5, "n_codebooks": 8,
        "detection": {"codebooks": [0]}, "frame_rate_hz": 12.5, "sample_rate": 24000,
        "copies": [{"frame_start": 0, "n_frames": 2}, {"frame_start": 3, "n_frames": 2}],
        "codes_sha256": hashlib.sha256(npy.read_bytes()).hexdigest()}))
    first_ok, second_ok = codes[0].copy(), codes[0].copy()
    second_ok[0, 0] = 1049  # copy 0 lost: only copy 1 can fire, 400 ms in
    src = tmp_path / "eval_classes.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in [
        record("a", "tool_match", first_ok), record("b", "tool_match", second_ok),
        record("c", "tool_match", second_ok)]))
    m = run(EvalBlipParams(), src, npy, sig, tmp_path / "m.json", tmp_path / "p.png", tmp_path / "rows.jsonl")
    assert m["detector_true_positive_rate"] == 1.0 and m["cb0_match_rate"] == 1.0
    assert m["matched_copy_counts"] == {"0": 1, "1": 2}
    assert m["decision_latency_ms"] == 400.0  # median of 160, 400, 400
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "rows.jsonl").read_text().splitlines())}
    assert (rows["b"]["decision"]["copy_index"], rows["b"]["decision"]["frame_index"]) == (1, 4)


def test_no_tool_match_rows_are_null_with_reasons(tmp_path):
    npy, sig = write_signature(tmp_path)
    src = tmp_path / "eval_classes.jsonl"
    src.write_text(json.dumps(record("n1", "non_tool", np.zeros((8, 3), dtype=int), "direct")) + "\n")
    m = run(EvalBlipParams(), src, npy, sig, tmp_path / "m.json", tmp_path / "p.png", tmp_path / "r.jsonl")
    assert m["cb0_match_rate"] is None and m["unavailable"]["cb0_match_rate"] == "no tool_match rows"
    assert m["per_position"][0] == [None, None] and m["false_positive_rate"] == 0.0
    assert (tmp_path / "p.png").exists()


def test_expected_failures_are_one_line(tmp_path, monkeypatch, capsys):
    import yaml

    from tasks.eval_blip import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"eval_blip": {"negative_classes": []}}))
    assert main() == 1
    assert capsys.readouterr().err == "eval_blip: params.yaml: 'eval_blip.negative_classes' must name at least one class\n"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"eval_blip": {"negative_classes": ["tool_match"]}}))
    assert main() == 1
    assert "'eval_blip.negative_classes' must be a list of one of 'non_tool'" in capsys.readouterr().err
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"eval_blip": {"negative_classes": ["non_tool"]}}))
    assert main() == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("eval_blip: data/blips/tool_invoke.codes.npy")
