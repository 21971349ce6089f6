"""Spec: the streaming detector decides at the earliest frame it can, and only once."""
from __future__ import annotations

import numpy as np
import pytest

from coordinator.detector import DecisionReason, DecisionState, StreamingBlipDetector
from coordinator.matchers import AnyOfCodebooks, CodebookMatch
from tests.support.reference import CardRecipeLoop
from tests.support.scripted import Opening, audio_frames, card_like_blip_codes
from coordinator.signature import BlipCopy, BlipSignature

EOA = np.full(8, 2048, dtype=np.int64)  # end-of-audio frame


@pytest.fixture(scope="module")
def sig() -> BlipSignature:
    return BlipSignature.from_codes(card_like_blip_codes())


def frame(cb0: int, cb3: int = 0) -> np.ndarray:
    f = np.full(8, 5, dtype=np.int64)
    f[0], f[3] = cb0, cb3
    return f


def test_cb0_miss_is_known_after_one_frame(sig):
    d = StreamingBlipDetector(sig, CodebookMatch(codebooks=(0,)))
    decision = d.feed(frame(1049))  # the card's non-tool opening
    assert (decision.state, decision.frame_index, decision.reason) == (
        DecisionState.NO_MATCH, 0, DecisionReason.MISMATCH)


def test_match_is_declared_at_the_last_blip_frame(sig):
    d = StreamingBlipDetector(sig, CodebookMatch(codebooks=(0,)))
    assert d.feed(frame(430)).state is DecisionState.PENDING
    decision = d.feed(frame(127))
    assert (decision.state, decision.frame_index) == (DecisionState.MATCH, 1)


def test_longer_blip_matches_at_frame_f_minus_1():
    sig3 = BlipSignature.from_codes(card_like_blip_codes(n_frames=3))
    d = StreamingBlipDetector(sig3, CodebookMatch())
    frames = audio_frames(sig3, Opening.BLIP_CB0, 6, np.random.default_rng(0))
    states = [d.feed(f).state for f in frames]
    assert states[:2] == [DecisionState.PENDING] * 2
    assert d.decision.frame_index == 2


def test_anyof_waits_until_every_alternative_is_ruled_out(sig):
    cb3 = sig.codebook_across_frames(3)
    d = StreamingBlipDetector(sig, AnyOfCodebooks(codebooks=(0, 3)))
    assert d.feed(frame(1049, int(cb3[0]))).state is DecisionState.PENDING  # cb0 out, cb3 alive
    decision = d.feed(frame(127, int(cb3[1]) + 1))  # cb3 out too (cb0 was already out)
    assert (decision.state, decision.frame_index) == (DecisionState.NO_MATCH, 1)
    d.reset()
    decision = d.feed(frame(1049, int(cb3[0]) + 1))  # both out at frame 0
    assert (decision.state, decision.frame_index) == (DecisionState.NO_MATCH, 0)


@pytest.mark.parametrize("at", [0, 1])
def test_audio_end_before_the_blip_is_a_miss(sig, at):
    d = StreamingBlipDetector(sig, CodebookMatch())
    frames = [frame(430), frame(127)][:at] + [EOA]
    decisions = [d.feed(f) for f in frames]
    assert (decisions[-1].state, decisions[-1].frame_index, decisions[-1].reason) == (
        DecisionState.NO_MATCH, at, DecisionReason.END_OF_AUDIO)


@pytest.mark.parametrize("n_frames_seen", [0, 1])
def test_turn_end_before_the_blip_is_a_miss(sig, n_frames_seen):
    d = StreamingBlipDetector(sig, CodebookMatch())
    for f in [frame(430)][:n_frames_seen]:
        d.feed(f)
    decision = d.end_of_turn()
    assert (decision.state, decision.frame_index, decision.reason) == (
        DecisionState.NO_MATCH, n_frames_seen, DecisionReason.END_OF_TURN)


def test_decisions_are_sticky(sig):
    d = StreamingBlipDetector(sig, CodebookMatch())
    d.feed(frame(1049))
    miss = d.decision
    for f in [frame(430), frame(127), frame(430), frame(127)]:  # the blip, too late
        assert d.feed(f) is miss
    assert d.end_of_turn() is miss
    d.reset()
    d.feed(frame(430))
    hit = d.feed(frame(127))
    assert d.feed(EOA) is hit and d.feed(frame(1)) is hit
    assert d.frames_fed == 4


def test_detection_frames_subset_skips_unlisted_frames(sig):
    d = StreamingBlipDetector(sig, CodebookMatch(frames=(1,)))
    assert d.feed(frame(1049)).state is DecisionState.PENDING  # frame 0 not compared
    assert d.feed(frame(127)).state is DecisionState.MATCH


