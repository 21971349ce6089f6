"""The training loop: liquid-audio's step and schedule, made resumable.

What it keeps from liquid-audio 1.3.0's ``Trainer``: the step (zero_grad, bf16
autocast forward through the model's own loss, backward, fused AdamW 0.9/0.95
wd 0.1, scheduler step), the schedule (linear warmup, then cosine to
``min_lr_ratio`` x lr), the data path (``LFM2DataLoader`` + ``lfm2_collator``)
and the validation loss (mean batch loss over the eval set).

What it changes, and why:

- the model comes in as an argument: the stock ``__init__`` calls
  ``from_pretrained(model_id)``, and a ``str`` id goes to the Hub;
- the schedule steps once per optimizer step: the stock Trainer hands its
  scheduler to ``accelerator.prepare``, whose wrapper steps it ``num_processes``
  times a step (on 2 GPUs "100 warmup + cosine over 1120 steps" warms up in 50
  steps and reaches the floor at step 560);
- optional gradient clipping (``max_grad_norm``), the global grad norm logged;
- a deterministic data order and complete checkpoints, so a run resumes exactly;
- length-aware batches (``pad_to: longest``): padded to the batch's longest row,
  rows grouped by length (``data.ResumableSampler``), same rows per epoch;
- train/val loss, learning rate, non-padding tokens/s, padding fraction and peak memory reported.

It is composition, not a subclass: the stock ``Trainer.train_step`` still runs on
a ``Trainer`` of this module (it reads only ``model``, ``optimizer``, ``scheduler``
and ``accelerator``): a test and the GPU benchmark compare the two steps.

Imports torch, accelerate and liquid-audio only (the GPU benchmark runs it on a bare machine).
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from pydantic import ConfigDict
from torch.utils.data import Dataset

from pipeline.metrics_models import TrainDetails
from pipeline.training import checkpoints
from pipeline.training.checkpoints import OPTIMIZER_NAME, SCHEDULER_NAME, WEIGHTS_NAME, Checkpoint
from pipeline.training.config import TrainParams
from pipeline.training.data import PadTo, ResumableSampler, UnpaddedRows, make_loader, positions, real_tokens, row_lengths
from pipeline.training.metrics import IntervalStats, MetricsSink, peak_memory, peak_metric_name

# DDP under `accelerate launch`: the stock Trainer's setting (a batch without user audio leaves the
# conformer unused). gradient_as_bucket_view was measured (bench --variants ours-bucketview): it left
# the allocated peak unchanged and only trimmed reserved memory, so it is off.
DDP_KWARGS: dict[str, Any] = {"find_unused_parameters": True}


def make_accelerator(mixed_precision: str = "bf16") -> Accelerator:
    return Accelerator(mixed_precision=mixed_precision, kwargs_handlers=[DistributedDataParallelKwargs(**DDP_KWARGS)])


class TrainResult(TrainDetails):
    """One invocation of ``Trainer.train``: the stage's ``train.details.json`` document plus the logged history."""

    model_config = ConfigDict(strict=False)  # numbers straight from torch/numpy are converted, not refused

    history: list[dict[str, float]] = []

    def metrics(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"history"})


def build_optimizer(model: torch.nn.Module, params: TrainParams, device: torch.device):
    """The stock AdamW and schedule: warmup from 1e-8 x lr, then cosine to ``min_lr_ratio`` x lr at ``max_steps``."""
    # Fused AdamW (as stock) where torch has a fused kernel: CUDA, and CPU since torch 2.4.
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr, betas=tuple(params.betas), eps=1e-8,
                                  weight_decay=params.weight_decay, fused=device.type in ("cuda", "cpu"))
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(1, params.max_steps - params.warmup_steps), eta_min=params.lr * params.min_lr_ratio)
    if params.warmup_steps == 0:
        return optimizer, cosine
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1e-8, end_factor=1.0,
                                               total_iters=params.warmup_steps)
    return optimizer, torch.optim.lr_scheduler.SequentialLR(optimizer, schedulers=[warmup, cosine],
                                                            milestones=[params.warmup_steps])


