"""Stage `tts` on a tiny hand-written dataset, with the real espeak-ng engine."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.io import read_json
from pipeline.jsonl import JsonlError, MissingFile
from pipeline.params import ParamsError
from pipeline.records import DatasetRow, write_rows
from pipeline.tts.engines import EspeakEngine
from pipeline.tts_cache import TTSCache, load_audio, read_manifest
from tasks.tts import SPLITS, TTSParams, read_split, run_tts, user_voice_for

TOOLS = [{"name": "weather", "description": "get current weather and forecasts for a location"}]
TURN1 = {"user": "what's the weather in Paris", "assistant": "Sure, checking the weather in Paris.",
         "tool_call": {"name": "weather", "arguments": {"city": "Paris"}}}  # fmt: skip
ROWS = {
    "train": [
        {"id": "train-1", "class": "tool_match", "tools": TOOLS, "user": "what's the weather in Paris",
         "assistant": "Sure, checking the weather in Paris.", "tool_call": TURN1["tool_call"]},
        {"id": "train-2", "class": "tool_result_speak", "tools": TOOLS, "user": "what's the weather in Paris",
         "assistant": "It's 14 degrees with light rain.", "turn1": TURN1, "facts": "Paris: 14°C, light rain"},
    ],
    "eval": [{"id": "eval-1", "class": "non_tool", "tools": TOOLS, "user": "Hi!", "assistant": "Hello there."}],
    "heldout": [
        {"id": "held-1", "class": "tool_miss", "tools": TOOLS, "user": "play some jazz",
         "assistant": "Sorry, I can't play music.", "requested_tool": "music"},
    ],
    "novel_facts": [],
}  # fmt: skip
PARAMS = {
    "engine": "espeak",
    "kokoro_dir": "models/base/kokoro",
    "g2p": "offline",
    "assistant_voice": "am_adam",
    "user_voices": ["af_heart", "bm_george"],
    "speed": 1.0,
    "espeak_voices": {"am_adam": "en-us", "af_heart": "en-us+f3", "bm_george": "en-gb"},
    "cache_dir": "data/tts/cache",
    "shard_size": 4,
}


def write_dataset(root: Path, rows: dict[str, list[dict]] = ROWS) -> Path:
    """The splits as the dataset stage writes them (``pipeline.records.write_rows``)."""
    dataset = root / "dataset"
    dataset.mkdir()
    for split, split_rows in rows.items():
        write_rows(dataset / f"{split}.jsonl", [DatasetRow.from_json(row) for row in split_rows])
    return dataset


@pytest.fixture(scope="module")
def engine() -> EspeakEngine:
    return EspeakEngine(PARAMS["espeak_voices"])


def run(root: Path, engine: EspeakEngine):
    params = TTSParams.from_params({**PARAMS, "cache_dir": str(root / "cache")})
    return params, run_tts(
        params, engine, dataset_dir=root / "dataset", manifest_dir=root / "tts",
        metrics_path=root / "metrics" / "tts.json", progress=False,
    )  # fmt: skip


def test_stage_writes_manifests_and_metrics_then_reruns_for_free(tmp_path, engine):
    write_dataset(tmp_path)
    params, metrics = run(tmp_path, engine)
    # distinct clips: train-1 user (= train-2 user and turn1 user) + 2 replies (ack = train-2 turn1
    # reply), train-2 narration, eval user + reply, heldout user + reply
    assert metrics.requests == 7 and metrics.syntheses == 7 and metrics.cache_hits == 0
    assert metrics.rows == {"train": 2, "eval": 1, "heldout": 1, "novel_facts": 0}

    manifests = {s: [json.loads(line) for line in (tmp_path / "tts" / f"{s}.jsonl").read_text().splitlines()] for s in SPLITS}
    assert [m["id"] for m in manifests["train"]] == ["train-1", "train-2"]
    assert manifests["novel_facts"] == []
    match, speak = manifests["train"]
    assert set(match) == {"id", "user_key", "assistant_key", "turn1_user_key", "turn1_assistant_key", "skipped"}
    assert match["skipped"] is None
    assert match["turn1_user_key"] is None and match["turn1_assistant_key"] is None
    assert speak["turn1_user_key"] == speak["user_key"] == match["user_key"]  # same text, same speaker
    assert speak["turn1_assistant_key"] == match["assistant_key"]
    for split_rows in manifests.values():
        for row in split_rows:
            for key in ("user_key", "assistant_key"):
                audio, rate = load_audio(tmp_path / "cache", row[key])
                assert rate == 24_000 and audio.size > 0.3 * rate

    saved = read_json(tmp_path / "metrics" / "tts.details.json")
    assert read_json(tmp_path / "metrics" / "tts.json") == {"clips": 7}  # DVC's headline
    assert saved["audio_seconds"] > 3 and saved["engine"] == "espeak-ng"
    # A cached output holds no reading of this invocation (wall clock, cache hits): those are in the timings file.
    assert not {"wall_seconds", "syntheses", "hit_rate", "shards_written"} & set(saved)
    timings = read_json(tmp_path / "metrics" / "tts.timings.json")
    assert timings["syntheses"] == 7 and timings["hit_rate"] == 0.0 and timings["wall_seconds"] >= 0
    assert timings["audio_seconds_per_second"] == pytest.approx(timings["audio_seconds_synthesized"] / timings["wall_seconds"], rel=0.01)

    first_manifest = (tmp_path / "tts" / "train.jsonl").read_bytes()
    first_details = (tmp_path / "metrics" / "tts.details.json").read_bytes()
    _, again = run(tmp_path, engine)
    assert (again.syntheses, again.cache_hits, again.hit_rate) == (0, 7, 1.0)
    assert again.audio_seconds == metrics.audio_seconds and again.shards_written == []
    assert (tmp_path / "tts" / "train.jsonl").read_bytes() == first_manifest
    assert (tmp_path / "metrics" / "tts.details.json").read_bytes() == first_details  # all from the cache: same
    assert len(TTSCache(tmp_path / "cache").shards()) == 2  # 7 clips, 4 per shard; no new shard


def test_text_with_unicode_line_separators_is_voiced_under_its_exact_text(tmp_path, engine):
    text = "Hi\u2028there\u0085my\u2029friend!"
    rows = {**ROWS, "eval": [{**ROWS["eval"][0], "user": text}, {**ROWS["eval"][0], "id": "eval-2", "user": "Bye!"}]}
    write_dataset(tmp_path, rows)
    run(tmp_path, engine)
    manifest = read_manifest(tmp_path / "tts" / "eval.jsonl")
    assert list(manifest) == ["eval-1", "eval-2"]  # one row a line, none split, none merged
    clip = TTSCache(tmp_path / "cache").get(manifest["eval-1"]["user_key"])
    assert clip.request.text == text and clip.seconds > 0.3


def test_a_damaged_cache_shard_is_reported_by_path_and_synthesised_again(tmp_path, monkeypatch, capsys):
    import yaml

    from tasks import tts

    (tmp_path / "data").mkdir()
    write_dataset(tmp_path / "data")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"tts": PARAMS}))
    monkeypatch.chdir(tmp_path)
    assert tts.main() == 0
    manifests = {s: Path(f"data/tts/{s}.jsonl").read_bytes() for s in SPLITS}
    shard = TTSCache("data/tts/cache").shards()[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside a data page; the footer is intact
    shard.write_bytes(bytes(data))
    capsys.readouterr()

    assert tts.main() == 0
    out, err = capsys.readouterr()
    assert f"tts: {shard}: damaged TTS cache shard" in err and "moved to data/tts/.cache.damaged/" in err
    assert "7 clips (4 synthesised, 3 cached)" in out  # shard_size 4: the damaged shard held 4 clips
    metrics = read_json("reports/metrics/tts.timings.json")
    assert [d["shard"] for d in metrics["cache_repair"]["damaged"]] == [str(shard)]
    assert {s: Path(f"data/tts/{s}.jsonl").read_bytes() for s in SPLITS} == manifests
    cache = TTSCache("data/tts/cache")
    assert len(cache) == 7 and all(cache.damage(s) is None for s in cache.shards())


def test_a_changed_speed_is_a_new_clip(tmp_path, engine):
    write_dataset(tmp_path)
    run(tmp_path, engine)
    params = TTSParams.from_params({**PARAMS, "cache_dir": str(tmp_path / "cache"), "speed": 1.5})
    metrics = run_tts(params, engine, tmp_path / "dataset", tmp_path / "tts", tmp_path / "m.json", progress=False)
    assert metrics.syntheses == 7 and metrics.cache_hits == 0


def test_user_voices_rotate_deterministically():
    voices = ("af_heart", "af_bella", "bm_george")
    chosen = [user_voice_for(f"train-{i}", voices) for i in range(60)]
    assert chosen == [user_voice_for(f"train-{i}", voices) for i in range(60)]
    assert set(chosen) == set(voices)


def test_bad_dataset_lines_fail_naming_file_and_line(tmp_path):
    path = tmp_path / "train.jsonl"
    cases = [
        (json.dumps(ROWS["eval"][0]) + "\n\n{not json\n", r"train.jsonl:3: invalid JSON"),
        (json.dumps({**ROWS["eval"][0], "assistant": " "}) + "\n", r"train.jsonl:1: empty field 'assistant'"),
        (json.dumps({k: v for k, v in ROWS["train"][1].items() if k != "turn1"}) + "\n",
         r"train.jsonl:1: missing field 'turn1'"),
        (json.dumps(ROWS["eval"][0]) + "\n" + json.dumps(ROWS["eval"][0]) + "\n",
         r"train.jsonl:2: duplicate id 'eval-1'"),
        (json.dumps({**ROWS["eval"][0], "class": "tool_match"}) + "\n", r"train.jsonl:1: missing field 'tool_call'"),
    ]
    for text, message in cases:
        path.write_text(text)
        with pytest.raises(JsonlError, match=message):
            read_split(path)
    with pytest.raises(MissingFile, match="run the dataset stage first"):
        read_split(tmp_path / "missing.jsonl")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"engine": "festival"}, "'tts.engine' must be one of 'kokoro', 'espeak'"),
        ({"user_voices": []}, "'tts.user_voices' must be a non-empty list"),
        ({"speed": 0}, "'tts.speed' must be in (0, inf]"),
        ({"speed": float("inf")}, "'tts.speed' must be a number"),
        ({"g2p": "gruut"}, "'tts.g2p' must be one of 'offline', 'spacy'"),
        ({"shard_size": 0}, "'tts.shard_size' must be in [1, inf]"),
        ({"max_clip_seconds": 0}, "'tts.max_clip_seconds' must be in (0, inf]"),
        ({"espeak_voices": {"am_adam": "en-us"}}, "no espeak voice for af_heart, bm_george"),
        ({"voices": ["x"]}, "'tts.voices' is not a known key"),
    ],
)
def test_params_errors_name_the_key(change, message):
    with pytest.raises(ParamsError) as caught:
        TTSParams.from_params({**PARAMS, **change})
    assert str(caught.value).startswith("params.yaml: ") and message in str(caught.value)
    assert TTSParams.from_params(PARAMS).voices == ("am_adam", "af_heart", "bm_george")


def test_main_reads_its_params_group(tmp_path, monkeypatch, capsys):
    import yaml

    from tasks import tts

    (tmp_path / "data").mkdir()
    write_dataset(tmp_path / "data")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"tts": PARAMS, "other": {"x": 1}}))
    monkeypatch.chdir(tmp_path)
    assert tts.main() == 0
    assert "7 clips (7 synthesised, 0 cached)" in capsys.readouterr().out
    assert (tmp_path / "data/tts/train.jsonl").is_file() and (tmp_path / "reports/metrics/tts.json").is_file()
    assert len(TTSCache(tmp_path / "data/tts/cache")) == 7
    (tmp_path / "data/dataset/eval.jsonl").write_text("{broken\n")
    assert tts.main() == 1
    err = capsys.readouterr().err
    assert err.startswith("tts: data/dataset/eval.jsonl:1: invalid JSON") and len(err.splitlines()) == 1


LONG_REPLY = "The forecast for the whole week ahead is mild and dry, with light winds from the west."  # ~6 s
GIANT_REPLY = "All work and no play makes a dull day for everyone involved. " * 8  # >= 15 s by its letters alone
BOUND_ROWS = {
    **ROWS,
    "eval": [ROWS["eval"][0], {**ROWS["eval"][0], "id": "eval-2", "user": "How is the week?", "assistant": LONG_REPLY}],
    "heldout": [{**ROWS["heldout"][0], "assistant": GIANT_REPLY}],
}


def test_a_clip_past_max_clip_seconds_skips_its_row_listed_and_counted_and_never_poisons_the_cache(
        tmp_path, monkeypatch, capsys):
    """max_clip_seconds 4: held-1's giant reply is refused before synthesis (its letters alone need 15 s), eval-2's
    reply once voiced (~6 s). Both rows: manifest line without keys, listed and counted; the stage exits 0. With the
    bound lifted both are voiced (the voiced clip from the cache); with it back the outputs are the first run's."""
    import yaml

    from tasks import tts

    (tmp_path / "data").mkdir()
    write_dataset(tmp_path / "data", BOUND_ROWS)
    monkeypatch.chdir(tmp_path)

    def stage(max_clip_seconds: float) -> tuple[dict, dict[str, dict]]:
        (tmp_path / "params.yaml").write_text(yaml.safe_dump({"tts": {**PARAMS, "max_clip_seconds": max_clip_seconds}}))
        assert tts.main() == 0
        details = {**read_json("reports/metrics/tts.details.json"), **read_json("reports/metrics/tts.timings.json")}
        return details, {s: read_manifest(f"data/tts/{s}.jsonl") for s in SPLITS}

    details, manifests = stage(4.0)
    err = capsys.readouterr().err
    assert details["n_skipped"] == 2 and details["max_clip_seconds"] == 4.0
    voiced, giant = details["skipped"]
    assert (voiced["split"], voiced["id"], voiced["field"], voiced["predicted"]) == ("eval", "eval-2", "assistant", False)
    assert voiced["seconds"] > 4 and voiced["reason"].endswith("more than tts.max_clip_seconds = 4")
    assert (giant["split"], giant["id"], giant["predicted"]) == ("heldout", "held-1", True) and giant["seconds"] >= 15
    for split, row_id, entry in (("eval", "eval-2", voiced), ("heldout", "held-1", giant)):
        line = manifests[split][row_id]
        assert line["skipped"] == entry["reason"] and line["user_key"] is None and line["assistant_key"] is None
        assert f"tts: {split} row {row_id} skipped: {entry['reason']}" in err
    assert manifests["eval"]["eval-1"]["skipped"] is None and manifests["eval"]["eval-1"]["user_key"]
    cache = TTSCache("data/tts/cache")
    texts = {clip.request.text for clip in cache.get_many(list(cache.index)).values()}
    assert GIANT_REPLY not in texts and "play some jazz" not in texts  # held-1: nothing synthesised at all
    assert LONG_REPLY in texts  # voiced, then refused: its true audio, under its own key
    assert details["syntheses"] == 7 and details["requests"] == 5  # the manifests point to 5 of them
    first = {s: Path(f"data/tts/{s}.jsonl").read_bytes() for s in SPLITS}

    lifted, manifests = stage(1000.0)  # the bound removed: every row is voiced
    assert lifted["n_skipped"] == 0 and lifted["skipped"] == []
    assert manifests["heldout"]["held-1"]["assistant_key"] and manifests["eval"]["eval-2"]["skipped"] is None
    assert round(TTSCache("data/tts/cache").seconds(manifests["eval"]["eval-2"]["assistant_key"]), 3) == voiced["seconds"]
    assert lifted["syntheses"] == 2 and lifted["cache_hits"] == 7  # held-1's user and reply; eval-2's from the cache

    again, _ = stage(4.0)
    assert again["skipped"] == details["skipped"] and again["syntheses"] == 0
    assert {s: Path(f"data/tts/{s}.jsonl").read_bytes() for s in SPLITS} == first  # byte for byte


def test_min_clip_seconds_is_a_lower_bound_on_the_voiced_audio(engine):
    from tasks.tts import min_clip_seconds

    for text in ("Hi!", "It's 14 degrees with light rain.", LONG_REPLY, "1234567890 1234567890"):
        audio = engine.synthesize(text, "am_adam", 1.0)
        assert min_clip_seconds(text, 1.0) < audio.size / engine.sample_rate, text
    assert min_clip_seconds(LONG_REPLY, 2.0) == min_clip_seconds(LONG_REPLY, 1.0) / 2
