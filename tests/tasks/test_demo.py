"""Coordinator demo: scripted streams show the early-dispatch path; the tiny model runs it end to end with fallbacks."""
from __future__ import annotations

import hashlib
import json
import random

from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml

from tests.support.scripted import Opening, audio_frames, card_like_blip_codes, interleave
from coordinator.signature import BlipSignature, DetectionSpec
from pipeline.catalog import RowMaker
from pipeline.params import parse_params
from pipeline.records import write_rows
from tasks.demo import DemoTurn, main, run_demo, summarize

BLIP = card_like_blip_codes()


def rows():
    maker = RowMaker(random.Random(11), "heldout")
    return [maker.tool_match("d-m1"), maker.tool_match("d-m2"), maker.non_tool("d-n1")]


def test_scripted_streams_show_early_dispatch_fallbacks_and_false_dispatch(tiny_lfm, tmp_path):
    signature = BlipSignature.from_codes(BLIP, detection=DetectionSpec(codebooks=(0,)))
    tokenizer = tiny_lfm.processor.text
    maker = RowMaker(random.Random(11), "heldout")
    demo_rows = [*rows(), maker.non_tool("d-n2"), maker.tool_miss("d-x1", hard=True)]
    openings = {"d-m1": Opening.BLIP_CB0, "d-m2": Opening.MISS_FRAME0, "d-n1": Opening.MISS_FRAME0,
                "d-n2": Opening.BLIP_CB0, "d-x1": Opening.MISS_FRAME0}

    def streams(row):
        rng = np.random.default_rng(len(row.id))
        text = tokenizer.encode(row.assistant, add_special_tokens=False)
        return interleave(text, audio_frames(signature, openings[row.id], 14, rng))

    def decode(ids):
        return tokenizer.decode(ids, skip_special_tokens=True)

    lines = []
    turns = run_demo(demo_rows, signature, streams, tiny_lfm.processor.mimi, decode, tmp_path / "demo",
                     tmp_path / "timeline.png", chunk_frames=4, tool_latency_s=0.0, rows_label="heldout.jsonl",
                     caption="scripted streams", say=lines.append)
    early, fallback, chat, false_blip, miss = turns
    assert early.dispatch == "early" and early.detected_frame == 1 and early.tool_result["called"]
    assert early.dispatch_audio_s == 0.16 and early.ack_end_audio_s == pytest.approx(14 * 0.08)
    assert early.saving_s("audio") == pytest.approx(14 * 0.08 - 0.16)
    assert fallback.dispatch == "ack_end" and fallback.detected_frame is None and fallback.tool_result["called"]
    assert fallback.saving_s("audio") == 0.0
    assert chat.dispatch == "ack_end" and not chat.tool_dispatched  # not an ack: the tool is not called
    assert false_blip.dispatch == "early" and false_blip.tool_dispatched and not false_blip.tool_result["called"]
    assert miss.row_class == "tool_miss" and not miss.tool_dispatched  # a refusal is no ack
    assert any("BLIP DETECTED at audio frame 1" in line for line in lines)
    assert any("ack ended after 14 audio frames" in line for line in lines)
    assert lines[-1].startswith("1/2 tool turns dispatched early on the blip, 1 by the ack-end fallback, 0 not at all; "
                                "1/3 non-tool turns dispatched")
    assert lines[-2] == "Rows: heldout.jsonl (scripted streams)"
    summary = json.loads((tmp_path / "demo/summary.json").read_text())
    assert {k: summary[k] for k in ("rows", "caption", "tool_turns", "early_dispatch", "fallback_dispatch",
                                    "undispatched_tool_turns", "negative_turns", "false_dispatch")} == {
        "rows": "heldout.jsonl", "caption": "scripted streams", "tool_turns": 2, "early_dispatch": 1,
        "fallback_dispatch": 1, "undispatched_tool_turns": 0, "negative_turns": 3, "false_dispatch": 1}
    assert summary["mean_saving_audio_s"] == pytest.approx((14 * 0.08 - 0.16) / 2)  # the fallback turn saves 0
    assert summary["mean_saving_wall_s"] >= 0
    assert [t["id"] for t in summary["turns"]] == ["d-m1", "d-m2", "d-n1", "d-n2", "d-x1"]
    for turn in turns:
        wave, rate = soundfile.read(turn.wav_path)
        assert rate == 24_000 and wave.size == 14 * 1920  # every frame decoded, chunk by chunk
    assert (tmp_path / "timeline.png").read_bytes()[:4] == b"\x89PNG"


