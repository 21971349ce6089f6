"""The screening tier (pipeline.screen) and the decoder's work units, on the tiny model in float32.

The "blip" here is the opening of one row's own reply (the random-init model emits no real blip), so
the detector matches that row and rejects the others at various frames: the screen must reach exactly
the full evaluation's decisions, rates and latency, decoding only each reply's opening.
"""
from __future__ import annotations

import numpy as np
import pytest

from coordinator.signature import BlipSignature
from pipeline.blip_emission import AudioReply, score_blip_emission
from pipeline.generation import GenerationParams, generate_replies
from pipeline.screen import screen_replies
from pipeline.work_units import DecoderWork, total
from tests.pipeline.test_batch_decode import heldout_rows, one_thread, steered, user_audio  # noqa: F401

MAX_NEW = 30
PARAMS = GenerationParams(max_new_tokens=MAX_NEW)


@pytest.fixture(scope="module")
def full(steered):
    """Every held-out reply decoded whole, stock (batch 1), and the 'blip': row h-m1's first 2 audio frames."""
    lfm, _ = steered
    requests = [(row, user_audio(n)) for n, row in enumerate(heldout_rows())]
    replies = generate_replies(lfm, requests, PARAMS, batch_size=1)
    opening = replies[0].audio_codes[:, :2]
    assert opening.shape == (8, 2), "row h-m1's reply must hold 2 audio frames to make the test blip of"
    return lfm, requests, replies, BlipSignature.from_codes(opening[None].astype(np.int64))


def full_report(signature, requests, replies, negatives):
    audio = [AudioReply(row.id, row.row_class, r.audio_codes, r.end_of_audio, r.turn_ended)
             for (row, _), r in zip(requests, replies)]
    return score_blip_emission(signature, audio, negative_classes=negatives)


def decisions(report, classes) -> dict[str, dict | None]:
    return {row.row_id: row.decision for row in report.rows if row.row_class in classes}


HEADLINE = ("cb0_match_rate", "detector_true_positive_rate", "false_positive_rate", "decision_latency_ms",
            "full_match_rate", "n_undecided_tool_match", "n_undecided_negative", "per_position")


@pytest.mark.parametrize("batch_size, negatives", [(1, ("non_tool", "tool_miss")),
                                                   (4, ("non_tool", "tool_miss", "tool_result_speak"))])
def test_the_screen_reaches_the_full_evaluations_blip_numbers_for_a_fraction_of_the_work(full, batch_size, negatives):
    lfm, requests, replies, signature = full
    expected = full_report(signature, requests, replies, negatives)
    screen = screen_replies(lfm, signature, requests, PARAMS, batch_size, negatives)
    assert expected.metrics["detector_true_positive_rate"] > 0  # the test blip is matched somewhere
    scored_classes = ("tool_match", *negatives)
    assert decisions(screen.report, scored_classes) == decisions(expected, scored_classes)
    for key in HEADLINE:
        assert screen.report.metrics[key] == expected.metrics[key], key
    scored = [r for (row, _), r in zip(requests, replies) if row.row_class in ("tool_match", *negatives)]
    full_work = total(r.total_work for r in scored)
    assert screen.work.decoder_items * 2 < full_work.decoder_items
    assert all(r.n_audio_frames <= signature.n_frames for r in screen.replies.values())


def test_stopping_at_the_opening_breaks_the_protection_if_it_stops_before_the_blip_frames(full):
    """The rule that makes the screen exact: decode the blip's frames. One frame fewer changes the numbers."""
    lfm, requests, replies, signature = full
    expected = full_report(signature, requests, replies, ("non_tool", "tool_miss"))
    short = BlipSignature.from_codes(np.asarray(signature.as_npy_layout())[:, :, :1])
    screen = screen_replies(lfm, short, requests, PARAMS, 4, ("non_tool", "tool_miss"))
    rescored = full_report(signature, requests, list(screen.replies.get(row.id) or r for (row, _), r in
                                                     zip(requests, replies)), ("non_tool", "tool_miss"))
    assert rescored.metrics["cb0_match_rate"] != expected.metrics["cb0_match_rate"]


def test_the_stock_path_and_the_batched_decoder_count_the_same_work(full):
    lfm, requests, stock, _ = full
    batched = generate_replies(lfm, requests, PARAMS, batch_size=4)
    assert [r.total_work for r in batched] == [r.total_work for r in stock]
    for reply in stock:
        work = reply.work
        frames = sum(n for kind, n in reply.layout if kind == "a")
        assert work.audio_frames == frames and work.depthformer_steps == 8 * frames
        assert work.text_tokens == len(reply.text_tokens) + reply.turn_ended  # <|im_end|> is a step too
        assert work.prefill_tokens > 0
    two_turn = next(r for r in stock if r.turn1 is not None)
    assert two_turn.total_work == two_turn.work + two_turn.turn1.work


def test_work_survives_the_reply_record(full):
    from pipeline.reply import Reply

    reply = full[2][2]  # a two-turn row
    again = Reply.from_json(reply.to_json())
    assert again.total_work == reply.total_work and again.work.decoder_items == reply.work.decoder_items
    assert DecoderWork.from_json(None) is None