def test_frames_may_be_lists_but_must_have_n_codebooks_integers(sig):
    d = StreamingBlipDetector(sig, CodebookMatch())
    assert d.feed([430, 0, 0, 0, 0, 0, 0, 0]).state is DecisionState.PENDING
    assert d.feed(np.array([[127, 0, 0, 0, 0, 0, 0, 0]])).state is DecisionState.MATCH  # (1, 8) ok
    d.reset()
    with pytest.raises(ValueError, match="expected 8 codes"):
        d.feed(np.arange(3))
    d.reset()
    with pytest.raises(ValueError, match="integers"):
        d.feed(np.zeros(8, dtype=np.float32))


def test_agrees_with_the_card_recipe_and_never_decides_later(sig):
    rng = np.random.default_rng(3)
    openings = list(Opening)
    for n in range(400):
        opening = openings[n % len(openings)]
        frames = audio_frames(sig, opening, 4, rng)
        ours = StreamingBlipDetector(sig, CodebookMatch())
        card = CardRecipeLoop(sig.cb0_across_frames)
        card_verdict = None
        for i, f in enumerate(frames):
            ours.feed(f)
            verdict = card.feed(f)
            if verdict is not None:
                card_verdict, card_frame = verdict, i
        assert ours.decision.is_match is card_verdict
        assert ours.decision.frame_index <= card_frame == 1


# ------------------------------------------------------------------ copies (blip.repeats)
def double_blip() -> tuple[np.ndarray, list[np.ndarray]]:
    """A double blip (copy 0 = frames 0-1, gap frame 2, copy 1 = frames 3-4) and its frames as emitted."""
    codes = np.full((1, 8, 5), 7, dtype=np.int64)
    codes[0, 0, :] = [430, 127, 900, 431, 128]
    return codes, [codes[0, :, i].copy() for i in range(5)]


def test_a_double_blip_with_copy_0_corrupted_still_fires_on_copy_1():
    codes, frames = double_blip()
    frames[0][0] = 1049  # copy 0 badly reproduced
    with_copies = BlipSignature.from_codes(codes, copies=(BlipCopy(0, 2), BlipCopy(3, 2)))
    d = StreamingBlipDetector(with_copies)
    decisions = [d.feed(f) for f in frames]
    assert [x.state for x in decisions[:4]] == [DecisionState.PENDING] * 4  # copy 1 is still possible
    assert (d.decision.state, d.decision.copy_index, d.decision.frame_index) == (DecisionState.MATCH, 1, 4)
    assert CodebookMatch().matching_copy(with_copies, np.stack(frames, axis=1)) == 1

    # the old rule (the signature = both copies concatenated, every frame must match) misses it
    whole = StreamingBlipDetector(BlipSignature.from_codes(codes))
    assert whole.feed(frames[0]).state is DecisionState.NO_MATCH


def test_a_double_blip_matches_on_copy_0_as_early_as_a_single_blip():
    codes, frames = double_blip()
    d = StreamingBlipDetector(BlipSignature.from_codes(codes, copies=(BlipCopy(0, 2), BlipCopy(3, 2))))
    d.feed(frames[0])
    decision = d.feed(frames[1])
    assert (decision.state, decision.copy_index, decision.frame_index) == (DecisionState.MATCH, 0, 1)


def test_a_double_blip_misses_only_when_every_copy_failed_or_audio_ended():
    codes, frames = double_blip()
    sig = BlipSignature.from_codes(codes, copies=(BlipCopy(0, 2), BlipCopy(3, 2)))
    d = StreamingBlipDetector(sig)
    d.feed(frame(1049))
    decision = d.feed(frame(1049))
    assert decision.state is DecisionState.PENDING
    d.feed(frame(900))
    decision = d.feed(frame(431 + 1))
    assert (decision.state, decision.frame_index, decision.copy_index) == (DecisionState.NO_MATCH, 3, None)
    d.reset()
    d.feed(frame(1049))
    assert d.feed(EOA).reason is DecisionReason.END_OF_AUDIO


def test_copy_1_can_match_on_another_codebook_alternative():
    codes, frames = double_blip()
    sig = BlipSignature.from_codes(codes, copies=(BlipCopy(0, 2), BlipCopy(3, 2)))
    d = StreamingBlipDetector(sig, AnyOfCodebooks(codebooks=(0, 3)))
    frames[0][0] = frames[0][3] = 1  # copy 0 fails on both alternatives
    frames[3][0] = 1  # copy 1 fails on cb0, matches on cb3
    for f in frames:
        d.feed(f)
    assert (d.decision.copy_index, d.decision.matched_codebooks) == (1, ((3,),))
