"""`retrain`: the whole DVC pipeline as one Prefect flow, one task per stage.

    python -m flows.retrain --workdir runs/smoke          # what `make run` calls

The stage graph comes from dvc.yaml; DVC decides what is unchanged. Stages with
`meta: {pool: gpu}` go to the `gpu-stage` deployment on the GPU work pool when
one exists (`--gpu-pool` or TOOLAWARE_GPU_POOL), and run in this process otherwise.
See docs/orchestration.md.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from flows.dvc_graph import (FAILED, NOT_RUN, RAN, RESTORED, SKIPPED, DvcFailed, StageResult, StageSpec, downstream,
                             line_logger, load_stages, one_line, run_stage, stage_changed)
from flows.embedded import embedded_prefect, prefect_cli
from flows.gpu_stage import gpu_slots
from flows.params_check import check_stage_params
from flows.publish import flatten, markdown_table, publish_table, publish_unavailable
from pipeline.artifacts import LAST_RUN_JSON, MODEL_CARD_MD, details_json
from pipeline.metrics_models import EvalBlipDetails, EvalClassesDetails, details_of

GPU_DEPLOYMENT = "gpu-stage/gpu-stage"


class StagesFailed(DvcFailed):
    """The run's expected failures in one line (what a caller of ``retrain()`` gets raised; with
    ``return_state=True`` the Failed state carries it); the rows are in reports/last_run.json."""

    def __init__(self, message: str):
        RuntimeError.__init__(self, message)
        self.what, self.returncode, self.summary, self.cause = "retrain", 1, message, message
COLUMNS = ["stage", "status", "seconds", "pool", "queue", "error"]
HOST_GPUS = 2  # the card's 2x RTX 4090: GPU stages are scheduled on gpu0 and gpu1


def find_gpu_pool(name: str | None) -> str | None:
    """The GPU work pool to use: `name` or $TOOLAWARE_GPU_POOL, if it exists on the Prefect server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import WorkPoolStatus
    from prefect.exceptions import ObjectNotFound

    name = name or os.environ.get("TOOLAWARE_GPU_POOL")
    if not name:
        return None
    logger = get_run_logger()
    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            logger.warning("work pool '%s' does not exist: GPU stages run in this process", name)
            return None
    if pool.status == WorkPoolStatus.NOT_READY:
        logger.warning("work pool '%s' has no online worker yet: GPU stage runs wait in its queues", name)
    return name


def run_on_pool(spec: StageSpec, workdir: str, force: bool, deployment: str) -> str:
    """Run one stage through the `gpu-stage` deployment; return its status or raise DvcFailed.

    A deployment tagged `own-clone` (`python -m flows.pool deploy --own-clone`) runs it in a worker's own
    clone: the stage's inputs are pushed first (git + DVC remote), its result pulled back after
    (flows/remote.py). Otherwise the worker runs it in `workdir`, a path it shares with this host.
    A crashed run is rescheduled once for the next free worker.
    """
    from flows.remote import child_failure, is_own_clone, publish_workspace, record_stage, result_ref, run_child

    logger = get_run_logger()
    on_line = line_logger(logger)
    own_clone = is_own_clone(deployment)
    parameters = {"stage": spec.name, "force": force, "gpus": spec.gpus}
    if own_clone:
        parameters["source"] = publish_workspace(workdir, list(spec.upstream), on_line).param()
    else:
        parameters["workdir"] = workdir
    child = run_child(deployment, parameters, spec.queue, logger)
    logger.info("stage '%s' ran as flow run '%s' (%s)", spec.name, child.name, child.state.type.value)
    if not child.state.is_completed():
        raise DvcFailed(f"stage '{spec.name}'", 1, child_failure(deployment, child))
    if own_clone:
        return record_stage(workdir, spec.name, result_ref(child.id), on_line)
    try:
        return child.state.result()["status"]
    except Exception as err:  # noqa: BLE001 - e.g. the worker's result storage is not readable from here
        if stage_changed(workdir, spec.name):
            raise DvcFailed(f"stage '{spec.name}'", 1, [f"{child.name} completed, but the stage is still "
                                                        f"out of date in {workdir}; its result: {err}"]) from err
        logger.warning("result of '%s' unreadable here (%s); the stage is now up to date: ran", child.name, err)
        return RAN


