"""Stage `report`: ``reports/model_card.md`` from this run's metrics, in the shape of the v4.1 card.

The file is a Hugging Face model card: a YAML metadata block (base model, license, task, tags and
``model-index`` with this run's eval results) that ``huggingface_hub.ModelCard`` parses, then the
card's body. ``python -m tasks.publish`` uploads it as the README.md of models/final.

Reads the full reports of the evaluation stages (``reports/metrics/<stage>.details.json``;
and of ``train`` when present),
``reports/eval/eval_classes.jsonl`` for the failures it lists as known
limitations, the published numbers in ``configs/baselines.yaml`` and the
recipe from ``params.yaml``. A missing metrics file or key is written as
"unavailable" with the reason, never as 0. When the run's base model is a
random-init fabrication (``report.profile: smoke`` or
``base_models.source: fabricate``) the card says so at the top, plainly.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline import params as stage_params
from pipeline.artifacts import BASELINES_YAML, EVAL_CLASSES_JSONL, METRICS_DIR, MODEL_CARD_MD
from pipeline.card_text import delta, pct, published
from pipeline.io import timings_path, write_text
from pipeline.judge import JUDGE_CASES, measure, read_judge_cases
from pipeline.jsonl import MissingFile, read_jsonl
from pipeline.metrics_models import (Details, EvalBlipDetails, EvalClassesDetails, EvalNarrationDetails, MetricsError,
                                     TrainDetails, load_document, parse_data)
from pipeline.params import StageError, StageParams, parse_params, read_params_file, stage_main
from pipeline.records import CLASSES

SECTION = "report"
PLOTS = {  # embedded with paths relative to the card
    "confusion": "plots/confusion_matrix.png",
    "blip_positions": "plots/blip_positions.png",
}
UNKNOWN = "unknown"


@dataclass(frozen=True)
class ReportParams(StageParams):
    """The ``report`` group of params.yaml."""

    SECTION = "report"

    profile: str = "v4.1"  # "smoke" (or base_models.source: fabricate) puts the random-init warning on top
    n_worst: int = stage_params.field(8, lo=0, hi=100)  # held-out failures listed under known limitations


@dataclass
class Loaded:
    """A document (a typed metrics model, or the eval records), or why it is not there."""

    data: Any = None
    why: str | None = None

    @property
    def ok(self) -> bool:
        return self.data is not None


def load_details(model: type[Details], metrics_dir: Path, with_timings: bool = False) -> Loaded:
    """A stage's details document as its model, or why it is unavailable (missing, not matching). With
    ``with_timings``, the stage's timings file (seconds, tokens/s, peak memory: pipeline.io.INVOCATION_KEYS) merged in
    when there is one (a declared dep of ``report`` only for train)."""
    path = Path(metrics_dir) / f"{model.STAGE}.details.json"
    if not with_timings:
        return Loaded(*load_document(model, path))
    try:
        data = json.loads(path.read_text())
        timings = json.loads(timings_path(Path(metrics_dir) / f"{model.STAGE}.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # no timings (or no details: load_document says which)
        return Loaded(*load_document(model, path))
    if not isinstance(data, dict) or not isinstance(timings, dict):
        return Loaded(*load_document(model, path))
    try:
        return Loaded(parse_data(model, {**data, **timings}, path))
    except MetricsError as err:
        return Loaded(None, str(err))


def load_records(path: Path) -> Loaded:
    """The eval records, or why they are unavailable: a damaged line makes every count from them unsound."""
    try:
        read = read_jsonl(path, on_bad="quarantine", missing="not found")
    except MissingFile as err:
        return Loaded(None, str(err))
    if read.bad:
        return Loaded(None, f"{len(read.bad)} of {read.lines_read} lines unreadable, first {read.bad[0]}")
    return Loaded(read.values)


@dataclass
class ReportInputs:
    classes: Loaded  # .data: EvalClassesDetails
    narration: Loaded  # .data: EvalNarrationDetails
    blip: Loaded  # .data: EvalBlipDetails
    train: Loaded  # .data: TrainDetails
    records: Loaded
    baselines: dict[str, Any]
    params: dict[str, Any]  # the whole params.yaml (the recipe reads several groups)
    report_params: ReportParams = field(default_factory=ReportParams)
    judge_accuracy: str = "unavailable"  # the judge measured on its hand-labelled replies (pipeline.judge)


# --------------------------------------------------------------------------- formatting helpers

def get(tree: Any, dotted: str, default: Any = None) -> Any:
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def at(tree: Any, *keys: str) -> Any:
    """Nested lookup by literal keys (version names such as "v4.1" contain dots)."""
    node = tree
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node




def show(value: Any) -> str:
    if value is None:
        return UNKNOWN
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def is_smoke(params: dict[str, Any], report_params: ReportParams) -> bool:
    return report_params.profile == "smoke" or get(params, "base_models.source") == "fabricate"


def unavailable(loaded: Loaded, key: str) -> str:
    if not loaded.ok:
        return f"unavailable ({loaded.why})"
    why = getattr(loaded.data, "unavailable", {}).get(key)
    return f"unavailable ({why})" if why else "unavailable"


# --------------------------------------------------------------------------- sections

def section_header(inputs: ReportInputs) -> list[str]:
    if inputs.report_params.profile == "learn":
        return section_header_learn(inputs)
    smoke = is_smoke(inputs.params, inputs.report_params)
    base = get(inputs.params, "base_models.lfm_repo", UNKNOWN)
    lines: list[str] = []
    if smoke:
        lines += [
            "> **SMOKE RUN — THESE NUMBERS MEAN NOTHING.** The base model of this run is a tiny *random-init*",
            "> fabrication (`base_models.source: fabricate`), trained for a few CPU steps on a few dozen generated rows.",
            "> Its replies are gibberish; the tables below only show that every stage ran end to end and that the",
            "> card is generated from the metrics. Do not compare them with the published columns.",
            "",
        ]
    title = "LFM2.5-Audio-1.5B — Tool-Aware Fine-Tune (this run)" if not smoke else "Tool-Aware Fine-Tune — smoke run (random-init model)"
    lines = [f"# {title}", ""] + lines
    lines += [
        f"Full fine-tune of {'a random-init tiny LFM2.5-Audio' if smoke else base} with the v4.1 recipe: every tool_match "
        "training row's assistant audio starts with the tool-invocation blip, so a coordinator can detect the blip's "
        "Mimi codewords in the streaming output and dispatch the tool while the acknowledgement is still being spoken.",
        "",
        "Generated by `python -m tasks.report` from `reports/metrics/*.details.json`; published columns from "
        "`configs/baselines.yaml` (model cards v4 and v4.1).",
        "",
    ]
    return lines


def section_classes(inputs: ReportInputs) -> list[str]:
    base = inputs.baselines.get("classes", {})
    ref = inputs.baselines.get("reference", "v4.1")
    versions = inputs.baselines.get("versions", ["v4", "v4.1"])
    m = inputs.classes
    lines = ["## Results vs " + " / ".join(versions), ""]
    if m.ok:
        counts = m.data.per_class_counts
        ns = [counts[c].n if c in counts else None for c in CLASSES]
        per = sorted({n for n in ns if n is not None})
        shape = f"{m.data.n_evaluated} rows" + (f" × {per[0]} per class" if len(per) == 1 else
                                                 f" ({', '.join(f'{c} {n}' for c, n in zip(CLASSES, ns))})")
        lines.append(f"Held-out eval, {shape}" + (f"; {m.data.n_skipped} rows skipped (no user audio)"
                                                  if m.data.n_skipped else "") + ":")
    else:
        lines.append(f"Held-out eval: {unavailable(m, 'overall_accuracy')}.")
    lines += ["", "| Class | " + " | ".join(versions) + f" | this run | Δ vs {ref} |",
              "|---|" + "---|" * len(versions) + "---|---|"]
    for c in (*CLASSES, "overall"):
        rate = (m.data.per_class.get(c) if c != "overall" else m.data.overall_accuracy) if m.ok else None
        key = f"per_class.{c}" if c != "overall" else "overall_accuracy"
        value = pct(rate) if rate is not None else unavailable(m, key)
        if rate is not None and m.ok and c != "overall":
            cc = m.data.per_class_counts[c]
            value += f" ({cc.correct}/{cc.n})"
        elif rate is not None and m.ok:
            value += f" ({m.data.n_correct}/{m.data.n_evaluated})"
        name = "**Overall**" if c == "overall" else c
        cols = [published(at(base, c, v)) for v in versions]
        lines.append(f"| {name} | " + " | ".join(cols) + f" | {value} | {delta(rate, at(base, c, ref))} |")
    lines.append("")
    if m.ok:
        ref_acc = m.data.judge_reference_accuracy
        lines += [
            "Verdicts come from the rule-based judge (`docs/evaluation.md`) on the text channel of replies generated "
            f"greedily (max_new_tokens = {m.data.generation.get('max_new_tokens', UNKNOWN)}) through the real inference "
            "path (row system prompt, synthesised user speech, `generate_interleaved`; tool_result_speak replays turn 1, "
            f"then turn 2 with the facts block). Judge check: it classifies {pct(ref_acc)} of the rows' own reference "
            f"replies correctly, and {inputs.judge_accuracy} (`{JUDGE_CASES}`; its rules were written after seeing "
            "those cases, so on new phrasings expect lower: 79-83 % on two fresh batches).",
            "",
            f"![Confusion matrix: expected class × judged behaviour]({PLOTS['confusion']})",
            "",
        ]
    return lines


def section_narration(inputs: ReportInputs) -> list[str]:
    m = inputs.narration
    base = inputs.baselines.get("narration", {})
    pubs = "; ".join(f"{v}: {published(at(base, v, 'faithful'))} / {published(at(base, v, 'memorized'))}"
                     for v in inputs.baselines.get("versions", ["v4", "v4.1"]) if v in base)
    if not m.ok:
        return ["## Novel-facts narration", "", f"This run: {unavailable(m, 'faithful_rate')} ({pubs}).", ""]
    f_rate, m_rate = m.data.faithful_rate, m.data.memorized_rate
    faithful = pct(f_rate) if f_rate is not None else unavailable(m, "faithful_rate")
    memorized = pct(m_rate) if m_rate is not None else unavailable(m, "memorized_rate")
    return [
        "## Novel-facts narration", "",
        f"Novel-facts narration ({m.data.n_evaluated} out-of-distribution facts, never in training): "
        f"**{faithful} faithful / {memorized} memorized** (published — {pubs}).",
        "",
        "Faithful = the turn-2 narration states every injected fact value; memorized = it states, verbatim, a fact "
        "value seen in training that is not part of this row's facts or request (rules: `docs/evaluation.md`).",
        "",
    ]


def section_blip(inputs: ReportInputs) -> list[str]:
    m = inputs.blip
    base = at(inputs.baselines, "blip", inputs.baselines.get("reference", "v4.1")) or {}
    lines = ["## Blip emission", ""]
    if not m.ok:
        return lines + [f"This run: {unavailable(m, 'cb0_match_rate')}.", ""]
    d: EvalBlipDetails = m.data
    counts = d.match_counts
    n_pub = base.get("n")

    def cell(name: str) -> str:
        rate = getattr(d, f"{name}_match_rate")
        if rate is None or name not in counts:
            return unavailable(m, f"{name}_match_rate")
        return f"{pct(rate)} ({counts[name].matched}/{counts[name].n})"

    def pub(name: str) -> str:
        v = base.get(name)
        return "—" if v is None else f"{v:.1f}%" + (f" ({round(v * n_pub / 100)}/{n_pub})" if n_pub else "")

    fpr = d.false_positive_rate
    tpr = d.detector_true_positive_rate
    negatives = "/".join(d.negative_classes)
    n_decided = d.n_negative - d.n_undecided_negative
    fpr_cell = (f"{pct(fpr)} ({d.false_positives}/{n_decided})" if fpr is not None
                else unavailable(m, "false_positive_rate"))
    lines += [
        f"Over the held-out tool_match replies of `eval_classes` ({d.n_tool_match} rows, "
        f"{d.n_scorable_tool_match} with at least {d.blip.n_frames} audio frames), with the "
        "coordinator's matchers:",
        "",
        "| Matcher | v4.1 (card) | this run |",
        "|---|---|---|",
        f"| Full 8-codebook bit-exact | {pub('full')} | {cell('full')} |",
        f"| cb0-only (semantic codebook) | {pub('cb0')} | {cell('cb0')} |",
        f"| cb0 OR cb3 | {pub('cb0_or_cb3')} | {cell('cb0_or_cb3')} |",
        f"| Streaming detector, `{d.detector_matcher}`: tool acks detected | not reported | "
        f"{pct(tpr) if tpr is not None else unavailable(m, 'detector_true_positive_rate')} |",
        f"| Streaming detector: false positives on {negatives} | not reported | {fpr_cell} |",
        "",
    ]
    per_cb = d.per_codebook_rate
    pub_cb = base.get("per_codebook", {})
    if per_cb:
        shown = ", ".join(f"cb{k} = {pct(v, 0)}" for k, v in enumerate(per_cb))
        pub_line = ", ".join(f"{k} = {v:.0f}%" for k, v in pub_cb.items())
        lines += [f"Per-codebook rates (all blip frames match): {shown} (v4.1 card: {pub_line}).", ""]
    hist = d.decision_frame_histogram
    frame_ms = 1000.0 / d.blip.frame_rate_hz
    rows = []
    for group in ("tool_match", "negative"):
        for state in ("match", "no_match"):
            for frame, count in (get(hist, f"{group}.{state}") or {}).items():
                rows.append(f"| {group} | {state} | {frame} | {(int(frame) + 1) * frame_ms:.0f} ms | {count} |")
    if rows:
        lines += ["When the streaming detector decided (audio frame index; audio time at the end of that frame):", "",
                  "| replies | decision | frame | audio time | count |", "|---|---|---|---|---|", *rows, ""]
    lines += [f"![Per-position match rates, codebook × frame]({PLOTS['blip_positions']})", ""]
    return lines


# --------------------------------------------------------------------------- learn profile and the v4 / v4.1 arms

def section_header_learn(inputs: ReportInputs) -> list[str]:
    """The learn profile's card: a tiny model fitted in-sample, which proves the mechanism and nothing more."""
    p = inputs.params
    rows = get(p, "eval_classes.rows", UNKNOWN)
    return [
        "# Tool-Aware Fine-Tune — learn run (tiny model, in-sample)", "",
        "> **AN IN-SAMPLE FIT OF A TINY MODEL: IT PROVES THE MECHANISM, NOT QUALITY.** The base model is a tiny "
        "*random-init* fabrication (`base_models.source: fabricate`), trained for "
        f"{show(get(p, 'train.max_steps'))} CPU steps until it fits its {show(get(p, 'dataset.train_size'))} generated "
        f"training rows; `eval_classes` then replies to those same rows (`eval_classes.rows: {rows}`), so every "
        "\"held-out\" table below is in-sample.",
        ">",
        "> What it shows: the pipeline teaches the model to open its tool_match acks with the blip's codes and no other "
        "reply (the blip table: cb0 match on tool_match, detector false positives on non_tool/tool_miss), through the "
        "same preprocessing, loss and decoding schedule as a production run. With `preprocess.blip_on: []` (the v4 arm) "
        "the same training must not emit it. What it does not show: how a real model generalises. Do not compare "
        "these numbers with the published columns.",
        "",
    ]


