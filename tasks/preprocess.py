"""Stage `preprocess`: dataset rows + TTS audio → liquid-audio training shards.

Each row becomes the chat of ``pipeline.prompts.build_chat_turns`` (system
prompt, user audio, assistant text+audio); tool_match acks get the blip preview
at sample 0 of their audio. liquid-audio's own mapper makes the samples, so the
shards are in its dataset format. Unlike the stock ``preprocess_dataset``,
over-long rows are counted, listed and reported, not silently skipped, and
every tool_match row is checked to start with the blip signature's codes.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from coordinator.constants import N_CODEBOOKS
from coordinator.detector import StreamingBlipDetector
from coordinator.signature import BlipSignature, SignatureError
from pipeline.audio import SAMPLE_RATE, read_wav, resample, to_float32
from pipeline.chat_samples import CachedCodesMapper, CodesCache, RowAudio, row_messages
from pipeline.io import ParamsError, atomic_dir, load_params, read_json, require, write_json
from pipeline.records import DatasetRow, read_rows, write_jsonl
from pipeline.tts_cache import load_audio, read_manifest

DATASET_DIR = Path("data/dataset")
TTS_DIR = Path("data/tts")
PREVIEW_WAV = Path("data/blips/tool_invoke.preview.wav")
SIGNATURE_JSON = Path("data/blips/tool_invoke.signature.json")
CODES_NPY = Path("data/blips/tool_invoke.codes.npy")
OUT_DIR = Path("data/preprocessed")
METRICS = Path("reports/metrics/preprocess.json")
OVERLONG = Path("reports/preprocess/overlong.jsonl")
SPLITS = ("train", "eval")


@dataclass(frozen=True)
class PreprocessParams:
    model_dir: Path
    tts_cache_dir: Path
    codes_cache_dir: Path
    max_context_length: int
    tool_match_oversample: int  # v4.2 idea: tool_match rows repeated k times in train

    @classmethod
    def from_params(cls, params: dict) -> "PreprocessParams":
        section = "preprocess"
        oversample = require(params, "tool_match_oversample", section, int)
        if oversample < 1:
            raise ParamsError(f"params.yaml: 'preprocess.tool_match_oversample' must be >= 1, got {oversample}")
        context = require(params, "max_context_length", section, int)
        if context <= 0:
            raise ParamsError(f"params.yaml: 'preprocess.max_context_length' must be > 0, got {context}")
        return cls(
            model_dir=Path(require(params, "model_dir", section, str)),
            tts_cache_dir=Path(require(params, "tts_cache_dir", section, str)),
            codes_cache_dir=Path(require(params, "codes_cache_dir", section, str)),
            max_context_length=context,
            tool_match_oversample=oversample,
        )


@dataclass
class SplitReport:
    rows: int = 0
    written: int = 0
    overlong: list[dict] = field(default_factory=list)
    tool_match_rows: int = 0
    blip_prefix_detection_matches: int = 0  # the coordinator's detector matches the sample's opening
    blip_prefix_full_matches: int = 0  # all 8 codebooks equal (a deep-codebook near-tie may flip)
    blip_prefix_codebook_matches: list[int] = field(default_factory=lambda: [0] * N_CODEBOOKS)  # per codebook, all F frames
    mismatched_ids: list[str] = field(default_factory=list)


def prefix_check(signature: BlipSignature, audio_out: np.ndarray) -> tuple[bool, np.ndarray]:
    """Would the coordinator detect the blip at the start of this sample's audio out?

    Runs the runtime's own streaming detector (with the signature's matcher) over the
    sample's first audio frames, so training rows are checked exactly as serving
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
            raise KeyError(f"row {row.id}: not in the TTS manifest (rerun the tts stage)")
        is_match = row.row_class == "tool_match"
        messages = row_messages(row, row_audio(row, manifest[row.id], params.tts_cache_dir), preview if is_match else None)
        sample = mapper(messages)
        length = int(sample.modality_flag.shape[-1])
        if length > params.max_context_length:
            report.overlong.append({"split": desc, "id": row.id, "class": row.row_class, "tokens": length})
            continue
        if is_match:
            report.tool_match_rows += 1
            detection, per_codebook = prefix_check(signature, sample.audio_out.numpy())
            report.blip_prefix_detection_matches += detection
            report.blip_prefix_full_matches += bool(per_codebook.all())
            report.blip_prefix_codebook_matches = [a + int(b) for a, b in zip(report.blip_prefix_codebook_matches, per_codebook)]
            if not detection:
                report.mismatched_ids.append(row.id)
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


