"""A GPU stage (`meta: {pool: gpu}`) goes through a real process worker of a test work pool."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def gpu_worker(prefect_api, tmp_path):
    """Pool `test-gpu` (queue `train`), gpu-stage deployed from this checkout, one worker subprocess."""
    from prefect.settings import get_current_settings

    from flows.pool import deploy, setup, worker_command

    setup(pool="test-gpu", gpus=1, queues={"train": (1, "test training queue")}, cpu_pool=None)
    deploy(pool="test-gpu", source=REPO)
    command, env = worker_command("test-gpu", None, "7", poll_seconds=1)  # CUDA_VISIBLE_DEVICES=7
    env.update(get_current_settings().to_environment_variables(exclude_unset=True))  # API URL, PREFECT_HOME
    log = tmp_path / "worker.log"
    with open(log, "w") as out:
        worker = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        yield "test-gpu"
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


@pytest.mark.slow
def test_gpu_stage_runs_on_the_pool_and_cpu_stages_in_process(toy, gpu_worker):
    from flows.retrain import retrain

    rows = {r["stage"]: r for r in retrain(workdir=str(toy), gpu_pool=gpu_worker)}
    assert {s: r["status"] for s, r in rows.items()} == dict.fromkeys(rows, "ran")
    assert (rows["train"]["pool"], rows["train"]["queue"]) == ("test-gpu", "train")
    assert {r["pool"] for s, r in rows.items() if s != "train"} == {"local"}
    assert json.loads((toy / "out/train.json").read_text())["gpus"] == "7"  # pinned by the worker
    assert json.loads((toy / "out/feat.json").read_text())["gpus"] != "7"


def test_missing_pool_runs_gpu_stages_in_process(toy, prefect_api):
    from flows.retrain import retrain

    rows = {r["stage"]: r for r in retrain(workdir=str(toy), targets=["train"], gpu_pool="no-such-pool")}
    assert (rows["train"]["status"], rows["train"]["pool"]) == ("ran", "local")