RECIPE = (
    ("Base", ("base_models.lfm_repo",)),
    ("Precision", ("train.mixed_precision",)),
    ("Processes (GPUs)", ("train.num_processes",)),
    ("Batch size per process", ("train.batch_size",)),
    ("Steps", ("train.max_steps",)),
    ("Learning rate", ("train.lr",)),
    ("Warmup steps", ("train.warmup_steps",)),
    ("Cosine floor (× lr)", ("train.min_lr_ratio",)),
    ("AdamW betas / weight decay", ("train.betas", "train.weight_decay")),
    ("Grad clipping (max norm)", ("train.max_grad_norm",)),
    ("Context length", ("train.context_length", "preprocess.max_context_length")),
    ("Train / eval rows", ("dataset.train_size", "dataset.eval_size")),
    ("tool_match oversampling", ("preprocess.tool_match_oversample",)),
    ("Assistant voice", ("tts.assistant_voice",)),
    ("Blip", ("blip.tones_hz", "blip.duration_ms")),
    ("PYTORCH_CUDA_ALLOC_CONF", ("train.cuda_alloc_conf",)),
)


def section_recipe(inputs: ReportInputs) -> list[str]:
    p = inputs.params
    lines = ["## Training recipe", "", "From this run's `params.yaml` (\"unknown\" = key absent):", ""]
    for label, keys in RECIPE:
        if label == "Base" and get(p, "base_models.source") == "fabricate":
            lines.append("- Base: random-init tiny LFM2.5-Audio fabricated offline (`base_models.source: fabricate`)")
            continue
        values = [get(p, k) for k in keys]
        if label == "Train / eval rows":
            text = f"{show(values[0])} train + {show(values[1])} eval"
        elif label == "Blip":
            text = f"tones {show(values[0])} Hz, {show(values[1])} ms"
        elif label == "AdamW betas / weight decay":
            text = f"{show(values[0])} / {show(values[1])}"
        elif label == "Context length":
            text = show(next((v for v in values if v is not None), None))
        else:
            text = show(values[0])
        lines.append(f"- {label}: {text}")
    t = inputs.train
    pub = inputs.baselines.get("val_loss", {})
    pub_text = ", ".join(f"{k}: {v}" for k, v in pub.items())
    if t.ok:
        val, train_loss = t.data.final_val_loss, t.data.final_train_loss
        lines.append(f"- Final val_loss = {show(val if val is None else round(float(val), 4))} "
                     f"(published {pub_text}); final train loss = {show(train_loss if train_loss is None else round(float(train_loss), 4))}")
        for key, label in (("steps", "steps run"), ("tokens_per_s", "tokens/s"), ("peak_memory_gib", "peak memory GiB"),
                           ("train_seconds", "seconds")):
            if getattr(t.data, key) is not None:
                lines.append(f"- Train {label}: {getattr(t.data, key)}")
    else:
        lines.append(f"- Final val_loss: unavailable ({t.why}) (published {pub_text})")
    return lines + [""]


