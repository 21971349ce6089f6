"""Preprocessing: rows → liquid-audio samples, the blip on the turns `preprocess.blip_on` names, parity with the stock path."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from liquid_audio.data.dataloader import LFM2DataLoader
from liquid_audio.data.mapper import LFM2AudioChatMapper
from liquid_audio.data.preprocess import preprocess_dataset

from pipeline.audio import to_float32
from pipeline.interleave import Schedule, read_record
from pipeline.chat_samples import CachedCodesMapper, CodesCache, RowAudio, assistant_audio_turns, row_messages
from pipeline.params import ParamsError, parse_params
from pipeline.records import DatasetRow
from tasks import blip_codes
from pipeline.blip import BlipParams, synthesize_blip
from coordinator.signature import BlipSignature
from tasks.preprocess import PreprocessParams, SplitReport, check_turns, prefix_check, samples_for_split, write_dataset

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
    return CachedCodesMapper(tiny_lfm.processor, CodesCache(tmp_path / "codes", "mimi-sha"), Schedule.of_model(tiny_lfm.model))


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
    mapper = CachedCodesMapper(tiny_lfm.processor, cache, Schedule.of_model(tiny_lfm.model))
    match, other = DatasetRow.from_json(ROWS["tool_match"]), DatasetRow.from_json(ROWS["non_tool"])
    preview = to_float32(trip.preview)
    mapper(row_messages(match, audio_for(match), preview))
    mapper(row_messages(other, audio_for(other)))
    assert (cache.hits, cache.misses) == (0, 2)
    mapper(row_messages(other, audio_for(other)))
    mapper(row_messages(match, audio_for(match), preview * 0.5))  # "a blip change"
    assert (cache.hits, cache.misses) == (1, 3)
    # Mimi's throughput counts the misses only: what went through the codec
    rate = mapper.throughput("cpu")
    assert rate["device"] == "cpu" and rate["seconds"] > 0 and rate["audio_seconds_per_second"] > 0
    mapper(row_messages(other, audio_for(other)))  # a hit adds nothing
    assert mapper.throughput("cpu") == rate


def test_a_damaged_codes_cache_entry_is_named_moved_aside_and_encoded_again(tiny_lfm, tmp_path, signature):
    """Codes changed on disk (same size) or a damaged .npy header: never used, one line each, recomputed."""
    lines: list[str] = []
    cache = CodesCache(tmp_path / "codes", "mimi-sha", echo=lines.append)
    mapper = CachedCodesMapper(tiny_lfm.processor, cache, Schedule.of_model(tiny_lfm.model))
    match, other = DatasetRow.from_json(ROWS["tool_match"]), DatasetRow.from_json(ROWS["non_tool"])
    preview = to_float32(signature[0].preview)
    chats = [row_messages(match, audio_for(match), preview), row_messages(other, audio_for(other))]
    fresh = [mapper(chat).audio_out for chat in chats]
    entries = sorted((tmp_path / "codes").rglob("*.npy"))
    assert len(entries) == 2 and all(len(p.stem.rsplit("-", 1)[1]) == 16 for p in entries)
    body, header = entries
    data = bytearray(body.read_bytes())
    data[-4:] = bytes(b ^ 0xFF for b in data[-4:])  # the last code: same size, still a valid array
    body.write_bytes(bytes(data))
    header.write_bytes(b"\x00" * 8 + header.read_bytes()[8:])  # the magic string gone
    again = [mapper(chat).audio_out for chat in chats]
    assert all(torch.equal(a, b) for a, b in zip(fresh, again)), "damaged codes were used"
    assert (cache.hits, cache.misses) == (0, 4)
    assert sorted(line.split(":")[0] for line in lines) == [str(p) for p in entries]
    assert all("damaged Mimi codes cache entry (its bytes hash to" in line for line in lines)
    aside = tmp_path / ".codes.damaged"
    assert sorted(p.name for p in aside.iterdir()) == sorted(p.name for p in entries)
    assert [d["entry"] for d in cache.damaged] == [line.split(":")[0] for line in lines]
    assert len(list((tmp_path / "codes").rglob("*.npy"))) == 2  # both written again, under their checksums


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
    assert all(entry["reason"] == f"{entry['tokens']} tokens, more than preprocess.max_context_length = 40"
               for entry in report.overlong)


@pytest.mark.parametrize("skipped_by_tts", [True, False])
def test_a_row_tts_skipped_is_listed_as_overlong_and_its_audio_never_read(mapper, signature, tmp_path, monkeypatch,
                                                                         skipped_by_tts):
    """A manifest line ``skipped`` (a clip past tts.max_clip_seconds) is listed with its reason, not encoded;
    the same row with its keys is processed."""
    import tasks.preprocess as stage

    trip, check = signature
    rows = [DatasetRow.from_json(ROWS["non_tool"])]
    reason = "assistant text is 52.0 s of audio, more than tts.max_clip_seconds = 41"
    manifest = {"n1": {"user_key": None, "assistant_key": None, "skipped": reason} if skipped_by_tts else {}}
    params = stage.PreprocessParams(tmp_path, tmp_path, tmp_path, max_context_length=4096, tool_match_oversample=1)
    read: list[str] = []
    monkeypatch.setattr(stage, "row_audio", lambda row, entry, cache_dir: read.append(row.id) or audio_for(row))
    report = SplitReport()
    written = list(samples_for_split(rows, manifest, mapper, params, to_float32(trip.preview), check, report, 1, "eval"))
    if skipped_by_tts:
        assert written == [] and read == [] and report.rows == 1
        assert report.overlong == [{"split": "eval", "id": "n1", "class": "non_tool", "tokens": None,
                                    "reason": f"tts: {reason}"}]
    else:
        assert len(written) == 1 and read == ["n1"] and report.overlong == []


def test_written_shards_equal_the_stock_preprocess_dataset(tiny_lfm, mapper, tmp_path):
    rows = [DatasetRow.from_json(ROWS[c]) for c in ("non_tool", "tool_miss")]
    chats = [row_messages(row, audio_for(row)) for row in rows]
    preprocess_dataset(chats, tmp_path / "stock", LFM2AudioChatMapper(tiny_lfm.processor), max_context_length=512)
    records = []
    for chat in chats:
        sample = mapper(chat)
        records.append({name: getattr(sample, name).tolist() for name in
                        ("text", "audio_in", "audio_in_lens", "audio_out", "modality_flag", "supervision_mask")})
    write_dataset(records, tmp_path / "ours", Schedule.of_model(tiny_lfm.model))
    assert read_record(tmp_path / "ours") == Schedule(6, 6, 12)  # the split says how its samples are laid out
    stock, ours = LFM2DataLoader(str(tmp_path / "stock"), 512), LFM2DataLoader(str(tmp_path / "ours"), 512)
    assert len(stock) == len(ours) == 2
    for i in range(2):
        a, b = stock[i], ours[i]
        for name in ("text", "audio_in", "audio_in_lens", "audio_out", "modality_flag", "supervision_mask"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name


def preprocess_rows(rows, mapper, preview, signature, blip_on, monkeypatch, tmp_path):
    """samples_for_split over ``rows`` (synthetic audio), as the stage runs it; (samples, report)."""
    import tasks.preprocess as stage

    params = PreprocessParams(tmp_path, tmp_path, tmp_path, max_context_length=4096, blip_on=tuple(blip_on))
    monkeypatch.setattr(stage, "row_audio", lambda row, entry, cache_dir: audio_for(row))
    report = SplitReport()
    samples = list(samples_for_split(rows, {r.id: {} for r in rows}, mapper, params, preview, signature, report, 1,
                                     "train"))
    return samples, report


@pytest.mark.parametrize("blip_on, opens_with_blip", [
    ((), {"m1": [False], "r1": [False, False]}),  # v4: no blip anywhere
    (("tool_match",), {"m1": [True], "r1": [False, False]}),  # the card
    (("turn1_ack",), {"m1": [False], "r1": [True, False]}),
    (("tool_match", "turn1_ack"), {"m1": [True], "r1": [True, False]}),
])
def test_blip_on_names_the_assistant_turns_that_open_with_the_blip(blip_on, opens_with_blip, signature, mapper,
                                                                   monkeypatch, tmp_path):
    trip, blip = signature
    rows = [DatasetRow.from_json(ROWS[c]) for c in ("tool_match", "tool_result_speak", "non_tool", "tool_miss")]
    samples, report = preprocess_rows(rows, mapper, to_float32(trip.preview), blip, blip_on, monkeypatch, tmp_path)
    for row, sample in zip(rows, samples):
        turns = assistant_audio_turns(np.asarray(sample["audio_out"]))
        detected = [prefix_check(blip, turn)[0] for turn in turns]
        assert detected == opens_with_blip.get(row.id, [False]), row.id
    # the report counts and checks every blipped turn, per kind; the rest stay unblipped
    assert {kind: check.turns for kind, check in report.blipped.items()} == \
        {"tool_match": int("tool_match" in blip_on), "turn1_ack": int("turn1_ack" in blip_on)}
    assert all(check.detection_matches == check.turns and not check.mismatched_ids for check in report.blipped.values())
    assert report.unblipped_turns == 5 - len(blip_on) and report.unblipped_detections == 0


def test_the_prefix_check_reports_a_blip_one_frame_late(signature, mapper):
    trip, blip = signature
    row = DatasetRow.from_json(ROWS["tool_result_speak"])
    codes = mapper(row_messages(row, audio_for(row), to_float32(trip.preview), blip_on=("turn1_ack",))).audio_out.numpy()
    late = np.concatenate([codes[:, 3:4], codes], axis=1)  # a frame of speech before the blip's codes
    report = SplitReport()
    check_turns(row, late, ("turn1_ack",), blip, report)
    assert (report.blipped["turn1_ack"].turns, report.blipped["turn1_ack"].detection_matches) == (1, 0)
    assert report.blipped["turn1_ack"].mismatched_ids == ["r1"]


def test_the_prefix_check_reports_a_blip_on_the_wrong_rows(signature, mapper):
    trip, blip = signature
    row = DatasetRow.from_json(ROWS["non_tool"])
    codes = mapper(row_messages(row, audio_for(row), to_float32(trip.preview), blip_on=("non_tool",))).audio_out.numpy()
    report = SplitReport()
    check_turns(row, codes, ("tool_match",), blip, report)
    assert (report.unblipped_turns, report.unblipped_detections) == (1, 1)


def test_audio_out_splits_into_one_block_per_assistant_turn(signature, mapper):
    row = DatasetRow.from_json(ROWS["tool_result_speak"])
    sample = mapper(row_messages(row, audio_for(row)))
    turns = assistant_audio_turns(sample.audio_out.numpy())
    # turn 1: 0.3 s of speech, turn 2: 0.6 s (12.5 Hz frames); each turn's end-of-audio frame dropped
    assert [t.shape[1] for t in turns] == [4, 8] and sample.audio_out.shape[1] == 4 + 1 + 8 + 1
    assert all((t != 2048).all() for t in turns)


@pytest.mark.parametrize("raw, message", [
    ({"blip_on": ["tool_match", "narration"]}, "params.yaml: 'preprocess.blip_on' must be a list of one of 'tool_match', 'turn1_ack'"),
    ({"blip_on": ["tool_match", "tool_match"]}, "params.yaml: 'preprocess.blip_on' lists a turn kind twice"),
    ({"blip_on": "tool_match"}, "params.yaml: 'preprocess.blip_on' must be a list"),
    ({"max_context_length": 0}, "params.yaml: 'preprocess.max_context_length' must be in [1, inf]"),
    ({"tool_match_oversample": 0}, "params.yaml: 'preprocess.tool_match_oversample' must be in [1, inf]"),
    ({"first_text_chunk": 0}, "params.yaml: 'preprocess.first_text_chunk' must be in [1, 64]"),
    ({"first_text_chunk": 65}, "params.yaml: 'preprocess.first_text_chunk' must be in [1, 64]"),
    ({"first_text_chunk": 2.5}, "params.yaml: 'preprocess.first_text_chunk' must be"),
])
def test_bad_preprocess_params_fail_in_one_line(raw, message):
    base = {"model_dir": "m", "tts_cache_dir": "t", "codes_cache_dir": "c", "max_context_length": 512}
    with pytest.raises(ParamsError) as err:
        parse_params(PreprocessParams, base | raw)
    assert str(err.value).startswith(message)


def test_blip_on_defaults_to_the_card(repo_root):
    import yaml

    params = parse_params(PreprocessParams, yaml.safe_load((repo_root / "params.yaml").read_text())["preprocess"])
    assert params.blip_on == ("tool_match",)
    assert params.first_text_chunk is None  # the model's own interleave


def test_first_text_chunk_sets_the_first_chunk_of_the_base_models_interleave(tiny_lfm_dir):
    from tasks.preprocess import interleave_schedule

    base = {"model_dir": str(tiny_lfm_dir), "tts_cache_dir": "t", "codes_cache_dir": "c", "max_context_length": 512}
    assert interleave_schedule(parse_params(PreprocessParams, base)) == Schedule(6, 6, 12)
    assert interleave_schedule(parse_params(PreprocessParams, {**base, "first_text_chunk": 2})) == Schedule(2, 6, 12)


def test_a_missing_model_folder_is_one_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    import tasks.preprocess as stage

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("preprocess:\n  model_dir: models/nowhere\n  tts_cache_dir: t\n"
                                          "  codes_cache_dir: c\n  max_context_length: 512\n")
    assert stage.main() == 1
    assert capsys.readouterr().err == (
        "preprocess: models/nowhere: model folder not found (run the base_models stage first)\n")


def test_the_metrics_say_which_interleave_the_samples_have(tmp_path):
    from tasks.preprocess import metrics_document

    metrics = metrics_document({"train": SplitReport()}, CodesCache(tmp_path, "sha"), ("tool_match",), Schedule(2, 6, 12))
    assert metrics["interleave"] == {"first_text": 2, "n_text": 6, "n_audio": 12}


def test_the_dvc_metrics_are_the_documents_headline(tmp_path):
    import tasks.preprocess as stage
    from pipeline.chat_samples import CodesCache
    from pipeline.metrics_models import PreprocessDetails, PreprocessHeadline

    train, evals = stage.SplitReport(rows=3, written=3), stage.SplitReport(rows=1, written=1)
    train.blipped["tool_match"] = stage.TurnCheck(turns=2, detection_matches=1)
    document = stage.metrics_document({"train": train, "eval": evals}, CodesCache(tmp_path, "x"), ("tool_match",),
                                     Schedule(6, 6, 12))
    assert PreprocessDetails.of(document).headline() == PreprocessHeadline(blipped=2, prefix_ok=0.5)