def test_the_saving_is_the_ack_end_minus_the_early_dispatch_on_both_clocks():
    def turn(row_id, row_class, dispatch, frame, wall, called=True):
        return DemoTurn(row_id, row_class, "u", audio_s=2.48, wall_s=6.0, ack_end_frame=30, ack_end_wall_s=5.0,
                        dispatch=dispatch, dispatch_frame=frame, dispatch_wall_s=wall,
                        tool_result={"dispatched": called, "called": called and row_class == "tool_match"})

    early = turn("e", "tool_match", "early", 1, 0.75)
    fallback = turn("f", "tool_match", "ack_end", 30, 5.0)
    missed = turn("m", "tool_match", "ack_end", 30, 5.0, called=False)  # not an ack: never dispatched
    false_ack = turn("n", "non_tool", "ack_end", 30, 5.0)  # the fallback took a non-tool reply for an ack
    quiet = turn("q", "tool_miss", "ack_end", 30, 5.0, called=False)
    # with the blip the tool starts at frame 1's end (0.16 s), without it at the ack's end (30 frames = 2.4 s)
    assert early.result_ready("audio", 0.3) == (pytest.approx(0.46), pytest.approx(2.7))
    assert early.result_ready("wall", 0.3) == (pytest.approx(1.05), pytest.approx(5.3))
    assert (early.saving_s("audio"), early.saving_s("wall")) == (pytest.approx(2.24), pytest.approx(4.25))
    assert fallback.result_ready("audio", 0.3) == (pytest.approx(2.7), pytest.approx(2.7))
    assert (fallback.saving_s("audio"), missed.saving_s("audio")) == (0.0, None)
    summary = summarize([early, fallback, missed, false_ack, quiet], "r.jsonl", "why", 0.3)
    assert (summary.tool_turns, summary.early_dispatch, summary.fallback_dispatch, summary.undispatched_tool_turns,
            summary.negative_turns, summary.false_dispatch) == (3, 1, 1, 1, 2, 1)
    assert summary.mean_saving_audio_s == pytest.approx(1.12)  # (2.24 + 0) / 2: the missed turn saves nothing
    assert summary.mean_saving_wall_s == pytest.approx(2.125)
    assert summary.to_json()["turns"][0]["audio"] == {
        "dispatch_s": pytest.approx(0.16), "ack_end_s": pytest.approx(2.4), "result_ready_with_blip_s": pytest.approx(0.46),
        "result_ready_without_blip_s": pytest.approx(2.7), "saving_s": pytest.approx(2.24)}
    assert "ready 1.12s of audio (2.12s wall) sooner on average" in summary.line()
    no_blip = summarize([fallback, quiet], "r.jsonl", "why", 0.3)
    assert "no blip on any tool turn, so nothing is saved" in no_blip.line() and "sooner" not in no_blip.line()


