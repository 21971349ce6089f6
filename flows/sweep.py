"""`sweep`: blip variants for v4.2, screened on CPU, then run as isolated DVC experiments.

    python -m flows.sweep --sweep flows/sweeps/v4.2-blip.yaml [--workdir .] [--confirm K | --full]

1. Pre-screen each variant on CPU (flows/prescreen.py): reject it when its
   detection signature already opens ordinary assistant audio too often, when
   the preview followed by speech no longer encodes to it, or when a variant that
   changes the blip gives the same signature as the default or an earlier variant
   (it would train on identical codes).
2. The variant equal to the workspace's own params (no override, or overrides
   params.yaml already holds) is not run: when the workspace is up to date
   (`dvc status` clean) its row is the workspace's own full results.
3. Run the other survivors as `dvc exp run --temp -n <name> -S ...` (the workspace
   is untouched), each holding `gpus_per_experiment` slots of the Prefect global
   concurrency limit `gpu` while it runs. With `--confirm K` each runs up to the
   screening tier only (`eval_screen`: the blip's numbers from the opening frames
   of the replies, pipeline/screen.py); the best K by those numbers are then run
   again with the full evaluation (every stage but the screen). `--full`: every
   variant fully evaluated, no screen.
4. Rank them with the v4 and v4.1 baselines of the model card: reports/sweep/
   leaderboard.{csv,md,png} (TPR, FPR and decision latency of the blip detector
   beside accuracy, which rows are screened and which fully evaluated, each
   experiment's decoder items beside its wall time), reports/sweep/cost.json
   (decoder items spent, what every variant fully evaluated would have cost, the
   experiments that retrained), the `sweep-leaderboard` table artifact and the
   `sweep-leaderboard-plot` image artifact.
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.dvc_graph import (RAN, _repo, line_logger, load_stages, one_line, read_json_at, remove_experiment,
                             run_experiment, stage_outcomes)
from flows.embedded import embedded_prefect, prefect_cli
from flows.gpu_stage import LocalSlots, gpu_slots, local_gpu_count
from flows.prescreen import (PrescreenResult, apply_overrides, changes_blip, flag_twins, load_reference_audio,
                             prescreen_variant, variant_signature)
from flows.publish import markdown_table, publish_table
from flows.remote import run_remote_experiment
from pipeline.artifacts import BASELINES_YAML, EVAL_SCREEN_DETAILS_JSON, LEADERBOARD, SWEEP_COST_JSON, details_json, metrics_json
from pipeline.metrics_models import (EvalBlipHeadline, EvalClassesHeadline, Headline, MetricsError, load_document,
                                     parse_data)

COST = SWEEP_COST_JSON
COLUMNS = ["rank", "name", "kind", "evaluation", "overall_accuracy", "tool_match_accuracy", "cb0_match_rate",
           "detector_true_positive_rate", "false_positive_rate", "decision_latency_ms",
           "prescreen_false_trigger_rate", "decoder_items", "experiment_s", "overrides", "note"]

# The screening tier's stage and document (tasks/eval_screen.py); the evaluation stages whose decoding counts.
SCREEN_STAGE = "eval_screen"
SCREEN_DETAILS = str(EVAL_SCREEN_DETAILS_JSON)
FULL_DETAILS = {stage: str(details_json(stage)) for stage in ("eval_classes", "eval_narration")}  # by the stage that writes it
# `evaluation` of a row: which numbers it shows
SCREENED, FULL, WORKSPACE = "screen", "full", "full (workspace)"


def baseline_rows(workdir: str) -> list[dict]:
    """Leaderboard rows of the published versions (v4, v4.1), as fractions; what a card lacks is None."""
    path = Path(workdir) / BASELINES_YAML
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: baselines file not found") from None

    def fraction(*keys):
        node = doc
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        return None if node is None else node / 100

    return [{"name": v, "kind": "baseline", "evaluation": "published", "overrides": "", "note": f"published ({BASELINES_YAML})",
             "overall_accuracy": fraction("classes", "overall", v),
             "tool_match_accuracy": fraction("classes", "tool_match", v),
             "cb0_match_rate": fraction("blip", v, "cb0"), "false_positive_rate": None,
             "detector_true_positive_rate": None, "decision_latency_ms": None}
            for v in doc.get("versions", [])]


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class SweepPlan:
    variants: tuple[Variant, ...]
    max_false_trigger_rate: float = 0.0
    gpus_per_experiment: int = 2  # an experiment trains on both GPUs


def load_sweep(path: str | Path) -> SweepPlan:
    """Read a sweep file; errors name the file and the variant."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: sweep file not found") from None
    entries = doc.get("variants")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: 'variants' must be a non-empty list")
    variants, seen = [], set()
    for i, entry in enumerate(entries):
        where = f"{path}: variants[{i}]"
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ValueError(f"{where}: 'name' must be letters, digits, '.', '_' or '-', got {name!r}")
        if name in seen:
            raise ValueError(f"{where}: duplicate name '{name}'")
        overrides = entry.get("overrides", [])
        if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
            raise ValueError(f"{where} ({name}): 'overrides' must be a list of 'key=value' strings")
        seen.add(name)
        variants.append(Variant(name, tuple(overrides)))
    return SweepPlan(tuple(variants), float(doc.get("max_false_trigger_rate", 0.0)),
                     int(doc.get("gpus_per_experiment", 2)))


