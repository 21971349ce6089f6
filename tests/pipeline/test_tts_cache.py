"""The content-addressed TTS cache: keys, hits and misses, append-only atomic shards."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest

import pipeline.tts_cache as tts_cache
from pipeline.tts_cache import CacheError, TTSCache, TTSRequest, load_audio

RATE = 24_000
BASE = TTSRequest(engine="espeak-ng", model_hash="v1", voice="am_adam", voice_hash="en-us", speed=1.0, text="Hello.")


def tone(request: TTSRequest) -> np.ndarray:
    """A stand-in synthesiser: a text-dependent tone, 0.1 s per character."""
    t = np.arange(int(0.1 * RATE * len(request.text))) / RATE
    return (0.5 * np.sin(2 * np.pi * (200 + len(request.text) * 10) * t)).astype(np.float32)


class Counter:
    def __init__(self, fail_after: int | None = None):
        self.calls = 0
        self.fail_after = fail_after

    def __call__(self, request: TTSRequest) -> np.ndarray:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("interrupted mid-run")
        self.calls += 1
        return tone(request)


def requests(n: int) -> list[TTSRequest]:
    return [replace(BASE, text=f"Sentence number {i}.") for i in range(n)]


@pytest.mark.parametrize(
    "change",
    [
        {"engine": "kokoro"},
        {"model_hash": "v2"},
        {"voice": "af_heart"},
        {"voice_hash": "en-us+f3"},
        {"speed": 1.25},
        {"text": "Hello!"},
        {"text": "Hello. "},
    ],
)
def test_key_changes_with_every_field(change):
    assert replace(BASE, **change).key != BASE.key
    assert replace(BASE).key == BASE.key and len(BASE.key) == 64


def test_speed_int_and_float_are_the_same_request():
    assert replace(BASE, speed=1).key == BASE.key


def test_rerun_hits_everything_and_synthesises_nothing(tmp_path):
    first = Counter()
    report = TTSCache(tmp_path).fill(requests(5) + requests(5), first, RATE, shard_size=2)
    assert (report.requested, report.synthesized, report.hits, first.calls) == (5, 5, 0, 5)
    assert report.shards_written == ["shard-00000.parquet", "shard-00001.parquet", "shard-00002.parquet"]
    assert report.hit_rate == 0.0

    again = Counter()
    cache = TTSCache(tmp_path)
    report = cache.fill(requests(5), again, RATE)
    assert (report.synthesized, report.hits, again.calls, report.hit_rate) == (0, 5, 0, 1.0)
    assert report.shards_written == [] and len(cache.shards()) == 3

    grown = Counter()
    report = TTSCache(tmp_path).fill(requests(7), grown, RATE)
    assert (report.synthesized, report.hits, grown.calls) == (2, 5, 2)
    assert TTSCache(tmp_path).fill([], grown, RATE).hit_rate is None  # nothing asked: unavailable, not 0


def test_clips_round_trip_as_int16(tmp_path):
    asked = requests(3)
    TTSCache(tmp_path).fill(asked, tone, RATE)
    cache = TTSCache(tmp_path)
    clips = cache.get_many([r.key for r in asked] + ["0" * 64])
    assert (cache.hits, cache.misses) == (3, 1)
    for request in asked:
        clip = clips[request.key]
        assert clip.request == request and clip.sample_rate == RATE
        assert np.abs(clip.audio() - tone(request)).max() < 1e-4
    audio, rate = load_audio(tmp_path, asked[1].key)
    assert rate == RATE and audio.dtype == np.float32 and audio.size == tone(asked[1]).size
    assert cache.seconds(asked[0].key) == pytest.approx(tone(asked[0]).size / RATE)
    with pytest.raises(CacheError, match="no clip with key"):
        load_audio(tmp_path, "f" * 64)


def test_shard_columns(tmp_path):
    TTSCache(tmp_path).fill(requests(2), tone, RATE)
    table = pq.read_table(tmp_path / "shard-00000.parquet")
    assert table.column_names == [
        "key", "engine", "model_hash", "voice", "voice_hash", "speed", "text", "sample_rate", "n_samples", "pcm",
    ]  # fmt: skip
    assert table.column("n_samples").to_pylist() == [len(row) // 2 for row in table.column("pcm").to_pylist()]


def test_interrupted_run_keeps_finished_shards(tmp_path):
    synth = Counter(fail_after=5)
    with pytest.raises(KeyboardInterrupt):
        TTSCache(tmp_path).fill(requests(8), synth, RATE, shard_size=2)
    cache = TTSCache(tmp_path)
    assert len(cache) == 4 and len(cache.shards()) == 2  # the 5th clip was never flushed
    resumed = Counter()
    report = TTSCache(tmp_path).fill(requests(8), resumed, RATE, shard_size=2)
    assert (report.hits, report.synthesized, resumed.calls) == (4, 4, 4)


def test_a_shard_write_that_dies_leaves_no_shard(tmp_path, monkeypatch):
    TTSCache(tmp_path).fill(requests(2), tone, RATE)
    before = sorted(p.name for p in tmp_path.iterdir())

    def dies_halfway(table, where, **kwargs):
        with open(where, "wb") as handle:
            handle.write(b"PAR1 half a shard")
        raise OSError("disk full")

    monkeypatch.setattr(tts_cache.pq, "write_table", dies_halfway)
    with pytest.raises(OSError, match="disk full"):
        TTSCache(tmp_path).fill(requests(4), tone, RATE)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no partial shard, no temp file
    monkeypatch.undo()
    cache = TTSCache(tmp_path)
    assert len(cache) == 2 and len(cache.get_many(r.key for r in requests(2))) == 2


def test_a_corrupt_shard_is_named(tmp_path):
    TTSCache(tmp_path).fill(requests(1), tone, RATE)
    (tmp_path / "shard-00001.parquet").write_bytes(b"not parquet")
    with pytest.raises(CacheError, match="shard-00001.parquet: unreadable"):
        len(TTSCache(tmp_path))


def test_temp_files_of_a_killed_writer_are_ignored_and_cleaned(tmp_path):
    TTSCache(tmp_path).fill(requests(1), tone, RATE)
    leftover = tmp_path / ".shard-00001.parquet.abc123.parquet"
    leftover.write_bytes(b"half")
    assert len(TTSCache(tmp_path)) == 1
    assert tts_cache.remove_stale_temp_files(tmp_path, older_than_s=0) == [leftover]
    assert not leftover.exists()
