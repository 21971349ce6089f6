"""Stage `train`: full fine-tune of LFM2.5-Audio with the card's recipe, resumable after a crash.

    python -m tasks.train          # the DVC command, whatever train.num_processes says

With ``train.num_processes`` > 1 the module re-executes itself under
``accelerate launch --config_file configs/accelerate_2gpu.yaml --num_processes N
--mixed_precision bf16 -m tasks.train``; with 1 it trains in this process
(the smoke profile: a few CPU steps on the tiny model).

Nothing on disk changes until the params, the data and the base model have been
checked, the model has loaded and the volume has room for ``keep_checkpoints`` + 1
checkpoints and the final folder (``pipeline.training.disk_budget``: refused in
one line, needed vs free bytes, nothing deleted). Rerunning after a crash (kill -9 included)
resumes from the newest complete checkpoint in ``models/checkpoints/`` made by
the same run whose files hash to its manifest (a damaged one is named and skipped) — same trajectory params, process count, training data and base
model (a fingerprint in every checkpoint). Checkpoints of another run stay until
this run has written its first checkpoint, then go. The DVCLive series in
``reports/train/`` is cut back to the resumed step and continued.

Outputs: ``models/final/`` (a complete model folder: the base folder's config,
tokenizer and Mimi files + the trained ``model.safetensors`` + ``interleave.json``,
the interleave schedule the preprocessed data records, which decoding follows),
replaced only once training has finished; ``reports/metrics/train.json`` (headline) + ``train.details.json``; ``reports/train/``
(DVCLive metrics and plots). The code is in ``pipeline/training/``.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.artifacts import CHECKPOINTS_DIR, FINAL_MODEL_DIR, PREPROCESSED_DIR, TRAIN_LIVE_DIR, metrics_json
from pipeline.metrics_models import TrainDetails, write_stage_metrics
from pipeline.models import ModelFolderError
from pipeline.params import load_stage_params, stage_main
from pipeline.training.config import TrainParams, hash_tree, run_fingerprint
from pipeline.training.run_control import launch_command, launched_by_accelerate

if TYPE_CHECKING:
    from pipeline.training.trainer import TrainResult


@dataclass(frozen=True)
class TrainPaths:
    train_data: Path = PREPROCESSED_DIR / "train"
    eval_data: Path = PREPROCESSED_DIR / "eval"
    checkpoint_dir: Path = CHECKPOINTS_DIR
    final_dir: Path = FINAL_MODEL_DIR
    live_dir: Path = TRAIN_LIVE_DIR
    metrics_json: Path = metrics_json("train")


def run(params: TrainParams, paths: TrainPaths = TrainPaths()) -> TrainResult:
    """Check the inputs and load the model, then train (resuming this run's checkpoint if any) and export."""
    from accelerate.utils import broadcast_object_list

    from pipeline.training.checkpoints import read_checkpoint, resume_checkpoint
    from pipeline.training.disk_budget import check_disk_budget
    from pipeline.interleave import RECORD_NAME, check_fits
    from pipeline.training.data import open_split, split_schedule
    from pipeline.training.metrics import LiveSink
    from pipeline.training.model_folder import export_model_folder, load_base_model
    from pipeline.training.run_control import die_with_parent, run_lock
    from pipeline.training.trainer import Trainer, make_accelerator

    if launched_by_accelerate():
        die_with_parent()
    accelerator = make_accelerator(params.mixed_precision)
    main_process = accelerator.is_main_process

    # 1. Inputs, read-only: the data splits, the base model. A bad one fails here, before anything is written.
    train_data = open_split(paths.train_data, params.context_length)
    eval_data = open_split(paths.eval_data, params.context_length, required=False)
    schedule = split_schedule(paths.train_data, paths.eval_data)  # what the samples were laid out with
    model = load_base_model(params.model_dir)
    check_fits(schedule, f"{paths.train_data}/{RECORD_NAME}", params.model_dir)  # preprocess.model_dir vs train's
    # The volume must hold keep_checkpoints + 1 checkpoints and the final folder: refused now, not at step 900.
    budget = check_disk_budget(model, params.keep_checkpoints, paths.checkpoint_dir, paths.final_dir, params.model_dir)
    accelerator.print(f"train: disk budget {budget.needed_bytes / 1e9:.2f} GB (checkpoint "
                      f"{budget.checkpoint_bytes / 1e9:.2f} GB, final folder {budget.final_bytes / 1e9:.2f} GB)")

    # 2. Which run this is; the main process hashes (GBs for the real model), the others receive it.
    holder = [None]
    if main_process:
        inputs = {"train_data": hash_tree(paths.train_data), "model": hash_tree(params.model_dir)}
        if eval_data is not None:
            inputs["eval_data"] = hash_tree(paths.eval_data)
        holder[0] = run_fingerprint(params, accelerator.num_processes, inputs)
    if accelerator.num_processes > 1:
        broadcast_object_list(holder)
    fingerprint = holder[0]

    with run_lock(accelerator, paths.checkpoint_dir):  # one run per checkpoint folder
        # 3. Train. Other runs' checkpoints go once this run has saved one (Trainer.save_checkpoint).
        # The main process hashes every file of the newest checkpoint (a damaged one is named and skipped).
        chosen = [None]
        if main_process:
            found = resume_checkpoint(paths.checkpoint_dir, fingerprint, echo=accelerator.print)
            chosen[0] = None if found is None else str(found.path)
        if accelerator.num_processes > 1:
            broadcast_object_list(chosen)
        resume = None if chosen[0] is None else read_checkpoint(Path(chosen[0]))
        sink = LiveSink(paths.live_dir, resume.step if resume else None) if main_process else None
        trainer = Trainer(model, train_data, eval_data, params, checkpoint_dir=paths.checkpoint_dir,
                          fingerprint=fingerprint, metrics_sink=sink, accelerator=accelerator)
        if resume is not None:
            trainer.restore(resume)
        result = trainer.train()

        # 4. Outputs, only once training has succeeded.
        metrics = result.metrics()
        if main_process:
            export_model_folder(accelerator.unwrap_model(trainer.model), params.model_dir, paths.final_dir, schedule)
            write_stage_metrics(TrainDetails.of(metrics), paths.metrics_json)
            sink.close({k: metrics[k] for k in ("final_train_loss", "final_val_loss", "padding_fraction")
                        if metrics.get(k) is not None})
        accelerator.wait_for_everyone()
        accelerator.end_training()

    rate = "n/a" if result.tokens_per_s is None else f"{result.tokens_per_s:.1f}"
    padding = "n/a" if result.padding_fraction is None else f"{result.padding_fraction:.0%}"
    accelerator.print(
        f"train: {result.steps} steps (resumed from {result.resumed_from_step}), final train loss "
        f"{result.final_train_loss}, val loss {result.final_val_loss}, {rate} non-pad tokens/s ({padding} padding), peak "
        f"{result.peak_memory_gib:.2f} GiB ({result.peak_memory_kind}); model in {paths.final_dir}")
    return result


def work() -> None:
    params = load_stage_params(TrainParams)
    if params.cuda_alloc_conf:  # before anything touches CUDA; inherited by launched processes
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", params.cuda_alloc_conf)
    if params.num_processes > 1 and not launched_by_accelerate():
        import torch

        visible = torch.cuda.device_count()
        if visible < params.num_processes:
            raise params.bad("num_processes", f"is {params.num_processes} but {visible} GPU(s) are visible "
                                              "(set it to 1 for a single-process run)")
        command = launch_command(params.num_processes, params.mixed_precision)
        print(f"train: launching {' '.join(command)}", flush=True)
        os.execv(command[0], command)  # replaces this process: signals reach the launcher
    run(params)


def main() -> int:
    return stage_main("train", work, expected=(ModelFolderError,))


if __name__ == "__main__":
    sys.exit(main())