@task(task_run_name="prescreen-{variant.name}", cache_policy=NO_CACHE, persist_result=False)
def prescreen(workdir: str, variant: Variant, speech: list, max_rate: float) -> PrescreenResult:
    logger = get_run_logger()
    try:
        result = prescreen_variant(workdir, variant.overrides, speech, max_false_trigger_rate=max_rate)
    except (ValueError, TypeError) as err:  # the variant's params are invalid: reject it, keep sweeping
        result = PrescreenResult(None, False, f"invalid variant: {err}")
    if result.passed:
        logger.info("%s passes: false-trigger rate %s, signature %s", variant.name, result.false_trigger_rate,
                    list(result.signature))
    else:
        logger.warning("%s rejected: %s", variant.name, result.reason)
    return result


def reject_twins(screened: dict[Variant, PrescreenResult], default: tuple[int, ...] | None
                 ) -> dict[Variant, PrescreenResult]:
    """Screen results with a blip-changing variant whose signature repeats another's rejected, naming the twin."""
    flagged = flag_twins([(v.name, v.overrides, r) for v, r in screened.items()], default)
    logger = get_run_logger()
    for variant, result in screened.items():
        if flagged[variant.name] is not result:
            logger.warning("%s rejected: %s", variant.name, flagged[variant.name].reason)
    return {v: flagged[v.name] for v in screened}


# A `gpu-experiment` deployment (`python -m flows.pool deploy --own-clone` makes `gpu-experiment/remote`):
# set, each experiment runs on a GPU worker in its own clone; unset, in this process.
EXPERIMENT_DEPLOYMENT_ENV = "TOOLAWARE_EXPERIMENT_DEPLOYMENT"


def experiment_targets(workdir: str, evaluation: str) -> list[str]:
    """What an experiment runs: up to the screen (SCREENED), or every stage but the screen (FULL; [] = all)."""
    names = [stage.name for stage in load_stages(workdir)]
    if evaluation == SCREENED:
        if SCREEN_STAGE not in names:
            raise ValueError(f"{Path(workdir) / 'dvc.yaml'}: no stage '{SCREEN_STAGE}' to screen with (use --full)")
        return [SCREEN_STAGE]
    return [n for n in names if n != SCREEN_STAGE] if SCREEN_STAGE in names else []


