"""Hosts that share only git and a DVC remote: GPU stages and sweep experiments run by Prefect workers,
each in its own clone of a bare git origin, data through a DVC SSH remote served by a real sshd on 127.0.0.1."""
from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml

from flows import remote as remote_path
from flows.dvc_graph import DvcFailed, dvc, lock_entry, stage_changed
from tests.support.toy import TEST_ORDER, set_param
from tests.support.toy_remote import worker_dvc_config

pytestmark = pytest.mark.multihost

REPO = Path(__file__).resolve().parents[2]
POOL = "test-remote"
STAGE_DEPLOYMENT = "gpu-stage/remote"
EXPERIMENT_DEPLOYMENT = "gpu-experiment/remote"


def git(root, *args) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


def repro(workdir, *stages):
    returncode, tail = dvc(["repro", *stages], workdir, on_line=lambda line: None)
    assert returncode == 0, tail


def trailer(workdir, ref: str, key: str) -> str:
    return git(workdir, "log", "-1", f"--format=%(trailers:key={key},valueonly)", ref).strip()


@pytest.fixture
def as_worker(monkeypatch, tmp_path, remote_toy):
    """Run worker-side functions in this process as the worker `name` would: its own clone folder and
    DVC config (the remote's key), nothing of the parent's workspace."""
    _, remote = remote_toy

    def become(name: str) -> Path:
        folder = tmp_path / f"worker-{name}"
        monkeypatch.setenv(remote_path.CLONES_ENV, str(folder / "clones"))
        monkeypatch.setenv("DVC_GLOBAL_CONFIG_DIR", str(worker_dvc_config(folder / "dvc", remote)))
        return folder
    return become


def test_a_stage_in_the_remote_run_cache_is_restored_on_another_worker_not_rerun(remote_toy, as_worker):
    toy, _ = remote_toy
    repro(toy, "feat")
    snapshot = remote_path.publish_workspace(toy, ["feat"])
    as_worker("a")
    first = remote_path.reproduce_in_clone(snapshot, "train", False, "refs/toolaware/results/a")
    as_worker("b")  # an empty clone, an empty DVC cache: only the remote has the result
    second = remote_path.reproduce_in_clone(snapshot, "train", False, "refs/toolaware/results/b")
    assert (first["status"], second["status"]) == ("ran", "restored")
    set_param(toy, "side", "v", 9)  # the user edits on meanwhile
    assert remote_path.record_stage(toy, "train", "refs/toolaware/results/b") == "restored"
    assert json.loads((toy / "out/train.json").read_text())["stage"] == "train"
    assert not stage_changed(toy, "train")
    assert yaml.safe_load((toy / "params.yaml").read_text())["side"]["v"] == 9  # only the stage's result landed
    assert str(toy) not in first["clone"] + second["clone"]


def test_a_stage_already_in_dvc_lock_is_pulled_on_the_worker_not_rerun(remote_toy, as_worker):
    toy, _ = remote_toy
    repro(toy, "train")  # its entry is in dvc.lock, its output on the remote: nothing to compute
    snapshot = remote_path.publish_workspace(toy, ["feat", "train"])  # its upstream, as retrain pushes it, and itself
    as_worker("a")
    assert remote_path.reproduce_in_clone(snapshot, "train", False, "refs/toolaware/results/a")["status"] == "restored"


def test_cache_false_outputs_of_a_remote_stage_come_back_through_git(remote_toy, as_worker):
    toy, _ = remote_toy
    repro(toy, "train", "side")
    snapshot = remote_path.publish_workspace(toy, ["train", "side"])
    as_worker("a")
    result = remote_path.reproduce_in_clone(snapshot, "eval", False, "refs/toolaware/results/a")
    assert not (toy / "reports/metrics/eval_classes.json").exists()
    assert remote_path.record_stage(toy, "eval", "refs/toolaware/results/a") == "ran"
    metrics = Path(result["clone"]) / "reports/metrics/eval_classes.json"  # `cache: false`: DVC never pushes it
    assert (toy / "reports/metrics/eval_classes.json").read_text() == metrics.read_text()
    assert not stage_changed(toy, "eval")


def test_a_half_pushed_output_is_never_recorded(remote_toy, as_worker):
    toy, remote = remote_toy
    repro(toy, "feat")
    snapshot = remote_path.publish_workspace(toy, ["feat"])
    as_worker("a")
    remote_path.reproduce_in_clone(snapshot, "train", False, "refs/toolaware/results/a")
    entry = remote_path.lock_entry_of(_result_lock(toy, "refs/toolaware/results/a"), "train")
    md5 = entry["outs"][0]["md5"]
    obj = remote.store / "files" / "md5" / md5[:2] / md5[2:]
    obj.write_bytes(obj.read_bytes()[:5])  # what an upload killed mid-file leaves (sftp writes in place)
    with pytest.raises(DvcFailed) as failed:
        remote_path.record_stage(toy, "train", "refs/toolaware/results/a")
    assert "\n" not in failed.value.summary and failed.value.summary.startswith("ERROR")
    assert lock_entry(toy, "train") is None  # the entry was put back: no result recorded
    assert not (toy / "out/train.json").exists()


