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
from pipeline.batch_decode import Schedule, decode_chats
from pipeline.catalog import RowMaker
from pipeline.generation import GenerationParams, generate_replies, generate_stream, request_chat
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