@task(task_run_name="exp-{variant.name}-{evaluation}", cache_policy=NO_CACHE, persist_result=False)
def experiment(workdir: str, variant: Variant, gpus: int, local_slots: LocalSlots, evaluation: str = FULL) -> dict:
    """Run one variant as a DVC experiment, here or (see EXPERIMENT_DEPLOYMENT_ENV) on a GPU worker's
    own clone, pulled back with `dvc exp pull`; return its leaderboard metrics, its work and wall time.
    `evaluation`: SCREENED runs up to the screening tier, FULL the full evaluation.
    `local_slots` stand in for the server's `gpu` limit where it has none."""
    logger = get_run_logger()
    log = line_logger(logger)
    lines: list[str] = []

    def on_line(line: str) -> None:
        lines.append(line)
        log(line)

    targets = experiment_targets(workdir, evaluation)
    if deployment := os.environ.get(EXPERIMENT_DEPLOYMENT_ENV):
        if evaluation == SCREENED:
            raise ValueError(f"the screening tier runs experiments here only: unset {EXPERIMENT_DEPLOYMENT_ENV} "
                             "or sweep with --full")
        started = time.perf_counter()
        rev = run_remote_experiment(workdir, variant.name, variant.overrides, gpus, deployment, logger)
        ran = None  # not known here: every evaluation found is counted
    else:
        with gpu_slots(gpus, local=local_slots):
            started = time.perf_counter()  # waiting for GPU slots is not the experiment's time
            if remove_experiment(workdir, variant.name):
                logger.info("replaced the earlier experiment '%s' of this commit", variant.name)
            rev = run_experiment(workdir, variant.name, variant.overrides, on_line=on_line, targets=targets)
        ran = [stage for stage, outcome in stage_outcomes(lines).items() if outcome == RAN]
    seconds = round(time.perf_counter() - started, 1)
    metrics = experiment_metrics(workdir, rev, evaluation, ran)
    logger.info("experiment '%s' (%s) took %.1f s and %s decoder items; stages run: %s", variant.name, evaluation,
                seconds, metrics["decoder_items"], ", ".join(ran) if ran is not None else "unknown")
    return {**metrics, "experiment_s": seconds}


def decoder_items(document: dict | None) -> int | None:
    """The decoder items an evaluation document records (pipeline.work_units); None if it has none."""
    work = (document or {}).get("decoder_work")
    return int(work["decoder_items"]) if isinstance(work, dict) and "decoder_items" in work else None


def blip_numbers(document: dict) -> dict:
    """The leaderboard's blip columns from an eval_blip-shaped details document (eval_blip's or the screen's)."""
    return {"cb0_match_rate": document.get("cb0_match_rate"),
            "detector_true_positive_rate": document.get("detector_true_positive_rate"),
            "false_positive_rate": document.get("false_positive_rate"),
            "decision_latency_ms": document.get("decision_latency_ms")}


def producers(workdir: str) -> dict[str, str]:
    """Which stage of `workdir`'s dvc.yaml writes each output path."""
    stages = (yaml.safe_load((Path(workdir) / "dvc.yaml").read_text()) or {}).get("stages", {})
    return {(entry if isinstance(entry, str) else next(iter(entry))): name
            for name, spec in stages.items() for key in ("outs", "metrics", "plots")
            for entry in (spec or {}).get(key, []) or []}


def work_row(workdir: str, evaluation: str, documents: dict[str, dict | None], ran: list[str] | None) -> dict:
    """Cost columns: decoder items of the evaluations whose stage ran (one restored from DVC's cache cost
    nothing), those a full evaluation took (None when it did not run), and whether the model was retrained.
    `documents`: by path."""
    made_by = producers(workdir)
    items = {path: decoder_items(doc) for path, doc in documents.items()}
    spent = sum(n or 0 for path, n in items.items() if ran is None or made_by.get(path) in ran)
    full = [items.get(path) for path in FULL_DETAILS.values()]
    return {"evaluation": evaluation, "decoder_items": spent,
            "decoder_items_full": sum(full) if evaluation != SCREENED and None not in full else None,
            "ran": ran, "retrained": None if ran is None else "train" in ran}


