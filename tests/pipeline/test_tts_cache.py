"""The content-addressed TTS cache: keys, hits and misses, append-only checksummed shards, repair."""
from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pipeline.tts_cache as tts_cache
from pipeline.tts_cache import CacheError, TTSCache, TTSRequest, damaged_dir, load_audio, staging_dir

REPO = Path(__file__).resolve().parents[2]

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


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    """The cache folder inside tmp_path, so its staging and damaged folders (siblings) are too."""
    return tmp_path / "cache"


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def checksum_in_name_matches(shard: Path) -> bool:
    return re.fullmatch(r"shard-\d{5}-([0-9a-f]{16})\.parquet", shard.name)[1] == \
        hashlib.sha256(shard.read_bytes()).hexdigest()[:16]


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


def test_rerun_hits_everything_and_synthesises_nothing(cache_dir):
    first = Counter()
    report = TTSCache(cache_dir).fill(requests(5) + requests(5), first, RATE, shard_size=2)
    assert (report.requested, report.synthesized, report.hits, first.calls) == (5, 5, 0, 5)
    assert [name[:12] for name in report.shards_written] == ["shard-00000-", "shard-00001-", "shard-00002-"]
    assert report.hit_rate == 0.0

    again = Counter()
    cache = TTSCache(cache_dir)
    report = cache.fill(requests(5), again, RATE)
    assert (report.synthesized, report.hits, again.calls, report.hit_rate) == (0, 5, 0, 1.0)
    assert report.shards_written == [] and len(cache.shards()) == 3

    grown = Counter()
    report = TTSCache(cache_dir).fill(requests(7), grown, RATE)
    assert (report.synthesized, report.hits, grown.calls) == (2, 5, 2)
    assert TTSCache(cache_dir).fill([], grown, RATE).hit_rate is None  # nothing asked: unavailable, not 0


def test_clips_round_trip_as_int16(cache_dir):
    asked = requests(3)
    TTSCache(cache_dir).fill(asked, tone, RATE)
    cache = TTSCache(cache_dir)
    clips = cache.get_many([r.key for r in asked] + ["0" * 64])
    assert (cache.hits, cache.misses) == (3, 1)
    for request in asked:
        clip = clips[request.key]
        assert clip.request == request and clip.sample_rate == RATE
        assert np.abs(clip.audio() - tone(request)).max() < 1e-4
    audio, rate = load_audio(cache_dir, asked[1].key)
    assert rate == RATE and audio.dtype == np.float32 and audio.size == tone(asked[1]).size
    assert cache.seconds(asked[0].key) == pytest.approx(tone(asked[0]).size / RATE)
    with pytest.raises(CacheError, match="no clip with key"):
        load_audio(cache_dir, "f" * 64)


def test_shard_columns_and_the_checksum_in_its_name(cache_dir):
    TTSCache(cache_dir).fill(requests(2), tone, RATE)
    (shard,) = TTSCache(cache_dir).shards()
    table = pq.read_table(shard)
    assert table.column_names == [
        "key", "engine", "model_hash", "voice", "voice_hash", "speed", "text", "sample_rate", "n_samples", "pcm",
    ]  # fmt: skip
    assert table.column("n_samples").to_pylist() == [len(row) // 2 for row in table.column("pcm").to_pylist()]
    assert checksum_in_name_matches(shard)


def test_interrupted_run_keeps_finished_shards(cache_dir):
    synth = Counter(fail_after=5)
    with pytest.raises(KeyboardInterrupt):
        TTSCache(cache_dir).fill(requests(8), synth, RATE, shard_size=2)
    cache = TTSCache(cache_dir)
    assert len(cache) == 4 and len(cache.shards()) == 2  # the 5th clip was never flushed
    resumed = Counter()
    report = TTSCache(cache_dir).fill(requests(8), resumed, RATE, shard_size=2)
    assert (report.hits, report.synthesized, resumed.calls) == (4, 4, 4)


def test_a_shard_write_that_raises_leaves_no_shard_and_no_temp_file(cache_dir, monkeypatch):
    TTSCache(cache_dir).fill(requests(2), tone, RATE)
    before = names(cache_dir)

    def dies_halfway(self, data):
        with open(self, "wb") as handle:
            handle.write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", dies_halfway)
    with pytest.raises(OSError, match="disk full"):
        TTSCache(cache_dir).fill(requests(4), tone, RATE)
    monkeypatch.undo()
    assert names(cache_dir) == before and names(staging_dir(cache_dir)) == []
    cache = TTSCache(cache_dir)
    assert len(cache) == 2 and len(cache.get_many(r.key for r in requests(2))) == 2


KILLED_WRITER = """
import sys, time
from dataclasses import replace
from pathlib import Path
import numpy as np
from pipeline.tts_cache import TTSCache, TTSRequest

cache_dir, ready = Path(sys.argv[1]), Path(sys.argv[2])
real_write_bytes, writes = Path.write_bytes, []

def write_half_then_hang(self, data):  # the second shard: half its bytes reach the disk, then SIGKILL
    writes.append(self)
    if len(writes) == 1:
        return real_write_bytes(self, data)
    with open(self, "wb") as handle:
        handle.write(data[: len(data) // 2])
    ready.write_text(str(self))
    time.sleep(120)

Path.write_bytes = write_half_then_hang
base = TTSRequest("espeak-ng", "v1", "am_adam", "en-us", 1.0, "")
asked = [replace(base, text=f"Sentence number {i}.") for i in range(4)]
TTSCache(cache_dir).fill(asked, lambda r: np.full(2400, 0.25, np.float32), 24000, shard_size=2)
"""


def test_kill_9_mid_write_leaves_only_whole_shards_in_the_cache_folder(cache_dir, tmp_path):
    ready = tmp_path / "writing"
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(cache_dir), str(ready)],
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert child.poll() is None and time.monotonic() < deadline, "the writer never reached its second shard"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    partial = Path(ready.read_text())
    assert partial.parent == staging_dir(cache_dir) and 0 < partial.stat().st_size  # the half-written file
    (shard,) = TTSCache(cache_dir).shards()
    assert names(cache_dir) == [shard.name] and checksum_in_name_matches(shard)  # nothing partial where DVC looks

    report = TTSCache(cache_dir).repair(older_than_s=0)
    assert report.temp_files_removed == [str(partial)] and names(staging_dir(cache_dir)) == []
    resumed = Counter()
    fill = TTSCache(cache_dir).fill(requests(4), resumed, RATE, shard_size=2)
    assert (fill.hits, fill.synthesized, resumed.calls) == (2, 2, 2)  # the finished shard is kept; the rest is made
    assert len(TTSCache(cache_dir)) == 4


