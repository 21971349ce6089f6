"""Every stage's metrics documents as frozen typed models: the contract between a stage and its readers.

A stage's full report is its ``<Stage>Details`` model, written to ``reports/metrics/<stage>.details.json``
(a DVC-cached out); its ``headline()`` is the ``<Stage>Headline`` model written to
``reports/metrics/<stage>.json`` (DVC's metrics: a few flat numbers, see tests/test_dvc_metrics.py).
Readers (the report stage, the flows, the sweep) load these models, never dotted string keys.

All the models live in this one module, ``extra='forbid'``: a key a stage writes must be declared here
(a new metrics field is added in one place), and a document that does not match is refused in one line.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.artifacts import details_json, metrics_json
from pipeline.io import write_metrics
from pipeline.params import StageError

Rate = float | None
"""A share in [0, 1]; None when it is unavailable (the document's ``unavailable`` says why)."""


class MetricsError(StageError, ValueError):
    """A metrics document is missing or does not match its model; one line naming the file."""


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False, protected_namespaces=())

    STAGE: ClassVar[str] = ""


class Headline(_Document):
    """Flat numbers only: ``dvc metrics show`` has a column per distinct key of every stage."""


H = TypeVar("H", bound=Headline)


class Details(_Document, Generic[H]):
    """A stage's full report; ``headline()`` is what DVC lists."""

    @classmethod
    def of(cls, document: dict[str, Any]):
        """The stage's document checked as the JSON it is written as (a tuple is a list there)."""
        return cls.model_validate_json(json.dumps(document, allow_nan=False))

    def headline(self) -> H:
        raise NotImplementedError


# --------------------------------------------------------------------------- dataset

class DatasetHeadline(Headline):
    STAGE = "dataset"
    rows: int | None  # rows written to the splits; None when none were made
    new_rows: int | None = None  # rows not in the last run's splits; None on a first run


class DatasetDetails(Details[DatasetHeadline]):
    STAGE = "dataset"
    source: str
    rows_read: int
    bad_rows: int
    bad_fraction: float
    max_bad_fraction: float
    counts: dict[str, dict[str, int]] | None = None  # split -> {class: rows, "total": rows}; None: nothing split
    hard_negative_fraction: dict[str, Rate] | None = None
    heldout_generated: dict[str, int] | None = None
    catalog: dict[str, int] | None = None
    leak_excluded: dict[str, int] | None = None  # ingested rows left out because they touch a protected row
    heldout_hash: str | None = None  # content hash of the held-out rows: models compare only on equal hashes
    novel_facts_hash: str | None = None
    # Compared with the run before (in dataset.timings.json, pipeline.io.INVOCATION_KEYS):
    new_rows: dict[str, int | None] | None = None  # split -> rows new since the last run (None: first run)
    moved_rows: int | None = None  # rows whose split changed since the last run (stable splits: always 0)
    moved_examples: list[str] = []

    def headline(self) -> DatasetHeadline:
        new = self.new_rows
        return DatasetHeadline(rows=sum(c["total"] for c in self.counts.values()) if self.counts else None,
                               new_rows=sum(new.values()) if new and None not in new.values() else None)


# --------------------------------------------------------------------------- work units (pipeline/work_units.py)

class DecoderWorkCount(_Document):
    """What an evaluation decoded, in units no machine skews: ``decoder_items`` = text tokens + audio frames +
    depthformer steps (prefill counted apart)."""
    text_tokens: int = 0
    audio_frames: int = 0
    depthformer_steps: int = 0
    prefill_tokens: int = 0
    decoder_items: int = 0


# --------------------------------------------------------------------------- tts

class TTSHeadline(Headline):
    STAGE = "tts"
    clips: int  # distinct clips the manifests point to


class TTSDetails(Details[TTSHeadline]):
    STAGE = "tts"
    engine: str
    model_hash: str
    requests: int = 0
    audio_seconds: float = 0.0
    rows: dict[str, int] = {}
    max_clip_seconds: float | None = None  # tts.max_clip_seconds this run applied
    n_skipped: int = 0  # rows with a clip past it: no audio, manifest line ``skipped``
    skipped: list[dict[str, Any]] = []  # {split, id, field, seconds, predicted, reason}
    # The invocation's cache use, work and wall clock (in tts.timings.json, pipeline.io.INVOCATION_KEYS):
    syntheses: int = 0
    cache_hits: int = 0
    hit_rate: Rate = None  # None when there is nothing to voice
    audio_seconds_synthesized: float = 0.0
    audio_seconds_per_second: float | None = None  # TTS throughput
    wall_seconds: float = 0.0
    shards_written: list[str] = []
    cache_repair: dict[str, list[Any]] = {}  # pipeline.tts_cache.RepairReport

    def headline(self) -> TTSHeadline:
        return TTSHeadline(clips=self.requests)


# --------------------------------------------------------------------------- preprocess