# The task run's state name in the Prefect UI says where the work went (all are Completed states).
STATE_NAMES = {RAN: "Ran", SKIPPED: "Skipped", RESTORED: "Restored"}


def named_state(result: StageResult):
    """A Completed state named after what DVC did, carrying the result (the flow graph shows the name)."""
    from prefect.states import Completed

    return Completed(name=STATE_NAMES.get(result.status, "Completed"), data=result,
                     message=f"stage '{result.stage}': {result.status}")


@task(task_run_name="{spec.name}", cache_policy=NO_CACHE, persist_result=False)
def dvc_stage(spec: StageSpec, workdir: str, force: bool, gpu_pool: str | None,
              gpu_deployment: str, inproc_check: bool):
    """Bring one stage up to date, here or (`gpu_pool` given) a GPU stage on the pool.

    A stage that fails as expected (DVC or the stage exits non-zero; its output is already logged
    line by line) ends in a Failed state carrying its one-line reason: no Prefect traceback.
    """
    logger = get_run_logger()
    if inproc_check and not force and not stage_changed(workdir, spec.name):
        logger.info("Stage '%s' didn't change, skipping", spec.name)
        return named_state(StageResult(spec.name, SKIPPED))
    try:
        if gpu_pool:
            status = run_on_pool(spec, workdir, force, gpu_deployment)
            return named_state(StageResult(spec.name, status, pool=gpu_pool, queue=spec.queue))
        with gpu_slots(spec.gpus) if spec.pool == "gpu" else contextlib.nullcontext():
            status = run_stage(workdir, spec.name, force=force, on_line=line_logger(logger))
        return named_state(StageResult(spec.name, status))
    except DvcFailed as err:
        from prefect.states import Failed

        return Failed(message=f"stage '{spec.name}' failed: {err.cause}")  # the flow makes its StageResult


def gpus_held(spec: StageSpec, n_gpus: int = HOST_GPUS) -> frozenset[str]:
    """The GPUs of one host a stage occupies: queue `gpuK` is GPU K; any other GPU stage (`train`)
    takes its `gpus` first GPUs. CPU stages hold none."""
    if spec.pool != "gpu":
        return frozenset()
    if spec.queue and spec.queue.startswith("gpu") and spec.queue[3:].isdigit():
        return frozenset({spec.queue})
    return frozenset(f"gpu{i}" for i in range(min(spec.gpus, n_gpus)))


@dataclass
class Schedule:
    """Which stage may start now: upstream done, its GPUs free, a CPU slot free (pure, no I/O)."""

    stages: list[StageSpec]
    cpu_limit: int = 2
    finished: dict[str, str] = field(default_factory=dict)  # stage -> status
    running: set[str] = field(default_factory=set)

    def blocked_by(self, spec: StageSpec) -> str | None:
        """The first upstream stage that failed or did not run, if any."""
        return next((u for u in spec.upstream if self.finished.get(u) in (FAILED, NOT_RUN)), None)

    def why_blocked(self, spec: StageSpec) -> str | None:
        """`upstream stage 'X' failed` or `... did not run` (a stage that never ran did not fail)."""
        upstream = self.blocked_by(spec)
        if upstream is None:
            return None
        return f"upstream stage '{upstream}' {'failed' if self.finished[upstream] == FAILED else 'did not run'}"

    def ready(self) -> list[StageSpec]:
        """Stages to start now, in DVC's order; a stage whose upstream failed is returned too (to be `not_run`)."""
        held = set().union(*(gpus_held(s) for s in self.stages if s.name in self.running))
        cpu_running = sum(1 for s in self.stages if s.name in self.running and s.pool != "gpu")
        start = []
        for spec in self.stages:
            if spec.name in self.finished or spec.name in self.running:
                continue
            if not all(u in self.finished for u in spec.upstream):
                continue
            if self.blocked_by(spec):
                start.append(spec)
                continue
            gpus = gpus_held(spec)
            if gpus & held or (spec.pool != "gpu" and cpu_running >= self.cpu_limit):
                continue
            held |= gpus
            cpu_running += spec.pool != "gpu"
            start.append(spec)
        return start

    @property
    def done(self) -> bool:
        return len(self.finished) == len(self.stages)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@flow(name="retrain", log_prints=False, task_runner=ThreadPoolTaskRunner(max_workers=8))
