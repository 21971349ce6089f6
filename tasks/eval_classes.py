"""Stage `eval_classes`: the final model on the held-out rows, judged per class.

Each held-out row goes through the one inference path (``pipeline.generation``:
the row's system prompt, the user's synthesised speech, ``generate_interleaved``;
tool_result_speak rows replay turn 1, then turn 2 with the facts block). The
rule-based judge (``pipeline.judge``, rules in ``docs/evaluation.md``) gives
each reply a behaviour -- ack, refusal, direct, narration, other -- and the row
is correct when that is what its class expects. Outputs:

- ``reports/metrics/eval_classes.details.json``: ``per_class`` {class: accuracy},
  ``overall_accuracy``, ``n_rows``, counts, the confusion counts, and the
  judge's accuracy on the rows' own reference replies (a check of the judge);
- ``reports/metrics/eval_classes.json`` (DVC's metrics): overall and
  tool_match accuracy;
- ``reports/plots/confusion_matrix.png``: expected class x judged behaviour;
- ``reports/eval/eval_classes.jsonl``: every row's text, audio codes, stream
  layout and verdict (``eval_blip`` and ``report`` read it).

A row whose user audio is missing (or that tts skipped), or whose prompt is past
``max_prompt_tokens`` or the model's context (``pipeline.inference.bound_prompts``),
is not generated: it is listed with its reason and counted (``n_skipped``); past
``max_skipped_fraction`` the stage fails before generating anything.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from pipeline.artifacts import CONFUSION_PNG, EVAL_CLASSES_JSONL, metrics_json
from pipeline.generation import generate_reply, generate_replies
from pipeline.inference import InferenceRunParams, bound_prompts, load_model
from pipeline.jsonl import write_jsonl
from pipeline.judge import BEHAVIOURS, EXPECTED, Verdict, judge
from pipeline.metrics_models import EvalClassesDetails, write_stage_metrics
from pipeline.params import field, load_stage_params, stage_main
from pipeline.records import CLASSES, DatasetRow, read_rows, select_rows
from pipeline.reply import Reply
from pipeline.user_audio import ManifestAudio, UserAudio, check_skipped
from pipeline.work_units import total

SECTION = "eval_classes"
METRICS_PATH = metrics_json("eval_classes")


@dataclass(frozen=True, kw_only=True)
class EvalClassesParams(InferenceRunParams):
    """The shared inference-run keys plus the judge's narration coverage threshold."""

    SECTION = "eval_classes"
    narration_min_coverage: float = field(1.0, lo=0, hi=1, lo_open=True)


# --------------------------------------------------------------------------- per row

@dataclass
class RowResult:
    row: DatasetRow
    reply: Reply | None
    verdict: Verdict | None
    reference: Verdict  # the judge on the row's own reference reply
    skipped: str | None = None

    def to_json(self) -> dict:
        row = self.row
        out: dict[str, Any] = {
            "id": row.id,
            "class": row.row_class,
            "user": row.user,
            "tools": list(row.tool_names),
            "reference_reply": row.assistant,
            "tool_call": row.tool_call.to_json() if row.tool_call else None,
            "requested_tool": row.requested_tool,
            "facts": row.facts,
            "expected": EXPECTED[row.row_class],
            "skipped": self.skipped,
            "reference_verdict": {"behaviour": self.reference.behaviour, "correct": self.reference.correct},
        }
        if self.verdict is not None:
            out.update(self.verdict.to_json())
        else:
            out.update({"behaviour": None, "correct": None, "reason": self.skipped})
        out["reply"] = self.reply.to_json() if self.reply is not None else None
        return out


def judge_reply(row: DatasetRow, text: str, narration_min_coverage: float = 1.0) -> Verdict:
    return judge(row.row_class, text, facts=row.facts, tool_name=row.tool_call.name if row.tool_call else None,
                 narration_min_coverage=narration_min_coverage)


