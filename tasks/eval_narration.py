"""Stage `eval_narration`: novel facts -> faithful % and memorized %.

Each novel-facts row (tool_result_speak, fact values never seen in training)
replays the two-turn flow through ``pipeline.inference`` and its turn-2
narration is scored by ``pipeline.narration.score_narration``:

- **faithful**: the narration states every injected fact value;
- **memorized**: it states, verbatim, a fact value of a training row that is
  not part of this row's facts or request ("values seen in training instead").

The two are independent. Outputs ``reports/metrics/eval_narration.json``
({faithful_rate, memorized_rate, n, ...}) and ``reports/eval/eval_narration.jsonl``
(every row's narration and score). A rate over zero rows is null with a reason.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pipeline.inference import InferenceRunConfig, ManifestAudio, Reply, respond
from pipeline.io import ParamsError, load_params, require, write_json, write_text
from pipeline.narration import NarrationScore, TrainingValues, score_narration
from pipeline.records import DatasetRow, read_rows
from tasks.eval_classes import check_skips, load_model, lookup_audio

SECTION = "eval_narration"
METRICS_PATH = Path("reports/metrics/eval_narration.json")
RECORDS_PATH = Path("reports/eval/eval_narration.jsonl")


@dataclass(frozen=True)
class EvalNarrationConfig:
    """The shared inference-run params plus the training rows whose fact values count as memorized."""

    run: InferenceRunConfig
    train_path: Path

    @classmethod
    def from_params(cls, params: dict[str, Any], section: str = SECTION) -> "EvalNarrationConfig":
        shared = InferenceRunConfig.from_params(params, section)
        return cls(run=shared, train_path=Path(require(params, "train_rows", section, str)))


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
            "seconds": round(self.reply.seconds, 3) if self.reply else None,
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
        "n": n,
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


def run(config: EvalNarrationConfig, metrics_path: Path = METRICS_PATH, records_path: Path = RECORDS_PATH,
        lfm=None, audio_source: ManifestAudio | None = None,
        log: Callable[[str], None] = print) -> dict[str, Any]:
    settings = config.run
    read = read_rows(settings.rows_path)
    bad = [str(b) for b in read.bad]
    rows = read.rows[: settings.max_rows] if settings.max_rows else read.rows
    not_narration = [r for r in rows if r.row_class != "tool_result_speak"]
    bad += [f"{settings.rows_path}: row '{r.id}' is {r.row_class}, not tool_result_speak" for r in not_narration]
    rows = [r for r in rows if r.row_class == "tool_result_speak"]
    train = read_rows(config.train_path)
    training = training_values(train.rows)
    audio = lookup_audio(rows, audio_source or ManifestAudio(settings.manifest_path, settings.tts_cache_dir))
    check_skips(audio, len(bad), len(rows), settings.max_skipped_fraction, SECTION)
    if lfm is None:
        lfm = load_model(settings.model_dir, settings.device, settings.dtype)
    started = time.perf_counter()
    replies: dict[str, Reply | str] = {}
    for n, row in enumerate(rows, start=1):
        source = audio[row.id]
        if isinstance(source, str):
            replies[row.id] = source
            log(f"[{n}/{len(rows)}] {row.id}: skipped, {source}")
            continue
        reply = respond(lfm, row, source, settings.generation)
        replies[row.id] = reply
        log(f"[{n}/{len(rows)}] {row.id}: ({reply.seconds:.1f}s) {reply.text[:70]!r}")
    results = score_rows(rows, replies, training)
    metrics = summarize(results, read.lines_read, bad, training)
    metrics["generation"] = settings.generation.to_json()
    metrics["wall_seconds"] = round(time.perf_counter() - started, 2)
    write_text(records_path, "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in results))
    write_json(metrics_path, metrics)
    return metrics


def main() -> int:
    try:
        metrics = run(EvalNarrationConfig.from_params(load_params(SECTION)))
    except (ParamsError, FileNotFoundError, RuntimeError) as err:
        print(f"{SECTION}: {err}", file=sys.stderr)
        return 1

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1%}"

    print(f"{SECTION}: {pct(metrics['faithful_rate'])} faithful / {pct(metrics['memorized_rate'])} memorized "
          f"over {metrics['n']} novel facts ({metrics['n_skipped']} skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
