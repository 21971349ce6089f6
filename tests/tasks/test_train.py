"""Stage `train`: params, launching, failing safely, a real kill -9 mid-run and the resume, the GPU bench on CPU."""
from __future__ import annotations

import csv
import hashlib
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

from pipeline.chat_samples import CachedCodesMapper, CodesCache
from pipeline.interleave import RECORD_NAME, Schedule, write_record
from pipeline.params import parse_params
from pipeline.training.checkpoints import MANIFEST_NAME, TMP_PREFIX, latest_checkpoint, list_checkpoints
from pipeline.training.config import TrainParams
from pipeline.training.data import TrainDataError, open_split
from pipeline.training.metrics import truncate_live_series
from pipeline.training.run_control import launch_command
from pipeline.workspace import deep_merge
from tasks.train import main
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
    params = parse_params(TrainParams, production())
    assert params == TrainParams(), "docs/training.md's production block is TrainParams' defaults"
    assert params.num_processes == 2 and params.batch_size == 2 and params.max_steps == 1120
    assert params.context_length == 512 and params.lr == 5e-5 and params.warmup_steps == 100
    assert params.mixed_precision == "bf16" and params.cuda_alloc_conf == "expandable_segments:True"
    assert parse_params(TrainParams, smoke()).num_processes == 1


def test_repo_params_parse_when_present():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    if "train" not in params:
        pytest.skip("params.yaml has no train section yet")
    parse_params(TrainParams, params["train"])
    smoke_overlay = yaml.safe_load((REPO / "profiles" / "smoke.yaml").read_text()) or {}
    parse_params(TrainParams, deep_merge(params, smoke_overlay)["train"])


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
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "")  # so that monkeypatch also undoes what main() sets
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF")
    assert main() == 1
    assert re.fullmatch(r"train: params.yaml: 'train.num_processes' is 2 but \d GPU\(s\) are visible .*\n",
                        capsys.readouterr().err)
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"


# --- data -----------------------------------------------------------------------------------------


SHORT_PREAMBLE = Schedule(2, 6, 12)  # preprocess.first_text_chunk: 2, the tiny model's 6 / 12 otherwise


@pytest.fixture(scope="module")
def preprocessed(tiny_lfm, tmp_path_factory) -> Path:
    """Both splits laid out as the preprocess stage does with first_text_chunk 2, the schedule recorded in each."""
    root = tmp_path_factory.mktemp("stage_data") / "data" / "preprocessed"
    mapper = CachedCodesMapper(tiny_lfm.processor, CodesCache(root.parent / "codes", "tiny"), SHORT_PREAMBLE)
    for split, rows, seed in (("train", 6, 0), ("eval", 2, 1)):
        write_record(write_tiny_dataset(tiny_lfm.processor, root / split, rows, seed, mapper), SHORT_PREAMBLE)
    return root


def test_missing_or_overlong_data_fails_before_training(preprocessed, tmp_path):
    with pytest.raises(TrainDataError, match="run the preprocess stage"):
        open_split(tmp_path / "nope", 512)
    assert open_split(tmp_path / "nope", 512, required=False) is None
    with pytest.raises(TrainDataError, match=r"row\(s\) longer than train.context_length=64 \(row 0: \d+ tokens"):
        open_split(preprocessed / "train", 64)


def test_live_series_is_cut_back_to_the_checkpoint(tmp_path):
    tsv = tmp_path / "plots" / "metrics" / "train" / "loss.tsv"
    tsv.parent.mkdir(parents=True)
    tsv.write_text("timestamp\tstep\tloss\n1\t1\t5.0\n2\t2\t4.0\n3\t3\t3.5\n")
    assert truncate_live_series(tmp_path, 2) == 1
    assert tsv.read_text() == "timestamp\tstep\tloss\n1\t1\t5.0\n2\t2\t4.0\n"


# --- failing safely: nothing of the user's is touched before the inputs check out ----------------------


def fake_checkpoint(folder: Path, step: int, fingerprint: str) -> None:
    """A complete checkpoint (by its manifest) of another run: never loaded, it must only survive."""
    path = folder / f"step-{step:07d}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(os.urandom(4096))
    manifest = {"format": 1, "step": step, "epoch": 0, "batches_into_epoch": step, "fingerprint": fingerprint,
                "world_size": 1, "files": {"model.safetensors": 4096}, "extra": {}}
    (path / MANIFEST_NAME).write_text(json.dumps(manifest))


