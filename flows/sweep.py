"""`sweep`: blip variants for v4.2, screened on CPU, then run as isolated DVC experiments.

    python -m flows.sweep --sweep flows/sweeps/v4.2-blip.yaml [--workdir .]

1. Pre-screen each variant on CPU (flows/prescreen.py): reject it when its
   detection signature already opens ordinary assistant audio too often, when
   the preview followed by speech no longer encodes to it, or when a variant that
   changes the blip gives the same signature as the default or an earlier variant
   (it would train on identical codes).
2. Run the survivors as `dvc exp run --temp -n <name> -S ...` (the workspace is
   untouched), each holding `gpus_per_experiment` slots of the Prefect global
   concurrency limit `gpu` while it runs.
3. Rank them with the v4 and v4.1 baselines of the model card: reports/sweep/
   leaderboard.{csv,md,png} (TPR, FPR and decision latency of the blip detector
   beside accuracy), the `sweep-leaderboard` table artifact and the
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

from flows.dvc_graph import line_logger, one_line, read_json_at, remove_experiment, run_experiment
from flows.gpu_stage import LocalSlots, gpu_slots, local_gpu_count
from flows.prescreen import (PrescreenResult, changes_blip, flag_twins, load_reference_audio, prescreen_variant,
                             variant_signature)
from flows.publish import BLIP_METRICS, CLASS_METRICS, markdown_table, publish_table
from flows.remote import run_remote_experiment

LEADERBOARD = Path("reports/sweep/leaderboard")  # .csv, .md and .png
COLUMNS = ["rank", "name", "kind", "overall_accuracy", "tool_match_accuracy", "cb0_match_rate",
           "detector_true_positive_rate", "false_positive_rate", "decision_latency_ms",
           "prescreen_false_trigger_rate", "experiment_s", "overrides", "note"]

BASELINES = Path("configs/baselines.yaml")  # the model cards' numbers, in percent (shared with the report stage)


def baseline_rows(workdir: str) -> list[dict]:
    """Leaderboard rows of the published versions (v4, v4.1), as fractions; what a card lacks is None."""
    path = Path(workdir) / BASELINES
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: baselines file not found") from None

    def fraction(*keys):
        node = doc
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        return None if node is None else node / 100

    return [{"name": v, "kind": "baseline", "overrides": "", "note": f"published ({BASELINES})",
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


@task(task_run_name="exp-{variant.name}", cache_policy=NO_CACHE, persist_result=False)
def experiment(workdir: str, variant: Variant, gpus: int, local_slots: LocalSlots) -> dict:
    """Run one variant as a DVC experiment, here or (see EXPERIMENT_DEPLOYMENT_ENV) on a GPU worker's
    own clone, pulled back with `dvc exp pull`; return its leaderboard metrics and wall time.
    `local_slots` stand in for the server's `gpu` limit where it has none."""
    logger = get_run_logger()
    if deployment := os.environ.get(EXPERIMENT_DEPLOYMENT_ENV):
        started = time.perf_counter()
        rev = run_remote_experiment(workdir, variant.name, variant.overrides, gpus, deployment, logger)
    else:
        with gpu_slots(gpus, local=local_slots):
            started = time.perf_counter()  # waiting for GPU slots is not the experiment's time
            if remove_experiment(workdir, variant.name):
                logger.info("replaced the earlier experiment '%s' of this commit", variant.name)
            rev = run_experiment(workdir, variant.name, variant.overrides, on_line=line_logger(logger))
    seconds = round(time.perf_counter() - started, 1)
    logger.info("experiment '%s' took %.1f s", variant.name, seconds)
    return {**experiment_metrics(workdir, rev), "experiment_s": seconds}


def experiment_metrics(workdir: str, rev: str) -> dict:
    """The leaderboard's numbers: the eval stages' headline metrics, which git holds at the experiment's commit."""
    classes, why_classes = read_json_at(workdir, CLASS_METRICS, rev)
    blip, why_blip = read_json_at(workdir, BLIP_METRICS, rev)
    classes, blip = classes or {}, blip or {}
    return {
        "overall_accuracy": classes.get("accuracy"),
        "tool_match_accuracy": classes.get("tool_match"),
        "cb0_match_rate": blip.get("cb0"),
        "detector_true_positive_rate": blip.get("tpr"),
        "false_positive_rate": blip.get("fpr"),
        "decision_latency_ms": blip.get("latency_ms"),
        "note": "; ".join(filter(None, [f"exp {rev[:7]}", why_classes, why_blip])),
    }


