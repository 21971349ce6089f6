"""Stage `eval_blip`: does the final model open its tool acks with the blip?

Reuses the replies ``eval_classes`` generated (``reports/eval/eval_classes.jsonl``
holds every reply's audio codes and stream layout) instead of generating
again: the blip numbers then describe exactly the replies whose class verdicts
the card reports, and the stage costs seconds, not a second GPU pass. (The
card's own validation ran 40 separate greedy generations; with greedy decoding
these are the same replies.)

Scores (``pipeline.blip_emission``): over held-out tool_match replies the
card's table -- full 8-codebook bit-exact, cb0 only, cb0 OR cb3 -- and the
per-position rates (codebook x frame); over non_tool + tool_miss replies the
streaming detector's false-positive rate; for every reply the frame at which
the detector decided and which blip copy it matched; the decision latency
(``decision_latency_ms``: median ms of audio until the detector fired, over the
tool_match replies it matched). Outputs ``reports/metrics/eval_blip.details.json``,
its headline ``reports/metrics/eval_blip.json`` (DVC's metrics: cb0 match rate, detector
TPR and FPR, decision latency), ``reports/plots/blip_positions.png`` (heatmap) and
``reports/eval/eval_blip.jsonl``.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from coordinator.signature import BlipSignature, SignatureError
from pipeline.artifacts import BLIP_CODES_NPY, BLIP_POSITIONS_PNG, BLIP_SIGNATURE_JSON, EVAL_BLIP_JSONL, EVAL_CLASSES_JSONL, metrics_json
from pipeline.blip_emission import POSITIVE_CLASSES, AudioReply, EvalBlipParams, score_blip_emission
from pipeline.jsonl import read_jsonl, write_jsonl
from pipeline.metrics_models import EvalBlipDetails, write_stage_metrics
from pipeline.params import load_stage_params, stage_main
from pipeline.reply import Reply

SECTION = "eval_blip"
METRICS_PATH = metrics_json("eval_blip")


def read_replies(path: Path) -> tuple[list[AudioReply], list[dict], list[str]]:
    """Replies with audio from eval_classes records; (replies, per-row info, problems)."""
    replies: list[AudioReply] = []
    info: list[dict] = []
    records = read_jsonl(path, on_bad="quarantine", missing="not found (run the eval_classes stage)")
    problems = [f"{bad.path}:{bad.line}: unreadable record ({bad.reason})" for bad in records.bad]
    for line in records.lines:
        number, obj = line.number, line.value
        try:
            if obj.get("reply") is None:
                problems.append(f"{path}:{number}: row '{obj.get('id')}' has no reply ({obj.get('skipped')})")
                continue
            reply = Reply.from_json(obj["reply"])
            replies.append(AudioReply(str(obj["id"]), str(obj["class"]), reply.audio_codes, reply.end_of_audio,
                                      reply.turn_ended))
            info.append({"id": obj["id"], "behaviour": obj.get("behaviour"), "correct": obj.get("correct"),
                         "text": reply.text, "audio_frames_before_text_end": reply.audio_frames_before_text_end})
        except (KeyError, TypeError, ValueError) as err:
            problems.append(f"{path}:{number}: unreadable record ({err})")
    return replies, info, problems


def plot_positions(per_position: list[list[float | None]], n_per_frame: list[int], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.io import atomic_path

    data = np.array([[np.nan if v is None else v for v in row] for row in per_position], dtype=float)
    n_cb, n_f = data.shape
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * n_f + 3), 4.5))
    cmap = plt.get_cmap("viridis").copy()
    cmap.set_bad("lightgray")
    image = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=0, vmax=1, aspect="auto")
    for k in range(n_cb):
        for i in range(n_f):
            v = data[k, i]
            ax.text(i, k, "n/a" if np.isnan(v) else f"{v:.0%}", ha="center", va="center",
                    color="black" if np.isnan(v) or v > 0.5 else "white", fontsize=9)
    ax.set_xticks(range(n_f), [f"frame {i}\n(n={n_per_frame[i]})" for i in range(n_f)])
    ax.set_yticks(range(n_cb), [f"cb{k}" for k in range(n_cb)])
    ax.set_xlabel("blip frame (80 ms each)")
    ax.set_ylabel("Mimi codebook")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="match rate")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def run(params: EvalBlipParams, records_in: Path = EVAL_CLASSES_JSONL, codes_npy: Path = BLIP_CODES_NPY,
        signature_json: Path = BLIP_SIGNATURE_JSON, metrics_path: Path = METRICS_PATH, plot_path: Path = BLIP_POSITIONS_PNG,
        records_out: Path = EVAL_BLIP_JSONL) -> dict[str, Any]:
    signature = BlipSignature.load(codes_npy, signature_json)
    replies, info, problems = read_replies(records_in)
    report = score_blip_emission(signature, replies, positive_classes=POSITIVE_CLASSES,
                                 negative_classes=params.negative_classes)
    metrics = dict(report.metrics)
    metrics["negative_classes"] = list(params.negative_classes)
    metrics["source"] = str(records_in)
    metrics["records_problems"] = problems
    by_id = {row["id"]: row for row in info}
    rows_out = []
    for row in report.rows:
        record = row.to_json()
        record.update({k: v for k, v in by_id.get(row.row_id, {}).items() if k != "id"})
        rows_out.append(record)
    # do blip misses coincide with class failures? (the card: the blip acts as a commitment cue)
    pos = [r for r in rows_out if r["class"] in POSITIVE_CLASSES and r["matches"]["cb0"] is not None]
    for label, group in (("judged_ack", [r for r in pos if r.get("behaviour") == "ack"]),
                         ("judged_not_ack", [r for r in pos if r.get("behaviour") != "ack"])):
        metrics[f"cb0_match_rate_{label}"] = (sum(bool(r["matches"]["cb0"]) for r in group) / len(group)) if group else None
    write_jsonl(records_out, rows_out)
    write_stage_metrics(EvalBlipDetails.of(metrics), metrics_path)
    cb0 = metrics.get("cb0_match_rate")
    plot_positions(report.per_position, metrics["per_position_n"], plot_path,
                   f"Blip codes reproduced at each position (held-out tool_match, n={metrics['n_tool_match']})\n"
                   f"cb0 match {('n/a' if cb0 is None else f'{cb0:.0%}')}, target cb0 = {metrics['blip']['cb0_across_frames']}")
    return metrics


def work() -> int:
    metrics = run(load_stage_params(EvalBlipParams))

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1%}"

    def ms(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.0f} ms"

    print(f"{SECTION}: full {pct(metrics['full_match_rate'])}, cb0 {pct(metrics['cb0_match_rate'])}, "
          f"cb0|cb3 {pct(metrics['cb0_or_cb3_match_rate'])} over {metrics['n_scorable_tool_match']} tool_match; "
          f"detector FPR {pct(metrics['false_positive_rate'])} over {metrics['n_negative']} negatives, "
          f"latency {ms(metrics['decision_latency_ms'])} (copies matched {metrics['matched_copy_counts']})")
    for key, why in metrics["unavailable"].items():
        print(f"{SECTION}: {key} unavailable: {why}")
    return 0


def main() -> int:
    return stage_main(SECTION, work, expected=(SignatureError,))


if __name__ == "__main__":
    sys.exit(main())
