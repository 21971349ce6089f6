"""Stage `tts`: speech for every dataset row, through the content-addressed cache.

For each row of ``data/dataset/{train,eval,heldout,novel_facts}.jsonl`` it
synthesises the user request (a user voice chosen by the row id's hash) and the
assistant reply (the assistant voice), plus both turn-1 texts of
tool_result_speak rows. Audio lives in the Parquet cache (``tts.cache_dir``, a
``persist: true`` DVC output): a rerun, a new split or a blip sweep synthesises
only texts never made before. Outputs:

- ``data/tts/{split}.jsonl``: ``{id, user_key, assistant_key, turn1_user_key,
  turn1_assistant_key, skipped}`` per row (turn-1 keys null on other rows); read the
  audio with ``pipeline.tts_cache.load_audio(cache_dir, key)``;
- ``reports/metrics/tts.details.json``: rows, seconds of audio and the rows
  skipped; ``reports/metrics/tts.timings.json`` (uncached: what this run did):
  syntheses made, cache hits, hit rate, wall time, and what the cache repair
  found (temp files removed, shards migrated to checksummed names, damaged
  shards moved aside and re-synthesised); ``reports/metrics/tts.json`` (DVC's
  metrics): the distinct clips.

A row with a clip longer than ``tts.max_clip_seconds`` is skipped: its manifest
line keeps its id, every key null and ``skipped`` the reason, and it is listed
and counted in the details document (``skipped``, ``n_skipped``). A text whose
audio cannot be shorter than the bound (``min_clip_seconds``: its letters and
digits at ``MAX_SPOKEN_CHARS_PER_SECOND``) is never synthesised; a clip that
turns out longer is kept in the cache (it is that text's true audio, under its
own key) but no manifest points to it. Later stages read a skipped line as a
row without audio (preprocess lists it as over-long, eval as skipped).

A split line the stage cannot voice fails it, naming ``FILE:LINE`` (the rows are
read by ``pipeline.records``, with the rules ``validate`` applies).
"""
from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from pipeline import params as stage_params
from pipeline.artifacts import DATASET_DIR, TTS_DIR, metrics_json
from pipeline.jsonl import MissingFile, write_jsonl
from pipeline.metrics_models import TTSDetails, write_stage_metrics
from pipeline.params import StageParams, load_stage_params, stage_main
from pipeline.records import DatasetRow, read_rows
from pipeline.tts.engines import EspeakEngine, KokoroEngine, TTSEngine
from pipeline.tts.g2p import G2PChoice
from pipeline.tts_cache import DEFAULT_SHARD_SIZE, TTSCache, TTSRequest, request_for

SPLITS = ("train", "eval", "heldout", "novel_facts")
METRICS_PATH = metrics_json("tts")
Engine = Literal["kokoro", "espeak"]
ENGINES = get_args(Engine)
SECTION = "tts"
MAX_SPOKEN_CHARS_PER_SECOND = 25.0
"""Letters and digits a voice speaks per second at speed 1, at most: espeak-ng says ~12 (175 words a minute),
Kokoro ~14, the fabricated Kokoro ~10; digits only get longer read out. So a text's letters and digits at this
rate are a lower bound on its audio, whatever the engine."""


@dataclass(frozen=True)
class TTSParams(StageParams):
    """The ``tts`` group of params.yaml."""

    SECTION = "tts"

    engine: Engine
    kokoro_dir: Path
    assistant_voice: str
    user_voices: tuple[str, ...]
    speed: float = stage_params.field(lo=0, lo_open=True)
    espeak_voices: dict[str, str]  # pipeline voice name -> espeak-ng voice
    cache_dir: Path
    g2p: G2PChoice = "offline"  # Kokoro G2P: offline | spacy (pipeline/tts/g2p.py)
    device: str = "auto"  # where Kokoro runs: auto = cuda when available, else cpu
    shard_size: int = stage_params.field(DEFAULT_SHARD_SIZE, lo=1)
    max_clip_seconds: float = stage_params.field(41.0, lo=0, lo_open=True)  # a longer clip's row is skipped

    @classmethod
    def from_params(cls, raw: dict[str, Any]) -> "TTSParams":
        """``parse_params`` for this group (kept for bench/bench_preprocess.py)."""
        return stage_params.parse_params(cls, raw)

    def check(self) -> None:
        if not self.assistant_voice:
            raise self.bad("assistant_voice", "must be a voice name")
        if not self.user_voices or not all(self.user_voices):
            raise self.bad("user_voices", "must be a non-empty list of voice names")
        unmapped = [v for v in self.voices if v not in self.espeak_voices]
        if self.engine == "espeak" and unmapped:
            raise self.bad("espeak_voices", f"has no espeak voice for {', '.join(unmapped)}")

    @property
    def voices(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.assistant_voice, *self.user_voices)))


