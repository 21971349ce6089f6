"""Stage `train`: params, launching, a real kill -9 mid-run and the resume, the final folder, the GPU bench on CPU."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.io import ParamsError
from pipeline.training import MANIFEST_NAME, TMP_PREFIX, latest_checkpoint
from pipeline.workspace import deep_merge
from tasks.train import TrainParams, launch_command, main, open_split, truncate_live_series
from tests.pipeline.test_training import write_tiny_dataset

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "training.md"


def doc_yaml(marker: str) -> dict:
    """The YAML block after ``<!-- marker -->`` in docs/training.md (the snippets handed to params.yaml etc.)."""
    text = DOC.read_text()
    block = re.search(rf"<!-- {re.escape(marker)} -->\s*```yaml\n(.*?)```", text, re.S)
    assert block, f"{DOC}: no yaml block after <!-- {marker} -->"
    return yaml.safe_load(block.group(1))


def production() -> dict:
    return doc_yaml("params.yaml")["train"]


def smoke() -> dict:
    return deep_merge({"train": production()}, doc_yaml("profiles/smoke.yaml"))["train"]


# --- params ---------------------------------------------------------------------------------------


def test_production_params_are_the_card_recipe():
    params = TrainParams.from_params(production())
    c = params.config
    assert params.num_processes == 2 and c.batch_size == 2 and c.max_steps == 1120 and c.context_length == 512
    assert c.lr == 5e-5 and c.warmup_steps == 100 and c.mixed_precision == "bf16"
    assert params.cuda_alloc_conf == "expandable_segments:True"
    assert TrainParams.from_params(smoke()).num_processes == 1


def test_repo_params_parse_when_present():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    if "train" not in params:
        pytest.skip("params.yaml has no train section yet")
    TrainParams.from_params(params["train"])
    smoke_overlay = yaml.safe_load((REPO / "profiles" / "smoke.yaml").read_text()) or {}
    TrainParams.from_params(deep_merge(params, smoke_overlay)["train"])


@pytest.mark.parametrize("change, message", [
    ({"lr": None}, "train.lr"),
    ({"batch_size": "2"}, "train.batch_size"),
    ({"betas": [0.9]}, "train.betas"),
    ({"max_grad_norm": "1.0"}, "train.max_grad_norm"),
    ({"warmup_steps": 2000}, "warmup_steps"),
    ({"num_processes": 0}, "train.num_processes"),
    ({"learning_rate": 1e-4}, "train.learning_rate"),
])
def test_bad_params_name_the_key(change, message):
    raw = {**production(), **change}
    if change.get("lr", 0) is None:
        del raw["lr"]
    with pytest.raises(ParamsError, match=re.escape(message)):
        TrainParams.from_params(raw)


def test_launch_command_runs_this_module_under_accelerate():
    command = launch_command(2, "bf16")
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert command[-2:] == ["-m", "tasks.train"]
    joined = " ".join(command)
    assert "--num_processes 2" in joined and "--mixed_precision bf16" in joined
    assert "--config_file configs/accelerate_2gpu.yaml" in joined
    # accelerate's own parser and validation (no launch): 2 GPU processes, bf16, this module.
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(command[3:])
    monkey_cwd = os.getcwd()
    try:
        os.chdir(REPO)
        args, _, _ = _validate_launch_command(args)
    finally:
        os.chdir(monkey_cwd)
    assert args.multi_gpu and not args.use_cpu and args.num_processes == 2 and args.mixed_precision == "bf16"
    assert args.module and args.training_script == "tasks.train"


def test_two_processes_without_two_gpus_fail_loudly(tmp_path, monkeypatch, capsys):
    import torch

    if torch.cuda.device_count() >= 2:
        pytest.skip("this machine could really launch 2 processes")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": production()}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    assert main() == 1
    assert "train.num_processes' is 2" in capsys.readouterr().err
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"


# --- data -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def preprocessed(tiny_lfm, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stage_data") / "data" / "preprocessed"
    write_tiny_dataset(tiny_lfm.processor, root / "train", 6, seed=0)
    write_tiny_dataset(tiny_lfm.processor, root / "eval", 2, seed=1)
    return root


def test_missing_or_overlong_data_fails_before_training(preprocessed, tmp_path):
    with pytest.raises(FileNotFoundError, match="run the preprocess stage"):
        open_split(tmp_path / "nope", 512)
    assert open_split(tmp_path / "nope", 512, required=False) is None
    with pytest.raises(ValueError, match=r"row\(s\) longer than train.context_length=64 \(row 0: \d+ tokens"):
        open_split(preprocessed / "train", 64)


def test_live_series_is_cut_back_to_the_checkpoint(tmp_path):
    tsv = tmp_path / "plots" / "metrics" / "train" / "loss.tsv"
    tsv.parent.mkdir(parents=True)
    tsv.write_text("timestamp\tstep\tloss\n1\t1\t5.0\n2\t2\t4.0\n3\t3\t3.5\n")
    assert truncate_live_series(tmp_path, 2) == 1
    assert tsv.read_text() == "timestamp\tstep\tloss\n1\t1\t5.0\n2\t2\t4.0\n"


# --- the stage for real: kill -9 after the first checkpoint, rerun, resumed -------------------------


def stage_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["HF_HUB_OFFLINE"] = "1"
    env.pop("LOCAL_RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def read_tsv_steps(path: Path) -> list[int]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [int(r["step"]) for r in rows]


def test_stage_resumes_after_kill_9(tiny_lfm_dir, preprocessed, tmp_path):
    from pipeline.models import load_lfm

    ws = tmp_path / "ws"
    shutil.copytree(preprocessed, ws / "data" / "preprocessed")
    params = {**smoke(), "model_dir": str(tiny_lfm_dir), "context_length": 512, "max_steps": 6,
              "save_interval": 1, "val_interval": 3, "keep_checkpoints": 2, "max_grad_norm": 1.0}
    (ws / "params.yaml").write_text(yaml.safe_dump({"train": params}))
    checkpoints = ws / "models" / "checkpoints"
    command = [sys.executable, "-m", "tasks.train"]

    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(command, cwd=ws, env=stage_env(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while first.poll() is None and latest_checkpoint(checkpoints) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    first_log = (tmp_path / "first.log").read_text()
    assert first.returncode == -signal.SIGKILL, f"the run ended before the kill:\n{first_log[-2000:]}"
    killed_at = latest_checkpoint(checkpoints)
    assert killed_at is not None and 1 <= killed_at.step < 6
    assert not (ws / "models" / "final").exists()
    # Debris a crash mid-save can leave: a temp folder, and a step folder without its manifest.
    shutil.copytree(killed_at.path, checkpoints / f"{TMP_PREFIX}step-0000099")
    shutil.copytree(killed_at.path, checkpoints / "step-0000098")
    (checkpoints / "step-0000098" / MANIFEST_NAME).unlink()

    second = subprocess.run(command, cwd=ws, env=stage_env(), capture_output=True, text=True, timeout=300)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out[-3000:]
    assert f"resumed from checkpoint {Path('models/checkpoints') / killed_at.path.name} (step {killed_at.step}," in out
    assert "removed 2 stale checkpoint folder(s)" in out

    metrics = json.loads((ws / "reports" / "metrics" / "train.json").read_text())
    assert metrics["resumed_from_step"] == killed_at.step and metrics["steps"] == 6
    assert metrics["final_val_loss"] is not None and metrics["final_train_loss"] is not None
    assert metrics["tokens_per_s"] > 0 and metrics["peak_memory_kind"] == "cpu_peak_rss" and metrics["peak_memory_gib"] > 0
    # One series, each step once: points logged after the checkpoint by the killed run were replaced.
    plots = ws / "reports" / "train" / "plots" / "metrics"
    assert read_tsv_steps(plots / "train" / "loss.tsv") == [1, 2, 3, 4, 5, 6]
    assert read_tsv_steps(plots / "val" / "loss.tsv") == [3, 6]
    assert {p.stem for p in (plots / "perf").glob("*.tsv")} == {"tokens_per_s", "peak_rss_gib"}
    assert read_tsv_steps(plots / "train" / "lr.tsv")[-1] == 6
    live_summary = json.loads((ws / "reports" / "train" / "metrics.json").read_text())
    assert live_summary["step"] == 6 and "final" in live_summary
    assert sorted(p.name for p in checkpoints.iterdir() if p.is_dir()) == ["step-0000005", "step-0000006"]

    final = load_lfm(ws / "models" / "final")
    assert {p.name for p in tiny_lfm_dir.iterdir()} <= {p.name for p in (ws / "models" / "final").iterdir()}
    assert final.model is not None


# --- the GPU benchmark, tiny on CPU ----------------------------------------------------------------


def test_gpu_bench_runs_tiny_on_cpu(tmp_path):
    out = tmp_path / "train_gpu.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "bench_train_gpu.py"), "--tiny", "--cpu", "--out", str(out)],
                          cwd=REPO, env=stage_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    document = json.loads(out.read_text())
    variants = {r["variant"]: r for r in document["results"]}
    assert set(variants) == {"stock", "ours"}
    for r in variants.values():
        assert r["tokens_per_s"] > 0 and r["timed_steps"] == 2 and r["tokens_per_step"] == 1024
        assert r["peak_memory_kind"] == "cpu_peak_rss" and r["peak_rss_gib"] > 0 and r["peak_allocated_gib"] is None
    assert variants["ours"]["max_grad_norm"] == 1.0 and variants["stock"]["max_grad_norm"] is None
    assert "unavailable" in document["fits_24gb_4090"]["answer"]
    assert "stock" in proc.stdout and "ours" in proc.stdout


def test_two_processes_die_with_the_launcher_and_resume(tiny_lfm_dir, preprocessed, tmp_path):
    """The production topology on CPU: 2 DDP processes (gloo) under torchrun, as `accelerate launch` starts them.

    kill -9 of the launcher must take the workers with it (they run in their own
    process groups; without PR_SET_PDEATHSIG they would keep training next to the
    rerun), and the rerun resumes both processes (per-process RNG, sharded data).
    """
    psutil = pytest.importorskip("psutil")
    ws = tmp_path / "ws"
    shutil.copytree(preprocessed, ws / "data" / "preprocessed")
    params = {**smoke(), "model_dir": str(tiny_lfm_dir), "num_processes": 2, "context_length": 512, "max_steps": 6,
              "save_interval": 1, "val_interval": 3, "keep_checkpoints": 2}
    (ws / "params.yaml").write_text(yaml.safe_dump({"train": params}))
    env = {**stage_env(), "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "tasks.train"]
    checkpoints = ws / "models" / "checkpoints"

    launcher = subprocess.Popen(command, cwd=ws, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    deadline = time.monotonic() + 300
    while launcher.poll() is None and latest_checkpoint(checkpoints) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    workers = psutil.Process(launcher.pid).children(recursive=True)
    os.killpg(launcher.pid, signal.SIGKILL)
    launcher.wait(timeout=60)
    assert launcher.returncode == -signal.SIGKILL, "the run ended before the kill"
    assert len(workers) >= 2
    _, alive = psutil.wait_procs(workers, timeout=20)
    assert not alive, f"workers survived the launcher: {alive}"
    killed_at = latest_checkpoint(checkpoints)
    assert {"rng-0.pt", "rng-1.pt"} <= {p.name for p in killed_at.path.iterdir()}

    with open(tmp_path / "second.log", "w") as log:  # a file, not a pipe: nothing can block on a full pipe
        second = subprocess.Popen(command, cwd=ws, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            second.wait(timeout=300)
        finally:
            if second.poll() is None:
                os.killpg(second.pid, signal.SIGKILL)
    out = (tmp_path / "second.log").read_text()
    assert second.returncode == 0, out[-3000:]
    assert f"(step {killed_at.step}," in out and "resumed from checkpoint" in out
    metrics = json.loads((ws / "reports" / "metrics" / "train.json").read_text())
    assert metrics["world_size"] == 2 and metrics["global_batch_size"] == 4
    assert metrics["resumed_from_step"] == killed_at.step and metrics["steps"] == 6
    assert read_tsv_steps(ws / "reports" / "train" / "plots" / "metrics" / "train" / "loss.tsv") == [1, 2, 3, 4, 5, 6]