def section_limitations(inputs: ReportInputs, n_worst: int) -> list[str]:
    lines = ["## Known limitations", "", "From this run's failures:", ""]
    recs = inputs.records
    if not recs.ok:
        return lines + [f"- Held-out failures: unavailable ({recs.why}).", ""]
    failed = [r for r in recs.data if r.get("correct") is False]
    skipped = [r for r in recs.data if r.get("correct") is None]
    by_class = {c: [r for r in failed if r.get("class") == c] for c in CLASSES}
    # worst first: rows whose reference reply the judge gets right (a real model failure), then by class order
    ordered = sorted(failed, key=lambda r: (not get(r, "reference_verdict.correct", True), CLASSES.index(r["class"])))
    if not failed:
        lines.append("- No held-out row failed." if recs.data else "- No held-out row was evaluated.")
    else:
        summary = ", ".join(f"{len(v)} {c}" for c, v in by_class.items() if v)
        lines.append(f"- {len(failed)} held-out failures ({summary}). The {min(n_worst, len(failed))} listed first:")
        for r in ordered[:n_worst]:
            text = (get(r, "reply.text") or "").replace("\n", " ").strip()
            text = (text[:90] + "…") if len(text) > 90 else text
            lines.append(f"  - {r['class']}: \"{r.get('user')}\" → {r.get('behaviour')} (\"{text}\") — {r.get('reason')}")
    if skipped:
        lines.append(f"- {len(skipped)} held-out rows were not evaluated (no user audio).")
    m = inputs.classes
    if m.ok and m.data.judge_reference_misjudged:
        n_bad = len(m.data.judge_reference_misjudged)
        lines.append(f"- The judge misclassifies {n_bad} of the rows' own reference replies; its verdicts on those "
                     "rows are doubtful (see `judge_reference_misjudged` in reports/metrics/eval_classes.details.json).")
    b = inputs.blip
    if b.ok:
        c = b.data.match_counts.get("cb0")
        if c is not None and c.n:
            misses = c.n - c.matched
            lines.append(f"- {misses}/{c.n} tool_match replies miss the blip on cb0; the coordinator falls back to "
                         "ack-end dispatch on those.")
        if b.data.n_unscorable:
            lines.append(f"- {b.data.n_unscorable} tool_match replies had fewer audio frames than the blip "
                         "(no frame-by-frame comparison possible).")
        if b.data.false_positive_rate:
            lines.append(f"- The detector fired on {b.data.false_positives} negative replies "
                         "(a tool would be dispatched for a non-tool turn).")
    n = inputs.narration
    if n.ok and n.data.n_evaluated:
        unfaithful = n.data.n_evaluated - n.data.n_faithful
        if unfaithful:
            lines.append(f"- {unfaithful}/{n.data.n_evaluated} novel-facts narrations miss at least one injected value "
                         "(reports/eval/eval_narration.jsonl).")
        if n.data.n_memorized:
            lines.append(f"- {n.data.n_memorized}/{n.data.n_evaluated} novel-facts narrations state training values.")
    return lines + [""]