def build_engine(params: TTSParams) -> TTSEngine:
    if params.engine == "kokoro":
        from pipeline.models import resolve_device

        return KokoroEngine(params.kokoro_dir, voices=list(params.voices), g2p=params.g2p,
                            device=resolve_device(params.device))
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
    user_key: str | None  # None only on a skipped row
    assistant_key: str | None
    turn1_user_key: str | None
    turn1_assistant_key: str | None
    skipped: str | None = None  # why the row has no audio (every key is then null)

    @classmethod
    def skipped_row(cls, row_id: str, reason: str) -> "ManifestRow":
        return cls(id=row_id, user_key=None, assistant_key=None, turn1_user_key=None, turn1_assistant_key=None,
                   skipped=reason)

    def keys(self) -> dict[str, str]:
        """The row's clip keys by field (``user``, ``assistant``, ``turn1_user``, ``turn1_assistant``)."""
        keys = {"user": self.user_key, "assistant": self.assistant_key, "turn1_user": self.turn1_user_key,
                "turn1_assistant": self.turn1_assistant_key}
        return {name: key for name, key in keys.items() if key is not None}


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
    audio_seconds_per_second: float | None = None  # synthesised audio / wall time (None when all was cached)
    shards_written: list[str] = field(default_factory=list)
    max_clip_seconds: float | None = None
    n_skipped: int = 0  # rows with a clip past max_clip_seconds (no audio in the manifest)
    skipped: list[dict] = field(default_factory=list)  # {split, id, field, seconds, predicted, reason}
    cache_repair: dict[str, list] = field(default_factory=dict)  # pipeline.tts_cache.RepairReport


def row_texts(row: DatasetRow) -> RowTexts:
    return RowTexts(
        id=row.id,
        user=row.user,
        assistant=row.assistant,
        turn1_user=None if row.turn1 is None else row.turn1.user,
        turn1_assistant=None if row.turn1 is None else row.turn1.assistant,
    )


def read_split(path: Path) -> list[RowTexts]:
    """The rows of one split file, parsed by the dataset's own rules; a bad line fails, naming FILE:LINE."""
    if not Path(path).is_file():
        raise MissingFile(f"{path}: dataset split not found (run the dataset stage first)")
    return [row_texts(row) for row in read_rows(path, on_bad="fail").rows]


def min_clip_seconds(text: str, speed: float) -> float:
    """The least audio ``text`` can take at ``speed``: its letters and digits at ``MAX_SPOKEN_CHARS_PER_SECOND``."""
    return sum(ch.isalnum() for ch in text) / (MAX_SPOKEN_CHARS_PER_SECOND * speed)


def fields_of(row: RowTexts) -> dict[str, str]:
    texts = {"user": row.user, "assistant": row.assistant, "turn1_user": row.turn1_user,
             "turn1_assistant": row.turn1_assistant}
    return {name: text for name, text in texts.items() if text is not None}