def previous_run_outputs(ws: Path) -> None:
    """What an earlier run (other params) left: two checkpoints, a final model folder, a DVCLive series."""
    fake_checkpoint(ws / "models" / "checkpoints", 2, "an earlier run")
    fake_checkpoint(ws / "models" / "checkpoints", 4, "an earlier run")
    (ws / "models" / "final").mkdir(parents=True)
    (ws / "models" / "final" / "model.safetensors").write_bytes(b"the earlier run's trained weights")
    (ws / "reports" / "train" / "plots").mkdir(parents=True)
    (ws / "reports" / "train" / "plots" / "loss.tsv").write_text("step\tloss\n1\t5.0\n4\t3.0\n")


def snapshot(folder: Path) -> dict[str, str]:
    """Every file's hash but the run lock's (the stage's own, holding the pid of its holder)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def truncate(path: Path, keep: int) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(keep)


def base(ws: Path) -> Path:
    return ws / "models" / "base" / "lfm2.5-audio"


def data(ws: Path, split: str = "train") -> Path:
    return ws / "data" / "preprocessed" / split


BAD_INPUTS = {
    # name: (params change, how the workspace is broken, the one line printed)
    "model_dir typo": ({"model_dir": "models/base/lfm2.5-audi"}, None,
                       r"models/base/lfm2\.5-audi: model folder not found \(run the base_models stage first\)"),
    "incomplete model folder": ({}, lambda ws: (base(ws) / "tokenizer.json").unlink(),
                                r"models/base/lfm2\.5-audio: incomplete LFM2\.5-Audio folder, missing tokenizer\.json"),
    "truncated weights": ({}, lambda ws: truncate(base(ws) / "model.safetensors", 4000),
                          r"models/base/lfm2\.5-audio/model\.safetensors: unreadable safetensors file \(.*\)"),
    "damaged Mimi checkpoint": ({}, lambda ws: (base(ws) / "tokenizer-e351c8d8-checkpoint125.safetensors").write_bytes(b"\xff" * 64),
                                r"models/base/lfm2\.5-audio/tokenizer-e351c8d8-checkpoint125\.safetensors: "
                                r"unreadable safetensors file \(.*\)"),
    "data without an interleave record": ({}, lambda ws: (data(ws) / RECORD_NAME).unlink(),
                                          r"data/preprocessed/train: no interleave record \(interleave\.json; "
                                          r"rerun the preprocess stage\)"),
    "an invalid interleave record": ({}, lambda ws: (data(ws) / RECORD_NAME).write_text('{"first_text": 0}'),
                                     r"data/preprocessed/train/interleave\.json: not a valid interleave record .*"),
    "splits laid out differently": ({}, lambda ws: write_record(data(ws, "eval"), Schedule(6, 6, 12)),
                                    r"data/preprocessed/train/interleave\.json records \{'first_text': 2, .*\}, but "
                                    r"data/preprocessed/eval/interleave\.json records \{'first_text': 6, .*\}"),
    "data of a model with another interleave": (
        {}, lambda ws: [write_record(data(ws, split), Schedule(2, 4, 12)) for split in ("train", "eval")],
        r"data/preprocessed/train/interleave\.json records n_text=4, n_audio=12, but "
        r"models/base/lfm2\.5-audio/config\.json has interleaved_n_text=6, interleaved_n_audio=12"),
    "unknown params key": ({"learning_rate": 1e-4}, None, r"params\.yaml: 'train\.learning_rate' is not a known key .*"),
    "lr out of bounds": ({"lr": 0.0}, None, r"params\.yaml: 'train\.lr' must be in \(0, 1\], got 0\.0"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_params_or_model_fail_in_one_line_and_touch_nothing(case, tiny_lfm_dir, preprocessed, tmp_path,
                                                                monkeypatch, capsys):
    change, damage, message = BAD_INPUTS[case]
    ws = tmp_path / "ws"
    shutil.copytree(preprocessed, ws / "data" / "preprocessed")
    shutil.copytree(tiny_lfm_dir, base(ws))
    if damage is not None:
        damage(ws)
    previous_run_outputs(ws)
    params = {**smoke(), "context_length": 512, **change}
    (ws / "params.yaml").write_text(yaml.safe_dump({"train": params}))
    before = snapshot(ws)
    monkeypatch.chdir(ws)
    assert main() == 1
    assert re.fullmatch(rf"train: {message}\n", capsys.readouterr().err)
    assert snapshot(ws) == before, "a failed run changed the workspace"


# --- the stage for real: kill -9 before and after its first checkpoint, rerun, resumed -----------------


def run_until(command: list[str], ws: Path, log: Path, ready, **popen) -> subprocess.Popen:
    """Start the stage, SIGKILL it as soon as ``ready()`` holds; returns the killed process."""
    with open(log, "w") as handle:
        proc = subprocess.Popen(command, cwd=ws, env=stage_env(), stdout=handle, stderr=subprocess.STDOUT, **popen)
        deadline = time.monotonic() + 300
        while proc.poll() is None and not ready() and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run ended before the kill:\n{log.read_text()[-2000:]}"
    return proc


def stage_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"  # the log lines the tests wait for arrive as printed
    env.pop("LOCAL_RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def read_tsv_steps(path: Path) -> list[int]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [int(r["step"]) for r in rows]


def test_stage_resumes_after_kill_9_and_keeps_the_previous_run_until_it_has_a_checkpoint(
        tiny_lfm_dir, preprocessed, tmp_path):
    from pipeline.models import load_lfm

    ws = tmp_path / "ws"
    shutil.copytree(preprocessed, ws / "data" / "preprocessed")
    previous_run_outputs(ws)
    earlier = {k: v for k, v in snapshot(ws).items() if k.startswith("models/")}
    checkpoints = ws / "models" / "checkpoints"

    def ours():
        return [info for info in list_checkpoints(checkpoints) if info.fingerprint != "an earlier run"]

    params = {**smoke(), "model_dir": str(tiny_lfm_dir), "context_length": 512, "max_steps": 6,
              "save_interval": 3, "val_interval": 3, "keep_checkpoints": 2, "max_grad_norm": 1.0}
    command = [sys.executable, "-m", "tasks.train"]

    # Killed after its first step, before its first checkpoint (step 3): the earlier run's outputs are intact.
    (ws / "params.yaml").write_text(yaml.safe_dump({"train": params}))
    first_log = tmp_path / "first.log"
    run_until(command, ws, first_log, lambda: "train: step=1/6" in first_log.read_text())
    assert {k: v for k, v in snapshot(ws).items() if k.startswith("models/")} == earlier
    assert "stale" not in first_log.read_text()

    # Killed after its first checkpoint (save_interval is not part of the run's identity).
    (ws / "params.yaml").write_text(yaml.safe_dump({"train": {**params, "save_interval": 1}}))
    run_until(command, ws, tmp_path / "second.log", lambda: bool(ours()))
    killed_at = ours()[-1]
    assert 1 <= killed_at.step < 6
    assert snapshot(ws / "models" / "final") == {k.removeprefix("models/final/"): v for k, v in earlier.items()
                                                 if k.startswith("models/final/")}, "final replaced before the run ended"
    # Debris a crash mid-save can leave: a temp folder, and a step folder without its manifest.
    shutil.copytree(killed_at.path, checkpoints / f"{TMP_PREFIX}step-0000099")
    shutil.copytree(killed_at.path, checkpoints / "step-0000098")
    (checkpoints / "step-0000098" / MANIFEST_NAME).unlink()
    # Damage: a checkpoint of this run whose weights changed after it was written (same size, valid header).
    damaged = checkpoints / "step-0000097"
    shutil.copytree(killed_at.path, damaged)
    manifest = json.loads((damaged / MANIFEST_NAME).read_text())
    (damaged / MANIFEST_NAME).write_text(json.dumps({**manifest, "step": 97}))
    with open(damaged / "model.safetensors", "r+b") as handle:
        handle.seek(-64, os.SEEK_END)
        handle.write(b"\x7f" * 64)

    third = subprocess.run(command, cwd=ws, env=stage_env(), capture_output=True, text=True, timeout=300, umask=0o002)
    out = third.stdout + third.stderr
    assert third.returncode == 0, out[-3000:]
    assert f"resumed from checkpoint {Path('models/checkpoints') / killed_at.path.name} (step {killed_at.step}," in out
    assert re.search(r"removed \d stale checkpoint folder\(s\): .*step-0000098", out)
    assert re.search(r"step-0000097: damaged checkpoint \(model.safetensors hashes to .*\); not resumed from, "
                     r"moved to .*\.damaged-step-0000097", out), out[-3000:]

    metrics = json.loads((ws / "reports" / "metrics" / "train.details.json").read_text())
    timings = json.loads((ws / "reports" / "metrics" / "train.timings.json").read_text())  # wall clock: not cached
    assert not set(timings) & set(metrics) and {"tokens_per_s", "peak_memory_gib", "train_seconds"} <= set(timings)
    metrics = {**metrics, **timings}
    assert metrics["resumed_from_step"] == killed_at.step and metrics["steps"] == 6
    headline = json.loads((ws / "reports" / "metrics" / "train.json").read_text())  # DVC's metrics
    assert headline == {"loss": metrics["final_train_loss"], "val_loss": metrics["final_val_loss"],
                        "tokens_per_s": metrics["tokens_per_s"], "padding": metrics["padding_fraction"]}
    assert metrics["final_val_loss"] is not None and metrics["final_train_loss"] is not None
    assert metrics["tokens_per_s"] > 0 and metrics["peak_memory_kind"] == "cpu_peak_rss" and metrics["peak_memory_gib"] > 0
    # One series, each step once: points logged after the checkpoint by the killed run were replaced.
    plots = ws / "reports" / "train" / "plots" / "metrics"
    assert read_tsv_steps(plots / "train" / "loss.tsv") == [1, 2, 3, 4, 5, 6]
    assert read_tsv_steps(plots / "val" / "loss.tsv") == [3, 6]
    assert {p.stem for p in (plots / "perf").glob("*.tsv")} == {"tokens_per_s", "peak_rss_gib", "padding_fraction"}
    assert read_tsv_steps(plots / "train" / "lr.tsv")[-1] == 6
    live_summary = json.loads((ws / "reports" / "train" / "metrics.json").read_text())
    assert live_summary["step"] == 6 and "final" in live_summary
    assert sorted(p.name for p in checkpoints.iterdir() if p.is_dir()) == [
        ".damaged-step-0000097", "step-0000005", "step-0000006"]

    final_dir = ws / "models" / "final"
    final = load_lfm(final_dir)
    assert {p.name for p in tiny_lfm_dir.iterdir()} <= {p.name for p in final_dir.iterdir()}
    assert final.model is not None
    # the model folder records the interleave its training data was laid out with; decoding follows it
    assert json.loads((final_dir / RECORD_NAME).read_text()) == {"first_text": 2, "n_text": 6, "n_audio": 12}
    assert final.schedule == SHORT_PREAMBLE
    # Every output follows the umask (here 002): the weights too, which safetensors alone writes 0600.
    outputs = [final_dir, *final_dir.rglob("*"), *checkpoints.glob("step-*"), *checkpoints.glob("step-*/*"),
               ws / "reports" / "metrics" / "train.json", ws / "reports" / "metrics" / "train.details.json"]
    for path in outputs:
        assert path.stat().st_mode & 0o777 == (0o775 if path.is_dir() else 0o664), path


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
    metrics = json.loads((ws / "reports" / "metrics" / "train.details.json").read_text())
    assert metrics["world_size"] == 2 and metrics["global_batch_size"] == 4
    timings = json.loads((ws / "reports" / "metrics" / "train.timings.json").read_text())
    assert timings["resumed_from_step"] == killed_at.step and metrics["steps"] == 6
    assert read_tsv_steps(ws / "reports" / "train" / "plots" / "metrics" / "train" / "loss.tsv") == [1, 2, 3, 4, 5, 6]


# --- the disk budget: a volume too small for keep_checkpoints + 1 checkpoints is refused up front -------


@pytest.fixture
def small_volume(tmpfs):
    """A real 48 MiB filesystem (tmpfs; needs root); None where it cannot be mounted."""
    return tmpfs("volume", "48m")


def test_a_volume_too_small_for_the_checkpoints_is_refused_before_anything_is_written(
        small_volume, tiny_lfm_dir, preprocessed, tmp_path, monkeypatch, capsys):
    from pipeline.training.disk_budget import CHECKPOINT_OVERHEAD_BYTES

    ws = small_volume if small_volume is not None else tmp_path / "ws"
    shutil.copytree(preprocessed, ws / "data" / "preprocessed")
    shutil.copytree(tiny_lfm_dir, base(ws))
    previous_run_outputs(ws)
    keep = 2  # 3 checkpoints of ~(7 + 14 + 16) MB and the final folder: more than 48 MiB
    if small_volume is None:  # no mount here: ask for more checkpoints than the disk's free space holds
        keep = shutil.disk_usage(ws).free // CHECKPOINT_OVERHEAD_BYTES + 1
        if keep > 1000:
            pytest.skip("cannot mount a small tmpfs here and the disk is too large for keep_checkpoints <= 1000")
    (ws / "params.yaml").write_text(yaml.safe_dump({"train": {**smoke(), "context_length": 512, "keep_checkpoints": keep}}))
    before = snapshot(ws)
    monkeypatch.chdir(ws)
    assert main() == 1
    err = capsys.readouterr().err
    match = re.fullmatch(r"train: not enough disk for models/checkpoints: needs [\d.]+ GB \((\d+) bytes: 1 new checkpoint\(s\) "
                         r"of [\d.]+ GB for keep_checkpoints \d+ \+ 1 while writing, 2 already there, \+ the final folder "
                         r"[\d.]+ GB\), \S+ has [\d.]+ GB \((\d+) bytes\) free; nothing was deleted \(free space, or lower "
                         r"train\.keep_checkpoints\)\n", err)
    assert match, err
    assert int(match.group(1)) > int(match.group(2))
    assert snapshot(ws) == before, "the refused run changed the workspace (the earlier run's checkpoints included)"