def make_workspace(root, model_dir):
    """The demo's inputs as a pipeline run leaves them (3 rows, their user audio, the blip), demo params at 24 tokens."""
    from pipeline.tts_cache import Clip, TTSCache, TTSRequest

    demo_rows = rows()
    (root / "data").mkdir(parents=True)
    write_rows(root / "data/heldout.jsonl", demo_rows)
    cache = TTSCache(root / "data/cache")
    clips = [Clip(TTSRequest("test", "m", "v", "vh", 1.0, r.user), np.full(4_800, 300, dtype=np.int16), 24_000)
             for r in demo_rows]
    cache.put_many(clips)
    (root / "data/manifest.jsonl").write_text("".join(
        json.dumps({"id": r.id, "user_key": c.key, "assistant_key": None, "turn1_user_key": None,
                    "turn1_assistant_key": None}) + "\n" for r, c in zip(demo_rows, clips)))
    np.save(root / "data/codes.npy", BLIP)
    (root / "data/sig.json").write_text(json.dumps({
        "axes": ["batch", "codebook", "frame"], "shape": [1, 8, 2], "n_frames": 2, "n_codebooks": 8,
        "detection": {"codebooks": [0], "frames": [0, 1]}, "frame_rate_hz": 12.5, "sample_rate": 24000,
        "codes_sha256": hashlib.sha256((root / "data/codes.npy").read_bytes()).hexdigest()}))
    (root / "params.yaml").write_text(yaml.safe_dump({"demo": {
        "model_dir": str(model_dir), "rows": "data/heldout.jsonl", "tts_manifest": "data/manifest.jsonl",
        "tts_cache_dir": "data/cache", "codes_npy": "data/codes.npy", "signature_json": "data/sig.json",
        "caption": "test rows", "max_new_tokens": 24, "device": "cpu", "tool_latency_s": 0.0}}))


def test_main_runs_the_tiny_model_in_the_workdir(tiny_lfm_dir, tmp_path, monkeypatch, capsys):
    workspace = tmp_path / "runs" / "smoke"
    make_workspace(workspace, tiny_lfm_dir)
    monkeypatch.chdir(tmp_path)  # the repo root: the demo reads and writes inside --workdir only
    assert main(["--workdir", "runs/smoke", "--n-per-class", "1"]) == 0
    out = capsys.readouterr().out
    assert "demo: 2 turns from data/heldout.jsonl (test rows)" in out and "tool turns dispatched" in out
    assert sorted(p.name for p in (workspace / "reports/demo").iterdir()) == ["d-m1.wav", "d-n1.wav", "summary.json"]
    summary = json.loads((workspace / "reports/demo/summary.json").read_text())
    assert (summary["tool_turns"], summary["negative_turns"], summary["rows"]) == (1, 1, "data/heldout.jsonl")
    assert (workspace / "reports/plots/demo_timeline.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"] and Path.cwd() == tmp_path


def test_without_a_workspace_it_names_the_command_that_makes_one(repo_root, tmp_path, monkeypatch, capsys):
    (tmp_path / "params.yaml").write_bytes((repo_root / "params.yaml").read_bytes())  # a fresh clone's root
    monkeypatch.chdir(tmp_path)
    assert main([]) == 1
    err = capsys.readouterr().err
    assert err == ("demo: no pipeline outputs here (data/blips/tool_invoke.codes.npy not found): make a workspace "
                   "with `make run PROFILE=learn`, then run `make demo PROFILE=learn`\n")
    (tmp_path / "runs/smoke/models/final").mkdir(parents=True)  # `make run` made one: point at it
    assert main([]) == 1
    assert capsys.readouterr().err.endswith("the workspaces are under runs/: run `make demo PROFILE=smoke`\n")
    assert main(["--workdir", "runs/learn"]) == 1
    assert capsys.readouterr().err == ("demo: --workdir runs/learn: no such directory: make it with "
                                       "`make run PROFILE=learn`, then run `make demo PROFILE=learn`\n")
    (tmp_path / "runs/learn").mkdir()
    (tmp_path / "runs/learn/params.yaml").write_text("demo: {codes_npy: blip.npy}\n")  # read from the workdir
    assert main(["--workdir", "runs/learn"]) == 1
    assert capsys.readouterr().err.startswith("demo: no pipeline outputs in runs/learn (blip.npy not found): make it")