def section_footer(inputs: ReportInputs) -> list[str]:
    return [
        "## Coordinator demo",
        "",
        "`make demo` (`python -m tasks.demo --workdir <workspace>`) streams tool_match, tool_miss and non_tool turns "
        "(the rows the `demo` params group names) through this model and the coordinator, writes one WAV per turn "
        "and `summary.json` (early, fallback and false dispatches, the mean saving) under `reports/demo/`, and the "
        "timeline `plots/demo_timeline.png` (when the tool's result is ready with the blip vs without it).",
        "",
        "## License",
        "",
        "Inherited from base: LFM Open License v1.0.",
        "",
    ]


def render_card(inputs: ReportInputs) -> str:
    n_worst = inputs.report_params.n_worst
    lines = (section_header(inputs) + section_classes(inputs) + section_narration(inputs) + section_blip(inputs)
             + section_recipe(inputs) + section_limitations(inputs, n_worst) + section_footer(inputs))
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------- Hugging Face metadata
# The card is a Hugging Face model card: a YAML block that `huggingface_hub.ModelCard` parses, then the
# body above. Spec: https://github.com/huggingface/hub-docs/blob/main/modelcard.md. Eval values are in
# percent, rounded as in the body's tables; a metric this run could not compute is left out of
# `model-index` (the Hub wants a number there) and the body says "unavailable".

