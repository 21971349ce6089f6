"""Stage `preprocess`: dataset rows + TTS audio → liquid-audio training shards.

Each row becomes the chat of ``pipeline.prompts.build_chat_turns`` (system
prompt, user audio, assistant text+audio); the assistant turns named by
``preprocess.blip_on`` get the blip preview at sample 0 of their audio
(``tool_match``: the card's tool acks; ``turn1_ack``: the ack inside
tool_result_speak rows; ``[]``: v4, no blip). liquid-audio's own mapper makes
the samples, so the shards are in its dataset format. Unlike the stock
``preprocess_dataset``, over-long rows are counted, listed and reported, not
silently skipped (``reports/preprocess/overlong.jsonl``, with the rows the tts stage
skipped for a clip past ``tts.max_clip_seconds``), and every blipped turn is checked to open with the blip
signature's codes, per kind, in ``reports/metrics/preprocess.details.json``
(headline numbers, DVC's metrics: ``reports/metrics/preprocess.json``).

Each assistant reply is interleaved by the base model's schedule (6 text / 12
audio), its first text chunk set by ``preprocess.first_text_chunk`` (null: the
model's own); each split folder records it in ``interleave.json``, where the
train stage reads it (``pipeline.interleave``).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from coordinator.constants import N_CODEBOOKS
from coordinator.detector import StreamingBlipDetector
from coordinator.signature import BlipSignature, SignatureError
from pipeline.artifacts import BLIP_CODES_NPY, BLIP_PREVIEW_WAV, BLIP_SIGNATURE_JSON, DATASET_DIR, OVERLONG_JSONL, PREPROCESSED_DIR, TTS_DIR, metrics_json
from pipeline.audio import SAMPLE_RATE, read_wav, resample, to_float32
from pipeline.chat_samples import (
    BLIP_TURNS,
    DEFAULT_BLIP_ON,
    CachedCodesMapper,
    CodesCache,
    RowAudio,
    assistant_audio_turns,
    blipped_turns,
    row_messages,
)
from pipeline.interleave import Schedule, own_schedule, write_record
from pipeline.io import atomic_dir
from pipeline.metrics_models import PreprocessDetails, write_stage_metrics
from pipeline.params import StageError, StageParams, load_stage_params, stage_main
from pipeline.params import field as param
from pipeline.records import DatasetRow, read_rows, write_jsonl
from pipeline.tts_cache import load_audio, read_manifest

METRICS_PATH = metrics_json("preprocess")
SPLITS = ("train", "eval")


class PreprocessError(StageError):
    """The dataset or TTS outputs this stage reads are not what the earlier stages promise."""


@dataclass(frozen=True)
class PreprocessParams(StageParams):
    SECTION = "preprocess"
    model_dir: Path
    tts_cache_dir: Path
    codes_cache_dir: Path
    max_context_length: int = param(lo=1)
    tool_match_oversample: int = param(1, lo=1)  # v4.2 idea: tool_match rows repeated k times in train
    blip_on: tuple[Literal["tool_match", "turn1_ack"], ...] = DEFAULT_BLIP_ON  # [] = v4
    first_text_chunk: int | None = param(None, lo=1, hi=64)  # v4.2 idea: text tokens before the first audio frame
    device: str = "auto"  # where Mimi encodes: auto = cuda when available, else cpu

    def check(self) -> None:
        if len(set(self.blip_on)) != len(self.blip_on):
            raise self.bad("blip_on", f"lists a turn kind twice: {list(self.blip_on)}")


@dataclass
class TurnCheck:
    """The prefix check over the blipped turns of one kind."""

    turns: int = 0
    detection_matches: int = 0  # the coordinator's detector matches the turn's opening
    full_matches: int = 0  # all 8 codebooks equal (a deep-codebook near-tie may flip)
    codebook_matches: list[int] = field(default_factory=lambda: [0] * 8)  # per codebook, all F frames
    mismatched_ids: list[str] = field(default_factory=list)

    def add(self, row_id: str, detection: bool, per_codebook: np.ndarray) -> None:
        self.turns += 1
        self.detection_matches += detection
        self.full_matches += bool(per_codebook.all())
        self.codebook_matches = [a + int(b) for a, b in zip(self.codebook_matches, per_codebook)]
        if not detection:
            self.mismatched_ids.append(row_id)

    @classmethod
    def summed(cls, checks: list["TurnCheck"]) -> "TurnCheck":
        total = cls()
        for check in checks:
            total.turns += check.turns
            total.detection_matches += check.detection_matches
            total.full_matches += check.full_matches
            total.codebook_matches = [a + b for a, b in zip(total.codebook_matches, check.codebook_matches)]
            total.mismatched_ids += check.mismatched_ids
        return total


@dataclass
class SplitReport:
    rows: int = 0
    written: int = 0
    overlong: list[dict] = field(default_factory=list)
    tool_match_rows: int = 0
    blipped: dict[str, TurnCheck] = field(default_factory=lambda: {kind: TurnCheck() for kind in BLIP_TURNS})
    unblipped_turns: int = 0
    unblipped_detections: int = 0  # turns without the blip whose opening the detector still matches


def prefix_check(signature: BlipSignature, audio_out: np.ndarray) -> tuple[bool, np.ndarray]:
    """Would the coordinator detect the blip at the start of this turn's audio out?

    Runs the runtime's own streaming detector (with the signature's matcher) over the
    turn's first audio frames, so training rows are checked exactly as serving
    will watch them; also returns, per codebook, whether all F frames equal the blip's.
    """
    detector = StreamingBlipDetector(signature)
    decision = None
    for frame in audio_out.T:
        decision = detector.feed(frame)
        if decision.decided:
            break
    head = audio_out[:, : signature.n_frames]
    per_codebook = np.array([
        head.shape[1] == signature.n_frames and np.array_equal(head[k], signature.codebook_across_frames(k))
        for k in range(signature.n_codebooks)
    ])
    return bool(decision is not None and decision.is_match), per_codebook


def check_turns(row: DatasetRow, audio_out: np.ndarray, blip_on: tuple[str, ...], signature: BlipSignature,
                report: SplitReport) -> None:
    """Prefix-check every assistant turn of one sample: blipped turns must open with the blip."""
    blipped = dict(blipped_turns(row, blip_on))
    for index, turn in enumerate(assistant_audio_turns(audio_out)):
        detection, per_codebook = prefix_check(signature, turn)
        if index in blipped:
            report.blipped[blipped[index]].add(row.id, detection, per_codebook)
        else:
            report.unblipped_turns += 1
            report.unblipped_detections += detection


def row_audio(row: DatasetRow, manifest_entry: dict, tts_cache_dir: Path) -> RowAudio:
    def wave(key_name: str) -> np.ndarray | None:
        key = manifest_entry.get(key_name)
        if key is None:
            return None
        samples, rate = load_audio(tts_cache_dir, key)
        return resample(samples, rate, SAMPLE_RATE)

    return RowAudio(
        user=wave("user_key"),
        assistant=wave("assistant_key"),
        turn1_user=wave("turn1_user_key"),
        turn1_assistant=wave("turn1_assistant_key"),
    )


def samples_for_split(
    rows: list[DatasetRow],
    manifest: dict[str, dict],
    mapper: CachedCodesMapper,
    params: PreprocessParams,
    preview: np.ndarray,
    signature: BlipSignature,
    report: SplitReport,
    oversample: int,
    desc: str,
):
    """Yield liquid-audio samples (as dataset dicts), filling ``report`` as it goes."""
    for row in tqdm(rows, desc=f"preprocess {desc}", unit="row", file=sys.stderr):
        report.rows += 1
        if row.id not in manifest:
            raise PreprocessError(f"row {row.id}: not in the TTS manifest (rerun the tts stage)")
        if manifest[row.id].get("skipped"):  # a clip past tts.max_clip_seconds: never voiced, never encoded
            report.overlong.append({"split": desc, "id": row.id, "class": row.row_class, "tokens": None,
                                    "reason": f"tts: {manifest[row.id]['skipped']}"})
            continue
        audio = row_audio(row, manifest[row.id], params.tts_cache_dir)
        sample = mapper(row_messages(row, audio, preview, params.blip_on))
        length = int(sample.modality_flag.shape[-1])
        if length > params.max_context_length:
            report.overlong.append({"split": desc, "id": row.id, "class": row.row_class, "tokens": length,
                                    "reason": f"{length} tokens, more than preprocess.max_context_length = "
                                              f"{params.max_context_length}"})
            continue
        is_match = row.row_class == "tool_match"
        report.tool_match_rows += is_match
        check_turns(row, sample.audio_out.numpy(), params.blip_on, signature, report)
        record = {
            "text": sample.text.tolist(),
            "audio_in": sample.audio_in.tolist(),
            "audio_in_lens": sample.audio_in_lens.tolist(),
            "audio_out": sample.audio_out.tolist(),
            "modality_flag": sample.modality_flag.tolist(),
            "supervision_mask": sample.supervision_mask.tolist(),
        }
        for _ in range(oversample if is_match else 1):
            report.written += 1
            yield record


def write_dataset(records, target: Path, schedule: Schedule) -> None:
    """liquid-audio's on-disk format (the features its ``preprocess_dataset`` declares), atomically,
    with the interleave schedule of its samples (``interleave.json``, which training carries into the model)."""
    import datasets
    from datasets import Features, Sequence, Value

    features = Features(
        {
            "text": Sequence(Sequence(Value("int64"))),
            "audio_in": Sequence(Sequence(Value("float32"))),
            "audio_in_lens": Sequence(Value("int64")),
            "audio_out": Sequence(Sequence(Value("int64"))),
            "modality_flag": Sequence(Sequence(Value("int64"))),
            "supervision_mask": Sequence(Sequence(Value("bool"))),
        }
    )
    # Arrow chunks keep memory compact (Python lists of mel floats are not); no HF cache involved.
    chunks, pending = [], []
    for record in records:
        pending.append(record)
        if len(pending) == 64:
            chunks.append(datasets.Dataset.from_list(pending, features=features))
            pending = []
    if pending or not chunks:
        chunks.append(datasets.Dataset.from_list(pending, features=features))
    with atomic_dir(target) as tmp:
        datasets.concatenate_datasets(chunks).save_to_disk(str(tmp))
        write_record(tmp, schedule)


def run(params: PreprocessParams) -> dict:
    from pipeline.io import sha256_file
    from pipeline.hub_layout import MIMI_WEIGHTS_NAME
    from pipeline.models import load_processor, resolve_device

    processor = load_processor(params.model_dir, device=resolve_device(params.device))
    cache = CodesCache(params.codes_cache_dir, sha256_file(params.model_dir / MIMI_WEIGHTS_NAME))
    schedule = interleave_schedule(params)
    mapper = CachedCodesMapper(processor, cache, schedule)
    preview_samples, preview_rate = read_wav(BLIP_PREVIEW_WAV)
    preview = to_float32(resample(preview_samples, preview_rate, SAMPLE_RATE))
    signature = BlipSignature.load(BLIP_CODES_NPY, BLIP_SIGNATURE_JSON)  # verifies shape and hashes

    reports: dict[str, SplitReport] = {}
    for split in SPLITS:
        result = read_rows(DATASET_DIR / f"{split}.jsonl")
        if result.bad:
            first = result.bad[0]
            raise PreprocessError(f"{first.path}:{first.line}: {first.reason} "
                                  "(the dataset stage should have quarantined it)")
        manifest = read_manifest(TTS_DIR / f"{split}.jsonl")
        report = reports[split] = SplitReport()
        oversample = params.tool_match_oversample if split == "train" else 1
        write_dataset(
            samples_for_split(result.rows, manifest, mapper, params, preview, signature, report, oversample, split),
            PREPROCESSED_DIR / split,
            schedule,
        )

    overlong = [entry for report in reports.values() for entry in report.overlong]
    write_jsonl(OVERLONG_JSONL, overlong)
    metrics = metrics_document(reports, cache, params.blip_on, schedule, mapper.encoded_audio_seconds)
    metrics["mimi_throughput"] = mapper.throughput(resolve_device(params.device))
    write_stage_metrics(PreprocessDetails.of(metrics), METRICS_PATH)
    return metrics


def _rate(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def interleave_schedule(params: PreprocessParams) -> Schedule:
    """The base model's interleave, its first text chunk set by ``preprocess.first_text_chunk`` (null: unchanged)."""
    own = own_schedule(params.model_dir)
    return own if params.first_text_chunk is None else Schedule(params.first_text_chunk, own.n_text, own.n_audio)


