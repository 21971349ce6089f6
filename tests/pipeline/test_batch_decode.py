"""The batched greedy decoder (pipeline.batch_decode) against stock generate_interleaved, on the tiny model in float32.

Nine held-out rows (every class, two-turn rows included) with user audio of
different lengths: prompts of different lengths, so every row of a batch sits
at its own position of the stacked cache; more rows than the batch, so finished
rows leave and waiting ones are prefilled into their places.
"""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from coordinator.constants import IM_END_TOKEN, TEXT_END_TOKEN
from pipeline.batch_decode import decode_chats
from pipeline.catalog import RowMaker
from pipeline.generation import GenerationParams, generate_replies, generate_stream, request_chat, stream_reply
from pipeline.interleave import Schedule, ScheduleError, write_record
from pipeline.models import LoadedLFM, load_lfm

MAX_NEW = 30


@pytest.fixture(scope="module")
def one_thread():
    """One BLAS thread: the CI machine's cores are shared, and more threads only thrash."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def heldout_rows():
    maker = RowMaker(random.Random(5), "heldout")
    return [maker.tool_match("h-m1"), maker.non_tool("h-n1"), maker.tool_result_speak("h-s1"),
            maker.tool_miss("h-x1", hard=True), maker.tool_match("h-m2"), maker.non_tool("h-n2"),
            maker.tool_miss("h-x2", hard=False), maker.tool_result_speak("h-s2"), maker.tool_match("h-m3")]


def user_audio(n: int):
    rng = np.random.default_rng(n)
    return (0.05 * rng.standard_normal(int(rng.integers(6_000, 20_000)))).astype(np.float32), 24_000


def stock_items(lfm, row, audio, max_new_tokens=MAX_NEW):
    return [item.tolist() for item in generate_stream(lfm, request_chat(lfm, row, audio), GenerationParams(max_new_tokens=max_new_tokens))]


@pytest.fixture(scope="module")
def steered(tiny_lfm_dir, one_thread) -> tuple[LoadedLFM, list]:
    """The float32 tiny model and stock's items for every held-out row."""
    lfm = load_lfm(tiny_lfm_dir, dtype=torch.float32)
    return lfm, [stock_items(lfm, r, user_audio(n)) for n, r in enumerate(heldout_rows())]


def open_chats(lfm, rows):
    chats = []
    for n, row in enumerate(rows):
        chat = request_chat(lfm, row, user_audio(n))
        chat.new_turn("assistant")
        chats.append(chat)
    return chats


def test_batch_1_is_stock_generate_interleaved_token_for_token(steered):
    steered, stock = steered
    ours = decode_chats(steered, open_chats(steered, heldout_rows()), MAX_NEW, batch_size=1)
    assert [[i.tolist() for i in d.items] for d in ours] == stock


@pytest.mark.parametrize("batch_size", [4, 8])
def test_every_row_of_a_batch_is_stock_token_for_token(steered, batch_size):
    steered, stock = steered
    ours = decode_chats(steered, open_chats(steered, heldout_rows()), MAX_NEW, batch_size=batch_size)
    assert [[i.tolist() for i in d.items] for d in ours] == stock


def test_replies_of_batches_4_and_8_equal_batch_1_two_turn_rows_included(steered):
    steered, _ = steered
    rows = heldout_rows()
    requests = [(r, user_audio(n)) for n, r in enumerate(rows)]
    params = GenerationParams(max_new_tokens=MAX_NEW)
    one = generate_replies(steered, requests, params, batch_size=1)
    for batch_size in (4, 8):
        many = generate_replies(steered, requests, params, batch_size=batch_size)
        for a, b in zip(one, many):
            ja, jb = a.to_json(), b.to_json()
            for record in (ja, jb, ja.get("turn1") or {}, jb.get("turn1") or {}):
                record.pop("seconds", None)
            assert ja == jb
    assert all(r.turn1 is not None for r, (row, _) in zip(one, requests) if row.row_class == "tool_result_speak")


