"""Spec: BlipSignature reads the (1, 8, F) blip by named axis and refuses bad files."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from coordinator.detector import DecisionState, StreamingBlipDetector
from coordinator.matchers import CodebookMatch
from tests.support.reference import CardRecipeLoop, card_is_blip_emitted
from tests.support.scripted import Opening, audio_frames, card_like_blip_codes
from coordinator.signature import BlipSignature, SignatureError


def hand_made_codes() -> np.ndarray:
    """codes[0, k, i] = 100 * k + i: every value names its own (codebook, frame)."""
    k = np.arange(8)[:, None]
    i = np.arange(2)[None, :]
    return (100 * k + i)[None].astype(np.int64)


def write_blip(tmp_path: Path, codes: np.ndarray, **overrides) -> tuple[Path, Path]:
    npy = tmp_path / "tool_invoke.codes.npy"
    np.save(npy, codes)
    meta = {
        "axes": ["batch", "codebook", "frame"],
        "shape": list(codes.shape),
        "n_frames": codes.shape[2],
        "n_codebooks": codes.shape[1],
        "detection": {"codebooks": [0], "frames": list(range(codes.shape[2]))},
        "frame_rate_hz": 12.5,
        "sample_rate": 24000,
        "blip_sha256": "b" * 64,
        "mimi_sha256": "m" * 64,
        "codes_sha256": hashlib.sha256(npy.read_bytes()).hexdigest(),
        # extra keys the blip_codes stage also writes: ignored, except cb0_across_frames (cross-checked)
        "cb0_across_frames": codes[0, 0, :].tolist(),
        "roundtrip": {"stable_codebooks": [0, 1], "raw_cb0_across_frames": codes[0, 0, :].tolist()},
        "preview_sha256": "p" * 64,
    }
    meta.update(overrides)
    sig = tmp_path / "tool_invoke.signature.json"
    sig.write_text(json.dumps(meta))
    return npy, sig


# ------------------------------------------------------------------ accessors
def test_accessors_name_the_axis():
    sig = BlipSignature.from_codes(hand_made_codes())
    assert sig.n_codebooks == 8 and sig.n_frames == 2
    assert sig.cb0_across_frames.tolist() == [0, 1]  # codebook 0, frames 0 and 1
    assert sig.codebook_across_frames(3).tolist() == [300, 301]
    assert sig.all_codebooks_at_frame(1).tolist() == [1, 101, 201, 301, 401, 501, 601, 701]
    assert sig.cb0_across_frames.shape == (2,)
    assert sig.all_codebooks_at_frame(0).shape == (8,)
    assert sig.code(codebook=5, frame=1) == 501


def test_accessors_are_read_only_and_there_is_no_positional_indexing():
    sig = BlipSignature.from_codes(hand_made_codes())
    with pytest.raises(ValueError):
        sig.cb0_across_frames[0] = 1
    with pytest.raises(TypeError):
        sig[0]  # noqa: B018 - raw positional indexing is deliberately unsupported
    with pytest.raises(IndexError):
        sig.codebook_across_frames(8)
    with pytest.raises(IndexError):
        sig.all_codebooks_at_frame(2)


def test_only_the_on_disk_layout_is_accepted():
    with pytest.raises(SignatureError, match=r"\(1, n_codebooks, n_frames\)"):
        BlipSignature.from_codes(hand_made_codes()[0])  # squeezed (8, 2): ambiguous, refused
    bad = hand_made_codes()
    bad[0, 2, 1] = 2048
    with pytest.raises(SignatureError, match="end-of-audio"):
        BlipSignature.from_codes(bad)


# --------------------------------------------------------- the card's pitfall
def test_wrong_index_is_all_codebooks_at_frame_0_and_never_matches():
    codes = card_like_blip_codes()
    sig = BlipSignature.from_codes(codes)
    blip = codes.squeeze(0)  # (codebooks, frames), as in the card

    # The card's correct index and the pitfall, each pinned to its named accessor.
    assert np.array_equal(blip[0], sig.cb0_across_frames)  # [430, 127]
    assert np.array_equal(blip[:, 0], sig.all_codebooks_at_frame(0))  # [430, 13, 1903, 1548, ...]
    assert sig.cb0_across_frames.tolist() == [430, 127]
    assert sig.all_codebooks_at_frame(0)[:4].tolist() == [430, 13, 1903, 1548]

    rng = np.random.default_rng(7)
    streams = [audio_frames(sig, Opening.BLIP_CB0, 12, rng) for _ in range(50)]

    def card_loop_hits(target: np.ndarray) -> int:
        hits = 0
        for frames in streams:
            loop = CardRecipeLoop(target)
            verdicts = [loop.feed(f) for f in frames]
            hits += verdicts[1] is True
        return hits

    assert card_loop_hits(blip[:, 0]) == 0  # wrong index: 0% -> "broken model"
    assert card_loop_hits(sig.all_codebooks_at_frame(0)) == 0
    assert card_loop_hits(sig.cb0_across_frames) == len(streams)  # right index: 100%
    # Our detector can only be built from the signature, so it gets the right target.
    detector = StreamingBlipDetector(sig, CodebookMatch(codebooks=(0,)))
    for frames in streams:
        detector.reset()
        for f in frames:
            detector.feed(f)
        assert detector.decision.state is DecisionState.MATCH
    # And it refuses the raw array the pitfall starts from.
    with pytest.raises(TypeError, match="BlipSignature"):
        StreamingBlipDetector(blip[:, 0])  # type: ignore[arg-type]
    # The card's function, verbatim, agrees: 2 frames stacked as (codebooks, frames).
    window = np.stack([streams[0][0], streams[0][1]], axis=1)
    assert card_is_blip_emitted(window, sig.cb0_across_frames)
    assert not card_is_blip_emitted(window, blip[:, 0])


# ------------------------------------------------------------------- loading
def test_load_round_trips_the_files(tmp_path):
    codes = card_like_blip_codes()
    npy, sig_json = write_blip(tmp_path, codes)
    sig = BlipSignature.load(npy, sig_json)
    assert sig.cb0_across_frames.tolist() == [430, 127]
    assert np.array_equal(sig.as_npy_layout(), codes)
    assert sig.detection.codebooks == (0,) and sig.detection.frames == (0, 1)
    assert sig.frame_rate_hz == 12.5 and sig.sample_rate == 24000
    assert sig.mimi_sha256 == "m" * 64
    assert sig.detection_latency_ms == pytest.approx(160.0)


def test_load_with_corrupted_codes_names_the_file(tmp_path):
    codes = card_like_blip_codes()
    npy, sig_json = write_blip(tmp_path, codes)
    codes[0, 0, 0] = 1049  # the file changes after its signature was written
    np.save(npy, codes)
    with pytest.raises(SignatureError) as err:
        BlipSignature.load(npy, sig_json)
    message = str(err.value)
    assert str(npy) in message and "sha256" in message and "codes_sha256" in message


def test_load_with_wrong_recorded_hash(tmp_path):
    npy, sig_json = write_blip(tmp_path, card_like_blip_codes(), codes_sha256="0" * 64)
    with pytest.raises(SignatureError, match="tool_invoke.codes.npy: sha256"):
        BlipSignature.load(npy, sig_json)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"shape": [1, 8, 3]}, "'shape' [1, 8, 3] disagrees"),
        ({"n_frames": 3}, "'n_frames' 3 disagrees"),
        ({"n_codebooks": 4}, "'n_codebooks' 4 disagrees"),
        ({"axes": ["batch", "frame", "codebook"]}, "'axes' must be"),
        ({"detection": {"codebooks": [9], "frames": [0, 1]}}, "outside [0, 8)"),
        ({"detection": {"codebooks": [0], "frames": [0, 2]}}, "outside [0, 2)"),
        ({"detection": {"codebooks": [0, 3], "mode": "xor"}}, "'detection.mode'"),
        ({"detection": {"codebook": [0]}}, "unknown key"),
        ({"cb0_across_frames": [13, 127]}, "'cb0_across_frames' [13, 127] disagrees"),
    ],
)
def test_load_rejects_inconsistent_signature(tmp_path, overrides, fragment):
    npy, sig_json = write_blip(tmp_path, card_like_blip_codes(), **overrides)
    with pytest.raises(SignatureError) as err:
        BlipSignature.load(npy, sig_json)
    assert fragment in str(err.value)
    assert "tool_invoke" in str(err.value)


def test_load_missing_key_and_missing_file(tmp_path):
    npy, sig_json = write_blip(tmp_path, card_like_blip_codes())
    meta = json.loads(sig_json.read_text())
    del meta["detection"]
    sig_json.write_text(json.dumps(meta))
    with pytest.raises(SignatureError, match="missing key 'detection'"):
        BlipSignature.load(npy, sig_json)
    with pytest.raises(SignatureError, match="not found"):
        BlipSignature.load(tmp_path / "absent.npy", sig_json)


# ------------------------------------------------------------------ copies (blip.repeats)
def double_blip_codes() -> np.ndarray:
    """A 5-frame double blip: copy 0 = frames 0-1, gap frame 2, copy 1 = frames 3-4 (its own codes)."""
    codes = np.full((1, 8, 5), 7, dtype=np.int64)
    codes[0, 0, :] = [430, 127, 900, 431, 128]
    return codes


def test_copies_round_trip_through_the_signature_json(tmp_path):
    copies = [{"frame_start": 0, "n_frames": 2, "cb0_across_frames": [430, 127]},
              {"frame_start": 3, "n_frames": 2, "cb0_across_frames": [431, 128]}]
    sig = BlipSignature.load(*write_blip(tmp_path, double_blip_codes(), copies=copies))
    assert sig.n_copies == 2 and [(c.frame_start, c.n_frames) for c in sig.copies] == [(0, 2), (3, 2)]
    assert sig.copy_cb0_across_frames(1).tolist() == [431, 128]
    assert sig.cb0_across_frames.tolist() == [430, 127, 900, 431, 128]  # top level: the whole blip
    assert [sig.copy_index_at_frame(i) for i in range(5)] == [0, 0, None, 1, 1]


def test_a_signature_without_copies_is_one_copy_spanning_the_whole_blip(tmp_path):
    sig = BlipSignature.load(*write_blip(tmp_path, double_blip_codes()))
    assert [(c.frame_start, c.n_frames) for c in sig.copies] == [(0, 5)]


@pytest.mark.parametrize(
    "copies, fragment",
    [
        ([{"frame_start": 0, "n_frames": 2, "cb0_across_frames": [430, 127]},
          {"frame_start": 3, "n_frames": 2, "cb0_across_frames": [430, 127]}], "'copies[1].cb0_across_frames'"),
        ([{"frame_start": 0, "n_frames": 2}, {"frame_start": 4, "n_frames": 2}], "copy 1 spans frames 4..5"),
        ([{"frame_start": 1, "n_frames": 2}], "first copy must start at frame 0"),
        ([{"frame_start": 0, "n_frames": 2}, {"frame_start": 0, "n_frames": 3}], "increasing frames"),
        ([{"frame_start": 0, "frames": 2}], "'copies[0]' must be an object"),
        ([], "'copies' must be a non-empty list"),
    ],
)
def test_load_rejects_inconsistent_copies(tmp_path, copies, fragment):
    with pytest.raises(SignatureError) as err:
        BlipSignature.load(*write_blip(tmp_path, double_blip_codes(), copies=copies))
    assert fragment in str(err.value)