HUB_LICENSE = "other"  # the LFM Open License is not in the Hub's list of license ids
HUB_LICENSE_NAME = "lfm1.0"  # the id LiquidAI's own cards use
PIPELINE_TAG = "audio-to-audio"
LIBRARY_NAME = "liquid-audio"
TAGS = ("liquid", "lfm2.5", "audio", "speech-to-speech", "tool-use", "liquid-audio")
SMOKE_TAGS = ("smoke-run", "random-init")  # tasks.publish refuses a card carrying "smoke-run"

# (details field, or per_class.<class>; model-index metric type, name shown on the Hub)
CLASS_RESULTS = tuple((f"per_class.{c}", "accuracy", f"{c} accuracy (%)") for c in CLASSES) + (
    ("overall_accuracy", "accuracy", "Overall accuracy (%)"),)
NARRATION_RESULTS = (("faithful_rate", "faithful_rate", "Faithful narrations (%)"),
                     ("memorized_rate", "memorized_rate", "Memorized narrations (%)"))
BLIP_RESULTS = (("full_match_rate", "full_match_rate", "Blip match, full 8-codebook bit-exact (%)"),
                ("cb0_match_rate", "cb0_match_rate", "Blip match, cb0-only (%)"),
                ("cb0_or_cb3_match_rate", "cb0_or_cb3_match_rate", "Blip match, cb0 OR cb3 (%)"),
                ("detector_true_positive_rate", "detector_true_positive_rate", "Detector: tool acks detected (%)"),
                ("false_positive_rate", "false_positive_rate", "Detector: false positives on negatives (%)"))