def test_each_profile_demos_the_rows_it_can_show(repo_root):
    from pipeline.workspace import profile_params
    from tasks.demo import DemoParams

    demo = {p: parse_params(DemoParams, profile_params(repo_root, p)["demo"]) for p in ("smoke", "learn")}
    production = parse_params(DemoParams, yaml.safe_load((repo_root / "params.yaml").read_text())["demo"])
    learn = profile_params(repo_root, "learn")
    assert (str(demo["learn"].rows), str(demo["learn"].tts_manifest)) == (
        learn["eval_classes"]["rows"], learn["eval_classes"]["tts_manifest"])  # the rows the model was fitted on
    assert "fitted on" in demo["learn"].caption
    assert demo["smoke"].rows == production.rows == Path("data/dataset/heldout.jsonl")
    assert "never learned to emit the blip" in demo["smoke"].caption and "held-out" in production.caption


def test_streaming_decoder_plays_silence_for_a_frame_mimi_cannot_decode(tiny_mimi, tmp_path):
    """A sampled 2048 in a deep codebook (legal only in codebook 0) must not crash the demo."""
    from tasks.demo import StreamingDecoder, WavStream

    decoder = StreamingDecoder(tiny_mimi, WavStream(tmp_path / "turn.wav"), chunk_frames=2)
    good = np.arange(8, dtype=np.int64) * 100
    bad = good.copy()
    bad[3] = 2048
    for frame in (good, bad, good):
        decoder.add(frame)
    decoder.close()
    audio, rate = soundfile.read(tmp_path / "turn.wav", dtype="float32")
    assert rate == 24_000 and audio.shape == (3 * 1920,)
    assert not audio[1920:3840].any()  # the undecodable frame is silence


def test_bad_settings_and_missing_inputs_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no params.yaml here: the defaults apply, flags override them
    assert main(["--n-per-class", "0"]) == 1
    assert capsys.readouterr().err == "demo: params.yaml: 'demo.n_per_class' must be in [1, inf], got 0\n"
    np.save(tmp_path / "codes.npy", BLIP)
    assert main(["--codes-npy", "codes.npy"]) == 1  # a partial workspace: the first missing input is named
    assert capsys.readouterr().err == ("demo: data/blips/tool_invoke.signature.json: not found (the pipeline has "
                                       "not made it: make a workspace with `make run PROFILE=learn`, then run "
                                       "`make demo PROFILE=learn`)\n")


def test_the_timeline_legend_and_title_sit_outside_the_bars():
    import matplotlib.pyplot as plt

    from tasks.demo import timeline_figure

    turns = [DemoTurn("a", "tool_match", "weather in Paris?", audio_s=3.2, wall_s=4.1, detected_frame=1,
                      detected_wall_s=0.4, ack_end_frame=40, ack_end_wall_s=4.0, dispatch="early", dispatch_frame=1,
                      dispatch_wall_s=0.4, tool_result={"dispatched": True, "called": True}),
             DemoTurn("b", "non_tool", "a joke", audio_s=4.0, wall_s=5.2, ack_end_frame=50, ack_end_wall_s=5.1,
                      dispatch="ack_end", dispatch_frame=50, dispatch_wall_s=5.1,
                      tool_result={"dispatched": False, "called": False})]
    for shown in (turns, turns[:1]):
        fig = timeline_figure(shown, note="a long note " * 20 + "\nRows: somewhere (" + "why " * 40 + ")")
        renderer = fig.canvas.get_renderer()
        fig.draw(renderer)  # the constrained layout places everything on draw
        legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
        assert len(legends) == 1
        for outside in (legends[0], fig._suptitle):
            box = outside.get_window_extent(renderer)
            assert not any(box.overlaps(ax.get_window_extent(renderer)) for ax in fig.axes)
        plt.close(fig)
