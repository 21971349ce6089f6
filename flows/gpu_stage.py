"""`gpu-stage` and `gpu-experiment`: the flows GPU workers run (pool `gpu-2x4090`).

The worker sets CUDA_VISIBLE_DEVICES; the stage runs the same command as
anywhere else (`dvc repro --single-item <stage>`, DESIGN.md principle 6).
With `workdir` it runs in that workspace (a path every host mounts); with `source`
(a snapshot the parent pushed to git + the DVC remote) in this worker's own clone
(flows/remote.py).
"""
from __future__ import annotations

import contextlib
import socket
import threading

from prefect import flow, get_run_logger

from flows.dvc_graph import line_logger, run_stage

# Global concurrency limit holding one slot per GPU (`python -m flows.pool setup` creates it).
# GPU stages and sweep experiments take slots from it, wherever they run.
GPU_LIMIT = "gpu"


class LocalSlots:
    """GPU slots shared by the threads of this process: the stand-in for the `gpu` limit where the
    server has none (an ephemeral one), so a sweep's experiments take turns instead of all starting
    at once (measured: 4 learn-profile trainings at once on 2 cores ran ~4x slower in total than
    one after another; on GPUs they would share memory)."""

    def __init__(self, capacity: int):
        self.capacity = max(1, capacity)
        self._free = self.capacity
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def hold(self, gpus: int):
        need = min(gpus, self.capacity)  # a 2-GPU experiment on a 1-slot host runs alone
        with self._changed:
            self._changed.wait_for(lambda: self._free >= need)
            self._free -= need
        try:
            yield
        finally:
            with self._changed:
                self._free += need
                self._changed.notify_all()


def local_gpu_count() -> int:
    """CUDA devices this process sees (0 on a CPU-only host)."""
    import torch

    return torch.cuda.device_count()


def gpu_slots(gpus: int, local: LocalSlots | None = None) -> contextlib.AbstractContextManager:
    """Hold `gpus` slots of the `gpu` concurrency limit. Where the server has no such limit: `local`'s
    slots if given (a sweep's experiments), else nothing (the retrain flow schedules its own GPU stages)."""
    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(GPU_LIMIT)
        except ObjectNotFound:
            if local is None:
                get_run_logger().info("no '%s' concurrency limit on this server: GPU use is not limited", GPU_LIMIT)
                return contextlib.nullcontext()
            get_run_logger().info("no '%s' concurrency limit on this server: %d local slot(s), taken in turn",
                                  GPU_LIMIT, local.capacity)
            return local.hold(gpus)
    if gpus > limit.limit:  # would wait forever
        raise ValueError(f"needs {gpus} GPUs but the '{GPU_LIMIT}' concurrency limit has {limit.limit} slots")
    return concurrency(GPU_LIMIT, occupy=gpus, strict=True)


@flow(name="gpu-stage", persist_result=True, log_prints=False)
def gpu_stage(stage: str, workdir: str | None = None, force: bool = False, gpus: int = 1,
              source: dict | None = None) -> dict:
    """Bring one stage up to date: in the DVC workspace `workdir` (a path on this worker's host), or at
    the snapshot `source` in this worker's own clone (its result commit goes to refs/toolaware/results/<run id>)."""
    from prefect.runtime import flow_run

    from flows.remote import Snapshot, reproduce_in_clone, result_ref

    logger = get_run_logger()
    if (workdir is None) == (source is None):
        raise ValueError("gpu-stage needs exactly one of workdir (a shared path) or source (a snapshot)")
    where = workdir or f"own clone of {source['origin']} at {source['commit'][:7]}"
    logger.info("stage '%s' on %s in %s", stage, socket.gethostname(), where)
    with gpu_slots(gpus):
        if source is None:
            status = run_stage(workdir, stage, force=force, on_line=line_logger(logger))
            return {"stage": stage, "status": status, "host": socket.gethostname()}
        return reproduce_in_clone(Snapshot(**source), stage, force, result_ref(flow_run.id), line_logger(logger))


@flow(name="gpu-experiment", persist_result=True, log_prints=False)
def gpu_experiment(name: str, overrides: list[str], source: dict, gpus: int = 1) -> dict:
    """One sweep experiment (`dvc exp run --temp`) at the snapshot `source` in this worker's own clone,
    pushed with `dvc exp push` (git ref refs/exps/<snapshot>/<name> + its outputs on the DVC remote)."""
    from flows.remote import Snapshot, experiment_in_clone

    logger = get_run_logger()
    logger.info("experiment '%s' on %s at %s", name, socket.gethostname(), source["commit"][:7])
    with gpu_slots(gpus):
        return experiment_in_clone(Snapshot(**source), name, overrides, line_logger(logger))
