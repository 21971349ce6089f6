"""`gpu-stage`: one GPU stage of dvc.yaml, run by a worker of the `gpu-2x4090` pool.

The worker sets CUDA_VISIBLE_DEVICES; the stage runs the same command as
anywhere else (`dvc repro --single-item <stage>`, DESIGN.md principle 6).
"""
from __future__ import annotations

import contextlib
import socket

from prefect import flow, get_run_logger

from flows.dvc_graph import line_logger, run_stage

# Global concurrency limit holding one slot per GPU (`python -m flows.pool setup` creates it).
# GPU stages and sweep experiments take slots from it, wherever they run.
GPU_LIMIT = "gpu"


def gpu_slots(gpus: int) -> contextlib.AbstractContextManager:
    """Hold `gpus` slots of the `gpu` concurrency limit; a no-op where the server has no such limit
    (ephemeral runs: one process, nothing to share the GPUs with)."""
    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(GPU_LIMIT)
        except ObjectNotFound:
            get_run_logger().info("no '%s' concurrency limit on this server: GPU use is not limited", GPU_LIMIT)
            return contextlib.nullcontext()
    if gpus > limit.limit:  # would wait forever
        raise ValueError(f"needs {gpus} GPUs but the '{GPU_LIMIT}' concurrency limit has {limit.limit} slots")
    return concurrency(GPU_LIMIT, occupy=gpus, strict=True)


@flow(name="gpu-stage", persist_result=True, log_prints=False)
def gpu_stage(stage: str, workdir: str, force: bool = False, gpus: int = 1) -> dict:
    """Bring one stage of the DVC workspace `workdir` (a path on this worker's host) up to date."""
    logger = get_run_logger()
    logger.info("stage '%s' on %s in %s", stage, socket.gethostname(), workdir)
    with gpu_slots(gpus):
        status = run_stage(workdir, stage, force=force, on_line=line_logger(logger))
    return {"stage": stage, "status": status, "host": socket.gethostname()}