def evaluate(
    rows: Iterable[DatasetRow],
    audio: dict[str, UserAudio | str],
    generate: Callable[[DatasetRow, UserAudio], Reply],
    narration_min_coverage: float = 1.0,
    log: Callable[[str], None] = print,
) -> list[RowResult]:
    """Generate and judge every row. ``audio[row.id]`` is the waveform, or a string: why it is missing."""
    rows = list(rows)
    results: list[RowResult] = []
    for n, row in enumerate(rows, start=1):
        reference = judge_reply(row, row.assistant, narration_min_coverage)
        source = audio.get(row.id, "no audio looked up")
        if isinstance(source, str):
            results.append(RowResult(row, None, None, reference, skipped=source))
            log(f"[{n}/{len(rows)}] {row.id} ({row.row_class}): skipped, {source}")
            continue
        reply = generate(row, source)
        verdict = judge_reply(row, reply.text, narration_min_coverage)
        results.append(RowResult(row, reply, verdict, reference))
        mark = "ok" if verdict.correct else "WRONG"
        log(f"[{n}/{len(rows)}] {row.id} ({row.row_class}): {verdict.behaviour} {mark} "
            f"({reply.seconds:.1f}s) {reply.text[:60]!r}")
    return results


# --------------------------------------------------------------------------- metrics

def summarize(results: list[RowResult], n_rows_read: int, bad_lines: list[str] | None = None) -> dict[str, Any]:
    """Per-class and overall accuracy, counts and confusion; None (with a reason) where there is no row."""
    unavailable: dict[str, str] = {}
    per_class: dict[str, float | None] = {}
    counts: dict[str, dict[str, int]] = {}
    confusion: dict[str, dict[str, int]] = {c: {b: 0 for b in BEHAVIOURS} for c in CLASSES}
    for c in CLASSES:
        mine = [r for r in results if r.row.row_class == c]
        judged = [r for r in mine if r.verdict is not None]
        correct = sum(r.verdict.correct for r in judged)
        counts[c] = {"n": len(judged), "correct": correct, "skipped": len(mine) - len(judged)}
        for r in judged:
            confusion[c][r.verdict.behaviour] += 1
        per_class[c] = correct / len(judged) if judged else None
        if not judged:
            unavailable[f"per_class.{c}"] = "no held-out row of this class" if not mine else "every row of this class was skipped"
    judged = [r for r in results if r.verdict is not None]
    n_correct = sum(r.verdict.correct for r in judged)
    overall = n_correct / len(judged) if judged else None
    if overall is None:
        unavailable["overall_accuracy"] = "no row was evaluated"
    ref_correct = sum(r.reference.correct for r in results)
    ref_wrong = [{"id": r.row.id, "class": r.row.row_class, "behaviour": r.reference.behaviour,
                  "reason": r.reference.reason} for r in results if not r.reference.correct]
    seconds = [r.reply.seconds for r in judged]
    return {
        "per_class": per_class,
        "per_class_counts": counts,
        "overall_accuracy": overall,
        "n_rows": n_rows_read,
        "n_evaluated": len(judged),
        "n_correct": n_correct,
        "n_skipped": len(results) - len(judged),
        "skipped": [{"id": r.row.id, "reason": r.skipped} for r in results if r.skipped is not None],
        "bad_lines": list(bad_lines or []),
        "confusion": confusion,
        "behaviours": list(BEHAVIOURS),
        "expected_behaviour": dict(EXPECTED),
        "judge_reference_accuracy": ref_correct / len(results) if results else None,
        "judge_reference_misjudged": ref_wrong,
        "mean_seconds_per_row": sum(seconds) / len(seconds) if seconds else None,
        "unavailable": unavailable,
    }


