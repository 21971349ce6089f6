"""What the remote path (hosts that share only git + a DVC remote) costs, side by side with the shared-path pool.

    .venv/bin/python bench/bench_remote_overhead.py [--repeats 3] [--smoke runs/smoke]

One Prefect test server, one sshd on 127.0.0.1 (the DVC SSH remote), a bare git origin, one process
worker serving both deployments. Interleaved, on the toy pipeline's GPU stage `train` (a param changes
each round, so the stage really runs and its output really moves):
  - in-process      `retrain` runs the stage itself (no pool)
  - pool, shared    gpu-stage/gpu-stage: the worker runs it in the parent's workspace path
  - pool, own clone gpu-stage/remote: publish (dvc push + git push), worker clone/pull/repro/push,
                    parent records the entry + dvc pull
and one sweep experiment in-process vs on the worker (gpu-experiment/remote).
With --smoke: time to `dvc push` a copy of that workspace's outputs to the SSH remote and `dvc pull`
them into a fresh clone. Writes bench/results/remote_overhead.json.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.toy import make_toy_repo, set_param  # noqa: E402
from tests.support.toy_remote import connect_workspace, start_sshd, worker_dvc_config  # noqa: E402

POOL = "bench-remote"


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def start_worker(folder: Path, remote) -> subprocess.Popen:
    from prefect.settings import get_current_settings

    from flows.pool import worker_command
    from flows.remote import CLONES_ENV

    command, env = worker_command(POOL, None, "0", poll_seconds=1, limit=1)
    env.update(get_current_settings().to_environment_variables(exclude_unset=True))
    env[CLONES_ENV] = str(folder / "clones")
    env["DVC_GLOBAL_CONFIG_DIR"] = str(worker_dvc_config(folder / "dvc", remote))
    with open(folder / "worker.log", "w") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=folder)


def stage_rounds(toy: Path, repeats: int) -> dict:
    from flows.retrain import retrain

    modes = {"in-process": (None, None), "pool, shared path": (POOL, "gpu-stage/gpu-stage"),
             "pool, own clone": (POOL, "gpu-stage/remote")}
    seconds = {mode: [] for mode in modes}
    versions = itertools.count(2)
    retrain(workdir=str(toy), targets=["feat"])  # upstream once; every round then runs only `train`
    for i in range(repeats + 1):  # round 0 warms up (first clone, first imports)
        for mode, (pool, deployment) in modes.items():
            set_param(toy, "train", "v", next(versions))  # a new output to move every time
            rows = retrain(workdir=str(toy), targets=["train"], gpu_pool=pool,
                           gpu_deployment=deployment or "gpu-stage/gpu-stage")
            (row,) = [r for r in rows if r["stage"] == "train"]
            assert row["status"] == "ran", row
            if i:
                seconds[mode].append(row["seconds"])
    return {mode: {"median_s": _median(v), "runs_s": v} for mode, v in seconds.items()}


def experiment_rounds(toy: Path, repeats: int, tmp: Path) -> dict:
    import yaml

    from flows.sweep import EXPERIMENT_DEPLOYMENT_ENV, sweep

    (toy / "configs").mkdir(exist_ok=True)
    shutil.copy(REPO / "configs/baselines.yaml", toy / "configs/baselines.yaml")
    seconds = {"in-process": [], "worker, own clone": []}
    for i in range(repeats + 1):
        for mode in seconds:
            sweep_file = tmp / "sweep.yaml"
            sweep_file.write_text(yaml.safe_dump({"gpus_per_experiment": 1, "variants": [
                {"name": f"b{i}", "overrides": [f"train.boost={i + (mode == 'in-process') * 10}"]}]}))
            if mode == "in-process":
                os.environ.pop(EXPERIMENT_DEPLOYMENT_ENV, None)
            else:
                os.environ[EXPERIMENT_DEPLOYMENT_ENV] = "gpu-experiment/remote"
            started = time.perf_counter()
            sweep(sweep_file=str(sweep_file), workdir=str(toy), prescreen_variants=False)
            if i:
                seconds[mode].append(round(time.perf_counter() - started, 2))
    os.environ.pop(EXPERIMENT_DEPLOYMENT_ENV, None)
    return {mode: {"median_s": _median(v), "runs_s": v} for mode, v in seconds.items()}


def smoke_transfer(smoke: Path, server, tmp: Path) -> dict:
    """Push a copy of the smoke workspace's DVC outputs to a fresh SSH remote, pull them into a clone."""
    work = tmp / "smoke"
    subprocess.run(["cp", "-rL", str(smoke), str(work)], check=True)
    shutil.rmtree(work / ".git", ignore_errors=True)
    (work / ".dvc/config.local").unlink(missing_ok=True)  # its own cache, not the repo's
    shutil.rmtree(work / ".dvc/cache", ignore_errors=True)
    shutil.rmtree(work / ".dvc/tmp", ignore_errors=True)
    for args in (["init", "-q", "-b", "main"], ["config", "user.email", "b@b"], ["config", "user.name", "bench"]):
        subprocess.run(["git", *args], cwd=work, check=True)
    subprocess.run(["git", "add", "-A"], cwd=work, check=True)
    subprocess.run(["git", "commit", "-qm", "smoke copy"], cwd=work, check=True)
    remote = server.new_remote(tmp / "smoke-shared")
    connect_workspace(work, remote)
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "commit", "-f", "-q"], cwd=work, check=True)  # the copied outputs into its cache
    objects = [f for f in (work / ".dvc/cache/files").rglob("*") if f.is_file()]
    size, files = sum(f.stat().st_size for f in objects), len(objects)
    from flows.dvc_graph import pull, push

    started = time.perf_counter()
    pushed = push(work, None)
    push_s = time.perf_counter() - started
    clone = tmp / "smoke-clone"
    subprocess.run(["git", "clone", "-q", str(remote.origin), str(clone)], check=True)
    (clone / ".dvc/config.local").write_text(remote.key_config())
    started = time.perf_counter()
    pull(clone, None)
    pull_s = time.perf_counter() - started
    return {"cache_mb": round(size / 2**20, 1), "cache_files": files, "pushed_files": pushed,
            "push_s": round(push_s, 2), "pull_s": round(pull_s, 2),
            "push_mb_per_s": round(size / 2**20 / push_s, 1), "pull_mb_per_s": round(size / 2**20 / pull_s, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", type=Path, help="a smoke workspace (runs/smoke) whose outputs to move")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/remote_overhead.json")
    args = parser.parse_args(argv)
    from prefect.settings import PREFECT_HOME, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    from flows.pool import deploy, setup

    tmp = Path(tempfile.mkdtemp(prefix="bench-remote-"))
    server = start_sshd(tmp / "sshd")
    worker = None
    try:
        with temporary_settings({PREFECT_HOME: str(tmp / "prefect")}), prefect_test_harness(server_startup_timeout=90):
            setup(pool=POOL, gpus=1, queues={"train": (1, "bench")}, cpu_pool=None)
            deploy(pool=POOL, source=REPO)
            deploy(pool=POOL, source=REPO, own_clone=True)
            toy = make_toy_repo(tmp / "toy")
            remote = server.new_remote(tmp / "shared")
            connect_workspace(toy, remote)
            (tmp / "worker").mkdir()
            worker = start_worker(tmp / "worker", remote)
            load_before = os.getloadavg()
            result = {"stage": stage_rounds(toy, args.repeats)}
            print(json.dumps(result), flush=True)
            result["experiment"] = experiment_rounds(toy, args.repeats, tmp)
            result["load_avg_1m"] = [round(load_before[0], 1), round(os.getloadavg()[0], 1)]
            print(json.dumps(result), flush=True)
        if args.smoke:
            result["smoke_transfer"] = smoke_transfer(args.smoke.resolve(), server, tmp)
    finally:
        if worker:
            worker.terminate()
            worker.wait(timeout=30)
        server.stop()
    stage, exp = result["stage"], result["experiment"]
    base = stage["pool, shared path"]["median_s"]
    for mode, row in stage.items():
        row["vs_shared_path"] = round(row["median_s"] / base, 2)
    result["remote_stage_overhead_s"] = round(stage["pool, own clone"]["median_s"] - base, 2)
    result["remote_experiment_overhead_s"] = round(exp["worker, own clone"]["median_s"] - exp["in-process"]["median_s"], 2)
    exp["worker, own clone"]["vs_in_process"] = round(exp["worker, own clone"]["median_s"] / exp["in-process"]["median_s"], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