def test_the_first_text_chunk_is_a_parameter(steered):
    steered, _ = steered
    rows = heldout_rows()[:3]
    default = Schedule.of_model(steered.model)
    assert default == Schedule(6, 6, 12)
    short = Schedule.of_model(steered.model, first_text=2)
    one = decode_chats(steered, open_chats(steered, rows), MAX_NEW, batch_size=1, schedule=short)
    three = decode_chats(steered, open_chats(steered, rows), MAX_NEW, batch_size=3, schedule=short)
    assert [[i.tolist() for i in d.items] for d in one] == [[i.tolist() for i in d.items] for d in three]
    for d in one:
        kinds = ["t" if i.numel() == 1 else "a" for i in d.items]
        if d.finish_reason == "max_new_tokens" and TEXT_END_TOKEN not in [int(i[0]) for i in d.items[:2]]:
            assert kinds[:3] == ["t", "t", "a"]  # two text tokens, then audio
    with pytest.raises(ValueError, match=">= 1"):
        Schedule(0, 6, 12)


def test_batched_decoding_is_greedy_only(steered):
    steered, _ = steered
    row = heldout_rows()[0]
    with pytest.raises(ValueError, match="greedy only"):
        generate_replies(steered, [(row, user_audio(0))], GenerationParams(text_temperature=0.7), batch_size=2)


# --- the schedule a model folder records ------------------------------------------------------------


@pytest.fixture(scope="module")
def short_preamble(tiny_lfm_dir, tmp_path_factory, one_thread) -> LoadedLFM:
    """The tiny model as a folder trained with first_text_chunk 2 would be: its interleave.json says so."""
    import shutil

    folder = tmp_path_factory.mktemp("trained") / "final"
    shutil.copytree(tiny_lfm_dir, folder)
    write_record(folder, Schedule(2, 6, 12))
    return load_lfm(folder, dtype=torch.float32)


def kinds(items) -> str:
    return "".join("t" if i.numel() == 1 else "a" for i in items)


def test_a_folder_trained_with_first_text_2_is_decoded_with_its_first_audio_frame_after_2_text_tokens(short_preamble):
    assert short_preamble.schedule == Schedule(2, 6, 12)
    checked = 0
    for n, row in enumerate(heldout_rows()):
        if row.row_class == "tool_result_speak":
            continue  # two turns: not a single stream
        items = list(stream_reply(short_preamble, row, user_audio(n), GenerationParams(max_new_tokens=MAX_NEW)))
        if TEXT_END_TOKEN in [int(i[0]) for i in items[:2]] or len(items) < 20:
            continue  # the text ended (or the turn did) inside the first chunk: nothing to see in this row
        assert kinds(items)[:20] == "tt" + "a" * 12 + "t" * 6, row.id  # 2 text, then the model's 12 audio / 6 text
        checked += 1
    assert checked, "no row long enough to show the interleave"


def test_every_decoding_path_follows_the_folders_schedule(short_preamble, steered):
    """Row by row (eval batch_size 1), the demo's stream and batches: all the decoder with first_text 2."""
    base, _ = steered  # the same weights, no record: the model's own interleave
    rows = heldout_rows()[:3]
    wanted = decode_chats(base, open_chats(base, rows), MAX_NEW, batch_size=1, schedule=Schedule(2, 6, 12))
    wanted = [[i.tolist() for i in d.items] for d in wanted]
    params = GenerationParams(max_new_tokens=MAX_NEW)
    requests = [(r, user_audio(n)) for n, r in enumerate(rows)]
    for batch_size in (1, 3):
        replies = generate_replies(short_preamble, requests, params, batch_size=batch_size)
        first_turns = [r.turn1 or r for r in replies]
        assert [[i.tolist() for i in t.items()][:len(w)] for t, w in zip(first_turns, wanted)] == wanted, batch_size
    assert [i.tolist() for i in stream_reply(short_preamble, rows[0], user_audio(0), params)] == wanted[0]
    assert base.schedule == Schedule(6, 6, 12)


def test_sampling_a_folder_with_a_non_default_schedule_is_one_clear_error(short_preamble):
    row = heldout_rows()[0]
    with pytest.raises(ScheduleError, match=r"was trained with first_text=2 \(interleave.json\), which only the greedy "
                                            r"decoder follows"):
        stream_reply(short_preamble, row, user_audio(0), GenerationParams(text_temperature=0.7))