def _result_lock(toy, ref) -> str:
    git(toy, "fetch", "-q", "origin", f"+{ref}:{ref}")
    return git(toy, "show", f"{ref}:dvc.lock")


# ---------------------------------------------------------------- real Prefect workers

@dataclass
class Worker:
    """One `prefect worker start` process: its own folder (clones, DVC config), its own CUDA_VISIBLE_DEVICES."""

    gpus: str
    folder: Path
    process: subprocess.Popen

    def stage_process(self, stage: str) -> psutil.Process | None:
        """The stage command (`python stage.py <stage>`) this worker runs now, if any."""
        for child in psutil.Process(self.process.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if child.cmdline()[1:3] == ["stage.py", stage]:
                    return child
        return None


@pytest.fixture(scope="module")
def workers(prefect_api, sshd, tmp_path_factory):
    """Pool `test-remote` with gpu-stage/remote and gpu-experiment/remote deployed from this checkout, and two
    process workers (CUDA_VISIBLE_DEVICES 5 and 6), one flow run at a time each, in folders of their own."""
    from prefect.settings import get_current_settings

    from flows.pool import deploy, setup, worker_command

    setup(pool=POOL, gpus=2, queues={"train": (2, "test: experiments and the toy train stage")}, cpu_pool=None)
    assert deploy(pool=POOL, source=REPO, own_clone=True) == STAGE_DEPLOYMENT
    started = []
    for gpus in ("5", "6"):
        folder = tmp_path_factory.mktemp(f"worker-{gpus}")
        command, env = worker_command(POOL, None, gpus, poll_seconds=1, limit=1)
        env.update(get_current_settings().to_environment_variables(exclude_unset=True))  # API URL, PREFECT_HOME
        env[remote_path.CLONES_ENV] = str(folder / "clones")
        env["DVC_GLOBAL_CONFIG_DIR"] = str(folder / "dvc")  # the remote's key, written per test (key_config)
        with open(folder / "worker.log", "w") as log:
            process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
        started.append(Worker(gpus, folder, process))
    try:
        yield started
    finally:
        for worker in started:
            worker.process.terminate()
        for worker in started:
            try:
                worker.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()


@pytest.fixture
def remote_workers(workers, remote_toy):
    """The workers, given this test's remote's key."""
    _, remote = remote_toy
    for worker in workers:
        worker_dvc_config(worker.folder / "dvc", remote)
    return workers


def test_a_gpu_stage_runs_in_a_worker_clone_and_its_result_lands_in_the_parent(remote_toy, remote_workers):
    from flows.retrain import retrain

    toy, _ = remote_toy
    rows = {r["stage"]: r for r in retrain(workdir=str(toy), gpu_pool=POOL, gpu_deployment=STAGE_DEPLOYMENT)}
    assert {s: r["status"] for s, r in rows.items()} == dict.fromkeys(TEST_ORDER, "ran")
    assert (rows["train"]["pool"], rows["train"]["queue"]) == (POOL, "train")
    train = json.loads((toy / "out/train.json").read_text())  # pulled from the DVC remote
    assert train["gpus"] in {"5", "6"} and train["inputs"][0]["stage"] == "feat"
    results = git(toy, "for-each-ref", "--format=%(refname)", remote_path.RESULTS).splitlines()
    assert len(results) == 1
    clone = trailer(toy, results[0], "Clone")
    assert clone.startswith(str(remote_workers[int(train["gpus"]) - 5].folder))  # the worker's own clone
    assert json.loads((toy / "out/eval.json").read_text())["inputs"][0]["gpus"] == train["gpus"]
    assert not any(stage_changed(toy, stage) for stage in TEST_ORDER)  # dvc.lock and outputs agree


def test_sweep_experiments_run_on_two_workers_at_once(remote_toy, remote_workers, monkeypatch, tmp_path, repo_root):
    import csv
    import shutil

    import dvc.api

    from flows.sweep import EXPERIMENT_DEPLOYMENT_ENV, sweep

    toy, remote = remote_toy
    (toy / "configs").mkdir()
    shutil.copy(repo_root / "configs/baselines.yaml", toy / "configs/baselines.yaml")
    set_param(toy, "train", "sleep", 12)  # long enough for the two runs to overlap when a worker is slow to poll (load)
    params_before = (toy / "params.yaml").read_text()
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({"gpus_per_experiment": 1, "variants": [
        {"name": "boost-1", "overrides": ["train.boost=1"]}, {"name": "boost-7", "overrides": ["train.boost=7"]}]}))
    monkeypatch.setenv(EXPERIMENT_DEPLOYMENT_ENV, EXPERIMENT_DEPLOYMENT)
    started = time.perf_counter()
    sweep(sweep_file=str(sweep_file), workdir=str(toy), prescreen_variants=False)
    elapsed = time.perf_counter() - started

    rows = list(csv.DictReader((toy / "reports/sweep/leaderboard.csv").open()))
    experiments = [r for r in rows if r["kind"] == "experiment"]  # ranked on the blip: the toy's FPR is boost/1000
    assert [(r["name"], r["kind"]) for r in experiments] == [("boost-1", "experiment"), ("boost-7", "experiment")]
    assert float(experiments[1]["overall_accuracy"]) == pytest.approx(0.97)
    revs = {r["name"]: r["note"].split()[1] for r in rows if r["kind"] == "experiment"}
    ran_on = {json.loads(dvc.api.read("out/train.json", repo=str(toy), rev=rev))["gpus"] for rev in revs.values()}
    assert ran_on == {"5", "6"}  # one experiment on each worker ...
    first, second = (run.state.result() for run in child_runs("gpu-experiment", remote))  # when `dvc exp run` ran
    assert first["started_at"] < second["finished_at"] and second["started_at"] < first["finished_at"]  # ... at once
    assert (toy / "params.yaml").read_text() == params_before
    print(f"two remote experiments: {elapsed:.1f} s")


