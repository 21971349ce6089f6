"""Content-addressed TTS audio cache in append-only Parquet shards.

A clip's key is the sha256 of everything that determines it: engine, model
hash, voice (name and what it resolves to), speed and text. Clips live in
``<cache_dir>/shard-<n>.parquet`` files; a shard is written once, atomically
(temp file + rename), and never rewritten, so an interrupted run loses at most
the shard being written, and DVC (``persist: true``) stores each shard once.

Columns: key, engine, model_hash, voice, voice_hash, speed, text, sample_rate,
n_samples, pcm (16-bit little-endian PCM bytes).

Readers: ``TTSCache(dir).get_many(keys)`` or ``load_audio(dir, key)``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.audio import to_float32, to_int16
from pipeline.io import atomic_path

SHARD_PATTERN = re.compile(r"^shard-(\d+)\.parquet$")
ROW_GROUP_SIZE = 16  # a single clip is read by row group, not by whole shard
DEFAULT_SHARD_SIZE = 64  # clips per shard while filling: an interruption loses at most this many

SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("engine", pa.string()),
        ("model_hash", pa.string()),
        ("voice", pa.string()),
        ("voice_hash", pa.string()),
        ("speed", pa.float64()),
        ("text", pa.string()),
        ("sample_rate", pa.int32()),
        ("n_samples", pa.int64()),
        ("pcm", pa.binary()),
    ]
)


class CacheError(RuntimeError):
    """A shard is unreadable or a key is not in the cache."""


@dataclass(frozen=True)
class TTSRequest:
    """One clip to synthesise; ``key`` is its content address."""

    engine: str
    model_hash: str
    voice: str
    voice_hash: str
    speed: float
    text: str

    @property
    def key(self) -> str:
        fields = [self.engine, self.model_hash, self.voice, self.voice_hash, repr(float(self.speed)), self.text]
        return hashlib.sha256(json.dumps(fields, ensure_ascii=False).encode("utf-8")).hexdigest()


def request_for(engine, text: str, voice: str, speed: float) -> TTSRequest:
    """The request for ``engine`` (a ``pipeline.tts.engines.TTSEngine``)."""
    return TTSRequest(engine.engine_id, engine.model_hash, voice, engine.voice_hash(voice), float(speed), text)


@dataclass(frozen=True)
class Clip:
    request: TTSRequest
    pcm: np.ndarray  # int16 mono
    sample_rate: int

    @property
    def key(self) -> str:
        return self.request.key

    @property
    def seconds(self) -> float:
        return self.pcm.size / self.sample_rate

    def audio(self) -> np.ndarray:
        return to_float32(self.pcm)


@dataclass(frozen=True)
class _Location:
    shard: Path
    row_group: int
    row: int  # within the row group
    n_samples: int
    sample_rate: int


@dataclass
class FillReport:
    requested: int = 0  # distinct requests
    hits: int = 0  # already in the cache
    synthesized: int = 0  # made now (cache misses)
    seconds_synthesized: float = 0.0
    shards_written: list[str] = field(default_factory=list)

    @property
    def hit_rate(self) -> float | None:
        return self.hits / self.requested if self.requested else None


class TTSCache:
    """Index over every shard's keys; reads clips by row group; appends new shards."""

    def __init__(self, cache_dir: str | os.PathLike):
        self.dir = Path(cache_dir)
        self.hits = 0
        self.misses = 0
        self._index: dict[str, _Location] | None = None

    # -- index -------------------------------------------------------------
    def shards(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.dir.iterdir() if (m := SHARD_PATTERN.match(p.name))]
        return [p for _, p in sorted(found)]

    def _index_shard(self, shard: Path, index: dict[str, _Location]) -> None:
        try:
            handle = pq.ParquetFile(shard)
            for group in range(handle.num_row_groups):
                table = handle.read_row_group(group, columns=["key", "n_samples", "sample_rate"])
                keys, lengths, rates = (table.column(c).to_pylist() for c in ("key", "n_samples", "sample_rate"))
                for row, (key, n, rate) in enumerate(zip(keys, lengths, rates)):
                    index.setdefault(key, _Location(shard, group, row, n, rate))
        except (pa.ArrowException, OSError) as err:
            raise CacheError(f"{shard}: unreadable TTS cache shard ({err})") from None

    @property
    def index(self) -> dict[str, _Location]:
        if self._index is None:
            index: dict[str, _Location] = {}
            for shard in self.shards():
                self._index_shard(shard, index)
            self._index = index
        return self._index

    def __contains__(self, key: str) -> bool:
        return key in self.index

    def __len__(self) -> int:
        return len(self.index)

    def seconds(self, key: str) -> float:
        location = self.index[key]
        return location.n_samples / location.sample_rate

    # -- read ----------------------------------------------------------------
    def get_many(self, keys: Iterable[str]) -> dict[str, Clip]:
        """Clips for the keys present (hits); absent keys count as misses."""
        wanted: dict[tuple[Path, int], list[str]] = {}
        for key in dict.fromkeys(keys):
            location = self.index.get(key)
            if location is None:
                self.misses += 1
                continue
            self.hits += 1
            wanted.setdefault((location.shard, location.row_group), []).append(key)
        clips: dict[str, Clip] = {}
        for (shard, group), group_keys in wanted.items():
            rows = pq.ParquetFile(shard).read_row_group(group).to_pylist()
            for key in group_keys:
                clips[key] = _clip_from_row(rows[self.index[key].row])
        return clips

    def get(self, key: str) -> Clip:
        clip = self.get_many([key]).get(key)
        if clip is None:
            raise CacheError(f"{self.dir}: no clip with key {key} (run the tts stage)")
        return clip

    # -- write ---------------------------------------------------------------
    def put_many(self, clips: Sequence[Clip]) -> Path | None:
        """Append the clips not cached yet as one new shard (atomic); returns it, or None."""
        fresh = list({c.key: c for c in clips if c.key not in self.index}.values())
        if not fresh:
            return None
        shards = self.shards()
        number = int(SHARD_PATTERN.match(shards[-1].name).group(1)) + 1 if shards else 0
        target = self.dir / f"shard-{number:05d}.parquet"
        table = pa.Table.from_pylist([_row_from_clip(c) for c in fresh], schema=SCHEMA)
        with atomic_path(target) as tmp:
            pq.write_table(table, tmp, row_group_size=ROW_GROUP_SIZE, compression="zstd")
        self._index_shard(target, self.index)
        return target

    def fill(
        self,
        requests: Iterable[TTSRequest],
        synthesize: Callable[[TTSRequest], np.ndarray],
        sample_rate: int,
        shard_size: int = DEFAULT_SHARD_SIZE,
        progress: Callable[[Iterable[TTSRequest]], Iterator[TTSRequest]] | None = None,
    ) -> FillReport:
        """Synthesise every request not cached yet, writing a shard each ``shard_size`` clips.

        ``synthesize`` returns float or int16 mono samples at ``sample_rate``.
        ``progress`` wraps the iteration over the misses (e.g. tqdm).
        """
        unique = list({r.key: r for r in requests}.values())
        misses = [r for r in unique if r.key not in self.index]
        report = FillReport(requested=len(unique), hits=len(unique) - len(misses))
        self.hits += report.hits
        self.misses += len(misses)
        pending: list[Clip] = []

        def flush() -> None:
            shard = self.put_many(pending)
            if shard is not None:
                report.shards_written.append(shard.name)
            pending.clear()

        for request in progress(misses) if progress else misses:
            clip = Clip(request, to_int16(synthesize(request)), sample_rate)
            pending.append(clip)
            report.synthesized += 1
            report.seconds_synthesized += clip.seconds
            if len(pending) >= shard_size:
                flush()
        flush()
        return report