def retrain(workdir: str = ".", targets: list[str] | None = None, force: list[str] | None = None,
            gpu_pool: str | None = None, gpu_deployment: str = GPU_DEPLOYMENT,
            inproc_check: bool = True, cpu_limit: int = 2) -> list[dict]:
    """Run `targets` (default: every stage) and their upstream stages, each as soon as its upstream is done.

    CPU stages run up to `cpu_limit` at once; GPU stages by the GPUs they hold (queue `gpu0` and `gpu1`
    at once, `train` holds both). DVC's repo lock is waited for (`dvc --wait-for-lock`), never a failure.
    Every selected stage's params are checked with the stage's own loader first (flows/params_check.py):
    one bad key fails the flow before any `dvc repro` removes an output, every stage `not_run`.
    A failed stage fails the flow (a Failed state whose message is one line per failed stage, no
    traceback); the stages downstream of it are `not_run`, the others still run.
    `force` lists stages to rerun even if unchanged.
    `inproc_check=False` starts `dvc repro --single-item` for every stage, even unchanged ones.
    """
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    from pipeline.base_models import preflight_workspace
    from pipeline.io import write_json

    logger = get_run_logger()
    workdir = str(Path(workdir).resolve())
    preflight_workspace(workdir)  # the Hub source fails here, before any stage, if it cannot work
    stages = load_stages(workdir, targets)
    forced = set(force or ())
    if unknown := forced - {s.name for s in stages}:
        raise ValueError(f"force: unknown or untargeted stage(s) {sorted(unknown)}")
    if problems := check_stage_params(workdir, [s.name for s in stages]):
        from prefect.states import Failed

        rows = [StageResult(s.name, NOT_RUN, error="params of the selected stages are invalid").row() for s in stages]
        write_json(Path(workdir) / LAST_RUN_JSON, rows)
        for line in problems:
            logger.error("%s", line)
        message = "; ".join(problems) + " (no stage was run)"
        return Failed(message=message, data=StagesFailed(message))
    pool = find_gpu_pool(gpu_pool)
    progress = create_progress_artifact(0.0, key="retrain-progress", description="stages done")
    schedule = Schedule(stages, cpu_limit=cpu_limit)
    results: dict[str, StageResult] = {}
    errors: list[Exception] = []
    failures: list[str] = []  # "stage 'X' failed: <why>", one per stage that failed as expected
    running: dict[concurrent.futures.Future, tuple] = {}  # the task runner's future -> (spec, Prefect future, ...)
    flow_start = time.perf_counter()

    def finish(result: StageResult) -> None:
        results[result.stage] = result
        schedule.running.discard(result.stage)
        schedule.finished[result.stage] = result.status
        update_progress_artifact(progress, 100.0 * len(schedule.finished) / len(stages),
                                 description=f"{result.stage}: {result.status}")

    def start(spec: StageSpec) -> None:
        if why := schedule.why_blocked(spec):
            finish(StageResult(spec.name, NOT_RUN, error=why))
            return
        on_pool = pool if spec.pool == "gpu" else None
        schedule.running.add(spec.name)
        started = (_now(), time.perf_counter())
        future = dvc_stage.submit(spec, workdir, spec.name in forced, on_pool, gpu_deployment, inproc_check)
        running[future.wrapped_future] = (spec, future, on_pool, started)

    while not schedule.done:
        while startable := schedule.ready():  # again after a blocked stage is marked: its dependents are blocked too
            for spec in startable:
                start(spec)
        if schedule.done:
            break
        done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
        spec, future, on_pool, (started_at, t0) = running.pop(next(iter(done)))
        expected = f"stage '{spec.name}' failed: "  # dvc_stage's Failed state for a stage that failed as expected
        try:
            result = future.result()
        except Exception as err:  # noqa: BLE001 - recorded; unexpected ones re-raised after the report
            result = StageResult(spec.name, FAILED, error=one_line(err))
            if str(err).startswith(expected):  # its one line, no traceback
                result.error = str(err)[len(expected):]
                failures.append(str(err))
            else:
                errors.append(err)
            if on_pool:
                result.pool, result.queue = on_pool, spec.queue
        result.seconds = time.perf_counter() - t0
        result.started_at, result.finished_at = started_at, _now()
        finish(result)

    rows = [results[spec.name].row() for spec in stages]  # DVC's order, whatever the finishing order
    write_json(Path(workdir) / LAST_RUN_JSON, rows)
    wall = time.perf_counter() - flow_start
    logger.info("stages:\n%s", markdown_table(rows, COLUMNS, missing="-"))
    logger.info("wall time %.1f s for %.1f s of stage time (%.2fx from running stages side by side)",
                wall, sum(r["seconds"] for r in rows), sum(r["seconds"] for r in rows) / max(wall, 1e-9))
    publish_run(workdir, rows)
    if errors:
        raise errors[0]
    if failures:
        from prefect.states import Failed

        return Failed(message="; ".join(failures), data=StagesFailed("; ".join(failures)))
    return rows