def child_runs(flow_name: str, remote) -> list:
    """The flow runs of `flow_name` that used this test's remote (its origin)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])))
    return [r for r in runs if r.parameters.get("source", {}).get("origin") == str(remote.origin)]


def test_an_unreachable_dvc_remote_fails_the_stage_in_one_line(toy, sshd, workers, tmp_path):
    from dataclasses import replace

    from flows.retrain import retrain
    from pipeline.artifacts import LAST_RUN_JSON as LAST_RUN
    from tests.support.toy_remote import connect_workspace, free_port

    remote = sshd.new_remote(tmp_path / "shared")
    closed_port = free_port()
    connect_workspace(toy, replace(remote, url=remote.url.replace(f":{sshd.port}/", f":{closed_port}/")))
    with pytest.raises(DvcFailed):
        retrain(workdir=str(toy), gpu_pool=POOL, gpu_deployment=STAGE_DEPLOYMENT)
    rows = {r["stage"]: r for r in json.loads((toy / LAST_RUN).read_text())}
    assert (rows["train"]["status"], rows["eval"]["status"]) == ("failed", "not_run")
    error = rows["train"]["error"]
    assert "\n" not in error and error.startswith("ERROR: dvc push feat (DVC remote 'artifacts': ssh://")
    assert f"127.0.0.1:{closed_port}" in error


def test_a_stage_whose_worker_is_killed_midway_is_retried_on_the_other_worker(remote_toy, remote_workers):
    """Last in this module: it kills one of the module's two workers."""
    from flows.retrain import retrain

    toy, remote = remote_toy
    set_param(toy, "train", "sleep", 3)
    outcome = {}
    parent = threading.Thread(target=lambda: outcome.update(rows=retrain(
        workdir=str(toy), gpu_pool=POOL, gpu_deployment=STAGE_DEPLOYMENT, targets=["train"])))
    parent.start()
    deadline = time.monotonic() + 180
    while not (victims := [w for w in remote_workers if w.stage_process("train")]):
        assert time.monotonic() < deadline and parent.is_alive(), "the train stage never started on a worker"
        time.sleep(0.05)
    victim = victims[0]
    doomed = psutil.Process(victim.process.pid).children(recursive=True)  # flow run, dvc, the stage
    victim.process.send_signal(signal.SIGSTOP)  # the host goes down: its worker stops polling ...
    doomed[0].send_signal(signal.SIGTERM)  # ... its flow run is terminated: Prefect marks it crashed ...
    while (run := child_runs("gpu-stage", remote)[0]).state.is_running() and run.run_count == 1:
        time.sleep(0.2)
    for process in (victim.process, *doomed):  # ... and nothing of it is left
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            process.kill()
    parent.join(timeout=300)
    assert not parent.is_alive()
    rows = {r["stage"]: r for r in outcome["rows"]}
    assert rows["train"]["status"] == "ran"
    survivor = next(w for w in remote_workers if w is not victim)
    assert json.loads((toy / "out/train.json").read_text())["gpus"] == survivor.gpus
    (run,) = child_runs("gpu-stage", remote)
    assert run.run_count == 2  # the same flow run, rescheduled once
