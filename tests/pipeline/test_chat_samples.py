"""The training samples' interleave (pipeline.chat_samples.CachedCodesMapper + pipeline.interleave.Schedule).

A sample's assistant turns are its supervised spans (reply positions, then
``<|im_end|>\\n``); the interleave is the modality flags inside them.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from liquid_audio.data.mapper import LFM2AudioChatMapper
from liquid_audio.utils import LFMModality

from pipeline.chat_samples import CachedCodesMapper, CodesCache, RowAudio, row_messages
from pipeline.interleave import Schedule
from pipeline.records import DatasetRow

TOOLS = [{"name": "weather", "description": "get current weather and forecasts for a location"}]
ROWS = [
    {"id": "m1", "class": "tool_match", "tools": TOOLS, "user": "what's the weather in Oslo",
     "assistant": "Sure, checking the weather in Oslo for you right now.",
     "tool_call": {"name": "weather", "arguments": {"city": "Oslo"}}},
    {"id": "r1", "class": "tool_result_speak", "tools": TOOLS, "user": "weather in Rome?",
     "assistant": "It's 21 degrees and sunny in Rome, a lovely afternoon.", "facts": "Rome: 21°C, sunny",
     "turn1": {"user": "weather in Rome?", "assistant": "Let me check.",
               "tool_call": {"name": "weather", "arguments": {"city": "Rome"}}}},
]
FIELDS = ("text", "audio_in", "audio_in_lens", "audio_out", "modality_flag", "supervision_mask")


def speech(seed: int, seconds: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(24000 * seconds)) / 24000
    return (0.2 * np.sin(2 * np.pi * rng.uniform(100, 300) * t) + rng.normal(0, 0.02, t.size)).astype(np.float32)


def messages(raw: dict, blip: np.ndarray | None = None):
    """The row's chat; the final reply has 2 s of speech (26 frames with the end frame), turn 1 0.3 s (5)."""
    row = DatasetRow.from_json(raw)
    audio = RowAudio(user=speech(1, 0.5), assistant=speech(2, 2.0), turn1_user=speech(3, 0.5),
                     turn1_assistant=speech(4, 0.3))
    return row_messages(row, audio, blip, ("tool_match",))


def assistant_runs(sample) -> list[list[tuple[str, int]]]:
    """Per assistant turn, its modality runs: ("t", n) text tokens, ("a", n) audio frames."""
    flags = sample.modality_flag[0].tolist()
    supervised = sample.supervision_mask[0].tolist()
    turns: list[list[tuple[str, int]]] = []
    for i, (flag, on) in enumerate(zip(flags, supervised)):
        if not on:
            continue
        if i == 0 or not supervised[i - 1]:
            turns.append([])
        kind = "a" if flag == int(LFMModality.AUDIO_OUT) else "t"
        runs = turns[-1]
        if runs and runs[-1][0] == kind:
            runs[-1] = (kind, runs[-1][1] + 1)
        else:
            runs.append((kind, 1))
    return turns


@pytest.fixture()
def ours(tiny_lfm, tmp_path):
    def make(first_text: int | None):
        schedule = Schedule.of_model(tiny_lfm.model, first_text)
        return CachedCodesMapper(tiny_lfm.processor, CodesCache(tmp_path / "codes", "mimi-sha"), schedule)
    return make


@pytest.mark.parametrize("raw", ROWS, ids=[r["class"] for r in ROWS])
def test_the_models_own_schedule_gives_the_stock_mappers_samples(raw, tiny_lfm, ours):
    blip = speech(9, 0.16)
    chat = messages(raw, blip)
    sample, stock = ours(None)(chat), LFM2AudioChatMapper(tiny_lfm.processor)(chat)
    for name in FIELDS:
        assert torch.equal(getattr(sample, name), getattr(stock, name)), name


def test_a_first_text_chunk_of_2_puts_each_turns_first_audio_frame_after_2_text_tokens(tiny_lfm, ours):
    chat = messages(ROWS[1])  # two assistant turns
    sample, stock = ours(2)(chat), LFM2AudioChatMapper(tiny_lfm.processor)(chat)
    turn1, turn2 = assistant_runs(sample)
    assert turn1[:2] == [("t", 2), ("a", 5)]  # "Let me check." is short: its 5 frames come in one chunk
    # then the model's usual interleave: 12 audio frames / 6 text tokens, the last audio chunk what is left
    assert turn2[:6] == [("t", 2), ("a", 12), ("t", 6), ("a", 12), ("t", 6), ("a", 2)]
    assert assistant_runs(stock)[1][:6] == [("t", 6), ("a", 12), ("t", 6), ("a", 12), ("t", 6), ("a", 2)]
    # only the layout moves: the tokens, codes, user audio and supervision are the stock mapper's
    for name in ("text", "audio_in", "audio_in_lens", "audio_out", "supervision_mask"):
        assert torch.equal(getattr(sample, name), getattr(stock, name)), name


def test_the_schedule_does_not_touch_the_prompt_part_of_the_sample(tiny_lfm, ours):
    chat = messages(ROWS[0])
    sample, stock = ours(1)(chat), LFM2AudioChatMapper(tiny_lfm.processor)(chat)
    first_supervised = int(sample.supervision_mask[0].float().argmax())
    assert torch.equal(sample.modality_flag[0, :first_supervised], stock.modality_flag[0, :first_supervised])
    assert assistant_runs(sample)[0][:3] == [("t", 1), ("a", 12), ("t", 6)]