def metrics_document(reports: dict[str, SplitReport], cache: CodesCache, blip_on: tuple[str, ...],
                     schedule: Schedule, encoded_audio_seconds: float = 0.0) -> dict:
    """``encoded_audio_seconds``: what went through Mimi (codes-cache misses; ``CachedCodesMapper`` counts it)."""
    kinds = {kind: TurnCheck.summed([r.blipped[kind] for r in reports.values()]) for kind in BLIP_TURNS}
    every = TurnCheck.summed(list(kinds.values()))
    unblipped = sum(r.unblipped_turns for r in reports.values())
    return {
        "blip_on": list(blip_on),
        "interleave": schedule.to_json(),  # what the samples were laid out with (also data/preprocessed/*/interleave.json)
        "splits": {
            split: {"rows": r.rows, "written": r.written, "tool_match_rows": r.tool_match_rows,
                    "blipped_turns": {kind: r.blipped[kind].turns for kind in BLIP_TURNS},
                    "blip_prefix_detection_matches": TurnCheck.summed(list(r.blipped.values())).detection_matches,
                    "blip_prefix_full_matches": TurnCheck.summed(list(r.blipped.values())).full_matches,
                    "overlong": len(r.overlong)}
            for split, r in reports.items()
        },
        "overlong_rows": sum(len(r.overlong) for r in reports.values()),
        # Per kind: how many turns got the blip, and does each open with the signature the coordinator watches?
        "blipped_turns": {
            kind: {"turns": check.turns, "detection_matches": check.detection_matches,
                   "match_rate": _rate(check.detection_matches, check.turns),
                   "full_match_rate": _rate(check.full_matches, check.turns),
                   "mismatched_ids": check.mismatched_ids}
            for kind, check in kinds.items()
        },
        # Expected 1.0 (None without blipped turns, the v4 arm): anything else means training does not
        # see the signature the coordinator watches.
        "blip_prefix_match_rate": _rate(every.detection_matches, every.turns),
        "blip_prefix_full_match_rate": _rate(every.full_matches, every.turns),
        "blip_prefix_codebook_match_rates": [_rate(every.codebook_matches[k], every.turns) for k in range(N_CODEBOOKS)],
        "blip_prefix_mismatched_ids": every.mismatched_ids,
        # Expected 0: an unblipped turn that opens like the blip would teach the blip off tool acks.
        "unblipped_turns": unblipped,
        "unblipped_detection_rate": _rate(sum(r.unblipped_detections for r in reports.values()), unblipped),
        "codes_cache": {"hits": cache.hits, "misses": cache.misses, "hit_rate": _rate(cache.hits, cache.hits + cache.misses),
                        "damaged": cache.damaged},
        "mimi_audio_seconds_encoded": round(encoded_audio_seconds, 3),  # work unit: cache misses only
    }


def main() -> int:
    from pipeline.models import ModelFolderError

    def work() -> int:
        metrics = run(load_stage_params(PreprocessParams))
        train, evals = metrics["splits"]["train"], metrics["splits"]["eval"]
        blipped = ", ".join(f"{kind} {sum(s['blipped_turns'][kind] for s in metrics['splits'].values())}"
                            for kind in BLIP_TURNS)
        print(
            f"preprocess: {train['written']} train / {evals['written']} eval samples, "
            f"{metrics['overlong_rows']} over-long (see {OVERLONG_JSONL}), blipped turns ({blipped}), "
            f"blip prefix match {metrics['blip_prefix_match_rate']}, codes cache hit rate {metrics['codes_cache']['hit_rate']}, "
            f"Mimi {metrics['mimi_throughput']['audio_seconds']:.1f} audio s encoded on {metrics['mimi_throughput']['device']} "
            f"({metrics['mimi_throughput']['audio_seconds_per_second'] or 0:.2f} audio s/s)"
        )
        return 0

    return stage_main("preprocess", work, expected=(FileNotFoundError, ValueError, ModelFolderError))


if __name__ == "__main__":
    sys.exit(main())