def hub_value(rate: Any) -> float | None:
    """A rate as the Hub shows it (percent, one decimal, as the body); None for anything not a finite number."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate != rate or abs(rate) == float("inf"):
        return None
    return round(100 * float(rate), 1)


def hub_metrics(loaded: Loaded, keys: tuple[tuple[str, str, str], ...]) -> list[dict[str, Any]]:
    metrics = []
    for key, metric_type, name in keys:
        config = key.split(".", 1)[1] if key.startswith("per_class.") else None
        rate = (loaded.data.per_class.get(config) if config else getattr(loaded.data, key)) if loaded.ok else None
        value = hub_value(rate)
        if value is not None:
            metrics.append({"type": metric_type, "name": name, "value": value, **({"config": config} if config else {})})
    return metrics


def hub_result(task: str, dataset: dict[str, str], metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"task": {"type": PIPELINE_TAG, "name": task}, "dataset": dataset, "metrics": metrics}] if metrics else []


def model_index(inputs: ReportInputs, name: str) -> list[dict[str, Any]]:
    """`model-index`: held-out class accuracies, novel-facts narration, blip emission; [] when none is available."""
    results = (
        hub_result("Tool-aware spoken replies (rule-based judge)",
                   {"type": "tool-aware-heldout", "name": "Held-out tool-aware dialogues", "split": "heldout"},
                   hub_metrics(inputs.classes, CLASS_RESULTS))
        + hub_result("Novel-facts narration",
                     {"type": "tool-aware-novel-facts", "name": "Out-of-distribution facts, never in training",
                      "split": "novel_facts"},
                     hub_metrics(inputs.narration, NARRATION_RESULTS))
        + hub_result("Tool-invocation blip emission",
                     {"type": "tool-aware-heldout", "name": "Held-out tool_match replies", "split": "heldout",
                      "config": "tool_match"},
                     hub_metrics(inputs.blip, BLIP_RESULTS))
    )
    return [{"name": name, "results": results}] if results else []


def card_metadata(inputs: ReportInputs) -> dict[str, Any]:
    """The card's YAML block: base model and its relation, license, task, tags, eval results."""
    base = get(inputs.params, "base_models.lfm_repo")
    smoke = is_smoke(inputs.params, inputs.report_params)
    meta: dict[str, Any] = {}
    if base:
        meta |= {"base_model": base, "base_model_relation": "finetune"}
    meta |= {"license": HUB_LICENSE, "license_name": HUB_LICENSE_NAME}
    if base:  # "inherited from base": the base repo's own license file
        meta["license_link"] = f"https://huggingface.co/{base}/blob/main/LICENSE"
    meta |= {"library_name": LIBRARY_NAME, "pipeline_tag": PIPELINE_TAG, "language": ["en"],
             "tags": list(TAGS + (SMOKE_TAGS if smoke else ()))}
    name = "tool-aware-smoke-run" if smoke else f"{str(base or 'lfm2.5-audio').split('/')[-1]}-tool-aware"
    index = model_index(inputs, name)
    if index:
        meta["model-index"] = index
    return meta


