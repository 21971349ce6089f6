"""Stage `train`: full fine-tune of LFM2.5-Audio with the card's recipe, resumable after a crash.

    python -m tasks.train          # the DVC command, whatever train.num_processes says

With ``train.num_processes`` > 1 the module re-executes itself under
``accelerate launch --config_file configs/accelerate_2gpu.yaml --num_processes N
--mixed_precision bf16 -m tasks.train``; with 1 it trains in this process
(the smoke profile: a few CPU steps on the tiny model).

Rerunning after a crash (kill -9 included) resumes from the newest complete
checkpoint in ``models/checkpoints/`` made by the same run — same trajectory
params, process count, training data and base model (a fingerprint in every
checkpoint); anything else there (half-written temp folders, checkpoints of
another run) is removed and training starts over. The DVCLive series in
``reports/train/`` is cut back to the resumed step and continued.

Outputs: ``models/final/`` (a complete model folder: the base folder's config,
tokenizer and Mimi files + the trained ``model.safetensors``),
``reports/metrics/train.json``, ``reports/train/`` (DVCLive metrics and plots).
"""
from __future__ import annotations

import csv
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.io import ParamsError, load_params, require, write_json

TRAIN_DATA = Path("data/preprocessed/train")
EVAL_DATA = Path("data/preprocessed/eval")
CHECKPOINT_DIR = Path("models/checkpoints")
FINAL_DIR = Path("models/final")
LIVE_DIR = Path("reports/train")
METRICS_JSON = Path("reports/metrics/train.json")
ACCELERATE_CONFIG = Path("configs/accelerate_2gpu.yaml")
SECTION = "train"


@dataclass(frozen=True)
class TrainParams:
    model_dir: Path
    num_processes: int
    cuda_alloc_conf: str | None
    config: Any  # pipeline.training.TrainConfig

    @classmethod
    def from_params(cls, params: dict) -> "TrainParams":
        from pipeline.training import TrainConfig

        def num(key: str, kind: type | tuple[type, ...] = int) -> Any:
            return require(params, key, SECTION, kind)

        known = {"model_dir", "num_processes", "cuda_alloc_conf", "batch_size", "max_steps", "context_length", "lr",
                 "warmup_steps", "min_lr_ratio", "betas", "weight_decay", "max_grad_norm", "mixed_precision", "seed",
                 "log_interval", "val_interval", "save_interval", "keep_checkpoints", "dataloader_workers"}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ParamsError(f"params.yaml: unknown key(s) {', '.join(f'{SECTION}.{k}' for k in unknown)}")
        betas = require(params, "betas", SECTION, list)
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in betas):
            raise ParamsError(f"params.yaml: '{SECTION}.betas' must be two numbers, got {betas!r}")
        clip = params.get("max_grad_norm", "<missing>")
        if clip == "<missing>":
            raise ParamsError(f"params.yaml: missing key '{SECTION}.max_grad_norm' (a number, or null for no clipping)")
        if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float))):
            raise ParamsError(f"params.yaml: '{SECTION}.max_grad_norm' must be a number or null, got {clip!r}")
        alloc = require(params, "cuda_alloc_conf", SECTION, (str, type(None)))
        processes = num("num_processes")
        if processes < 1:
            raise ParamsError(f"params.yaml: '{SECTION}.num_processes' must be >= 1, got {processes}")
        try:
            config = TrainConfig(
                max_steps=num("max_steps"),
                batch_size=num("batch_size"),
                context_length=num("context_length"),
                lr=float(num("lr", (int, float))),
                warmup_steps=num("warmup_steps"),
                min_lr_ratio=float(num("min_lr_ratio", (int, float))),
                betas=(float(betas[0]), float(betas[1])),
                weight_decay=float(num("weight_decay", (int, float))),
                max_grad_norm=None if clip is None else float(clip),
                mixed_precision=require(params, "mixed_precision", SECTION, str),
                seed=num("seed"),
                log_interval=num("log_interval"),
                val_interval=num("val_interval"),
                save_interval=num("save_interval"),
                keep_checkpoints=num("keep_checkpoints"),
                dataloader_workers=num("dataloader_workers"),
            )
        except ValueError as err:
            raise ParamsError(f"params.yaml: section '{SECTION}': {err}") from None
        return cls(Path(require(params, "model_dir", SECTION, str)), processes, alloc, config)


@dataclass(frozen=True)
class TrainPaths:
    train_data: Path = TRAIN_DATA
    eval_data: Path = EVAL_DATA
    checkpoint_dir: Path = CHECKPOINT_DIR
    final_dir: Path = FINAL_DIR
    live_dir: Path = LIVE_DIR
    metrics_json: Path = METRICS_JSON