def rank(rows: list[dict]) -> list[dict]:
    """Baselines and finished experiments by overall accuracy, then blip match rate (both higher
    is better), then false-positive rate (lower is better); unavailable numbers sort last.
    Rejected and failed variants follow, unranked."""
    def key(row: dict):
        def high(v):
            return (v is None, -(v or 0.0))
        fpr = row.get("false_positive_rate")
        return (*high(row.get("overall_accuracy")), *high(row.get("cb0_match_rate")), fpr is None, fpr or 0.0)

    ranked = sorted((r for r in rows if r["kind"] in ("baseline", "experiment")), key=key)
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
    write_text(base.with_suffix(".md"), "# Blip sweep leaderboard\n\n" + markdown_table(rows, COLUMNS) + "\n"
               + f"\n![TPR vs FPR, accuracy and decision latency per variant]({base.name}.png)\n")


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
    names = [str(r["name"]) for r in shown]
    fig, (roc, acc, lat) = plt.subplots(1, 3, figsize=(15, 4.8))
    at_point: dict[tuple[float, float], list[str]] = {}  # variants at the same point share one label
    for r in shown:
        tpr, fpr = r.get("detector_true_positive_rate"), r.get("false_positive_rate")
        if tpr is not None and fpr is not None:
            at_point.setdefault((fpr, tpr), []).append(str(r["name"]))
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
    fig.suptitle("Blip sweep leaderboard (rank order)")
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


@flow(name="sweep", log_prints=False)
def sweep(sweep_file: str = "flows/sweeps/v4.2-blip.yaml", workdir: str = ".", prescreen_variants: bool = True,
          reference_splits: list[str] | None = None, max_reference_clips: int = 300) -> list[dict]:
    """Screen, run and rank the variants of `sweep_file` in the DVC workspace `workdir`.

    The pre-screen compares each variant's signature with the openings of up to `max_reference_clips`
    assistant clips of the `tts` stage (`reference_splits`, default train and eval).
    `prescreen_variants=False` skips it.
    """
    logger = get_run_logger()
    workdir = str(Path(workdir).resolve())
    plan = load_sweep(sweep_file)
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
    local_slots = LocalSlots(local_gpu_count())  # one per local GPU (one on a CPU host), if the server has no limit
    futures = {v: experiment.submit(workdir, v, plan.gpus_per_experiment, local_slots) for v in survivors}
    errors = []
    for variant, future in futures.items():
        row = {"name": variant.name, "kind": "experiment", "overrides": " ".join(variant.overrides)}
        if prescreen_variants:
            row["prescreen_false_trigger_rate"] = screened[variant].false_trigger_rate
        try:
            row.update(future.result())
        except Exception as err:  # noqa: BLE001 - shown in the leaderboard, re-raised below
            row.update(kind="failed", note=one_line(err))
            errors.append(err)
        rows.append(row)
    rows = rank(rows)
    write_leaderboard(workdir, rows)
    publish_leaderboard_plot(write_leaderboard_plot(workdir, rows))
    publish_table("sweep-leaderboard", [{c: r.get(c) for c in COLUMNS} for r in displayed(rows)],
                  "Blip sweep leaderboard")
    logger.info("leaderboard:\n%s", markdown_table(rows, COLUMNS))
    if errors:
        raise errors[0]
    return rows


def main(argv: list[str] | None = None) -> int:
    from flows.embedded import embedded_prefect

    parser = argparse.ArgumentParser(prog="python -m flows.sweep", description=__doc__.split("\n")[0])
    parser.add_argument("--sweep", default="flows/sweeps/v4.2-blip.yaml", help="sweep file")
    parser.add_argument("--workdir", default=".", help="DVC workspace (default: .)")
    parser.add_argument("--no-prescreen", action="store_true", help="run every variant unscreened")
    parser.add_argument("--reference-splits", nargs="+", default=["train", "eval"],
                        help="TTS splits whose assistant clips the pre-screen uses")
    args = parser.parse_args(argv)
    with embedded_prefect(args.workdir):
        try:
            rows = sweep(sweep_file=args.sweep, workdir=args.workdir, prescreen_variants=not args.no_prescreen,
                         reference_splits=args.reference_splits)
        except Exception as err:  # noqa: BLE001 - Prefect has logged it
            print(f"sweep failed: {err}", file=sys.stderr)
            return 1
    if not any(row["kind"] == "experiment" for row in rows):  # every variant rejected: nothing was measured
        print(f"sweep failed: no variant of {args.sweep} could run (see the leaderboard's notes)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