def experiment_metrics(workdir: str, rev: str, evaluation: str = FULL, ran: list[str] | None = None) -> dict:
    """The leaderboard's numbers at the experiment's commit: the screen's document (SCREENED), or the eval
    stages' headline metrics, which git holds (FULL); and what the evaluations it ran cost."""
    if evaluation == SCREENED:  # the other eval stages did not run here: their files at `rev` are the baseline's
        screen, why = read_json_at(workdir, SCREEN_DETAILS, rev)
        return {"overall_accuracy": None, "tool_match_accuracy": None, **blip_numbers(screen or {}),
                "note": "; ".join(filter(None, [f"exp {rev[:7]}", why])),
                **work_row(workdir, SCREENED, {SCREEN_DETAILS: screen}, ran)}
    classes, why_classes = headline_at(workdir, EvalClassesHeadline, rev)
    blip, why_blip = headline_at(workdir, EvalBlipHeadline, rev)
    details = {path: read_json_at(workdir, path, rev)[0] for path in FULL_DETAILS.values()}
    return {
        "overall_accuracy": classes.accuracy if classes else None,
        "tool_match_accuracy": classes.tool_match if classes else None,
        "cb0_match_rate": blip.cb0 if blip else None,
        "detector_true_positive_rate": blip.tpr if blip else None,
        "false_positive_rate": blip.fpr if blip else None,
        "decision_latency_ms": blip.latency_ms if blip else None,
        "note": "; ".join(filter(None, [f"exp {rev[:7]}", why_classes, why_blip])),
        **work_row(workdir, FULL, details, ran),
    }


def headline_at(workdir: str, model: type[Headline], rev: str) -> tuple[Headline | None, str | None]:
    """A stage's headline as git holds it at ``rev`` (model, None), or (None, why it is unavailable)."""
    path = str(metrics_json(model.STAGE))
    data, why = read_json_at(workdir, path, rev)
    if data is None:
        return None, why
    try:
        return parse_data(model, data, f"{path}@{rev[:7]}"), None
    except MetricsError as err:
        return None, str(err)


def is_workspace_params(workdir: str, overrides: tuple[str, ...]) -> bool:
    """True when the overrides (DVC's -S syntax, applied by DVC's own parser) leave params.yaml as it is."""
    params = yaml.safe_load((Path(workdir) / "params.yaml").read_text()) or {}
    try:
        return apply_overrides(params, overrides) == params
    except ValueError:
        return False


def workspace_row(workdir: str) -> dict | None:
    """The workspace's own full results as a row, when `dvc status` says every stage is up to date; else None."""
    from pipeline.io import read_json

    with _repo(workdir) as repo:
        if repo.status():
            return None
    root = Path(workdir)

    def load(path: str) -> dict:
        try:
            data = read_json(root / path)
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    classes = load_document(EvalClassesHeadline, root / metrics_json("eval_classes"))[0]
    blip = load_document(EvalBlipHeadline, root / metrics_json("eval_blip"))[0]
    return {"overall_accuracy": classes.accuracy if classes else None,
            "tool_match_accuracy": classes.tool_match if classes else None,
            "cb0_match_rate": blip.cb0 if blip else None, "detector_true_positive_rate": blip.tpr if blip else None,
            "false_positive_rate": blip.fpr if blip else None, "decision_latency_ms": blip.latency_ms if blip else None,
            "note": "the workspace's results (its params; dvc status clean): not rerun", "experiment_s": 0.0,
            **work_row(workdir, WORKSPACE, {path: load(path) for path in FULL_DETAILS.values()}, [])}