def _row_from_clip(clip: Clip) -> dict:
    r = clip.request
    pcm = np.ascontiguousarray(clip.pcm, dtype="<i2")
    return {
        "key": clip.key, "engine": r.engine, "model_hash": r.model_hash, "voice": r.voice,
        "voice_hash": r.voice_hash, "speed": r.speed, "text": r.text, "sample_rate": clip.sample_rate,
        "n_samples": int(pcm.size), "pcm": pcm.tobytes(),
    }  # fmt: skip


def _clip_from_row(row: dict) -> Clip:
    request = TTSRequest(row["engine"], row["model_hash"], row["voice"], row["voice_hash"], row["speed"], row["text"])
    if request.key != row["key"]:
        raise CacheError(f"cache row {row['key']}: stored key does not match its fields")
    pcm = np.frombuffer(row["pcm"], dtype="<i2").astype(np.int16)
    return Clip(request, pcm, int(row["sample_rate"]))


_readers: dict[Path, tuple[tuple[str, ...], TTSCache]] = {}


def open_cache(cache_dir: str | os.PathLike) -> TTSCache:
    """A shared reader for ``cache_dir``, re-indexed when its shard list changes."""
    path = Path(cache_dir).resolve()
    probe = TTSCache(path)
    names = tuple(p.name for p in probe.shards())
    cached = _readers.get(path)
    if cached is None or cached[0] != names:
        _readers[path] = (names, probe)
    return _readers[path][1]


def read_manifest(path: str | os.PathLike) -> dict[str, dict]:
    """A tts manifest (``data/tts/<split>.jsonl``) as {row id: {user_key, assistant_key, ...}}.

    The manifests are this stage's own output, so a bad line means a damaged
    file: it fails loudly, naming the file and line, instead of being skipped.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: TTS manifest not found (run the tts stage)") from None
    entries: dict[str, dict] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            entries[str(entry["id"])] = entry
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path}:{number}: bad manifest line ({type(err).__name__}: {err})") from None
    return entries


def load_audio(cache_dir: str | os.PathLike, key: str) -> tuple[np.ndarray, int]:
    """(float32 mono samples, sample rate) of the clip ``key`` -- the read API for later stages."""
    clip = open_cache(cache_dir).get(key)
    return clip.audio(), clip.sample_rate


def remove_stale_temp_files(cache_dir: str | os.PathLike, older_than_s: float = 3600.0) -> list[Path]:
    """Temp shards left by a killed writer (``.shard-*``); they are never read."""
    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        return []
    now = time.time()
    stale = [p for p in cache_dir.glob(".shard-*") if now - p.stat().st_mtime > older_than_s]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
