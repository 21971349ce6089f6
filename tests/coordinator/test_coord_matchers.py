"""Spec: what each matcher accepts, and at which audio frame it knows.

Rows are the openings a tool ack (or a non-tool reply) can have; columns the
three matchers the card measured. Each cell is (state, frame index decided).
"""
from __future__ import annotations

import numpy as np
import pytest

from coordinator.detector import DecisionState, StreamingBlipDetector
from coordinator.matchers import AnyOfCodebooks, CodebookMatch, FullMatch, matcher_from_detection, matcher_from_signature
from tests.support.scripted import Opening, audio_frames, card_like_blip_codes
from coordinator.signature import BlipSignature, DetectionSpec

M, N = DecisionState.MATCH, DecisionState.NO_MATCH
FULL, CB0, ANY03 = FullMatch(), CodebookMatch(codebooks=(0,)), AnyOfCodebooks(codebooks=(0, 3))

SPEC = {
    # opening                  FullMatch   cb0-only    cb0 OR cb3
    Opening.BLIP_EXACT:       ((M, 1),    (M, 1),     (M, 1)),
    Opening.BLIP_CB0:         ((N, 0),    (M, 1),     (M, 1)),  # deep-codebook noise, cb0 intact
    Opening.CB0_ONLY:         ((N, 0),    (M, 1),     (M, 1)),  # cb3 drifts too: cb0 alone carries it
    Opening.CB3_ONLY:         ((N, 0),    (N, 0),     (M, 1)),  # cb0 wrong, cb3 right
    Opening.MISS_FRAME0:      ((N, 0),    (N, 0),     (N, 0)),  # non-tool opening (card: 1049 ...)
    Opening.MISS_LAST:        ((N, 0),    (N, 1),     (N, 1)),  # right at frame 0, wrong at frame 1
}


@pytest.fixture(scope="module")
def sig() -> BlipSignature:
    return BlipSignature.from_codes(card_like_blip_codes())


@pytest.mark.parametrize("opening", list(SPEC))
@pytest.mark.parametrize("column, matcher", [(0, FULL), (1, CB0), (2, ANY03)], ids=["full", "cb0", "cb0_or_cb3"])
def test_matcher_table(sig, opening, column, matcher):
    expected_state, expected_frame = SPEC[opening][column]
    for seed in range(5):
        frames = audio_frames(sig, opening, 10, np.random.default_rng(seed))
        detector = StreamingBlipDetector(sig, matcher)
        decisions = [detector.feed(f) for f in frames]
        final = decisions[-1]
        assert (final.state, final.frame_index) == (expected_state, expected_frame)
        # Decided exactly at that frame: pending before, the same object after.
        assert all(not d.decided for d in decisions[:expected_frame])
        assert all(d is final for d in decisions[expected_frame:])
        # The slow offline oracle agrees.
        window = frames[: sig.n_frames].T  # (codebooks, frames)
        assert matcher.matches(sig, window) is (expected_state is M)


def test_anyof_reports_which_codebook_matched(sig):
    rng = np.random.default_rng(0)
    detector = StreamingBlipDetector(sig, ANY03)
    for f in audio_frames(sig, Opening.CB3_ONLY, 4, rng):
        detector.feed(f)
    assert detector.decision.matched_codebooks == ((3,),)
    detector.reset()
    for f in audio_frames(sig, Opening.BLIP_CB0, 4, rng):
        detector.feed(f)
    assert detector.decision.matched_codebooks == ((0,), (3,))


def test_detector_agrees_with_oracle_on_near_misses(sig):
    """Random single-code perturbations of the blip: streaming == offline for every matcher."""
    rng = np.random.default_rng(1)
    base = audio_frames(sig, Opening.BLIP_EXACT, 2, rng)
    for matcher in (FULL, CB0, ANY03, CodebookMatch(codebooks=(0, 3))):
        detector = StreamingBlipDetector(sig, matcher)
        for _ in range(300):
            frames = base.copy()
            for _ in range(rng.integers(0, 3)):
                frames[rng.integers(0, 2), rng.integers(0, 8)] = rng.integers(0, 2048)
            detector.reset()
            for f in frames:
                detector.feed(f)
            assert detector.decision.is_match is matcher.matches(sig, frames.T)


@pytest.mark.parametrize(
    "detection, expected",
    [
        (DetectionSpec(codebooks=(0,), frames=(0, 1)), CodebookMatch(codebooks=(0,), frames=(0, 1))),
        # several codebooks are alternatives (params.yaml: "[0, 3] = cb0 OR cb3") ...
        (DetectionSpec(codebooks=(0, 3)), AnyOfCodebooks(codebooks=(0, 3))),
        (DetectionSpec(codebooks=(0, 3), mode="any"), AnyOfCodebooks(codebooks=(0, 3))),
        # ... unless the block says "mode": "all"
        (DetectionSpec(codebooks=(0, 3), mode="all"), CodebookMatch(codebooks=(0, 3))),
        (DetectionSpec(codebooks=tuple(range(8)), mode="all"), FullMatch()),
    ],
)
def test_factory_builds_matcher_from_detection_block(detection, expected):
    assert matcher_from_detection(detection, 8) == expected


def test_signature_detection_block_picks_the_default_matcher():
    sig = BlipSignature.from_codes(card_like_blip_codes(), detection=DetectionSpec(codebooks=(0, 3)))
    assert matcher_from_signature(sig) == AnyOfCodebooks(codebooks=(0, 3))
    assert StreamingBlipDetector(sig).matcher == AnyOfCodebooks(codebooks=(0, 3))


def test_matcher_rejects_codebooks_outside_the_signature(sig):
    with pytest.raises(ValueError, match="outside"):
        StreamingBlipDetector(sig, CodebookMatch(codebooks=(8,)))
    with pytest.raises(ValueError, match="outside"):
        StreamingBlipDetector(sig, CodebookMatch(frames=(2,)))