@dataclass
class TrainOutcome:
    metrics: dict[str, Any]
    final_dir: Path
    removed_stale: list[str] = field(default_factory=list)
    main_process: bool = True


# --- launching ---------------------------------------------------------------


def launched_by_accelerate() -> bool:
    """True inside a process started by ``accelerate launch`` (or torchrun)."""
    return "LOCAL_RANK" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


def launch_command(num_processes: int, mixed_precision: str, config_file: Path = ACCELERATE_CONFIG) -> list[str]:
    return [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(config_file),
        "--num_processes", str(num_processes),
        "--mixed_precision", mixed_precision,
        "-m", "tasks.train",
    ]


# --- data --------------------------------------------------------------------


def open_split(path: Path, context_length: int, required: bool = True):
    """liquid-audio's LFM2DataLoader over a preprocessed split, every row checked against the context up front."""
    from liquid_audio.data.dataloader import LFM2DataLoader

    path = Path(path)
    if not (path / "dataset_info.json").is_file() and not (path / "state.json").is_file():
        if required:
            raise FileNotFoundError(f"{path}: not a preprocessed dataset folder (run the preprocess stage first)")
        return None
    data = LFM2DataLoader(str(path), context_length=context_length)
    if required and len(data) == 0:
        raise ValueError(f"{path}: dataset has no rows")
    too_long = [(i, len(flags[0])) for i, flags in enumerate(data.dataset["modality_flag"]) if len(flags[0]) > context_length]
    if too_long:
        shown = ", ".join(f"row {i}: {n} tokens" for i, n in too_long[:5])
        raise ValueError(f"{path}: {len(too_long)} row(s) longer than train.context_length={context_length} ({shown})")
    return data


# --- DVCLive -----------------------------------------------------------------


def truncate_live_series(live_dir: Path, last_step: int) -> int:
    """Drop DVCLive history rows after ``last_step`` (logged after the checkpoint we resume from)."""
    dropped = 0
    for tsv in (Path(live_dir) / "plots").rglob("*.tsv"):
        with open(tsv, newline="") as handle:
            rows = list(csv.reader(handle, delimiter="\t"))
        if not rows:
            continue
        header, body = rows[0], rows[1:]
        col = header.index("step") if "step" in header else None
        kept = [r for r in body if col is None or (r[col].isdigit() and int(r[col]) <= last_step)]
        dropped += len(body) - len(kept)
        if len(kept) != len(body):
            from pipeline.io import write_text

            write_text(tsv, "".join("\t".join(r) + "\n" for r in [header, *kept]))
    return dropped


class LiveSink:
    """Feeds the trainer's metrics to DVCLive at the trainer's global step."""

    def __init__(self, live_dir: Path, resume_step: int | None):
        from dvclive import Live

        if resume_step is not None:
            truncate_live_series(live_dir, resume_step)
        self.live = Live(dir=str(live_dir), resume=resume_step is not None, save_dvc_exp=False, dvcyaml=None, report=None)

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        self.live.step = step
        for name, value in metrics.items():
            if isinstance(value, float) and not math.isfinite(value):
                continue  # unavailable, not a point on the plot
            self.live.log_metric(name, value)
        self.live.sync()

    def close(self, summary: dict[str, Any]) -> None:
        for name, value in summary.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.live.log_metric(f"final/{name.removeprefix('final_')}", value, plot=False)
        self.live.end()


# --- the stage ---------------------------------------------------------------


def run(params: TrainParams, paths: TrainPaths = TrainPaths()) -> TrainOutcome:
    """Train (resuming if a checkpoint of this run exists) and write the final folder and metrics."""
    from accelerate.utils import broadcast_object_list

    from pipeline.training import RunLock, TrainingLockedError, die_with_parent, hash_tree, make_accelerator, run_fingerprint

    config = params.config
    if launched_by_accelerate():
        die_with_parent()
    accelerator = make_accelerator(config.mixed_precision)
    main_process = accelerator.is_main_process
    train_data = open_split(paths.train_data, config.context_length)
    eval_data = open_split(paths.eval_data, config.context_length, required=False)

    # Identity of this run; the main process hashes (GBs for the real model), the others receive it.
    holder = [None]
    if main_process:
        inputs = {"train_data": hash_tree(paths.train_data), "model": hash_tree(params.model_dir)}
        if eval_data is not None:
            inputs["eval_data"] = hash_tree(paths.eval_data)
        holder[0] = run_fingerprint(config, accelerator.num_processes, inputs)
    if accelerator.num_processes > 1:
        broadcast_object_list(holder)
    fingerprint = holder[0]

    # One training per checkpoint folder; every process learns whether the main one got the lock.
    lock = RunLock(paths.checkpoint_dir) if main_process else None
    status = [""]
    if lock is not None:
        try:
            lock.acquire()
        except TrainingLockedError as err:
            status[0] = str(err)
    if accelerator.num_processes > 1:
        broadcast_object_list(status)
    if status[0]:
        raise TrainingLockedError(status[0])
    try:
        return _train(params, paths, accelerator, fingerprint, train_data, eval_data)
    finally:
        if lock is not None:
            lock.release()


