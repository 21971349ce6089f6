"""Stage `eval_narration`: novel facts -> faithful % and memorized %.

Each novel-facts row (tool_result_speak, fact values never seen in training)
replays the two-turn flow through ``pipeline.generation`` and its turn-2
narration is scored by ``pipeline.narration.score_narration``:

- **faithful**: the narration states every injected fact value;
- **memorized**: it states, verbatim, a fact value of a training row that is
  not part of this row's facts or request ("values seen in training instead").

The two are independent. Outputs ``reports/metrics/eval_narration.details.json``
({faithful_rate, memorized_rate, n_evaluated, ...}), its headline ``reports/metrics/eval_narration.json``
(DVC's metrics) and ``reports/eval/eval_narration.jsonl`` (every row's narration and score). A rate over zero rows is null with a reason.
A row without user audio, or past a prompt bound (``pipeline.inference.bound_prompts``), is
skipped, listed and counted (``skipped``, ``n_skipped``, ``max_skipped_fraction``).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pipeline.artifacts import EVAL_NARRATION_JSONL, metrics_json
from pipeline.generation import generate_reply, generate_replies
from pipeline.inference import InferenceRunParams, bound_prompts, load_model
from pipeline.jsonl import write_jsonl
from pipeline.metrics_models import EvalNarrationDetails, write_stage_metrics
from pipeline.narration import NarrationScore, TrainingValues, score_narration
from pipeline.params import load_stage_params, stage_main
from pipeline.records import DatasetRow, read_rows
from pipeline.reply import Reply
from pipeline.work_units import total
from pipeline.user_audio import ManifestAudio, check_skipped

SECTION = "eval_narration"
METRICS_PATH = metrics_json("eval_narration")


@dataclass(frozen=True, kw_only=True)
class EvalNarrationParams(InferenceRunParams):
    """The shared inference-run keys plus the training rows whose fact values count as memorized."""

    SECTION = "eval_narration"
    train_rows: Path


@dataclass
class NarrationResult:
    row: DatasetRow
    reply: Reply | None
    score: NarrationScore | None
    skipped: str | None = None

    def to_json(self) -> dict:
        return {
            "id": self.row.id,
            "user": self.row.user,
            "facts": self.row.facts,
            "reference_reply": self.row.assistant,
            "skipped": self.skipped,
            "text": self.reply.text if self.reply else None,
            "turn1_text": self.reply.turn1.text if self.reply and self.reply.turn1 else None,
            "n_audio_frames": self.reply.n_audio_frames if self.reply else None,
            "finish_reason": self.reply.finish_reason if self.reply else None,
            **({"score": self.score.to_json()} if self.score else {"score": None}),
        }


def training_values(train_rows: list[DatasetRow]) -> TrainingValues:
    return TrainingValues.from_facts(row.facts for row in train_rows if row.facts is not None)


def context_of(row: DatasetRow) -> list[str]:
    """What the model was told besides the facts: the request and the tool descriptions."""
    return [row.user, *(f"{t.name} {t.description}" for t in row.tools)]


def score_rows(rows: list[DatasetRow], replies: dict[str, Reply | str], training: TrainingValues) -> list[NarrationResult]:
    results = []
    for row in rows:
        reply = replies.get(row.id, "not generated")
        if isinstance(reply, str):
            results.append(NarrationResult(row, None, None, reply))
            continue
        results.append(NarrationResult(row, reply, score_narration(reply.text, row.facts, training, context_of(row))))
    return results


def summarize(results: list[NarrationResult], n_rows_read: int, bad: list[str], training: TrainingValues) -> dict[str, Any]:
    scored = [r for r in results if r.score is not None]
    n = len(scored)
    faithful = sum(r.score.faithful for r in scored)
    memorized = sum(r.score.memorized for r in scored)
    coverages = [r.score.coverage for r in scored if r.score.coverage is not None]
    unavailable: dict[str, str] = {}
    if not n:
        reason = "no novel-facts row" if not results else "every novel-facts row was skipped"
        unavailable.update({"faithful_rate": reason, "memorized_rate": reason})
    elif not len(training):
        unavailable["memorized_rate"] = "no fact value found in the training rows"
    return {
        "faithful_rate": faithful / n if n else None,
        "memorized_rate": (memorized / n if n else None) if len(training) else None,
        "n_evaluated": n,
        "n_faithful": faithful,
        "n_memorized": memorized,
        "mean_fact_coverage": sum(coverages) / len(coverages) if coverages else None,
        "n_rows": n_rows_read,
        "n_skipped": len(results) - n,
        "skipped": [{"id": r.row.id, "reason": r.skipped} for r in results if r.skipped is not None],
        "bad_lines": bad,
        "training_values": len(training),
        "unavailable": unavailable,
    }


def run(params: EvalNarrationParams, metrics_path: Path = METRICS_PATH, records_path: Path = EVAL_NARRATION_JSONL,
        lfm=None, audio_source: ManifestAudio | None = None,
        log: Callable[[str], None] = print) -> dict[str, Any]:
    read = read_rows(params.rows)
    bad = [str(b) for b in read.bad]
    rows = read.rows[: params.max_rows] if params.max_rows else read.rows
    not_narration = [r for r in rows if r.row_class != "tool_result_speak"]
    bad += [f"{params.rows}: row '{r.id}' is {r.row_class}, not tool_result_speak" for r in not_narration]
    rows = [r for r in rows if r.row_class == "tool_result_speak"]
    train = read_rows(params.train_rows)
    training = training_values(train.rows)
    source = audio_source or ManifestAudio(params.tts_manifest, params.tts_cache_dir)
    audio = source.audio_for_rows(rows)
    check_skipped(audio, len(bad), len(rows), params.max_skipped_fraction)
    if lfm is None:
        lfm = load_model(params.model_dir, params.device, params.dtype)
    audio = bound_prompts(lfm, rows, audio, params)  # a prompt past its bound: skipped as a row without audio
    check_skipped(audio, len(bad), len(rows), params.max_skipped_fraction)
    generation = params.generation
    started = time.perf_counter()
    replies: dict[str, Reply | str] = {}
    batched: dict[str, Reply] = {}
    if params.batch_size > 1:  # every reply decoded up front, batch_size rows at a time
        requests = [(row, audio[row.id]) for row in rows if not isinstance(audio[row.id], str)]
        batched = {row.id: reply for (row, _), reply in
                   zip(requests, generate_replies(lfm, requests, generation, params.batch_size))}  # type: ignore[arg-type]
    for n, row in enumerate(rows, start=1):
        wave = audio[row.id]
        if isinstance(wave, str):
            replies[row.id] = wave
            log(f"[{n}/{len(rows)}] {row.id}: skipped, {wave}")
            continue
        reply = batched[row.id] if row.id in batched else generate_reply(lfm, row, wave, generation)
        replies[row.id] = reply
        log(f"[{n}/{len(rows)}] {row.id}: ({reply.seconds:.1f}s) {reply.text[:70]!r}")
    results = score_rows(rows, replies, training)
    metrics = summarize(results, read.lines_read, bad, training)
    metrics["generation"] = generation.to_json()
    metrics["decoder_work"] = total(r.total_work for r in replies.values() if isinstance(r, Reply)).to_json()
    metrics["wall_seconds"] = round(time.perf_counter() - started, 2)
    write_jsonl(records_path, (r.to_json() for r in results))
    write_stage_metrics(EvalNarrationDetails.of(metrics), metrics_path)
    return metrics


def work() -> int:
    metrics = run(load_stage_params(EvalNarrationParams))

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1%}"

    print(f"{SECTION}: {pct(metrics['faithful_rate'])} faithful / {pct(metrics['memorized_rate'])} memorized "
          f"over {metrics['n_evaluated']} novel facts ({metrics['n_skipped']} skipped)")
    return 0


def main() -> int:
    return stage_main(SECTION, work)


if __name__ == "__main__":
    sys.exit(main())