def clip_too_long(split: str, row_id: str, field_name: str, seconds: float, predicted: bool,
                  limit: float) -> dict:
    """The details document's entry of a skipped row (``reason`` is also its manifest line's ``skipped``)."""
    what = f"at least {seconds:.1f} s of audio (its letters and digits)" if predicted else f"{seconds:.1f} s of audio"
    return {"split": split, "id": row_id, "field": field_name, "seconds": round(seconds, 3), "predicted": predicted,
            "reason": f"{field_name} text is {what}, more than tts.max_clip_seconds = {limit:g}"}


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
    manifest_dir: Path = TTS_DIR,
    metrics_path: Path = METRICS_PATH,
    splits: tuple[str, ...] = SPLITS,
    progress: bool = True,
) -> TTSMetrics:
    """Voice every split through the cache; write the manifests and the metrics."""
    started = time.monotonic()
    metrics = TTSMetrics(engine=engine.engine_id, model_hash=engine.model_hash)
    metrics.max_clip_seconds = params.max_clip_seconds
    manifests: dict[str, list[ManifestRow]] = {}
    skipped: dict[tuple[str, int], dict] = {}  # (split, line index) -> the details document's entry
    requests: list[TTSRequest] = []
    for split in splits:
        rows = read_split(Path(dataset_dir) / f"{split}.jsonl")
        manifests[split] = []
        for row in rows:
            # Before any synthesis: a text that cannot be voiced within the bound is never started.
            too_long = next((clip_too_long(split, row.id, name, seconds, True, params.max_clip_seconds)
                             for name, text in fields_of(row).items()
                             if (seconds := min_clip_seconds(text, params.speed)) > params.max_clip_seconds), None)
            if too_long is not None:
                skipped[split, len(manifests[split])] = too_long
                manifests[split].append(ManifestRow.skipped_row(row.id, too_long["reason"]))
                continue
            manifest, row_requests = plan_row(row, engine, params)
            manifests[split].append(manifest)
            requests += row_requests
        metrics.rows[split] = len(rows)

    cache = TTSCache(params.cache_dir)
    metrics.cache_repair = asdict(cache.repair())
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
        for n, manifest in enumerate(rows):  # after synthesis (or from the cache): the clips' own length
            too_long = next((clip_too_long(split, manifest.id, name, seconds, False, params.max_clip_seconds)
                             for name, key in manifest.keys().items()
                             if (seconds := cache.seconds(key)) > params.max_clip_seconds), None)
            if too_long is not None:
                skipped[split, n] = too_long
                rows[n] = ManifestRow.skipped_row(manifest.id, too_long["reason"])
    metrics.skipped = [skipped[at] for at in sorted(skipped, key=lambda at: (splits.index(at[0]), at[1]))]
    metrics.n_skipped = len(metrics.skipped)
    voiced = {key for rows in manifests.values() for manifest in rows for key in manifest.keys().values()}
    for split, rows in manifests.items():
        write_jsonl(Path(manifest_dir) / f"{split}.jsonl", (asdict(m) for m in rows))

    metrics.requests = len(voiced)
    metrics.syntheses = report.synthesized
    metrics.cache_hits = report.hits
    metrics.hit_rate = None if report.hit_rate is None else round(report.hit_rate, 6)
    metrics.audio_seconds = round(sum(cache.seconds(k) for k in voiced), 3)
    metrics.audio_seconds_synthesized = round(report.seconds_synthesized, 3)
    metrics.shards_written = report.shards_written
    metrics.wall_seconds = round(time.monotonic() - started, 3)
    if report.synthesized and metrics.wall_seconds > 0:
        metrics.audio_seconds_per_second = round(metrics.audio_seconds_synthesized / metrics.wall_seconds, 3)
    write_stage_metrics(TTSDetails.of(asdict(metrics)), metrics_path)
    return metrics


def main() -> int:
    from pipeline.models import ModelFolderError

    def work() -> int:
        params = load_stage_params(TTSParams)
        metrics = run_tts(params, build_engine(params))
        repair = metrics.cache_repair
        for damaged in repair["damaged"]:
            print(f"tts: {damaged['shard']}: {damaged['reason']}; moved to {damaged['moved_to']}, "
                  "its clips were synthesised again", file=sys.stderr)
        for skipped in metrics.skipped:
            print(f"tts: {skipped['split']} row {skipped['id']} skipped: {skipped['reason']}", file=sys.stderr)
        if repair["migrated"]:
            print(f"tts: {len(repair['migrated'])} cache shards from before checksums renamed to checksummed names")
        print(
            f"tts: {metrics.requests} clips ({metrics.syntheses} synthesised, {metrics.cache_hits} cached), "
            f"{metrics.audio_seconds:.0f} s of audio in {metrics.wall_seconds:.0f} s, {metrics.n_skipped} rows skipped "
            f"(a clip past tts.max_clip_seconds) -> {TTS_DIR}/"
        )
        return 0

    return stage_main(SECTION, work, expected=(ModelFolderError,))


if __name__ == "__main__":
    sys.exit(main())