def _train(params: TrainParams, paths: TrainPaths, accelerator, fingerprint: str, train_data, eval_data) -> TrainOutcome:
    import torch

    from pipeline.models import load_lfm
    from pipeline.training import (
        ResumableTrainer,
        clean_checkpoint_dir,
        export_model_folder,
        latest_checkpoint,
        result_dict,
    )

    config = params.config
    main_process = accelerator.is_main_process
    removed: list[str] = []
    if main_process:
        removed = clean_checkpoint_dir(paths.checkpoint_dir, fingerprint)
        if removed:
            accelerator.print(f"train: removed {len(removed)} stale checkpoint folder(s): {', '.join(removed)}")
    accelerator.wait_for_everyone()
    resume = latest_checkpoint(paths.checkpoint_dir, fingerprint)

    sink = LiveSink(paths.live_dir, resume.step if resume else None) if main_process else None

    loaded = load_lfm(params.model_dir, device="cpu", dtype=torch.bfloat16)
    model = loaded.model
    del loaded  # the processor (Mimi) is not needed for training

    trainer = ResumableTrainer(
        model, train_data, eval_data, config,
        checkpoint_dir=paths.checkpoint_dir, fingerprint=fingerprint, metrics_sink=sink, accelerator=accelerator,
    )
    if resume is not None:
        trainer.restore(resume)
    result = trainer.train()

    metrics = result_dict(result)
    # tokens_per_s: non-padding tokens/s over all processes, this invocation's train steps only;
    # peak_memory_gib: torch.cuda.max_memory_allocated on GPU, process peak RSS on CPU (peak_memory_kind
    # says which), max over processes. Both are documented in docs/training.md.
    metrics.update({"max_steps": config.max_steps, "global_batch_size": config.batch_size * accelerator.num_processes})
    if main_process:
        export_model_folder(accelerator.unwrap_model(trainer.model), params.model_dir, paths.final_dir)
        write_json(paths.metrics_json, metrics)
        sink.close({k: metrics[k] for k in ("final_train_loss", "final_val_loss", "tokens_per_s", "peak_memory_gib")
                    if metrics.get(k) is not None})
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainOutcome(metrics=metrics, final_dir=paths.final_dir, removed_stale=removed, main_process=main_process)


def main() -> int:
    try:
        params = TrainParams.from_params(load_params(SECTION))
    except ParamsError as err:
        print(f"train: {err}", file=sys.stderr)
        return 1
    if params.cuda_alloc_conf:  # before anything touches CUDA; inherited by launched processes
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", params.cuda_alloc_conf)

    if params.num_processes > 1 and not launched_by_accelerate():
        import torch

        visible = torch.cuda.device_count()
        if visible < params.num_processes:
            print(f"train: params.yaml 'train.num_processes' is {params.num_processes} but {visible} GPU(s) are visible "
                  "(set it to 1 for a single-process run)", file=sys.stderr)
            return 1
        command = launch_command(params.num_processes, params.config.mixed_precision)
        print(f"train: launching {' '.join(command)}", flush=True)
        os.execv(command[0], command)  # replaces this process: signals reach the launcher

    from pipeline.models import ModelFolderError
    from pipeline.training import TrainingLockedError

    try:
        outcome = run(params)
    except (FileNotFoundError, ValueError, ModelFolderError, TrainingLockedError) as err:
        print(f"train: {err}", file=sys.stderr)
        return 1
    if not outcome.main_process:
        return 0
    m = outcome.metrics
    rate = "n/a" if m["tokens_per_s"] is None else f"{m['tokens_per_s']:.1f}"
    print(f"train: {m['steps']} steps (resumed from {m['resumed_from_step']}), final train loss {m['final_train_loss']}, "
          f"val loss {m['final_val_loss']}, {rate} tokens/s, peak {m['peak_memory_gib']:.2f} GiB "
          f"({m['peak_memory_kind']}); model in {outcome.final_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
