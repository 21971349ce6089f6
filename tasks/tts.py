"""Stage `tts`: speech for every dataset row, through the content-addressed cache.

For each row of ``data/dataset/{train,eval,heldout,novel_facts}.jsonl`` it
synthesises the user request (a user voice chosen by the row id's hash) and the
assistant reply (the assistant voice), plus both turn-1 texts of
tool_result_speak rows. Audio lives in the Parquet cache (``tts.cache_dir``, a
``persist: true`` DVC output): a rerun, a new split or a blip sweep synthesises
only texts never made before. Outputs:

- ``data/tts/{split}.jsonl``: ``{id, user_key, assistant_key, turn1_user_key,
  turn1_assistant_key}`` per row (turn-1 keys null on other rows); read the
  audio with ``pipeline.tts_cache.load_audio(cache_dir, key)``;
- ``reports/metrics/tts.json``: syntheses made, cache hits, hit rate, seconds
  of audio, wall time.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.io import ParamsError, load_params, require, write_json, write_text
from pipeline.tts.engines import EspeakEngine, KokoroEngine, TTSEngine, TTSError
from pipeline.tts.g2p import G2P_CHOICES, G2PError
from pipeline.tts_cache import DEFAULT_SHARD_SIZE, CacheError, TTSCache, TTSRequest, remove_stale_temp_files, request_for

SPLITS = ("train", "eval", "heldout", "novel_facts")
DATASET_DIR = Path("data/dataset")
MANIFEST_DIR = Path("data/tts")
METRICS_PATH = Path("reports/metrics/tts.json")
ENGINES = ("kokoro", "espeak")
SECTION = "tts"


class DatasetError(ValueError):
    """A dataset line the stage cannot voice; the message names file and line."""


@dataclass(frozen=True)
class TTSParams:
    engine: str  # kokoro | espeak
    kokoro_dir: Path
    assistant_voice: str
    user_voices: tuple[str, ...]
    speed: float
    espeak_voices: dict[str, str]  # pipeline voice name -> espeak-ng voice
    cache_dir: Path
    g2p: str = "offline"  # Kokoro G2P: offline | spacy (pipeline/tts/g2p.py)
    device: str = "cpu"
    shard_size: int = DEFAULT_SHARD_SIZE

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "TTSParams":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(params) - known)
        if unknown:
            raise ParamsError(f"params.yaml: unknown key '{SECTION}.{unknown[0]}' (known: {', '.join(sorted(known))})")
        engine = require(params, "engine", SECTION, str)
        if engine not in ENGINES:
            raise ParamsError(f"params.yaml: '{SECTION}.engine' must be one of {', '.join(ENGINES)}, got {engine!r}")
        user_voices = require(params, "user_voices", SECTION, list)
        if not user_voices or not all(isinstance(v, str) and v for v in user_voices):
            raise ParamsError(f"params.yaml: '{SECTION}.user_voices' must be a non-empty list of voice names")
        speed = require(params, "speed", SECTION, (int, float))
        if speed <= 0:
            raise ParamsError(f"params.yaml: '{SECTION}.speed' must be positive, got {speed}")
        espeak_voices = require(params, "espeak_voices", SECTION, dict)
        g2p = params.get("g2p", cls.g2p)
        if g2p not in G2P_CHOICES:
            raise ParamsError(f"params.yaml: '{SECTION}.g2p' must be one of {', '.join(G2P_CHOICES)}, got {g2p!r}")
        shard_size = params.get("shard_size", cls.shard_size)
        if not isinstance(shard_size, int) or isinstance(shard_size, bool) or shard_size < 1:
            raise ParamsError(f"params.yaml: '{SECTION}.shard_size' must be a positive integer, got {shard_size!r}")
        tts = cls(
            engine=engine,
            kokoro_dir=Path(require(params, "kokoro_dir", SECTION, str)),
            assistant_voice=require(params, "assistant_voice", SECTION, str),
            user_voices=tuple(user_voices),
            speed=float(speed),
            espeak_voices={str(k): str(v) for k, v in espeak_voices.items()},
            cache_dir=Path(require(params, "cache_dir", SECTION, str)),
            g2p=g2p,
            device=str(params.get("device", cls.device)),
            shard_size=shard_size,
        )
        unmapped = [v for v in tts.voices if v not in tts.espeak_voices]
        if engine == "espeak" and unmapped:
            raise ParamsError(f"params.yaml: '{SECTION}.espeak_voices' has no espeak voice for {', '.join(unmapped)}")
        return tts

    @property
    def voices(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.assistant_voice, *self.user_voices)))


def build_engine(params: TTSParams) -> TTSEngine:
    if params.engine == "kokoro":
        return KokoroEngine(params.kokoro_dir, voices=list(params.voices), g2p=params.g2p, device=params.device)
    return EspeakEngine(params.espeak_voices)


def user_voice_for(row_id: str, user_voices: tuple[str, ...]) -> str:
    """Deterministic rotation: the same row always gets the same user voice."""
    digest = hashlib.sha256(row_id.encode("utf-8")).digest()
    return user_voices[int.from_bytes(digest[:8], "big") % len(user_voices)]


@dataclass(frozen=True)
class RowTexts:
    """What one dataset row needs voiced."""

    id: str
    user: str
    assistant: str
    turn1_user: str | None = None
    turn1_assistant: str | None = None


@dataclass(frozen=True)
class ManifestRow:
    id: str
    user_key: str
    assistant_key: str
    turn1_user_key: str | None
    turn1_assistant_key: str | None


@dataclass
class TTSMetrics:
    engine: str
    model_hash: str
    rows: dict[str, int] = field(default_factory=dict)
    requests: int = 0  # distinct clips the manifests point to
    syntheses: int = 0  # clips made in this run (cache misses)
    cache_hits: int = 0
    hit_rate: float | None = None  # unavailable (null) when there is nothing to voice
    audio_seconds: float = 0.0  # all distinct clips the manifests point to
    audio_seconds_synthesized: float = 0.0
    wall_seconds: float = 0.0
    shards_written: list[str] = field(default_factory=list)


def _text_field(obj: dict, key: str, where: str, name: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"{where}: field '{name}' must be a non-empty string")
    return value


def read_split(path: Path) -> list[RowTexts]:
    """The rows of one split file; any unusable line fails the stage, naming file and line."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: dataset split not found (run the dataset stage first)")
    rows: list[RowTexts] = []
    seen: set[str] = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DatasetError(f"{where}: invalid JSON ({err.msg})") from None
        if not isinstance(obj, dict):
            raise DatasetError(f"{where}: a row must be a JSON object")
        row_id = _text_field(obj, "id", where, "id")
        if row_id in seen:
            raise DatasetError(f"{where}: duplicate id {row_id!r}")
        seen.add(row_id)
        turn1 = obj.get("turn1")
        if turn1 is None and obj.get("class") == "tool_result_speak":
            raise DatasetError(f"{where}: tool_result_speak row without 'turn1'")
        if turn1 is not None and not isinstance(turn1, dict):
            raise DatasetError(f"{where}: field 'turn1' must be an object")
        rows.append(
            RowTexts(
                id=row_id,
                user=_text_field(obj, "user", where, "user"),
                assistant=_text_field(obj, "assistant", where, "assistant"),
                turn1_user=None if turn1 is None else _text_field(turn1, "user", where, "turn1.user"),
                turn1_assistant=None if turn1 is None else _text_field(turn1, "assistant", where, "turn1.assistant"),
            )
        )
    return rows


