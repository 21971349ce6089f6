"""Coordinator demo: scripted streams show the early-dispatch path; the tiny model runs it end to end with fallbacks."""
from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import soundfile
import yaml

from tests.support.scripted import Opening, audio_frames, card_like_blip_codes, interleave
from coordinator.signature import BlipSignature, DetectionSpec
from pipeline.catalog import RowMaker
from pipeline.records import write_rows
from tasks.demo import main, run_demo

BLIP = card_like_blip_codes()


def rows():
    maker = RowMaker(random.Random(11), "heldout")
    return [maker.tool_match("d-m1"), maker.tool_match("d-m2"), maker.non_tool("d-n1")]


def test_scripted_streams_show_early_dispatch_and_fallbacks(tiny_lfm, tmp_path):
    signature = BlipSignature.from_codes(BLIP, detection=DetectionSpec(codebooks=(0,)))
    tokenizer = tiny_lfm.processor.text
    demo_rows = rows()
    openings = {"d-m1": Opening.BLIP_CB0, "d-m2": Opening.MISS_FRAME0, "d-n1": Opening.MISS_FRAME0}

    def streams(row):
        rng = np.random.default_rng(len(row.id))
        text = tokenizer.encode(row.assistant, add_special_tokens=False)
        return interleave(text, audio_frames(signature, openings[row.id], 14, rng))

    def decode(ids):
        return tokenizer.decode(ids, skip_special_tokens=True)

    lines = []
    turns = run_demo(demo_rows, signature, streams, tiny_lfm.processor.mimi, decode, tmp_path / "demo",
                     tmp_path / "timeline.png", chunk_frames=4, tool_latency_s=0.0, say=lines.append)
    early, fallback, chat = turns
    assert early.dispatch == "early" and early.detected_frame == 1 and early.tool_result["called"]
    assert early.dispatch_audio_s == 0.16 and early.saved_s == 14 * 0.08 - 0.16
    assert fallback.dispatch == "ack_end" and fallback.detected_frame is None and fallback.tool_result["called"]
    assert chat.dispatch == "ack_end" and not chat.tool_result["called"]  # not an ack: the tool is not called
    assert any("BLIP DETECTED at audio frame 1" in line for line in lines)
    assert any("ack ended after 14 audio frames" in line for line in lines)
    assert "1/2 tool turns dispatched early" in lines[-1]
    for turn in turns:
        wave, rate = soundfile.read(turn.wav_path)
        assert rate == 24_000 and wave.size == 14 * 1920  # every frame decoded, chunk by chunk
    assert (tmp_path / "timeline.png").read_bytes()[:4] == b"\x89PNG"


def test_main_runs_the_tiny_model_with_fallbacks(tiny_lfm_dir, tmp_path, monkeypatch, capsys):
    from pipeline.tts_cache import Clip, TTSCache, TTSRequest

    demo_rows = rows()
    write_rows(tmp_path / "heldout.jsonl", demo_rows)
    cache = TTSCache(tmp_path / "cache")
    clips = [Clip(TTSRequest("test", "m", "v", "vh", 1.0, r.user), np.full(4_800, 300, dtype=np.int16), 24_000)
             for r in demo_rows]
    cache.put_many(clips)
    (tmp_path / "manifest.jsonl").write_text("".join(
        json.dumps({"id": r.id, "user_key": c.key, "assistant_key": None, "turn1_user_key": None,
                    "turn1_assistant_key": None}) + "\n" for r, c in zip(demo_rows, clips)))
    np.save(tmp_path / "codes.npy", BLIP)
    (tmp_path / "sig.json").write_text(json.dumps({
        "axes": ["batch", "codebook", "frame"], "shape": [1, 8, 2], "n_frames": 2, "n_codebooks": 8,
        "detection": {"codebooks": [0], "frames": [0, 1]}, "frame_rate_hz": 12.5, "sample_rate": 24000,
        "codes_sha256": hashlib.sha256((tmp_path / "codes.npy").read_bytes()).hexdigest()}))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"demo": {
        "model_dir": str(tiny_lfm_dir), "rows": "heldout.jsonl", "tts_manifest": "manifest.jsonl",
        "tts_cache_dir": "cache", "codes_npy": "codes.npy", "signature_json": "sig.json", "max_new_tokens": 24,
        "device": "cpu", "tool_latency_s": 0.0}}))
    monkeypatch.chdir(tmp_path)
    assert main(["--n-per-class", "1"]) == 0
    out = capsys.readouterr().out
    assert "demo: 2 turns" in out and "tool turns dispatched" in out
    assert sorted(p.name for p in (tmp_path / "reports/demo").iterdir()) == ["d-m1.wav", "d-n1.wav"]
    assert (tmp_path / "reports/plots/demo_timeline.png").exists()


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
    assert main(["--codes-npy", "codes.npy"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("demo: ") and "signature.json" in err


def test_the_timeline_legend_sits_outside_the_bars():
    import matplotlib.pyplot as plt

    from tasks.demo import DemoTurn, timeline_figure

    turns = [DemoTurn("a", "tool_match", "weather in Paris?", audio_s=3.2, wall_s=4.1, detected_frame=1,
                      detected_wall_s=0.4, dispatch="early", dispatch_frame=1, dispatch_wall_s=0.4,
                      tool_result={"called": True}),
             DemoTurn("b", "non_tool", "a joke", audio_s=4.0, wall_s=5.2, dispatch="ack_end", dispatch_frame=50,
                      dispatch_wall_s=5.1, tool_result={"called": False})]
    for shown in (turns, turns[:1]):
        fig = timeline_figure(shown, note="a long note " * 20)
        renderer = fig.canvas.get_renderer()
        fig.draw(renderer)  # the constrained layout places everything on draw
        legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
        assert len(legends) == 1
        box = legends[0].get_window_extent(renderer)
        assert not any(box.overlaps(ax.get_window_extent(renderer)) for ax in fig.axes)
        plt.close(fig)