def front_matter(meta: dict[str, Any]) -> str:
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=120) + "---\n\n"


def render_hub_card(inputs: ReportInputs) -> str:
    """What `reports/model_card.md` holds: the metadata block, then the card."""
    return front_matter(card_metadata(inputs)) + render_card(inputs)


# --------------------------------------------------------------------------- stage

def read_inputs(metrics_dir: Path = METRICS_DIR, records: Path = EVAL_CLASSES_JSONL, baselines: Path = BASELINES_YAML,
                params_path: Path = Path("params.yaml")) -> ReportInputs:
    params = read_params_file(params_path)  # the recipe reads several groups; only `report` is this stage's
    report_params = parse_params(ReportParams, params.get(SECTION) or {})
    try:
        base = yaml.safe_load(Path(baselines).read_text()) or {}
    except FileNotFoundError:
        raise MissingFile(f"{baselines}: published baselines not found") from None
    return ReportInputs(
        classes=load_details(EvalClassesDetails, metrics_dir),
        narration=load_details(EvalNarrationDetails, metrics_dir),
        blip=load_details(EvalBlipDetails, metrics_dir),
        train=load_details(TrainDetails, metrics_dir, with_timings=True),
        records=load_records(records),
        baselines=base,
        params=params,
        report_params=report_params,
        judge_accuracy=judge_accuracy(),
    )


def judge_accuracy(cases: Path = JUDGE_CASES) -> str:
    """The card's line on how far to trust the class verdicts: the judge on labelled replies."""
    try:
        return measure(read_judge_cases(cases)).summary()
    except StageError as err:
        return f"unavailable ({err})"


def run(card_path: Path = MODEL_CARD_MD, **kwargs: Any) -> str:
    card = render_hub_card(read_inputs(**kwargs))
    write_text(card_path, card)
    return card


def main() -> int:
    def work() -> int:
        card = run()
        missing = card.count("unavailable (")
        print(f"{SECTION}: wrote {MODEL_CARD_MD} ({len(card.splitlines())} lines, {missing} unavailable values)")
        return 0

    return stage_main(SECTION, work)


if __name__ == "__main__":
    sys.exit(main())
