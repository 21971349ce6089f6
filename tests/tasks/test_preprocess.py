"""Preprocessing: rows → liquid-audio samples, blip prefix on tool_match only, parity with the stock path."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from liquid_audio.data.dataloader import LFM2DataLoader
from liquid_audio.data.mapper import LFM2AudioChatMapper
from liquid_audio.data.preprocess import preprocess_dataset

from pipeline.audio import to_float32
from pipeline.chat_samples import CachedCodesMapper, CodesCache, RowAudio, row_messages
from pipeline.records import DatasetRow
from tasks import blip_codes
from pipeline.blip import BlipParams, synthesize_blip
from coordinator.signature import BlipSignature
from tasks.preprocess import SplitReport, prefix_check, samples_for_split, write_dataset

TOOLS = [{"name": "weather", "description": "get current weather and forecasts for a location"},
         {"name": "alarm", "description": "set or cancel alarms"}]
ROWS = {
    "tool_match": {"id": "m1", "class": "tool_match", "tools": TOOLS, "user": "what's the weather in Oslo",
                   "assistant": "Sure, checking the weather in Oslo.",
                   "tool_call": {"name": "weather", "arguments": {"city": "Oslo"}}},
    "non_tool": {"id": "n1", "class": "non_tool", "tools": TOOLS, "user": "tell me a joke",
                 "assistant": "Why did the scarecrow win? He was outstanding in his field."},
    "tool_miss": {"id": "x1", "class": "tool_miss", "tools": TOOLS, "user": "send an email to Bob",
                  "assistant": "Sorry, I can't send emails here.", "requested_tool": "email"},
    "tool_result_speak": {"id": "r1", "class": "tool_result_speak", "tools": TOOLS, "user": "weather in Rome?",
                          "assistant": "It's 21 degrees and sunny in Rome.", "facts": "Rome: 21°C, sunny",
                          "turn1": {"user": "weather in Rome?", "assistant": "Let me check.",
                                    "tool_call": {"name": "weather", "arguments": {"city": "Rome"}}}},
}


def speech(seed: int, seconds: float = 0.6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(24000 * seconds)) / 24000
    return (0.2 * np.sin(2 * np.pi * rng.uniform(100, 300) * t) + rng.normal(0, 0.02, t.size)).astype(np.float32)


def audio_for(row: DatasetRow) -> RowAudio:
    return RowAudio(user=speech(1), assistant=speech(2), turn1_user=speech(3), turn1_assistant=speech(4, 0.3))


@pytest.fixture(scope="module")
def signature(tiny_mimi, tmp_path_factory):
    trip = blip_codes.round_trip(tiny_mimi, synthesize_blip(BlipParams()), 24000)
    return trip, BlipSignature.from_codes(trip.codes)


@pytest.fixture()
def mapper(tiny_lfm, tmp_path):
    return CachedCodesMapper(tiny_lfm.processor, CodesCache(tmp_path / "codes", "mimi-sha"))


@pytest.mark.parametrize("row_class", ["non_tool", "tool_miss", "tool_result_speak"])
def test_rows_without_blip_equal_the_stock_mapper(row_class, tiny_lfm, mapper):
    row = DatasetRow.from_json(ROWS[row_class])
    messages = row_messages(row, audio_for(row))
    ours, stock = mapper(messages), LFM2AudioChatMapper(tiny_lfm.processor)(messages)
    for name in ("text", "audio_in", "audio_in_lens", "audio_out", "modality_flag", "supervision_mask"):
        assert torch.equal(getattr(ours, name), getattr(stock, name)), name


def test_chat_layout_follows_the_prompt_module(tiny_lfm):
    row = DatasetRow.from_json(ROWS["tool_result_speak"])
    roles = [m.role for m in row_messages(row, audio_for(row))]
    assert roles == ["system", "user", "assistant", "system", "assistant"]


def test_tool_match_ack_starts_with_the_blip_signature(signature, mapper):
    trip, blip = signature
    row = DatasetRow.from_json(ROWS["tool_match"])
    sample = mapper(row_messages(row, audio_for(row), blip_prefix=to_float32(trip.preview)))
    detected, per_codebook = prefix_check(blip, sample.audio_out.numpy())
    assert detected and per_codebook[0]  # the coordinator's cb0 detector fires on the training row
    no_blip = mapper(row_messages(row, audio_for(row)))
    assert no_blip.audio_out.shape[1] == sample.audio_out.shape[1] - 2  # the blip adds exactly F = 2 frames
    assert not prefix_check(blip, no_blip.audio_out.numpy())[0]


def test_codes_cache_reencodes_only_changed_audio(tiny_lfm, tmp_path, signature):
    trip, _ = signature
    cache = CodesCache(tmp_path / "codes", "mimi-sha")
    mapper = CachedCodesMapper(tiny_lfm.processor, cache)
    match, other = DatasetRow.from_json(ROWS["tool_match"]), DatasetRow.from_json(ROWS["non_tool"])
    preview = to_float32(trip.preview)
    mapper(row_messages(match, audio_for(match), preview))
    mapper(row_messages(other, audio_for(other)))
    assert (cache.hits, cache.misses) == (0, 2)
    mapper(row_messages(other, audio_for(other)))
    mapper(row_messages(match, audio_for(match), preview * 0.5))  # "a blip change"
    assert (cache.hits, cache.misses) == (1, 3)


def test_overlong_rows_are_listed_not_silently_dropped(mapper, signature, tmp_path, monkeypatch):
    import tasks.preprocess as stage

    trip, check = signature
    rows = [DatasetRow.from_json(ROWS["non_tool"]), DatasetRow.from_json(ROWS["tool_match"])]
    params = stage.PreprocessParams(tmp_path, tmp_path, tmp_path, max_context_length=40, tool_match_oversample=1)
    report = SplitReport()
    monkeypatch.setattr(stage, "row_audio", lambda row, entry, cache_dir: audio_for(row))
    written = list(samples_for_split(rows, {r.id: {} for r in rows}, mapper, params,
                                     to_float32(trip.preview), check, report, 1, "train"))
    assert written == [] and report.rows == 2
    assert [entry["id"] for entry in report.overlong] == ["n1", "m1"]
    assert all(entry["tokens"] > 40 for entry in report.overlong)


def test_written_shards_equal_the_stock_preprocess_dataset(tiny_lfm, mapper, tmp_path):
    rows = [DatasetRow.from_json(ROWS[c]) for c in ("non_tool", "tool_miss")]
    chats = [row_messages(row, audio_for(row)) for row in rows]
    preprocess_dataset(chats, tmp_path / "stock", LFM2AudioChatMapper(tiny_lfm.processor), max_context_length=512)
    records = []
    for chat in chats:
        sample = mapper(chat)
        records.append({name: getattr(sample, name).tolist() for name in
                        ("text", "audio_in", "audio_in_lens", "audio_out", "modality_flag", "supervision_mask")})
    write_dataset(records, tmp_path / "ours")
    stock, ours = LFM2DataLoader(str(tmp_path / "stock"), 512), LFM2DataLoader(str(tmp_path / "ours"), 512)
    assert len(stock) == len(ours) == 2
    for i in range(2):
        a, b = stock[i], ours[i]
        for name in ("text", "audio_in", "audio_in_lens", "audio_out", "modality_flag", "supervision_mask"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
