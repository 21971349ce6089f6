"""The screening tier: the blip's numbers from the opening frames of each reply, decoded in batches.

A full evaluation decodes every held-out reply to its end (up to
``max_new_tokens``), yet the blip's numbers -- cb0 match rate, the streaming
detector's TPR and FPR, its decision frame and latency -- depend only on a
reply's first audio frames: the card's matchers compare the blip's
``n_frames`` opening frames, and the coordinator's detector always decides by
the blip's last frame (each lane of its plan ends there). So the screen decodes
each reply of the classes ``eval_blip`` scores only until it holds the blip's
frames plus ``extra_frames`` audio frames (the end-of-audio frame not counted,
as ``eval_blip`` does not count it), or until it ends on its own, whichever
comes first, and scores those openings with ``eval_blip``'s own scorer
(``pipeline.blip_emission``). On the same model and decoding path the screen's
TPR, FPR, cb0 rate, decision frames and latency therefore equal the full
evaluation's (``tests/test_learn_profile.py``), for a fraction of the decoder
items (``pipeline.work_units``).

Rows are the ones ``eval_classes`` decodes (same row file, ``max_rows``,
user audio, generation keys); a negative class that takes two turns
(``tool_result_speak``) decodes turn 1 whole and screens turn 2. Decoding:
``batch_size`` 1 on a model with its own interleave is stock
``generate_interleaved``, stopped early; otherwise the batched greedy decoder
(``pipeline.batch_decode``) with a per-row stop.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Any, Sequence

from coordinator.constants import END_OF_AUDIO_CODE, N_CODEBOOKS
from coordinator.signature import BlipSignature
from coordinator.tokens import to_codes
from pipeline.batch_decode import RowDecode, decode_chats, prompt_positions
from pipeline.blip_emission import POSITIVE_CLASSES, AudioReply, BlipEmissionReport, score_blip_emission
from pipeline.generation import GenerationParams, open_facts_turn, open_request_turn, turn_items
from pipeline.inference import InferenceRunParams
from pipeline.interleave import Schedule
from pipeline.models import LoadedLFM
from pipeline.params import StageParams, field, parse_params
from pipeline.records import DatasetRow
from pipeline.reply import Reply, ReplyCollector
from pipeline.user_audio import UserAudio
from pipeline.work_units import DecoderWork, total


@dataclass(frozen=True)
class EvalScreenParams(StageParams):
    """The screen's own keys; which rows and how they are decoded come from ``eval_classes`` (``screened_run``)."""

    SECTION = "eval_screen"
    batch_size: int = field(16, lo=1)  # replies decoded together (greedy only); 1 = stock, row by row
    extra_frames: int = field(0, lo=0, hi=64)  # audio frames decoded past the blip's own


@dataclass(frozen=True, kw_only=True)
class ScreenedRunParams(InferenceRunParams):
    """``eval_classes``'s run keys, read as that group so the screen decodes exactly its rows, its way."""

    SECTION = "eval_classes"


def screened_run(eval_classes: dict[str, Any]) -> ScreenedRunParams:
    """The run keys of the ``eval_classes`` group (its own keys, e.g. the judge's, are not the screen's)."""
    keys = {f.name for f in fields(ScreenedRunParams)} - {"batch_size"}  # the screen batches by its own key
    return parse_params(ScreenedRunParams, {k: eval_classes[k] for k in sorted(keys) if k in eval_classes},
                        "eval_classes")  # only these keys are read: dvc.yaml lists exactly them


class OpeningWatch:
    """``until`` of one screened turn: True once it holds ``needed`` audio frames (end-of-audio not counted)."""

    def __init__(self, needed: int):
        self.needed = needed
        self.frames = 0

    def __call__(self, item: Any) -> bool:
        codes = to_codes(item)
        if codes.size == N_CODEBOOKS and int(codes[0]) != END_OF_AUDIO_CODE:
            self.frames += 1
        return self.frames >= self.needed