def plot_confusion(metrics: dict[str, Any], path: Path) -> None:
    """Rows = expected class, columns = judged behaviour; cells show count and row share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from pipeline.io import atomic_path

    classes = list(CLASSES)
    behaviours = list(BEHAVIOURS)
    counts = np.array([[metrics["confusion"][c][b] for b in behaviours] for c in classes], dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i, c in enumerate(classes):
        for j, b in enumerate(behaviours):
            expected = EXPECTED[c] == b
            text = f"{int(counts[i, j])}\n{shares[i, j]:.0%}" if totals[i, 0] else "–"
            ax.text(j, i, text, ha="center", va="center", fontsize=9,
                    color="white" if shares[i, j] > 0.6 else "black", fontweight="bold" if expected else "normal")
            if expected:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="darkgreen", linewidth=2))
    ax.set_xticks(range(len(behaviours)), behaviours)
    ax.set_yticks(range(len(classes)), [f"{c} (n={int(totals[i, 0])})" for i, c in enumerate(classes)])
    ax.set_xlabel("judged behaviour (green box = expected)")
    ax.set_ylabel("expected class")
    overall = metrics.get("overall_accuracy")
    ax.set_title(f"Held-out confusion matrix — overall accuracy "
                 f"{'n/a' if overall is None else f'{overall:.1%}'}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def write_records(results: list[RowResult], path: Path) -> None:
    write_jsonl(path, (r.to_json() for r in results))


# --------------------------------------------------------------------------- stage

def replies_for(lfm, rows: list[DatasetRow], audio: dict[str, UserAudio | str], generation,
                batch_size: int) -> Callable[[DatasetRow, UserAudio], Reply]:
    """``evaluate``'s generator: stock, row by row, at batch_size 1; else every reply decoded up front in batches."""
    if batch_size == 1:
        return lambda row, wave: generate_reply(lfm, row, wave, generation)
    requests = [(row, audio[row.id]) for row in rows if not isinstance(audio.get(row.id, ""), str)]
    replies = generate_replies(lfm, requests, generation, batch_size)  # type: ignore[arg-type]
    by_id = {row.id: reply for (row, _), reply in zip(requests, replies)}
    return lambda row, wave: by_id[row.id]


def run(params: EvalClassesParams, metrics_path: Path = METRICS_PATH, plot_path: Path = CONFUSION_PNG,
        records_path: Path = EVAL_CLASSES_JSONL, lfm=None, audio_source: ManifestAudio | None = None,
        log: Callable[[str], None] = print) -> dict[str, Any]:
    read = read_rows(params.rows)
    bad = [str(b) for b in read.bad]
    rows = select_rows(read.rows, params.max_rows)
    source = audio_source or ManifestAudio(params.tts_manifest, params.tts_cache_dir)
    audio = source.audio_for_rows(rows)
    check_skipped(audio, len(bad), len(rows), params.max_skipped_fraction)
    if lfm is None:
        lfm = load_model(params.model_dir, params.device, params.dtype)
    audio = bound_prompts(lfm, rows, audio, params)  # a prompt past its bound: skipped as a row without audio
    check_skipped(audio, len(bad), len(rows), params.max_skipped_fraction)
    generation = params.generation
    started = time.perf_counter()
    results = evaluate(rows, audio, replies_for(lfm, rows, audio, generation, params.batch_size),
                       params.narration_min_coverage, log)
    metrics = summarize(results, read.lines_read, bad)
    metrics["generation"] = generation.to_json()
    # work units (pipeline.work_units): what the decoder did, whatever the machine's speed
    metrics["decoder_work"] = total(r.reply.total_work for r in results if r.reply is not None).to_json()
    metrics["model_dir"] = str(params.model_dir)
    metrics["wall_seconds"] = round(time.perf_counter() - started, 2)
    write_records(results, records_path)
    write_stage_metrics(EvalClassesDetails.of(metrics), metrics_path)
    plot_confusion(metrics, plot_path)
    return metrics


def work() -> int:
    metrics = run(load_stage_params(EvalClassesParams))
    per_class = ", ".join(f"{c} {'n/a' if v is None else f'{v:.1%}'}" for c, v in metrics["per_class"].items())
    overall = metrics["overall_accuracy"]
    print(f"{SECTION}: overall {'n/a' if overall is None else f'{overall:.1%}'} over {metrics['n_evaluated']} rows "
          f"({per_class}); {metrics['n_skipped']} skipped; judge on references "
          f"{metrics['judge_reference_accuracy']}")
    return 0


def main() -> int:
    return stage_main(SECTION, work)


if __name__ == "__main__":
    sys.exit(main())