def rank_key(row: dict) -> tuple:
    """The blip's numbers, which every row has, screened or fully evaluated (and equal for both on the same
    model, pipeline/screen.py), so the screen orders variants exactly as the full evaluation would: cb0 match
    rate and TPR (higher is better), false-positive rate and decision latency (lower is better). Unavailable
    numbers sort last; ties keep the sweep file's order (accuracy, known for fully evaluated rows only, is
    shown beside but would rank a screened row against a confirmed one on a number only one has)."""
    def high(v):
        return (v is None, -(v or 0.0))

    def low(v):
        return (v is None, v or 0.0)

    return (*high(row.get("cb0_match_rate")), *low(row.get("false_positive_rate")),
            *high(row.get("detector_true_positive_rate")), *low(row.get("decision_latency_ms")))


def rank(rows: list[dict]) -> list[dict]:
    """Baselines and finished experiments by ``rank_key``; rejected and failed variants follow, unranked."""
    ranked = sorted((r for r in rows if r["kind"] in ("baseline", "experiment")), key=rank_key)
    others = [r for r in rows if r["kind"] not in ("baseline", "experiment")]
    for i, row in enumerate(ranked, start=1):
        row["rank"] = i
    for row in others:
        row["rank"] = "-"
    return ranked + others


def displayed(rows: list[dict]) -> list[dict]:
    """Rows as people read them: floats to 4 significant digits (93.3 / 100 is 0.9329999999999999, shown 0.933)."""
    return [{k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in row.items()} for row in rows]


def write_leaderboard(workdir: str, rows: list[dict]) -> None:
    from pipeline.io import write_text

    base = Path(workdir) / LEADERBOARD
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(displayed(rows))  # unavailable numbers are empty cells
    write_text(base.with_suffix(".csv"), buffer.getvalue())
    legend = ("`evaluation`: `screen` = the screening tier only (eval_screen: the blip's numbers from the replies' "
              "opening frames; no accuracy), `full` = fully evaluated (confirmed), `full (workspace)` = the "
              "workspace's own results, not rerun. `decoder_items`: what the experiment's evaluations decoded "
              "(0 when restored from DVC's cache), beside `experiment_s`, its wall time.\n\n")
    write_text(base.with_suffix(".md"), "# Blip sweep leaderboard\n\n" + legend + markdown_table(rows, COLUMNS) + "\n"
               + f"\n![TPR vs FPR, accuracy and decision latency per variant]({base.name}.png)\n"
               + "".join(f"\n{line}" for line in arms_report(workdir, rows)))


def arms_report(workdir: str, rows: list[dict]) -> list[str]:
    """The "v4 vs v4.1 arm" table when both arms ran (pipeline/arms.py); the model card does not read the sweep."""
    from pipeline.arms import arms_among, arms_section

    root = Path(workdir)

    def read(path: Path) -> dict:
        return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}

    blip_on = (read(root / "params.yaml").get("preprocess") or {}).get("blip_on")
    return arms_section(arms_among(rows, blip_on), read(root / BASELINES_YAML))



def row_label(row: dict) -> str:
    """A row's name as the plot shows it: experiments say which evaluation their numbers come from."""
    evaluation = row.get("evaluation")
    return f"{row['name']} [{evaluation}]" if row.get("kind") == "experiment" and evaluation else str(row["name"])