def _stock_turn(lfm: LoadedLFM, chat, params: GenerationParams, watch: OpeningWatch | None) -> RowDecode:
    """Stock ``generate_interleaved`` on an open turn, stopped once ``watch`` says so, counted as it yields."""
    out = RowDecode(prefill_tokens=prompt_positions(chat))
    started = time.perf_counter()
    stream = turn_items(lfm, chat, params)
    for item in stream:
        out.items.append(item)
        if item.numel() == 1:
            out.text_tokens += 1
        else:
            out.audio_frames += 1
            out.depthformer_steps += lfm.model.codebooks
        if watch is not None and watch(item):
            out.finish_reason = "stopped"
            stream.close()  # stock decodes lazily: nothing past this item is computed
            break
    if not out.finish_reason:
        out.finish_reason = "max_new_tokens" if len(out.items) >= params.max_new_tokens else "im_end"
        out.text_tokens += out.finish_reason == "im_end"  # the <|im_end|> step, which stock does not yield
    out.seconds = time.perf_counter() - started
    return out


def decode_turns(lfm: LoadedLFM, chats: list, params: GenerationParams, batch_size: int,
                 watches: Sequence[OpeningWatch | None]) -> list[RowDecode]:
    """One open turn per chat, each stopped where its watch says (None: to its end)."""
    if batch_size == 1 and lfm.schedule == Schedule.of_model(lfm.model):
        return [_stock_turn(lfm, chat, params, watch) for chat, watch in zip(chats, watches)]
    if not params.greedy:
        raise ValueError("the batched decoder is greedy only: set the temperatures to null or batch_size to 1")
    return decode_chats(lfm, chats, params.max_new_tokens, batch_size, lfm.schedule,
                        until=[w if w is not None else (lambda item: False) for w in watches])


def _reply(lfm: LoadedLFM, decoded: RowDecode) -> tuple[Reply, ReplyCollector]:
    collector = ReplyCollector(lfm.processor.text)
    for item in decoded.items:
        collector.add(item)
    reply = collector.reply(decoded.finish_reason, decoded.seconds)
    reply.work = decoded.work
    return reply, collector


@dataclass
class Screen:
    """The screen of one model: ``eval_blip``'s report over the openings, the openings, and the work."""

    report: BlipEmissionReport
    replies: dict[str, Reply]
    work: DecoderWork
    frames_needed: int


def screen_replies(lfm: LoadedLFM, signature: BlipSignature, requests: list[tuple[DatasetRow, UserAudio]],
                   params: GenerationParams, batch_size: int, negative_classes: Sequence[str],
                   extra_frames: int = 0) -> Screen:
    """Decode the openings of the replies to ``requests`` whose class the blip scores; score them."""
    scored = (*POSITIVE_CLASSES, *negative_classes)
    requests = [(row, audio) for row, audio in requests if row.row_class in scored]
    needed = signature.n_frames + extra_frames
    two_turn = [row.row_class == "tool_result_speak" for row, _ in requests]
    chats = [open_request_turn(lfm, row, audio) for row, audio in requests]
    first = decode_turns(lfm, chats, params, batch_size,
                         [None if both else OpeningWatch(needed) for both in two_turn])
    replies: dict[str, Reply] = {}
    second_at: list[int] = []
    for n, ((row, _), decoded) in enumerate(zip(requests, first)):
        reply, collector = _reply(lfm, decoded)
        replies[row.id] = reply
        if two_turn[n]:
            if row.facts is None:
                raise ValueError(f"row {row.id}: a tool_result_speak row needs facts")
            open_facts_turn(chats[n], row, collector)
            second_at.append(n)
    second = decode_turns(lfm, [chats[n] for n in second_at], params, batch_size,
                          [OpeningWatch(needed) for _ in second_at])
    for n, decoded in zip(second_at, second):
        row = requests[n][0]
        reply, _ = _reply(lfm, decoded)
        reply.turn1 = replies[row.id]
        replies[row.id] = reply
    audio = [AudioReply(row.id, row.row_class, replies[row.id].audio_codes, replies[row.id].end_of_audio,
                        replies[row.id].turn_ended) for row, _ in requests]
    report = score_blip_emission(signature, audio, positive_classes=POSITIVE_CLASSES,
                                 negative_classes=tuple(negative_classes))
    return Screen(report, replies, total(r.total_work for r in replies.values()), needed)