class PreprocessHeadline(Headline):
    STAGE = "preprocess"
    blipped: int  # turns that carry the blip
    prefix_ok: Rate  # share of them whose audio opens with the signature's codes


class PreprocessDetails(Details[PreprocessHeadline]):
    STAGE = "preprocess"
    blip_on: list[str]
    splits: dict[str, dict[str, Any]]
    blipped_turns: dict[str, dict[str, Any]]
    unblipped_turns: int
    unblipped_detection_rate: Rate
    blip_prefix_match_rate: Rate
    blip_prefix_full_match_rate: Rate
    blip_prefix_codebook_match_rates: list[Rate]
    blip_prefix_mismatched_ids: list[str]
    overlong_rows: int
    # The invocation's cache use and work (in preprocess.timings.json, pipeline.io.INVOCATION_KEYS):
    codes_cache: dict[str, Any] = {}  # hits, misses, hit_rate, damaged (entries named, moved aside, encoded again)
    interleave: dict[str, int | None]
    mimi_audio_seconds_encoded: float = 0.0  # work unit: audio Mimi encoded (codes-cache misses only)
    mimi_throughput: dict[str, Any] | None = None  # device, audio seconds, seconds, rate (in preprocess.timings.json)

    def headline(self) -> PreprocessHeadline:
        return PreprocessHeadline(blipped=sum(kind["turns"] for kind in self.blipped_turns.values()),
                                  prefix_ok=self.blip_prefix_match_rate)


# --------------------------------------------------------------------------- train

class TrainHeadline(Headline):
    STAGE = "train"
    loss: float | None
    val_loss: float | None
    tokens_per_s: float | None
    padding: float | None


class TrainDetails(Details[TrainHeadline]):
    """The training that made ``models/final``: totals since step 0, carried over resumes, so a resumed run writes
    the same document as one uninterrupted run (and a forced rerun, byte for byte). What one invocation did (the
    step it resumed from, its tokens/s, seconds, memory) is in ``train.timings.json``.
    ``pipeline.training.trainer.TrainResult`` is this document plus the logged history."""

    STAGE = "train"
    steps: int
    max_steps: int
    final_train_loss: float | None  # mean over the last log interval
    final_val_loss: float | None
    # Readings of one invocation (pipeline.io.INVOCATION_KEYS) live in <stage>.timings.json, not in the cached details
    # file: None when a details file is read alone.
    resumed_from_step: int | None = None
    tokens_per_s: float | None = None  # non-padding tokens, all processes, over this invocation's train steps
    real_tokens: int  # non-padding tokens trained since step 0, all processes
    padded_tokens: int = 0  # positions trained since step 0, padding included (the work unit the batches cost)
    padding_fraction: float | None
    train_seconds: float | None = None
    peak_memory_gib: float | None = None
    peak_memory_kind: str | None = None  # cuda_max_allocated | cpu_peak_rss
    world_size: int
    global_batch_size: int

    def headline(self) -> TrainHeadline:
        return TrainHeadline(loss=self.final_train_loss, val_loss=self.final_val_loss,
                             tokens_per_s=self.tokens_per_s, padding=self.padding_fraction)


# --------------------------------------------------------------------------- eval_classes

class EvalClassesHeadline(Headline):
    STAGE = "eval_classes"
    accuracy: Rate
    tool_match: Rate


class ClassCount(_Document):
    n: int  # rows judged
    correct: int
    skipped: int


class EvalClassesDetails(Details[EvalClassesHeadline]):
    STAGE = "eval_classes"
    per_class: dict[str, Rate]
    per_class_counts: dict[str, ClassCount]
    overall_accuracy: Rate
    n_rows: int
    n_evaluated: int
    n_correct: int
    n_skipped: int
    skipped: list[dict[str, str]] = []
    bad_lines: list[str] = []
    confusion: dict[str, dict[str, int]]
    behaviours: list[str]
    expected_behaviour: dict[str, str]
    judge_reference_accuracy: Rate
    judge_reference_misjudged: list[dict[str, Any]] = []
    mean_seconds_per_row: float | None = None  # in eval_classes.timings.json
    decoder_work: DecoderWorkCount | None = None  # the replies' decoding, all rows together
    unavailable: dict[str, str] = {}
    generation: dict[str, Any] = {}
    model_dir: str = ""
    wall_seconds: float | None = None

    def headline(self) -> EvalClassesHeadline:
        return EvalClassesHeadline(accuracy=self.overall_accuracy, tool_match=self.per_class.get("tool_match"))


# --------------------------------------------------------------------------- eval_narration

class EvalNarrationHeadline(Headline):
    STAGE = "eval_narration"
    faithful: Rate