def write_leaderboard_plot(workdir: str, rows: list[dict]) -> Path:
    """reports/sweep/leaderboard.png: detector TPR vs FPR, overall accuracy and decision latency per row.

    Why a picture: the trade-off (a redundant blip fires more often but later) reads at a glance.
    Rows without a number are listed as n/a rather than drawn at zero.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.io import atomic_path

    shown = [r for r in rows if r.get("kind") in ("baseline", "experiment")]
    names = [row_label(r) for r in shown]
    fig, (roc, acc, lat, work) = plt.subplots(1, 4, figsize=(19, 4.8))
    at_point: dict[tuple[float, float], list[str]] = {}  # variants at the same point share one label
    for r in shown:
        tpr, fpr = r.get("detector_true_positive_rate"), r.get("false_positive_rate")
        if tpr is not None and fpr is not None:
            at_point.setdefault((fpr, tpr), []).append(row_label(r))
    for (fpr, tpr), point_names in at_point.items():
        roc.scatter(fpr, tpr)
        roc.annotate("\n".join(point_names), (fpr, tpr), textcoords="offset points", xytext=(6, -4), fontsize=8,
                     va="top" if tpr > 0.5 else "bottom")
    roc.set(xlabel="false-positive rate (negatives)", ylabel="true-positive rate (tool_match)",
            title="blip detector", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
    for ax, key, label in ((acc, "overall_accuracy", "overall accuracy"),
                           (lat, "decision_latency_ms", "decision latency (ms of audio, median)")):
        values = [r.get(key) for r in shown]
        ax.barh(range(len(shown)), [0 if v is None else v for v in values], color="tab:blue")
        for i, v in enumerate(values):
            ax.text(0 if v is None else v, i, " n/a" if v is None else f" {v:.3g}", va="center", fontsize=8)
        ax.set_yticks(range(len(shown)), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(label)
    items = [r.get("decoder_items") for r in shown]
    work.barh(range(len(shown)), [n or 0 for n in items], color="tab:orange")
    for i, (n, r) in enumerate(zip(items, shown)):
        seconds = r.get("experiment_s")
        work.text(n or 0, i, " -" if n is None else f" {n:,} ({'-' if seconds is None else f'{seconds:.0f} s'})",
                  va="center", fontsize=8)
    work.set_yticks(range(len(shown)), names, fontsize=8)
    work.invert_yaxis()
    work.set_title("decoder items spent (wall time)")
    fig.suptitle("Blip sweep leaderboard (rank order; [screen] = screening tier only, [full] = fully evaluated)")
    fig.tight_layout()
    path = Path(workdir) / LEADERBOARD.with_suffix(".png")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def publish_leaderboard_plot(path: Path) -> None:
    """The PNG as an image artifact; embedded as a data URL since the Prefect UI cannot read local files."""
    import base64

    from prefect.artifacts import create_image_artifact

    url = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    create_image_artifact(image_url=url, key="sweep-leaderboard-plot",
                          description=f"Blip sweep: TPR vs FPR, accuracy, decision latency ({LEADERBOARD}.png)")


@task(task_run_name="default-signature", cache_policy=NO_CACHE, persist_result=False)
def default_signature(workdir: str) -> tuple[int, ...] | None:
    """The signature of params.yaml's own blip, to flag variants that reproduce it; None if unavailable."""
    try:
        return variant_signature(workdir, ())
    except (ValueError, TypeError, FileNotFoundError) as err:
        get_run_logger().warning("default blip signature unavailable (%s): twins of it are not flagged", err)
        return None


def run_tier(workdir: str, variants: list[Variant], gpus: int, local_slots: LocalSlots, evaluation: str
             ) -> dict[Variant, dict | Exception]:
    """Every variant as an experiment of one tier, side by side as the GPU slots allow: its row, or its error."""
    futures = {v: experiment.submit(workdir, v, gpus, local_slots, evaluation) for v in variants}
    results: dict[Variant, dict | Exception] = {}
    for variant, future in futures.items():
        try:
            results[variant] = future.result()
        except Exception as err:  # noqa: BLE001 - shown in the leaderboard, re-raised by the flow
            results[variant] = err
    return results


def merge_confirmed(screened: dict, confirmed: dict) -> dict:
    """A confirmed variant's row: the full evaluation's numbers, the cost and time of both experiments."""
    return {**confirmed, "decoder_items": screened["decoder_items"] + confirmed["decoder_items"],
            "experiment_s": round(screened["experiment_s"] + confirmed["experiment_s"], 1),
            "ran": [*(screened["ran"] or []), *(confirmed["ran"] or [])]
            if screened["ran"] is not None and confirmed["ran"] is not None else None,
            "retrained": bool(screened["retrained"]) or bool(confirmed["retrained"])}