def publish_run(workdir: str, rows: list[dict]) -> None:
    """Artifacts of one run: stage statuses, class accuracy, blip emission, model card."""
    from prefect.artifacts import create_markdown_artifact

    publish_table("retrain-stages", rows, "Stage status of this retrain run", missing="-")
    root = Path(workdir)
    classes, why = details_of(EvalClassesDetails, root)
    if classes is None:
        publish_unavailable("eval-classes", "Class accuracy", why)
    else:
        publish_table("eval-classes", class_rows(classes),
                      f"Held-out accuracy per class ({details_json(EvalClassesDetails.STAGE)})")
    blip, why = details_of(EvalBlipDetails, root)
    if blip is None:
        publish_unavailable("eval-blip", "Blip emission", why)
    else:
        blip_rows = [{"metric": k, "value": v} for k, v in flatten(blip.model_dump(mode="json")).items()]
        publish_table("eval-blip", blip_rows, f"Blip emission ({details_json(EvalBlipDetails.STAGE)})")
    card = root / MODEL_CARD_MD
    if card.is_file():
        create_markdown_artifact(card_body(card.read_text()), key="model-card", description=str(MODEL_CARD_MD))
    else:
        publish_unavailable("model-card", "Model card", f"{card}: not written")


def card_body(card: str) -> str:
    """The card without its Hugging Face YAML block (the UI would show it as text)."""
    if card.startswith("---\n") and (end := card.find("\n---\n", 4)) != -1:
        return card[end + len("\n---\n"):].lstrip("\n")
    return card


def class_rows(classes: EvalClassesDetails) -> list[dict]:
    """One row per class (accuracy and rows judged), then overall."""
    counts = classes.per_class_counts
    rows = [{"class": name, "accuracy": rate, "n": counts[name].n if name in counts else None}
            for name, rate in classes.per_class.items()]
    rows.append({"class": "overall", "accuracy": classes.overall_accuracy, "n": classes.n_evaluated})
    return rows


@prefect_cli("retrain")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.retrain", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=".", help="DVC workspace (default: .)")
    parser.add_argument("--targets", nargs="*", help="only these stages and their upstream")
    parser.add_argument("--force", nargs="*", default=[], help="stages to rerun even if unchanged")
    parser.add_argument("--gpu-pool", help="work pool for GPU stages (default: $TOOLAWARE_GPU_POOL)")
    parser.add_argument("--cli-check", action="store_true",
                        help="start `dvc repro` for unchanged stages too (slower; same result)")
    args = parser.parse_args(argv)
    from pipeline.base_models import preflight_workspace
    from pipeline.params import StageError

    try:  # before Prefect starts: an offline machine learns in seconds, in one line, what to do
        preflight_workspace(args.workdir)
        problems = check_stage_params(args.workdir, [s.name for s in load_stages(args.workdir, args.targets)])
    except (StageError, ValueError) as err:
        print(f"retrain: {err}", file=sys.stderr)
        return 1
    if problems:  # before any `dvc repro` could remove an output
        for line in problems:
            print(f"retrain: {line}", file=sys.stderr)
        print("retrain: no stage was run (fix params.yaml, then rerun)", file=sys.stderr)
        return 1
    with embedded_prefect(args.workdir):  # a Prefect server that does not answer: one line (prefect_cli)
        try:
            retrain(workdir=args.workdir, targets=args.targets, force=args.force,
                    gpu_pool=args.gpu_pool, inproc_check=not args.cli_check)
        except Exception as err:  # noqa: BLE001 - Prefect has logged it; the report names the stage
            print(f"retrain failed: {err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