class EvalNarrationDetails(Details[EvalNarrationHeadline]):
    STAGE = "eval_narration"
    faithful_rate: Rate
    memorized_rate: Rate
    n_evaluated: int
    n_faithful: int
    n_memorized: int
    mean_fact_coverage: Rate
    n_rows: int
    n_skipped: int
    skipped: list[dict[str, str]] = []
    bad_lines: list[str] = []
    training_values: int
    unavailable: dict[str, str] = {}
    generation: dict[str, Any] = {}
    wall_seconds: float | None = None
    decoder_work: DecoderWorkCount | None = None  # the replies' decoding, all rows together

    def headline(self) -> EvalNarrationHeadline:
        return EvalNarrationHeadline(faithful=self.faithful_rate)


# --------------------------------------------------------------------------- eval_blip

class EvalBlipHeadline(Headline):
    STAGE = "eval_blip"
    cb0: Rate
    tpr: Rate
    fpr: Rate
    latency_ms: float | None


class MatchCount(_Document):
    matched: int
    n: int


class BlipShape(_Document):
    n_frames: int
    n_codebooks: int
    cb0_across_frames: list[int]
    frame_rate_hz: float
    copies: list[dict[str, Any]] = []


class EvalBlipDetails(Details[EvalBlipHeadline]):
    STAGE = "eval_blip"
    full_match_rate: Rate
    cb0_match_rate: Rate
    cb0_or_cb3_match_rate: Rate
    match_counts: dict[str, MatchCount]
    per_position: list[list[Rate]]  # codebook x frame
    per_position_n: list[int]
    per_codebook_rate: list[Rate]
    detector_matcher: str
    detector_true_positive_rate: Rate
    false_positive_rate: Rate
    false_positives: int  # negative replies the detector fired on
    negative_match_rates: dict[str, Rate]
    decision_frame_histogram: dict[str, dict[str, dict[str, int]]]  # group -> match|no_match -> frame -> n
    mean_match_decision_ms: float | None
    decision_latency_ms: float | None
    matched_copy_counts: dict[str, int]
    n_tool_match: int
    n_negative: int
    n_scorable_tool_match: int
    n_unscorable: int
    n_undecided_tool_match: int
    n_undecided_negative: int
    unscorable: list[dict[str, Any]]
    blip: BlipShape
    unavailable: dict[str, str] = {}
    negative_classes: list[str]
    source: str
    records_problems: list[str] = []
    cb0_match_rate_judged_ack: Rate = None
    cb0_match_rate_judged_not_ack: Rate = None

    def headline(self) -> EvalBlipHeadline:
        return EvalBlipHeadline(cb0=self.cb0_match_rate, tpr=self.detector_true_positive_rate,
                                fpr=self.false_positive_rate, latency_ms=self.decision_latency_ms)


DETAILS: dict[str, type[Details]] = {cls.STAGE: cls for cls in (
    DatasetDetails, TTSDetails, PreprocessDetails, TrainDetails, EvalClassesDetails, EvalNarrationDetails,
    EvalBlipDetails)}
"""Each stage with metrics, by name (the stages of dvc.yaml that declare ``metrics``)."""

D = TypeVar("D", bound=_Document)


# --------------------------------------------------------------------------- reading and writing

def write_stage_metrics(details: Details, metrics_path: str | os.PathLike | None = None) -> None:
    """``details`` and its headline, atomically, beside each other (default: the stage's catalog paths)."""
    path = Path(metrics_path) if metrics_path is not None else metrics_json(details.STAGE)
    write_metrics(path, details.headline().model_dump(mode="json"), details.model_dump(mode="json"))


def _one_line(path: str | os.PathLike, err: ValidationError) -> str:
    error = err.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{path}: '{where}' {error['msg'][0].lower()}{error['msg'][1:]}" if where else f"{path}: {error['msg']}"


def parse_data(model: type[D], data: Any, path: str | os.PathLike) -> D:
    """``model`` from a decoded JSON document; MetricsError ``PATH: 'key' reason`` when it does not match."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise MetricsError(_one_line(path, err)) from None


def parse_document(model: type[D], text: str | bytes, path: str | os.PathLike) -> D:
    """``model`` from a JSON document's text (see :func:`parse_data`)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise MetricsError(f"{path}: invalid JSON ({err.msg} at line {err.lineno})") from None
    return parse_data(model, data, path)


def read_document(model: type[D], path: str | os.PathLike) -> D:
    """``model`` read from ``path``; MetricsError naming the file when it is missing or does not match."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise MetricsError(f"{path}: not found") from None
    except OSError as err:
        raise MetricsError(f"{path}: unreadable ({err.strerror})") from None
    return parse_document(model, text, path)


def load_document(model: type[D], path: str | os.PathLike) -> tuple[D | None, str | None]:
    """(document, None) or (None, why it is unavailable): for readers that show "unavailable", not fail."""
    try:
        return read_document(model, path), None
    except MetricsError as err:
        return None, str(err)


def details_of(model: type[Details], root: str | os.PathLike = ".") -> tuple[Details | None, str | None]:
    """A stage's details document under workspace ``root`` (see :func:`load_document`)."""
    return load_document(model, Path(root) / details_json(model.STAGE))