def sweep_cost(rows: list[dict], confirm: int | None, seconds: float) -> dict:
    """reports/sweep/cost.json: decoder items spent, and what every variant fully evaluated (the baseline
    retrained and re-evaluated too) would have cost. A variant never fully evaluated is counted at the
    full cost measured for the workspace's own variant (else the mean of those measured), and listed."""
    runs = [r for r in rows if r.get("kind") == "experiment"]
    measured = [r["decoder_items_full"] for r in runs if r.get("decoder_items_full") is not None]
    reference = next((r["decoder_items_full"] for r in runs
                      if r.get("evaluation") == WORKSPACE and r.get("decoder_items_full") is not None),
                     round(sum(measured) / len(measured)) if measured else None)
    estimated = [r["name"] for r in runs if r.get("decoder_items_full") is None]
    if_all_full = (sum(measured) + reference * len(estimated)) if reference is not None or not estimated else None
    spent = sum(r.get("decoder_items") or 0 for r in rows if r.get("kind") in ("experiment", "failed"))
    return {
        "decoder_items": spent,
        "decoder_items_if_all_full": if_all_full,
        "if_all_full_estimated_for": estimated,
        "saving": round(if_all_full / spent, 2) if if_all_full and spent else None,
        "retrained": [r["name"] for r in rows if r.get("retrained")],
        "confirm": confirm,
        "sweep_s": round(seconds, 1),
        "experiments": [{k: r.get(k) for k in ("name", "evaluation", "decoder_items", "decoder_items_full",
                                                "retrained", "ran", "experiment_s")} for r in runs],
    }


@flow(name="sweep", log_prints=False)
def sweep(sweep_file: str = "flows/sweeps/v4.2-blip.yaml", workdir: str = ".", prescreen_variants: bool = True,
          reference_splits: list[str] | None = None, max_reference_clips: int = 300,
          confirm: int | None = None) -> list[dict]:
    """Screen, run and rank the variants of `sweep_file` in the DVC workspace `workdir`.

    The pre-screen compares each variant's signature with the openings of up to `max_reference_clips`
    assistant clips of the `tts` stage (`reference_splits`, default train and eval).
    `prescreen_variants=False` skips it. `confirm` None: every variant fully evaluated; K: every variant
    screened (`eval_screen`), the best K then fully evaluated (0: screened only).
    """
    logger = get_run_logger()
    started = time.perf_counter()
    workdir = str(Path(workdir).resolve())
    plan = load_sweep(sweep_file)
    if confirm is not None and confirm < 0:
        raise ValueError(f"confirm must be >= 0, got {confirm}")
    rows = baseline_rows(workdir)
    survivors = list(plan.variants)
    if prescreen_variants:
        reference_splits = reference_splits or ["train", "eval"]
        speech = load_reference_audio(workdir, reference_splits, max_reference_clips)
        logger.info("pre-screen against %d non-blip assistant clips (%s)", len(speech), ", ".join(reference_splits))
        screened = {v: prescreen(workdir, v, speech, plan.max_false_trigger_rate) for v in plan.variants}
        if any(changes_blip(v.overrides) for v in plan.variants):
            screened = reject_twins(screened, default_signature(workdir))
        survivors = [v for v, result in screened.items() if result.passed]
        rows += [{"name": v.name, "kind": "rejected", "overrides": " ".join(v.overrides), "note": r.reason,
                  "prescreen_false_trigger_rate": r.false_trigger_rate} for v, r in screened.items() if not r.passed]

    results: dict[Variant, dict | Exception] = {}
    own = [v for v in survivors if is_workspace_params(workdir, v.overrides)]
    if own:  # the baseline variant: the workspace's own results, when they are current
        reused = workspace_row(workdir)
        if reused is None:
            logger.info("the workspace is not up to date (dvc status): %s runs as an experiment",
                        ", ".join(v.name for v in own))
        else:
            logger.info("%s: the workspace's own params; its results are reused, nothing rerun",
                        ", ".join(v.name for v in own))
            results.update({v: dict(reused) for v in own})
    local_slots = LocalSlots(local_gpu_count())  # one per local GPU (one on a CPU host), if the server has no limit
    to_run = [v for v in survivors if v not in results]
    results.update(run_tier(workdir, to_run, plan.gpus_per_experiment, local_slots,
                            FULL if confirm is None else SCREENED))
    if confirm:
        candidates = [v for v in to_run if isinstance(results[v], dict)]
        best = sorted(candidates, key=lambda v: rank_key(results[v]))[:confirm]
        logger.info("confirming the best %d of the screen with the full evaluation: %s", len(best),
                    ", ".join(v.name for v in best) or "none")
        for variant, outcome in run_tier(workdir, best, plan.gpus_per_experiment, local_slots, FULL).items():
            results[variant] = merge_confirmed(results[variant], outcome) if isinstance(outcome, dict) else outcome

    errors = []
    for variant in survivors:
        row = {"name": variant.name, "kind": "experiment", "overrides": " ".join(variant.overrides)}
        if prescreen_variants:
            row["prescreen_false_trigger_rate"] = screened[variant].false_trigger_rate
        outcome = results[variant]
        if isinstance(outcome, Exception):
            row.update(kind="failed", note=one_line(outcome))
            errors.append(outcome)
        else:
            row.update(outcome)
        rows.append(row)
    rows = rank(rows)
    cost = sweep_cost(rows, confirm, time.perf_counter() - started)
    write_leaderboard(workdir, rows)
    write_cost(workdir, cost)
    publish_leaderboard_plot(write_leaderboard_plot(workdir, rows))
    publish_table("sweep-leaderboard", [{c: r.get(c) for c in COLUMNS} for r in displayed(rows)],
                  "Blip sweep leaderboard")
    logger.info("leaderboard:\n%s", markdown_table(rows, COLUMNS))
    logger.info("sweep: %s decoder items spent in %.0f s; every variant fully evaluated: %s%s; retrained: %s",
                cost["decoder_items"], cost["sweep_s"], cost["decoder_items_if_all_full"],
                f" (estimated for {', '.join(cost['if_all_full_estimated_for'])})"
                if cost["if_all_full_estimated_for"] else "", ", ".join(cost["retrained"]) or "none")
    if errors:
        raise errors[0]
    return rows


