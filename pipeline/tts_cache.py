"""Content-addressed TTS audio cache in append-only, checksummed Parquet shards.

A clip's key is the sha256 of everything that determines it: engine, model
hash, voice (name and what it resolves to), speed and text. Clips live in
``<cache_dir>/shard-<n>-<checksum>.parquet`` files, ``<checksum>`` being the first
16 hex digits of the sha256 of the file's bytes, verified before a shard is used.
A shard is written once and never rewritten, so DVC (``persist: true``) stores each
shard once. It is written to a temp file in the staging folder next to the cache
(``.<cache name>.staging``, which DVC does not track) and renamed in, so a killed
writer leaves nothing inside the cache folder.

``TTSCache.repair()`` (the tts stage runs it first) removes temp files an older
version left inside the cache, renames shards without a checksum (written before
checksums existed) to checksummed names once it has read them back, and moves a
damaged shard to ``.<cache name>.damaged`` so its clips are synthesised again.
Readers (preprocess, eval) fail on a damaged shard, naming it.

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
from pipeline.io import CHECKSUM_CHARS, atomic_path, real_path, sha256_file, short_checksum
from pipeline.jsonl import JsonlError, read_jsonl
from pipeline.params import StageError

SHARD_PATTERN = re.compile(r"^shard-(\d+)(?:-([0-9a-f]{16}))?\.parquet$")  # no checksum: a shard from before checksums
STALE_STAGED_S = 3600.0  # a staged temp file this old belongs to a writer that died
_READ_ERRORS = (pa.ArrowException, OSError, ValueError)  # what reading a damaged shard raises (seen: all three)
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


class CacheError(StageError, RuntimeError):
    """A shard is damaged or unreadable, or a key is not in the cache; the message names the shard."""


def shard_name(number: int, checksum: str) -> str:
    return f"shard-{number:05d}-{checksum}.parquet"


def checksum_of(data: bytes) -> str:
    return short_checksum(data)


def staging_dir(cache_dir: str | os.PathLike) -> Path:
    """Where shards are written before they are renamed in: next to the cache, outside what DVC tracks.

    Beside the cache folder's resolved path: a ``data/tts/cache`` that is a symlink into another
    file system gets its staging folder there, so the rename never crosses file systems (EXDEV)."""
    cache_dir = real_path(cache_dir)
    return cache_dir.parent / f".{cache_dir.name}.staging"


def damaged_dir(cache_dir: str | os.PathLike) -> Path:
    """Where ``repair`` moves damaged shards (kept for inspection, never read); beside the resolved cache folder."""
    cache_dir = real_path(cache_dir)
    return cache_dir.parent / f".{cache_dir.name}.damaged"


REPAIR_HINT = "rerun the tts stage to re-synthesise its clips (dvc repro --force --single-item tts)"


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


@dataclass
class RepairReport:
    """What ``TTSCache.repair`` did, for the stage's metrics and log."""

    temp_files_removed: list[str] = field(default_factory=list)
    migrated: list[str] = field(default_factory=list)  # "old name -> new name"
    damaged: list[dict] = field(default_factory=list)  # {"shard", "reason", "moved_to"}


def _read_back(shard: Path) -> str | None:
    """Why a shard without a checksum cannot be read back whole (every clip, every key), or None."""
    try:
        handle = pq.ParquetFile(shard)
        for group in range(handle.num_row_groups):
            for row in handle.read_row_group(group).to_pylist():
                _clip_from_row(row, shard)
    except _READ_ERRORS as err:
        return f"unreadable TTS cache shard ({err})"
    except CacheError:
        return "a row's stored key does not match its fields"
    return None