def flip_a_byte_inside(shard: Path) -> None:
    """Damage a data page, leaving the Parquet footer intact (the file still opens)."""
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert pq.ParquetFile(shard).num_row_groups >= 1


def test_a_flipped_byte_fails_readers_naming_the_shard(cache_dir):
    asked = requests(3)
    TTSCache(cache_dir).fill(asked, tone, RATE)
    (shard,) = TTSCache(cache_dir).shards()
    flip_a_byte_inside(shard)
    with pytest.raises(CacheError, match=rf"{re.escape(str(shard))}: damaged TTS cache shard .* rerun the tts stage"):
        TTSCache(cache_dir).get_many([asked[0].key])
    with pytest.raises(CacheError, match=re.escape(str(shard))):
        load_audio(cache_dir, asked[0].key)


def test_repair_moves_a_damaged_shard_aside_and_its_clips_are_synthesised_again(cache_dir):
    asked = requests(4)
    TTSCache(cache_dir).fill(asked, tone, RATE, shard_size=2)
    damaged, intact = TTSCache(cache_dir).shards()
    flip_a_byte_inside(damaged)
    cache = TTSCache(cache_dir)
    report = cache.repair()
    assert [d["shard"] for d in report.damaged] == [str(damaged)] and "damaged" in report.damaged[0]["reason"]
    assert names(damaged_dir(cache_dir)) == [damaged.name]  # kept for inspection, outside the cache folder
    again = Counter()
    fill = cache.fill(asked, again, RATE)
    assert (fill.hits, fill.synthesized, again.calls) == (2, 2, 2)
    clips = TTSCache(cache_dir).get_many(r.key for r in asked)
    assert all(np.abs(clips[r.key].audio() - tone(r)).max() < 1e-4 for r in asked)


def write_legacy_shard(cache_dir: Path, number: int, asked: list[TTSRequest]) -> Path:
    """A shard as the cache wrote it before checksums: ``shard-<n>.parquet``."""
    rows = [tts_cache._row_from_clip(tts_cache.Clip(r, (tone(r) * 32767).astype(np.int16), RATE)) for r in asked]
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"shard-{number:05d}.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=tts_cache.SCHEMA), path, row_group_size=16, compression="zstd")
    return path


def test_a_cache_from_before_checksums_stays_readable_and_repair_migrates_it(cache_dir):
    asked = requests(3)
    legacy = write_legacy_shard(cache_dir, 0, asked)
    old_temp = cache_dir / ".shard-00001.parquet.abc123.parquet"  # a killed writer's temp file, where DVC looks
    old_temp.write_bytes(b"half")
    assert len(TTSCache(cache_dir)) == 3 and load_audio(cache_dir, asked[2].key)[0].size == tone(asked[2]).size

    report = TTSCache(cache_dir).repair()  # removed at start, whatever its age
    assert report.temp_files_removed == [str(old_temp)] and report.damaged == []
    (migrated,) = TTSCache(cache_dir).shards()
    assert report.migrated == [f"{legacy.name} -> {migrated.name}"] and checksum_in_name_matches(migrated)
    assert names(cache_dir) == [migrated.name]
    assert TTSCache(cache_dir).fill(asked, Counter(), RATE).hits == 3  # nothing synthesised again


def test_a_legacy_shard_that_cannot_be_read_back_is_moved_aside(cache_dir):
    write_legacy_shard(cache_dir, 0, requests(2))
    (cache_dir / "shard-00001.parquet").write_bytes(b"not parquet")
    with pytest.raises(CacheError, match="shard-00001.parquet: unreadable TTS cache shard"):
        len(TTSCache(cache_dir))
    report = TTSCache(cache_dir).repair()
    assert [Path(d["shard"]).name for d in report.damaged] == ["shard-00001.parquet"]
    assert len(TTSCache(cache_dir)) == 2


def test_a_staged_temp_file_is_never_read_and_is_removed_once_stale(cache_dir):
    TTSCache(cache_dir).fill(requests(1), tone, RATE)
    staged = staging_dir(cache_dir) / ".shard-00001-0123456789abcdef.parquet.abc123.parquet"
    staged.write_bytes(b"half")
    assert len(TTSCache(cache_dir)) == 1
    assert TTSCache(cache_dir).repair().temp_files_removed == []  # fresh: it may be a live writer's
    assert TTSCache(cache_dir).repair(older_than_s=0).temp_files_removed == [str(staged)]
