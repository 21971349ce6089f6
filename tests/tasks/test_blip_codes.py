"""The blip_codes stage: Mimi round trip, codes layout, determinism, prefix property."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile
import yaml

from pipeline.audio import to_float32, to_int16
from pipeline.models import encode_codes
from tasks import blip_codes
from pipeline.blip import BlipParams, synthesize_blip

BLIP = synthesize_blip(BlipParams())


def test_default_blip_encodes_to_one_batch_eight_codebooks_two_frames(tiny_mimi):
    codes = encode_codes(tiny_mimi, BLIP, 24000)
    assert codes.shape == (1, 8, 2) and codes.dtype == np.int64
    assert ((0 <= codes) & (codes < 2048)).all()


def test_encoding_is_deterministic(tiny_mimi):
    np.testing.assert_array_equal(encode_codes(tiny_mimi, BLIP, 24000), encode_codes(tiny_mimi, BLIP, 24000))


def test_blip_then_speech_starts_with_the_blips_detection_codes(tiny_mimi):
    """Mimi is causal: what follows the blip keeps the blip's codebook-0 frames.

    Only the detection codebook is asserted: deep codebooks may flip on a near-tie whose
    side depends on the input length and the CPU's BLAS kernels (codebook 7 at frame 0
    differed on an AMD EPYC with OPENBLAS_CORETYPE=Haswell); the pipeline never relies on them.
    """
    rng = np.random.default_rng(0)
    speech = (rng.normal(0, 3000, 24000)).astype(np.int16)
    alone = encode_codes(tiny_mimi, BLIP, 24000)
    joined = encode_codes(tiny_mimi, np.concatenate([BLIP, speech]), 24000)
    assert joined.shape[:2] == alone.shape[:2] and joined.shape[2] > alone.shape[2]
    np.testing.assert_array_equal(joined[0, 0, :2], alone[0, 0])


def test_preview_prefix_reproduces_the_detection_codes(tiny_mimi):
    """Training prepends the preview, so the signature is the preview's codes.

    Codebook 0 (the detection target) must survive any continuation; a deep
    codebook may flip on a near-tie (latents differ by ~1e-7 with the length),
    which is why detection does not rely on it.
    """
    trip = blip_codes.round_trip(tiny_mimi, BLIP, 24000)
    assert trip.preview.shape == (3840,) and trip.preview.dtype == np.int16
    rng = np.random.default_rng(1)
    for _ in range(3):
        speech = rng.normal(0, 0.1, int(rng.integers(4000, 30000))).astype(np.float32)
        ack = to_int16(np.concatenate([to_float32(trip.preview), speech]))  # as preprocessing mixes it
        np.testing.assert_array_equal(ack[:3840], trip.preview)
        np.testing.assert_array_equal(encode_codes(tiny_mimi, ack, 24000)[0, 0, :2], trip.codes[0, 0])


def test_stage_writes_codes_preview_and_signature(tiny_lfm_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/blips").mkdir(parents=True)
    soundfile.write(tmp_path / blip_codes.BLIP_WAV, BLIP, 24000, subtype="PCM_16")
    document = blip_codes.run(blip_codes.BLIP_WAV, tiny_lfm_dir, [0])

    codes = np.load(blip_codes.BLIP_CODES_NPY)
    assert codes.shape == (1, 8, 2) and codes.dtype == np.int64
    signature = json.loads(blip_codes.BLIP_SIGNATURE_JSON.read_text())
    throughput = document.pop("throughput")  # returned, never written: the signature is the same on every machine
    assert signature == document
    assert throughput["device"] == "cpu" and throughput["audio_seconds"] == 3 * 0.16
    assert throughput["audio_seconds_per_second"] > 0
    assert signature["axes"] == ["batch", "codebook", "frame"]
    assert signature["detection"] == {"codebooks": [0], "frames": [0, 1]}
    assert signature["cb0_across_frames"] == codes[0, 0, :].tolist()
    assert signature["copies"] == [{"frame_start": 0, "n_frames": 2, "cb0_across_frames": codes[0, 0, :].tolist()}]
    preview, rate = soundfile.read(blip_codes.BLIP_PREVIEW_WAV, dtype="int16")
    assert rate == 24000 and preview.shape == (3840,)

    first = {p: p.read_bytes() for p in (blip_codes.BLIP_CODES_NPY, blip_codes.BLIP_PREVIEW_WAV, blip_codes.BLIP_SIGNATURE_JSON)}
    blip_codes.run(blip_codes.BLIP_WAV, tiny_lfm_dir, [0])
    assert all(p.read_bytes() == content for p, content in first.items())


def test_stage_rejects_bad_params_and_a_missing_model_in_one_line(tiny_lfm_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/blips").mkdir(parents=True)
    soundfile.write(tmp_path / blip_codes.BLIP_WAV, BLIP, 24000, subtype="PCM_16")
    cases = [
        ({"model_dir": str(tiny_lfm_dir), "detect_codebooks": [9]},
         "blip_codes: params.yaml: 'blip_codes.detect_codebooks' must be in [0, 7], got 9"),
        ({"model_dir": str(tiny_lfm_dir), "detect_codebooks": [0, 0]},
         "blip_codes: params.yaml: 'blip_codes.detect_codebooks' must list distinct codebooks"),
        ({"model_dir": str(tiny_lfm_dir), "detect": [0]}, "blip_codes: params.yaml: 'blip_codes.detect' is not a known key"),
        ({"model_dir": "models/nope"}, "blip_codes: models/nope: model folder not found"),
        ({"model_dir": str(tiny_lfm_dir), "blip": {"repeats": 0}}, "blip_codes: params.yaml: 'blip.repeats' must be"),
    ]
    for params, message in cases:
        blip = params.pop("blip", {})  # the blip's copies come from its own params
        (tmp_path / "params.yaml").write_text(yaml.safe_dump({"blip_codes": params, "blip": blip}))
        assert blip_codes.main() == 1
        err = capsys.readouterr().err
        assert err.startswith(message) and err.count("\n") == 1, err
        assert not blip_codes.BLIP_CODES_NPY.exists()


def test_copy_spans_are_the_frames_each_cue_touches():
    from pipeline.blip_mimi import copy_spans

    def spans(*args):
        return [(c.frame_start, c.n_frames) for c in copy_spans(*args)]

    assert spans(1, 160, 0, 2) == [(0, 2)]  # one cue = the whole blip
    assert spans(2, 160, 0, 4) == [(0, 2), (2, 2)]  # on frame boundaries
    assert spans(2, 160, 40, 5) == [(0, 2), (2, 3)]  # copy 1 starts at 200 ms = frame 2.5: frames 2-4
    assert spans(3, 120, 0, 5) == [(0, 2), (1, 2), (3, 2)]  # copies 0 and 1 share frame 1


def test_a_double_blip_records_each_copys_span_and_codes(tiny_lfm_dir, tmp_path, monkeypatch):
    from coordinator.signature import BlipSignature

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/blips").mkdir(parents=True)
    double = BlipParams(repeats=2, gap_ms=40)
    soundfile.write(tmp_path / blip_codes.BLIP_WAV, synthesize_blip(double), 24000, subtype="PCM_16")
    document = blip_codes.run(blip_codes.BLIP_WAV, tiny_lfm_dir, [0], double)

    codes = np.load(blip_codes.BLIP_CODES_NPY)
    assert codes.shape[2] == 5  # 360 ms
    assert [(c["frame_start"], c["n_frames"]) for c in document["copies"]] == [(0, 2), (2, 3)]
    assert document["copies"][1]["cb0_across_frames"] == codes[0, 0, 2:5].tolist()
    assert document["cb0_across_frames"] == codes[0, 0, :].tolist()  # the whole blip, as before
    signature = BlipSignature.load(blip_codes.BLIP_CODES_NPY, blip_codes.BLIP_SIGNATURE_JSON)
    assert signature.n_copies == 2 and signature.copy_cb0_across_frames(1).tolist() == codes[0, 0, 2:5].tolist()
