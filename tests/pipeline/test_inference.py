"""The one inference path on the tiny random-init model: ChatState layout, two-turn flow, Reply records, user audio."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline import generation
from pipeline.generation import GenerationParams, generate_reply
from pipeline.params import ParamsError, parse_params
from pipeline.records import DatasetRow
from pipeline.reply import Reply
from pipeline.user_audio import ManifestAudio, MissingAudio

TOOLS = [{"name": "weather", "description": "get current weather and forecasts for a location"},
         {"name": "alarm", "description": "set or cancel alarms"}]
MATCH = DatasetRow.from_json({"id": "m1", "class": "tool_match", "tools": TOOLS, "user": "what's the weather in Lima",
                              "assistant": "Sure, checking the weather in Lima.",
                              "tool_call": {"name": "weather", "arguments": {"city": "Lima"}}})
SPEAK = DatasetRow.from_json({
    "id": "s1", "class": "tool_result_speak", "tools": TOOLS, "user": "what's the weather in Lima",
    "assistant": "It's 21 degrees in Lima.", "facts": "Lima: 21°C, sunny, wind 9 km/h",
    "turn1": {"user": "what's the weather in Lima", "assistant": "Sure, checking the weather in Lima.",
              "tool_call": {"name": "weather", "arguments": {"city": "Lima"}}}})


@pytest.fixture(scope="module")
def user_audio():
    rng = np.random.default_rng(0)
    return (0.05 * rng.standard_normal(12_000)).astype(np.float32), 24_000


def test_tool_match_reply_is_typed_and_replayable(tiny_lfm, user_audio):
    params = GenerationParams(max_new_tokens=24)
    reply = generate_reply(tiny_lfm, MATCH, user_audio, params)
    assert reply.audio_codes.dtype == np.int64 and reply.audio_codes.shape[0] == 8
    assert reply.finish_reason in ("im_end", "max_new_tokens")
    items = list(reply.items())
    n_stream = sum(count for _, count in reply.layout)
    assert len(items) == n_stream + (reply.finish_reason == "im_end")
    assert n_stream <= params.max_new_tokens
    assert sum(i.size == 8 for i in items) == reply.n_audio_frames + reply.end_of_audio
    assert [int(i[0]) for i in items if i.size == 1][: len(reply.text_tokens)] == reply.text_tokens
    # greedy is deterministic: the same row gives the same reply
    again = generate_reply(tiny_lfm, MATCH, user_audio, params)
    assert again.text_tokens == reply.text_tokens and np.array_equal(again.audio_codes, reply.audio_codes)
    # the record round-trips through JSON
    back = Reply.from_json(json.loads(json.dumps(reply.to_json())))
    assert back.text == reply.text and np.array_equal(back.audio_codes, reply.audio_codes)
    assert back.layout == reply.layout and back.finish_reason == reply.finish_reason


def test_two_turn_flow_runs_in_one_chat_with_the_facts_prompt(tiny_lfm, user_audio, monkeypatch):
    seen = []
    real = generation.generate_turn

    def spy(lfm, chat, params, wrap=None):
        out = real(lfm, chat, params, wrap)
        seen.append((lfm.processor.text.decode(chat.text[0].tolist()), chat.audio_out.shape[1]))
        return out

    monkeypatch.setattr(generation, "generate_turn", spy)
    reply = generate_reply(tiny_lfm, SPEAK, user_audio, GenerationParams(max_new_tokens=20))
    assert reply.turn1 is not None and len(seen) == 2
    turn1_prompt, turn2_prompt = seen[0][0], seen[1][0]
    assert "Known facts you must use when relevant:\nLima: 21°C, sunny, wind 9 km/h" not in turn1_prompt
    assert turn2_prompt.startswith(turn1_prompt)  # same ChatState, extended
    assert "Known facts you must use when relevant:\nLima: 21°C, sunny, wind 9 km/h" in turn2_prompt
    assert turn1_prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert turn2_prompt.count("<|im_start|>assistant") == 2 and turn2_prompt.count("<|im_start|>system") == 2
    assert turn2_prompt.endswith("km/h<|im_end|>\n<|im_start|>assistant\n")
    # the turn-1 audio that was generated is in the chat for turn 2 (the 2048 frame included)
    assert seen[1][1] == reply.turn1.n_audio_frames + reply.turn1.end_of_audio
    record = reply.to_json()
    assert "turn1" in record and Reply.from_json(record).turn1.text == reply.turn1.text


def test_generation_params_are_typed_and_bounded():
    params = parse_params(GenerationParams, {"max_new_tokens": 48, "audio_temperature": 1, "audio_top_k": 4}, "x")
    assert params.max_new_tokens == 48 and not params.greedy
    assert params.audio_temperature == 1.0 and isinstance(params.audio_temperature, float)  # liquid-audio asserts float
    assert parse_params(GenerationParams, {}, "x").greedy
    with pytest.raises(ParamsError, match="x.max_new_tokens"):
        parse_params(GenerationParams, {"max_new_tokens": "many"}, "x")
    with pytest.raises(ParamsError, match="x.max_new_tokens"):
        parse_params(GenerationParams, {"max_new_tokens": 0}, "x")
    with pytest.raises(ParamsError, match="x.text_top_k"):
        parse_params(GenerationParams, {"text_top_k": 0}, "x")


def test_manifest_audio(tmp_path):
    manifest = tmp_path / "heldout.jsonl"
    manifest.write_text(
        json.dumps({"id": "m1", "user_key": "k-user", "assistant_key": "a", "turn1_user_key": None, "turn1_assistant_key": None}) + "\n"
        + json.dumps({"id": "s1", "user_key": "k-user2", "assistant_key": "b", "turn1_user_key": "k-t1", "turn1_assistant_key": "c"}) + "\n"
    )
    waves = {"k-user": np.ones(10, dtype=np.float32), "k-t1": np.ones(5, dtype=np.float32)}

    def loader(cache_dir, key):
        if key not in waves:
            raise KeyError(key)
        return waves[key], 24_000

    damaged = tmp_path / "damaged" / "heldout.jsonl"
    damaged.parent.mkdir()
    damaged.write_text(manifest.read_text() + "not json\n")
    with pytest.raises(ValueError, match="heldout.jsonl:3"):  # a damaged manifest is never half-read
        ManifestAudio(damaged, tmp_path / "cache", loader=loader)
    source = ManifestAudio(manifest, tmp_path / "cache", loader=loader)
    assert source.audio_for(MATCH)[0].size == 10
    assert source.audio_for(SPEAK)[0].size == 5  # tool_result_speak uses the turn-1 request
    other = DatasetRow.from_json({**MATCH.to_json(), "id": "zz"})
    with pytest.raises(MissingAudio, match="no entry for row 'zz'"):
        source.audio_for(other)
    waves.pop("k-user")
    with pytest.raises(MissingAudio, match="unavailable"):
        source.audio_for(MATCH)