def plan_row(row: RowTexts, engine: TTSEngine, params: TTSParams) -> tuple[ManifestRow, list[TTSRequest]]:
    """The row's requests (user voice for user turns, assistant voice for replies) and its manifest line."""
    user_voice = user_voice_for(row.id, params.user_voices)

    def request(text: str | None, voice: str) -> TTSRequest | None:
        return None if text is None else request_for(engine, text, voice, params.speed)

    user, assistant = request(row.user, user_voice), request(row.assistant, params.assistant_voice)
    turn1_user, turn1_assistant = request(row.turn1_user, user_voice), request(row.turn1_assistant, params.assistant_voice)
    requests = [r for r in (user, assistant, turn1_user, turn1_assistant) if r is not None]
    manifest = ManifestRow(
        id=row.id,
        user_key=user.key,
        assistant_key=assistant.key,
        turn1_user_key=turn1_user.key if turn1_user else None,
        turn1_assistant_key=turn1_assistant.key if turn1_assistant else None,
    )
    return manifest, requests


def run_tts(
    params: TTSParams,
    engine: TTSEngine,
    dataset_dir: Path = DATASET_DIR,
    manifest_dir: Path = MANIFEST_DIR,
    metrics_path: Path = METRICS_PATH,
    splits: tuple[str, ...] = SPLITS,
    progress: bool = True,
) -> TTSMetrics:
    """Voice every split through the cache; write the manifests and the metrics."""
    started = time.monotonic()
    metrics = TTSMetrics(engine=engine.engine_id, model_hash=engine.model_hash)
    manifests: dict[str, list[ManifestRow]] = {}
    requests: list[TTSRequest] = []
    for split in splits:
        rows = read_split(Path(dataset_dir) / f"{split}.jsonl")
        planned = [plan_row(row, engine, params) for row in rows]
        manifests[split] = [manifest for manifest, _ in planned]
        requests += [request for _, row_requests in planned for request in row_requests]
        metrics.rows[split] = len(rows)

    remove_stale_temp_files(params.cache_dir)
    cache = TTSCache(params.cache_dir)
    wrap = None
    if progress:
        from tqdm import tqdm

        def wrap(misses):
            return tqdm(misses, desc="tts", unit="clip")

    report = cache.fill(
        requests,
        lambda r: engine.synthesize(r.text, r.voice, r.speed),
        sample_rate=engine.sample_rate,
        shard_size=params.shard_size,
        progress=wrap,
    )
    for split, rows in manifests.items():
        write_text(Path(manifest_dir) / f"{split}.jsonl", "".join(json.dumps(asdict(m)) + "\n" for m in rows))

    metrics.requests = report.requested
    metrics.syntheses = report.synthesized
    metrics.cache_hits = report.hits
    metrics.hit_rate = None if report.hit_rate is None else round(report.hit_rate, 6)
    metrics.audio_seconds = round(sum(cache.seconds(k) for k in {r.key for r in requests}), 3)
    metrics.audio_seconds_synthesized = round(report.seconds_synthesized, 3)
    metrics.shards_written = report.shards_written
    metrics.wall_seconds = round(time.monotonic() - started, 3)
    write_json(metrics_path, asdict(metrics))
    return metrics


def main() -> int:
    from pipeline.models import ModelFolderError

    try:
        params = TTSParams.from_params(load_params(SECTION))
    except ParamsError as err:
        print(f"tts: {err}", file=sys.stderr)
        return 1
    try:
        metrics = run_tts(params, build_engine(params))
    except (DatasetError, FileNotFoundError, TTSError, G2PError, ModelFolderError, CacheError) as err:
        print(f"tts: {err}", file=sys.stderr)
        return 1
    print(
        f"tts: {metrics.requests} clips ({metrics.syntheses} synthesised, {metrics.cache_hits} cached), "
        f"{metrics.audio_seconds:.0f} s of audio in {metrics.wall_seconds:.0f} s -> {MANIFEST_DIR}/"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