class Trainer:
    """Trains ``model`` to ``params.max_steps``, checkpointing into ``checkpoint_dir`` and resumable from there."""

    def __init__(
        self,
        model: torch.nn.Module,
        train_data: Dataset,
        val_data: Dataset | None,
        params: TrainParams,
        *,
        checkpoint_dir: Path | None = None,
        fingerprint: str = "",
        metrics_sink: MetricsSink | None = None,
        accelerator: Accelerator | None = None,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.params = params
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.fingerprint = fingerprint
        self.metrics_sink = metrics_sink
        self.accelerator = accelerator or make_accelerator(params.mixed_precision)
        self.echo = echo or self.accelerator.print

        # Seeds dropout & co. (per process); restore() replaces these states with the checkpoint's.
        set_seed(params.seed, device_specific=True)
        device = self.accelerator.device
        model = model.to(device).train()  # load_lfm hands out eval mode (inference); dropout on here
        # The scheduler is not passed to accelerator.prepare: its wrapper would step it num_processes times a step.
        optimizer, self.scheduler = build_optimizer(model, params, device)

        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        train_lengths = row_lengths(train_data) if params.pad_to == "longest" else None
        if train_lengths is not None:
            train_data = UnpaddedRows(train_data, train_lengths)
        # pad_to: context_length pads as LFM2DataLoader already did: the stock batches, byte for byte.
        self.collate = PadTo(params.context_length if params.pad_to == "context_length" else None)
        loader = dict(batch_size=params.batch_size, workers=params.dataloader_workers, seed=params.seed,
                      pin_memory=device.type == "cuda", collate=self.collate)
        self.train_sampler = ResumableSampler(len(train_data), seed=params.seed, rank=rank, world=world,
                                              lengths=train_lengths, batch_size=params.batch_size)
        self.train_loader = make_loader(train_data, self.train_sampler, **loader)
        self.val_loader = None
        if val_data is not None and len(val_data) > 0:
            val_lengths = row_lengths(val_data) if params.pad_to == "longest" else None
            if val_lengths is not None:
                val_data = UnpaddedRows(val_data, val_lengths)
            val_sampler = ResumableSampler(len(val_data), seed=0, rank=rank, world=world, shuffle=False, pad=False)
            self.val_loader = make_loader(val_data, val_sampler, **loader)
        self.batches_per_epoch = math.ceil(len(self.train_sampler.shard()) / params.batch_size)

        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.optimizer.zero_grad()

        # Where training stands: what a checkpoint saves and restore() sets.
        self.step = 0
        self.epoch = 0
        self.batches_into_epoch = 0
        # Tokens trained into the weights since step 0, all processes (real, and positions with padding): carried
        # over a resume, so the details of a resumed run equal those of one uninterrupted run.
        self.real_tokens_trained = 0
        self.padded_tokens_trained = 0
        self.resumed_from_step: int | None = None
        self.restored_train_loss: float | None = None  # the last train/loss before the checkpoint resumed from

        self.last_grad_norm: float | None = None
        self.interval = IntervalStats()
        self.history: list[dict[str, float]] = []

    # -- one step ----------------------------------------------------------

    def train_step(self, batch):
        """The stock step plus optional clipping; returns the model output (grad norm in ``last_grad_norm``).

        Without clipping the global grad norm (an extra pass over the gradients) is
        computed only on steps that get logged.
        """
        self.optimizer.zero_grad(set_to_none=True)
        batch = batch.to(self.accelerator.device)
        with self.accelerator.autocast():
            out = self.model(batch)  # liquid-audio's forward computes the loss over the supervised positions
        self.accelerator.backward(out.loss)
        if self.params.max_grad_norm is not None:
            parameters = [p for p in self.model.parameters() if p.grad is not None]
            self.last_grad_norm = self.accelerator.clip_grad_norm_(parameters, self.params.max_grad_norm)
        elif self._logs_next_step():
            self.last_grad_norm = torch.nn.utils.get_total_norm(
                [p.grad for p in self.model.parameters() if p.grad is not None])
        self.optimizer.step()
        self.scheduler.step()
        return out

    def _logs_next_step(self) -> bool:
        upcoming = self.step + 1
        return upcoming % self.params.log_interval == 0 or upcoming >= self.params.max_steps

    # -- the loop ----------------------------------------------------------

    def train(self, stop_after: int | None = None) -> TrainResult:
        """Train to ``max_steps`` (or ``stop_after`` steps into this call: tests), checkpointing as configured."""
        p, acc = self.params, self.accelerator
        started_at, start_step = time.monotonic(), self.step
        self.echo(f"train: start at step {self.step}/{p.max_steps} ({acc.num_processes} process(es), device {acc.device})")
        self.model.train()
        run_tokens, run_seconds = 0, 0.0  # this invocation's: its tokens/s
        final_val: float | None = None
        batches: Iterator[Any] | None = None
        while self.step < p.max_steps:
            if stop_after is not None and self.step - start_step >= stop_after:
                break
            step_started = time.perf_counter()
            if batches is None:  # this epoch's remaining batches, from the current position (exact after a resume)
                self.train_sampler.set_position(self.epoch, self.batches_into_epoch * p.batch_size)
                batches = iter(self.train_loader)
            batch = next(batches)
            tokens, batch_positions = real_tokens(batch), positions(batch)
            out = self.train_step(batch)
            loss = float(acc.reduce(out.loss.detach().float(), reduction="mean").item())
            seconds = time.perf_counter() - step_started  # .item() above synchronises the device

            self.step += 1
            self.batches_into_epoch += 1
            if self.batches_into_epoch >= self.batches_per_epoch:
                self.epoch, self.batches_into_epoch = self.epoch + 1, 0
                batches = None

            counts = acc.reduce(torch.tensor([tokens, batch_positions], device=acc.device), "sum").tolist()
            all_tokens, all_positions = int(counts[0]), int(counts[1])
            run_tokens += all_tokens
            run_seconds += seconds
            self.real_tokens_trained += all_tokens
            self.padded_tokens_trained += all_positions
            self.interval.add(loss, all_tokens, seconds, self.last_grad_norm, all_positions)
            if self.step % p.log_interval == 0:
                self._report_interval()
            if self.step % p.save_interval == 0 or self.step == p.max_steps:
                self.save_checkpoint()
            if p.val_interval and self.step % p.val_interval == 0 and self.step < p.max_steps:
                self.validate()

        if self.step >= p.max_steps:
            if self.interval.steps:
                self._report_interval()
            final_val = self.validate()
        acc.wait_for_everyone()
        peak, kind = peak_memory()
        peak = float(acc.reduce(torch.tensor(peak, device=acc.device), reduction="max").item())
        elapsed = int(time.monotonic() - started_at)
        self.echo(f"train: stopped at step {self.step}/{p.max_steps} after {elapsed // 60:02d}:{elapsed % 60:02d}")
        return TrainResult(
            steps=self.step,
            max_steps=p.max_steps,
            resumed_from_step=self.resumed_from_step,
            final_train_loss=self._last_train_loss(),
            final_val_loss=final_val,
            tokens_per_s=run_tokens / run_seconds if run_seconds > 0 else None,
            real_tokens=self.real_tokens_trained,
            padded_tokens=self.padded_tokens_trained,
            padding_fraction=(1 - self.real_tokens_trained / self.padded_tokens_trained
                              if self.padded_tokens_trained else None),
            train_seconds=run_seconds,
            peak_memory_gib=peak,
            peak_memory_kind=kind,
            world_size=acc.num_processes,
            global_batch_size=p.batch_size * acc.num_processes,
            history=self.history,
        )

    @torch.no_grad()
    def validate(self) -> float | None:
        """Mean batch loss over the eval set, all processes (the stock definition); None without eval data."""
        if self.val_loader is None:
            return None
        acc = self.accelerator
        model = acc.unwrap_model(self.model)
        model.eval()
        loss_sum = torch.zeros(1, device=acc.device)
        loss_count = torch.zeros(1, device=acc.device)
        try:
            for batch in self.val_loader:
                batch = batch.to(acc.device)
                with acc.autocast():
                    out = model(batch)
                loss_sum += out.loss.detach().float()
                loss_count += 1
        finally:
            model.train()
        total = acc.reduce(loss_sum, reduction="sum")
        count = acc.reduce(loss_count, reduction="sum")
        val_loss = float((total / count.clamp_min(1)).item())
        self._publish({"val/loss": val_loss})
        self.echo(f"train: VALIDATION step={self.step}/{self.params.max_steps} val_loss={val_loss:.4f}")
        return val_loss

    # -- metrics -----------------------------------------------------------

    def _report_interval(self) -> None:
        peak, kind = peak_memory()
        metrics = {**self.interval.metrics(lr=float(self.scheduler.get_last_lr()[0])), peak_metric_name(kind): peak}
        self._publish(metrics)
        self.echo(
            f"train: step={self.step}/{self.params.max_steps} epoch={self.step / self.batches_per_epoch:.2f} "
            f"loss={metrics['train/loss']:.4f} lr={metrics['train/lr']:.3e} grad_norm={metrics['train/grad_norm']:.3f} "
            f"tokens/s={metrics['perf/tokens_per_s']:.1f} pad={metrics['perf/padding_fraction']:.2f} peak={peak:.2f}GiB ({kind})"
        )
        self.interval = IntervalStats()

    def _publish(self, metrics: dict[str, float]) -> None:
        self.history.append({"step": float(self.step), **metrics})
        if self.metrics_sink is not None and self.accelerator.is_main_process:
            self.metrics_sink(self.step, metrics)

    def _last_train_loss(self) -> float | None:
        """Mean train loss of the last log interval (carried over a resume that trains no further step)."""
        logged = next((h["train/loss"] for h in reversed(self.history) if "train/loss" in h), None)
        return logged if logged is not None else self.restored_train_loss

    # -- checkpoints -------------------------------------------------------

    def save_checkpoint(self) -> Path | None:
        """Write ``step-NNNNNNN/`` atomically (format: ``checkpoints``), then prune what this run no longer needs."""
        if self.checkpoint_dir is None:
            return None
        acc = self.accelerator
        if acc.is_main_process:
            checkpoints.start_checkpoint(self.checkpoint_dir, self.step)
        acc.wait_for_everyone()
        tmp = checkpoints.temp_folder(self.checkpoint_dir, self.step)
        torch.save(checkpoints.rng_state(), checkpoints.rng_file(tmp, acc.process_index))
        acc.wait_for_everyone()
        final = self.checkpoint_dir / checkpoints.checkpoint_name(self.step)
        if acc.is_main_process:
            with checkpoints.removed_on_failure(tmp):  # a full disk: one line, no temp folder left on it
                checkpoints.save_weights(acc.unwrap_model(self.model), tmp / WEIGHTS_NAME)
                torch.save(checkpoints.to_cpu(self.optimizer.state_dict()), tmp / OPTIMIZER_NAME)
                torch.save(checkpoints.to_cpu(self.scheduler.state_dict()), tmp / SCHEDULER_NAME)
                checkpoints.commit_checkpoint(
                    tmp, step=self.step, epoch=self.epoch, batches_into_epoch=self.batches_into_epoch,
                    fingerprint=self.fingerprint, world_size=acc.num_processes,
                    extra={"config": self.params.recipe(), "last_train_loss": self._last_train_loss(),
                           "real_tokens_trained": self.real_tokens_trained,
                           "padded_tokens_trained": self.padded_tokens_trained})
            # Only now, with a checkpoint of this run safe on disk, may other runs' checkpoints go.
            removed = checkpoints.prune(self.checkpoint_dir, self.fingerprint, self.params.keep_checkpoints)
            if removed:
                self.echo(f"train: removed {len(removed)} stale checkpoint folder(s): {', '.join(removed)}")
        acc.wait_for_everyone()
        self.echo(f"train: checkpoint {final} saved")
        return final

    def restore(self, checkpoint: Checkpoint) -> None:
        """Resume from a complete checkpoint of this run: weights, optimizer, schedule, RNG, data position."""
        acc = self.accelerator
        if checkpoint.fingerprint != self.fingerprint:
            raise RuntimeError(f"{checkpoint.path}: made by another run (fingerprint differs), refusing to resume from it")
        if checkpoint.world_size != acc.num_processes:
            raise RuntimeError(f"{checkpoint.path}: made with {checkpoint.world_size} processes, this run has "
                               f"{acc.num_processes}")
        checkpoints.load_weights(acc.unwrap_model(self.model), checkpoint.path / WEIGHTS_NAME)
        # Loaded on CPU; Optimizer.load_state_dict moves each state tensor to its parameter's device.
        self.optimizer.load_state_dict(checkpoints.load_pt(checkpoint.path / OPTIMIZER_NAME))
        self.scheduler.load_state_dict(checkpoints.load_pt(checkpoint.path / SCHEDULER_NAME))
        checkpoints.set_rng_state(checkpoints.load_pt(checkpoints.rng_file(checkpoint.path, acc.process_index)))
        self.step, self.epoch, self.batches_into_epoch = checkpoint.step, checkpoint.epoch, checkpoint.batches_into_epoch
        self.resumed_from_step = checkpoint.step
        self.restored_train_loss = checkpoint.extra.get("last_train_loss")
        self.real_tokens_trained = int(checkpoint.extra.get("real_tokens_trained", 0))
        self.padded_tokens_trained = int(checkpoint.extra.get("padded_tokens_trained", 0))
        self.echo(f"train: resumed from checkpoint {checkpoint.path} (step {checkpoint.step}, epoch {checkpoint.epoch})")
