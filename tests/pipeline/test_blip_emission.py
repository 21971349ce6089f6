"""Blip-emission scoring on hand-made code arrays: the card's matchers, positions, FPR, decision frames."""
from __future__ import annotations

import numpy as np
import pytest

from tests.support.scripted import Opening, audio_frames, card_like_blip_codes
from coordinator.signature import BlipSignature, DetectionSpec
from pipeline.blip_emission import AudioReply, score_blip_emission, score_row

BLIP = card_like_blip_codes()  # (1, 8, 2); cb0 across frames [430, 127], frame 0 across codebooks [430, 13, 1903, 1548, ...]


@pytest.fixture
def signature():
    return BlipSignature.from_codes(BLIP, detection=DetectionSpec(codebooks=(0,)))


def reply(signature, opening, row_class="tool_match", n=10, seed=0, row_id=None, **kw):
    frames = audio_frames(signature, opening, n, np.random.default_rng(seed))  # (n, 8)
    return AudioReply(row_id or f"{row_class}-{opening.value}-{seed}", row_class, frames.T.copy(),
                      kw.get("end_of_audio", True), kw.get("turn_ended", True))


def test_card_matchers_on_known_openings(signature):
    cases = {
        Opening.BLIP_EXACT: {"full": True, "cb0": True, "cb0_or_cb3": True},
        Opening.BLIP_CB0: {"full": False, "cb0": True, "cb0_or_cb3": True},
        Opening.CB0_ONLY: {"full": False, "cb0": True, "cb0_or_cb3": True},
        Opening.CB3_ONLY: {"full": False, "cb0": False, "cb0_or_cb3": True},
        Opening.MISS_FRAME0: {"full": False, "cb0": False, "cb0_or_cb3": False},
        Opening.MISS_LAST: {"full": False, "cb0": False, "cb0_or_cb3": False},
    }
    for opening, expected in cases.items():
        assert score_row(signature, reply(signature, opening)).matches == expected, opening


def test_rates_per_position_fpr_and_decision_frames(signature):
    positives = [reply(signature, Opening.BLIP_CB0, seed=s) for s in range(18)]
    positives += [reply(signature, Opening.MISS_FRAME0, seed=100), reply(signature, Opening.CB3_ONLY, seed=101)]
    negatives = [reply(signature, Opening.MISS_FRAME0, "non_tool", seed=s) for s in range(9)]
    negatives += [reply(signature, Opening.CB0_ONLY, "tool_miss", seed=200)]  # one false positive
    m = score_blip_emission(signature, positives + negatives).metrics
    assert m["n_tool_match"] == 20 and m["n_negative"] == 10
    assert m["full_match_rate"] == 0.0  # deep codebooks drift in BLIP_CB0
    assert m["cb0_match_rate"] == pytest.approx(18 / 20)
    assert m["cb0_or_cb3_match_rate"] == pytest.approx(19 / 20)
    assert m["per_position"][0] == [pytest.approx(18 / 20)] * 2  # MISS_FRAME0 and CB3_ONLY miss cb0 at both frames
    assert m["per_position"][3] == [pytest.approx(19 / 20)] * 2  # CB3_ONLY keeps cb3
    assert m["per_position"][5] == [0.0, 0.0]
    assert m["false_positive_rate"] == pytest.approx(0.1) and m["false_positives"] == 1
    assert m["detector_true_positive_rate"] == pytest.approx(18 / 20)
    hist = m["decision_frame_histogram"]
    assert hist["tool_match"]["match"] == {"1": 18}  # a cb0 match is decided at the last blip frame
    assert hist["tool_match"]["no_match"] == {"0": 2}  # a miss is known at frame 0
    assert hist["negative"] == {"match": {"1": 1}, "no_match": {"0": 9}}
    assert m["unavailable"] == {}


def test_the_wrong_index_trap_gives_zero(signature):
    """Replies that open with blip.squeeze(0)[:, 0] (frame 0 across codebooks) laid out as cb0 over frames."""
    wrong = BLIP[0][:, 0]  # [430, 13, 1903, ...]: all codebooks at frame 0 -- NOT cb0 across frames
    assert wrong[:2].tolist() != BLIP[0][0].tolist()
    rng = np.random.default_rng(0)
    replies = []
    for s in range(5):
        codes = rng.integers(0, 2048, size=(8, 6))
        codes[0, :2] = wrong[:2]  # the pitfall's target
        replies.append(AudioReply(f"w{s}", "tool_match", codes, True, True))
    assert score_blip_emission(signature, replies).metrics["cb0_match_rate"] == 0.0
    # and the right target matches
    for r in replies:
        r.audio_codes[0, :2] = signature.cb0_across_frames
    assert score_blip_emission(signature, replies).metrics["cb0_match_rate"] == 1.0
    # a raw array is refused: only a BlipSignature names its axes
    with pytest.raises(TypeError, match="BlipSignature"):
        score_blip_emission(BLIP, replies)


def test_no_rows_and_no_audio_are_null_not_zero(signature):
    m = score_blip_emission(signature, []).metrics
    for key in ("full_match_rate", "cb0_match_rate", "cb0_or_cb3_match_rate", "false_positive_rate"):
        assert m[key] is None and key in m["unavailable"]
    silent = AudioReply("t0", "tool_match", np.zeros((8, 0), dtype=np.int64), False, True)
    short = AudioReply("t1", "tool_match", np.full((8, 1), 430, dtype=np.int64), True, True)
    m = score_blip_emission(signature, [silent, short]).metrics
    assert m["cb0_match_rate"] is None and "has >= 2 audio frames" in m["unavailable"]["cb0_match_rate"]
    assert m["n_unscorable"] == 2 and m["unscorable"][0]["reason"] == "no audio in the reply"
    # the detector still decides them (the turn ended): a miss, as a serving coordinator would see it
    assert m["detector_true_positive_rate"] == 0.0


def test_truncated_reply_is_undecided(signature):
    cut = AudioReply("t", "non_tool", np.full((8, 1), 430, dtype=np.int64), False, False)
    m = score_blip_emission(signature, [cut]).metrics
    assert m["n_undecided_negative"] == 1 and m["false_positive_rate"] is None


def test_cb0_or_cb3_signature_drives_the_detector():
    sig = BlipSignature.from_codes(BLIP, detection=DetectionSpec(codebooks=(0, 3)))
    m = score_blip_emission(sig, [reply(sig, Opening.CB3_ONLY)]).metrics
    assert m["detector_matcher"] == "AnyOfCodebooks(codebooks=[0, 3])"
    assert m["detector_true_positive_rate"] == 1.0 and m["cb0_match_rate"] == 0.0