def write_dataset(records, target: Path) -> None:
    """liquid-audio's on-disk format (the features its ``preprocess_dataset`` declares), atomically."""
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


def run(params: PreprocessParams) -> dict:
    from pipeline.io import sha256_file
    from pipeline.mimi_config import MIMI_WEIGHTS_NAME
    from pipeline.models import load_processor

    processor = load_processor(params.model_dir)
    cache = CodesCache(params.codes_cache_dir, sha256_file(params.model_dir / MIMI_WEIGHTS_NAME))
    mapper = CachedCodesMapper(processor, cache)
    preview_samples, preview_rate = read_wav(PREVIEW_WAV)
    preview = to_float32(resample(preview_samples, preview_rate, SAMPLE_RATE))
    signature = BlipSignature.load(CODES_NPY, SIGNATURE_JSON)  # verifies shape and hashes

    reports: dict[str, SplitReport] = {}
    for split in SPLITS:
        result = read_rows(DATASET_DIR / f"{split}.jsonl")
        if result.bad:
            first = result.bad[0]
            raise ValueError(f"{first.path}:{first.line}: {first.reason} (the dataset stage should have quarantined it)")
        manifest = read_manifest(TTS_DIR / f"{split}.jsonl")
        report = reports[split] = SplitReport()
        oversample = params.tool_match_oversample if split == "train" else 1
        write_dataset(
            samples_for_split(result.rows, manifest, mapper, params, preview, signature, report, oversample, split),
            OUT_DIR / split,
        )

    overlong = [entry for report in reports.values() for entry in report.overlong]
    write_jsonl(OVERLONG, overlong)
    metrics = metrics_document(reports, cache)
    write_json(METRICS, metrics)
    return metrics


def _rate(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def metrics_document(reports: dict[str, SplitReport], cache: CodesCache) -> dict:
    matches = sum(r.tool_match_rows for r in reports.values())
    return {
        "splits": {
            split: {k: v for k, v in asdict(r).items() if k not in ("overlong", "mismatched_ids", "blip_prefix_codebook_matches")}
            | {"overlong": len(r.overlong)}
            for split, r in reports.items()
        },
        "overlong_rows": sum(len(r.overlong) for r in reports.values()),
        # Expected 1.0: anything else means training does not see the signature the coordinator watches.
        "blip_prefix_match_rate": _rate(sum(r.blip_prefix_detection_matches for r in reports.values()), matches),
        "blip_prefix_full_match_rate": _rate(sum(r.blip_prefix_full_matches for r in reports.values()), matches),
        "blip_prefix_codebook_match_rates": [
            _rate(sum(r.blip_prefix_codebook_matches[k] for r in reports.values()), matches) for k in range(N_CODEBOOKS)
        ],
        "blip_prefix_mismatched_ids": [i for r in reports.values() for i in r.mismatched_ids],
        "codes_cache": {"hits": cache.hits, "misses": cache.misses, "hit_rate": _rate(cache.hits, cache.hits + cache.misses)},
    }


def main() -> int:
    try:
        params = PreprocessParams.from_params(load_params("preprocess"))
        metrics = run(params)
    except (ParamsError, FileNotFoundError, ValueError, KeyError, SignatureError) as err:
        print(f"preprocess: {err}", file=sys.stderr)
        return 1
    print(
        f"preprocess: {metrics['splits']['train']['written']} train / {metrics['splits']['eval']['written']} eval samples, "
        f"{metrics['overlong_rows']} over-long (see {OVERLONG}), blip prefix match {metrics['blip_prefix_match_rate']}, "
        f"codes cache hit rate {metrics['codes_cache']['hit_rate']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