def _stale(path: Path, older_than_s: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime > older_than_s
    except FileNotFoundError:
        return False


class TTSCache:
    """Index over every shard's keys; reads clips by row group; appends new shards."""

    def __init__(self, cache_dir: str | os.PathLike):
        self.dir = Path(cache_dir)
        self.hits = 0
        self.misses = 0
        self._index: dict[str, _Location] | None = None
        self._verified: set[str] = set()  # shard names whose checksum matched in this instance

    # -- index -------------------------------------------------------------
    def shards(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        found = [(int(m.group(1)), p.name, p) for p in self.dir.iterdir() if (m := SHARD_PATTERN.match(p.name))]
        return [p for _, _, p in sorted(found)]

    def damage(self, shard: Path) -> str | None:
        """Why ``shard`` cannot be trusted, or None: its bytes do not match the checksum in its name."""
        expected = SHARD_PATTERN.match(shard.name).group(2)
        if expected is None or shard.name in self._verified:
            return None
        actual = sha256_file(shard)[:CHECKSUM_CHARS]
        if actual != expected:
            return f"damaged TTS cache shard (its bytes hash to {actual}, its name says {expected})"
        self._verified.add(shard.name)
        return None

    def _index_shard(self, shard: Path, index: dict[str, _Location]) -> None:
        if why := self.damage(shard):
            raise CacheError(f"{shard}: {why}; {REPAIR_HINT}")
        try:
            handle = pq.ParquetFile(shard)
            for group in range(handle.num_row_groups):
                table = handle.read_row_group(group, columns=["key", "n_samples", "sample_rate"])
                keys, lengths, rates = (table.column(c).to_pylist() for c in ("key", "n_samples", "sample_rate"))
                for row, (key, n, rate) in enumerate(zip(keys, lengths, rates)):
                    index.setdefault(key, _Location(shard, group, row, n, rate))
        except _READ_ERRORS as err:
            raise CacheError(f"{shard}: unreadable TTS cache shard ({err}); {REPAIR_HINT}") from None

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

    # -- repair (the tts stage, before filling) ---------------------------------
    def repair(self, older_than_s: float = STALE_STAGED_S) -> RepairReport:
        """Leave only verified, checksummed shards in the cache folder (see the module docstring).

        Readers never repair: they fail naming the shard.
        """
        report = RepairReport()
        if not self.dir.is_dir():
            return report
        for leftover in sorted(self.dir.glob(".shard-*")):  # temp files of writers from before the staging folder
            leftover.unlink(missing_ok=True)
            report.temp_files_removed.append(str(leftover))
        staging = staging_dir(self.dir)
        for leftover in sorted(staging.glob(".shard-*")) if staging.is_dir() else []:
            if _stale(leftover, older_than_s):
                leftover.unlink(missing_ok=True)
                report.temp_files_removed.append(str(leftover))
        for shard in self.shards():
            number, checksum = SHARD_PATTERN.match(shard.name).groups()
            why = self.damage(shard) if checksum else _read_back(shard)
            if why:
                moved_to = damaged_dir(self.dir) / shard.name
                moved_to.parent.mkdir(parents=True, exist_ok=True)
                os.replace(shard, moved_to)
                report.damaged.append({"shard": str(shard), "reason": why, "moved_to": str(moved_to)})
            elif checksum is None:
                migrated = shard.with_name(shard_name(int(number), sha256_file(shard)[:CHECKSUM_CHARS]))
                os.replace(shard, migrated)
                self._verified.add(migrated.name)
                report.migrated.append(f"{shard.name} -> {migrated.name}")
        self._index = None
        return report

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
            try:
                rows = pq.ParquetFile(shard).read_row_group(group).to_pylist()
            except _READ_ERRORS as err:
                raise CacheError(f"{shard}: unreadable TTS cache shard ({err}); {REPAIR_HINT}") from None
            for key in group_keys:
                clips[key] = _clip_from_row(rows[self.index[key].row], shard)
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
        table = pa.Table.from_pylist([_row_from_clip(c) for c in fresh], schema=SCHEMA)
        buffer = pa.BufferOutputStream()
        pq.write_table(table, buffer, row_group_size=ROW_GROUP_SIZE, compression="zstd")
        data = buffer.getvalue().to_pybytes()
        target = self.dir / shard_name(number, checksum_of(data))
        with atomic_path(target, tmp_dir=staging_dir(self.dir)) as tmp:
            tmp.write_bytes(data)
        self._verified.add(target.name)
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


def _clip_from_row(row: dict, shard: Path) -> Clip:
    request = TTSRequest(row["engine"], row["model_hash"], row["voice"], row["voice_hash"], row["speed"], row["text"])
    if request.key != row["key"]:
        raise CacheError(f"{shard}: cache row {row['key']}: stored key does not match its fields")
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
    read = read_jsonl(path, on_bad="fail", missing="TTS manifest not found (run the tts stage)")
    entries: dict[str, dict] = {}
    for line in read.lines:
        row_id = line.value.get("id")
        if not isinstance(row_id, str) or not row_id:
            raise JsonlError(f"{path}:{line.number}: bad manifest line (no string 'id')")
        if row_id in entries:
            raise JsonlError(f"{path}:{line.number}: bad manifest line (duplicate id {row_id!r})")
        entries[row_id] = line.value
    return entries


def load_audio(cache_dir: str | os.PathLike, key: str) -> tuple[np.ndarray, int]:
    """(float32 mono samples, sample rate) of the clip ``key`` -- the read API for later stages."""
    clip = open_cache(cache_dir).get(key)
    return clip.audio(), clip.sample_rate