def write_cost(workdir: str, cost: dict) -> None:
    from pipeline.io import write_json

    write_json(Path(workdir) / COST, cost)


@prefect_cli("sweep")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.sweep", description=__doc__.split("\n")[0])
    parser.add_argument("--sweep", default="flows/sweeps/v4.2-blip.yaml", help="sweep file")
    parser.add_argument("--workdir", default=".", help="DVC workspace (default: .)")
    parser.add_argument("--no-prescreen", action="store_true", help="run every variant unscreened")
    parser.add_argument("--reference-splits", nargs="+", default=["train", "eval"],
                        help="TTS splits whose assistant clips the pre-screen uses")
    tier = parser.add_mutually_exclusive_group()
    tier.add_argument("--confirm", type=int, default=2, metavar="K",
                      help="screen every variant (eval_screen), then fully evaluate the best K (0: screen only; "
                           "default 2)")
    tier.add_argument("--full", action="store_true", help="fully evaluate every variant, no screen")
    args = parser.parse_args(argv)
    if args.confirm < 0:
        parser.error("--confirm must be >= 0")
    with embedded_prefect(args.workdir):
        try:
            rows = sweep(sweep_file=args.sweep, workdir=args.workdir, prescreen_variants=not args.no_prescreen,
                         reference_splits=args.reference_splits, confirm=None if args.full else args.confirm)
        except Exception as err:  # noqa: BLE001 - Prefect has logged it
            print(f"sweep failed: {err}", file=sys.stderr)
            return 1
    if not any(row["kind"] == "experiment" for row in rows):  # every variant rejected: nothing was measured
        print(f"sweep failed: no variant of {args.sweep} could run (see the leaderboard's notes)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
