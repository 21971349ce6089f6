"""Fine-tuning LFM2.5-Audio: liquid-audio's ``Trainer`` extended, not forked.

liquid-audio 1.3.0's ``Trainer`` has the training step, the schedule and the
data path we want, but lacks what a nightly pipeline needs. ``ResumableTrainer``
subclasses it and adds:

- the model comes in as an argument (loaded by ``pipeline.models.load_lfm``):
  the stock ``__init__`` calls ``from_pretrained(model_id)``, and a ``str`` id
  goes to the Hub;
- gradient clipping (``max_grad_norm``), with the global grad norm logged;
- the schedule steps once per optimizer step. The stock Trainer hands the
  scheduler to ``accelerator.prepare``, whose wrapper steps it ``num_processes``
  times per step: on 2 GPUs the "100 warmup + cosine over 1120 steps" recipe
  really warms up in 50 steps, reaches the floor at step 560 and climbs back;
- complete, atomic checkpoints (model, optimizer, scheduler, RNG of every
  process, data position) and an exact resume from the newest one;
- train/val loss, learning rate, non-padding tokens/s and peak memory
  reported to a metrics sink (the stage feeds DVCLive);
- a deterministic, resumable data order (seeded shuffle per epoch, sharded
  per process, started part-way into an epoch on resume).

Security: checkpoints hold safetensors weights and ``torch.save`` files that are
read back only with ``torch.load(weights_only=True)``; nothing else is unpickled.

This module must import with torch, accelerate and liquid-audio only (the GPU
benchmark runs it on a bare machine): no DVCLive, no ``pipeline.models`` at
import time.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import resource
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from liquid_audio.data.dataloader import lfm2_collator
from liquid_audio.trainer import Trainer
from liquid_audio.utils import LFMModality
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset, Sampler

PAD_TEXT_ID = 0  # <|pad|>: LFM2DataLoader pads rows with text id 0 / modality TEXT
CHECKPOINT_PREFIX = "step-"
CHECKPOINT_RE = re.compile(r"^step-(\d{7})$")
TMP_PREFIX = ".tmp-"
MANIFEST_NAME = "trainer_state.json"
WEIGHTS_NAME = "model.safetensors"
OPTIMIZER_NAME = "optimizer.pt"
SCHEDULER_NAME = "scheduler.pt"
CHECKPOINT_FORMAT = 1
GIB = 1024**3

MetricsSink = Callable[[int, dict[str, float]], None]

# DDP settings under `accelerate launch`: the stock Trainer's (a batch without user audio leaves
# the conformer unused). gradient_as_bucket_view was measured (bench --variants ours-bucketview):
# on one H200 it left the allocated peak unchanged (the peak is in backward, where fresh gradients
# still appear with zero_grad(set_to_none=True)) and only trimmed reserved memory, so it is off.
DDP_KWARGS: dict[str, Any] = {"find_unused_parameters": True}
STOCK_DDP_KWARGS: dict[str, Any] = {"find_unused_parameters": True}
BUCKET_VIEW_DDP_KWARGS: dict[str, Any] = {"find_unused_parameters": True, "gradient_as_bucket_view": True}


# --- configuration -----------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """One process's view of the recipe (``num_processes`` is the launcher's business)."""

    max_steps: int
    batch_size: int = 2  # per process
    context_length: int = 512
    lr: float = 5e-5
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    max_grad_norm: float | None = None  # None: no clipping (the stock Trainer never clips)
    mixed_precision: str = "bf16"
    seed: int = 0
    log_interval: int = 10
    val_interval: int = 100  # 0: validate only at the end
    save_interval: int = 100
    keep_checkpoints: int = 2
    dataloader_workers: int = 0

    # Fields that change the optimisation trajectory: a checkpoint made under
    # other values is not resumed from.
    TRAJECTORY = ("max_steps", "batch_size", "context_length", "lr", "warmup_steps", "min_lr_ratio", "betas",
                  "weight_decay", "max_grad_norm", "mixed_precision", "seed")

    def __post_init__(self) -> None:
        problems = []
        for name in ("max_steps", "batch_size", "context_length", "log_interval", "save_interval", "keep_checkpoints"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("warmup_steps", "val_interval", "dataloader_workers"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.warmup_steps >= self.max_steps:
            problems.append(f"warmup_steps ({self.warmup_steps}) must be < max_steps ({self.max_steps})")
        if not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            problems.append(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            problems.append(f"max_grad_norm must be > 0 or null, got {self.max_grad_norm!r}")
        if self.mixed_precision not in ("bf16", "no"):  # the weights are bf16: fp16 autocast does not fit
            problems.append(f"mixed_precision must be bf16 or no, got {self.mixed_precision!r}")
        if problems:
            raise ValueError("; ".join(problems))

    def trajectory(self) -> dict[str, Any]:
        return {name: (list(v) if isinstance(v := getattr(self, name), tuple) else v) for name in self.TRAJECTORY}


def run_fingerprint(config: TrainConfig, world_size: int, inputs: dict[str, str]) -> str:
    """Identity of a training run: trajectory params, process count and input hashes."""
    document = {"config": config.trajectory(), "world_size": world_size, "inputs": dict(sorted(inputs.items()))}
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def hash_tree(path: Path) -> str:
    """sha256 over every file under ``path`` (relative names and contents), hidden files skipped."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        rel = file.relative_to(path).as_posix() if file != path else file.name
        if any(part.startswith(".") for part in Path(rel).parts):
            continue
        digest.update(rel.encode() + b"\0")
        with open(file, "rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


# --- data --------------------------------------------------------------------


def real_tokens(batch) -> int:
    """Non-padding positions of a collated batch: every audio position plus every text id but <|pad|>."""
    non_text = int((batch.modality_flag != int(LFMModality.TEXT)).sum())
    return non_text + int((batch.text != PAD_TEXT_ID).sum())


class ResumableSampler(Sampler[int]):
    """Seeded shuffle per epoch, this process's shard, optionally started part-way in.

    Every process draws the same permutation (seed + epoch) and takes every
    ``world``-th index, padded by wrapping around so all shards are equally long
    (as ``DistributedSampler``): the processes stay in lockstep under DDP.
    """

    def __init__(self, n: int, *, seed: int, rank: int = 0, world: int = 1, shuffle: bool = True, pad: bool = True):
        if n < 1:
            raise ValueError("empty dataset")
        self.n, self.seed, self.rank, self.world, self.shuffle, self.pad = n, seed, rank, world, shuffle, pad
        self.epoch = 0
        self.skip = 0

    def set_position(self, epoch: int, skip_samples: int = 0) -> None:
        self.epoch, self.skip = epoch, skip_samples

    def shard(self) -> list[int]:
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        else:
            order = list(range(self.n))
        if self.pad:
            total = math.ceil(self.n / self.world) * self.world
            order = (order * math.ceil(total / self.n))[:total]
        return order[self.rank :: self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self.shard()[self.skip :])

    def __len__(self) -> int:
        return len(self.shard()) - self.skip


# --- checkpoints -------------------------------------------------------------


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unique_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict with one name per shared storage (tied weights), as safetensors requires."""
    seen: set[int] = set()
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        tensors[name] = tensor.detach().contiguous().cpu()
    return tensors


def save_weights(model: torch.nn.Module, target: Path) -> None:
    save_file(unique_state_dict(model), str(target), metadata={"format": "pt"})


def load_weights(model: torch.nn.Module, source: Path) -> None:
    """Load a weights file into ``model`` in place (ties kept); every tensor must be covered."""
    tensors = load_file(str(source))
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    state = model.state_dict()
    provided = {state[name].data_ptr() for name in tensors if name in state}
    uncovered = [name for name in missing if state[name].data_ptr() not in provided]
    if uncovered or unexpected:
        raise RuntimeError(f"{source}: weights do not match the model: missing {uncovered[:8]}, unexpected {unexpected[:8]}")


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    step: int
    epoch: int
    batches_into_epoch: int
    fingerprint: str
    world_size: int
    extra: dict[str, Any] = field(default_factory=dict)


def read_checkpoint(path: Path) -> CheckpointInfo | None:
    """The checkpoint's manifest if the folder is complete (every listed file at its size), else None."""
    path = Path(path)
    match = CHECKPOINT_RE.match(path.name)
    manifest = path / MANIFEST_NAME
    if not match or not manifest.is_file():
        return None
    try:
        state = json.loads(manifest.read_text())
        if state.get("format") != CHECKPOINT_FORMAT or int(state["step"]) != int(match.group(1)):
            return None
        for name, size in state["files"].items():
            if not (path / name).is_file() or (path / name).stat().st_size != size:
                return None
        return CheckpointInfo(
            path=path,
            step=int(state["step"]),
            epoch=int(state["epoch"]),
            batches_into_epoch=int(state["batches_into_epoch"]),
            fingerprint=str(state["fingerprint"]),
            world_size=int(state["world_size"]),
            extra=dict(state.get("extra", {})),
        )
    except (ValueError, KeyError, TypeError):
        return None


def list_checkpoints(directory: Path, fingerprint: str | None = None) -> list[CheckpointInfo]:
    """Complete checkpoints, oldest first; half-written temp folders and foreign runs are left out."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [info for p in directory.iterdir() if p.is_dir() and (info := read_checkpoint(p)) is not None]
    if fingerprint is not None:
        found = [info for info in found if info.fingerprint == fingerprint]
    return sorted(found, key=lambda info: info.step)


def latest_checkpoint(directory: Path, fingerprint: str | None = None) -> CheckpointInfo | None:
    found = list_checkpoints(directory, fingerprint)
    return found[-1] if found else None


def _to_cpu(obj: Any) -> Any:
    """Tensors (nested in dicts/lists) moved to plain ``cpu``: a checkpoint must not name a device
    (``cuda:1``, accelerate's ``cpu:0``) that the loading process may not have."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu")
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _rng_state() -> dict[str, Any]:
    py_version, py_state, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_kind, torch.from_numpy(np_keys.astype(np.int64)), np_pos, np_has_gauss, np_gauss],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))
    kind, keys, pos, has_gauss, np_gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, np_gauss))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def peak_memory() -> tuple[float, str]:
    """(GiB, kind): CUDA max allocated on GPU, else the process's peak resident set size."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / GIB, "cuda_max_allocated"
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    scale = 1 if sys.platform != "darwin" else 1 / 1024
    return rss_kib * 1024 * scale / GIB, "cpu_peak_rss"


# --- the trainer -------------------------------------------------------------


@dataclass
class TrainResult:
    steps: int
    resumed_from_step: int | None
    final_train_loss: float | None  # mean over the last log interval
    final_val_loss: float | None
    tokens_per_s: float | None  # non-padding tokens, all processes, over this invocation's train steps
    real_tokens: int  # this invocation
    train_seconds: float
    peak_memory_gib: float
    peak_memory_kind: str
    world_size: int
    history: list[dict[str, float]] = field(default_factory=list)


def make_accelerator(mixed_precision: str = "bf16") -> Accelerator:
    return Accelerator(mixed_precision=mixed_precision, kwargs_handlers=[DistributedDataParallelKwargs(**DDP_KWARGS)])


class ResumableTrainer(Trainer):
    """liquid-audio's Trainer with an injected model, clipping, metrics, checkpoints and resume.

    ``Trainer.__init__`` is not called: it loads the model by Hub id, builds a
    fused optimizer and prepares the scheduler (see the module docstring). This
    ``__init__`` sets the same attributes, so inherited methods (the stock
    ``train_step``, which the GPU benchmark times against ours) work on it.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        train_data: Dataset,
        val_data: Dataset | None,
        config: TrainConfig,
        *,
        checkpoint_dir: Path | None = None,
        fingerprint: str = "",
        metrics_sink: MetricsSink | None = None,
        accelerator: Accelerator | None = None,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.max_steps = config.max_steps
        self.warmup_steps = config.warmup_steps
        self.batch_size = config.batch_size
        self.logging_interval = config.log_interval
        self.save_interval = config.save_interval
        self.val_interval = config.val_interval
        self.output_dir = str(checkpoint_dir) if checkpoint_dir is not None else ""
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.fingerprint = fingerprint
        self.metrics_sink = metrics_sink

        self.accelerator = accelerator or make_accelerator(config.mixed_precision)
        self._echo = echo or self.accelerator.print
        # Seeds dropout & co. (per process); restore() replaces these states with the checkpoint's.
        set_seed(config.seed, device_specific=True)
        device = self.accelerator.device
        model = model.to(device).train()  # load_lfm hands out eval mode (inference); dropout/BN train here

        # Fused AdamW (as stock) where torch has a fused kernel: CUDA, and CPU since torch 2.4.
        self.optimizer = torch.optim.AdamW(
            model.parameters(),
            lr=config.lr,
            betas=tuple(config.betas),
            eps=1e-8,
            weight_decay=config.weight_decay,
            fused=device.type in ("cuda", "cpu"),
        )
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=max(1, config.max_steps - config.warmup_steps), eta_min=config.lr * config.min_lr_ratio
        )
        # Not passed to accelerator.prepare: its wrapper would step it num_processes times a step.
        if config.warmup_steps > 0:
            warmup = torch.optim.lr_scheduler.LinearLR(
                self.optimizer, start_factor=1e-8, end_factor=1.0, total_iters=config.warmup_steps
            )
            self.scheduler = torch.optim.lr_scheduler.SequentialLR(
                self.optimizer, schedulers=[warmup, cosine], milestones=[config.warmup_steps]
            )
        else:
            self.scheduler = cosine

        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        self.train_sampler = ResumableSampler(len(train_data), seed=config.seed, rank=rank, world=world)
        self.train_loader = self._loader(train_data, self.train_sampler)
        self.val_loader = None
        if val_data is not None and len(val_data) > 0:
            val_sampler = ResumableSampler(len(val_data), seed=0, rank=rank, world=world, shuffle=False, pad=False)
            self.val_loader = self._loader(val_data, val_sampler)
        self.batches_per_epoch = math.ceil(len(self.train_sampler.shard()) / config.batch_size)

        self.model, self.optimizer = self.accelerator.prepare(model, self.optimizer)
        self.optimizer.zero_grad()
        self.step = 0
        self.epoch = 0
        self.batches_into_epoch = 0
        self.time = 0.0
        self.resumed_from_step: int | None = None
        self.last_grad_norm: float | None = None
        self._restored_train_loss: float | None = None
        self.history: list[dict[str, float]] = []
        self._window = {"loss": 0.0, "steps": 0, "tokens": 0, "seconds": 0.0, "grad_norm": 0.0}

    def _loader(self, data: Dataset, sampler: ResumableSampler) -> DataLoader:
        workers = self.config.dataloader_workers
        return DataLoader(
            data,
            batch_size=self.config.batch_size,
            sampler=sampler,
            collate_fn=lfm2_collator,
            num_workers=workers,
            pin_memory=self.accelerator.device.type == "cuda",
            persistent_workers=False,  # the train sampler's position changes between iterators
            prefetch_factor=2 if workers > 0 else None,
            generator=torch.Generator().manual_seed(self.config.seed),  # keeps the global RNG untouched
        )

    # -- step ---------------------------------------------------------------

    def _logs_next_step(self) -> bool:
        upcoming = self.step + 1
        return upcoming % self.logging_interval == 0 or upcoming >= self.max_steps

    def train_step(self, batch):
        """Stock step plus clipping; returns the model output like the stock one (grad norm in ``last_grad_norm``).

        Without clipping the global grad norm (an extra pass over the gradients) is
        computed only on steps that get logged.
        """
        self.optimizer.zero_grad(set_to_none=True)
        batch = batch.to(self.accelerator.device)
        with self.accelerator.autocast():
            out = self.model(batch)
        self.accelerator.backward(out.loss)
        if self.config.max_grad_norm is not None:
            parameters = [p for p in self.model.parameters() if p.grad is not None]
            self.last_grad_norm = self.accelerator.clip_grad_norm_(parameters, self.config.max_grad_norm)
        elif self._logs_next_step():
            self.last_grad_norm = torch.nn.utils.get_total_norm(
                [p.grad for p in self.model.parameters() if p.grad is not None])
        self.optimizer.step()
        self.scheduler.step()
        return out

    # -- loop ---------------------------------------------------------------

    def _epoch_batches(self) -> Iterator[Any]:
        """This epoch's remaining batches, from the current position (exact after a resume)."""
        self.train_sampler.set_position(self.epoch, self.batches_into_epoch * self.config.batch_size)
        return iter(self.train_loader)

    def train(self, stop_after: int | None = None) -> TrainResult:
        """Train to ``max_steps`` (or ``stop_after`` steps into this call: tests), checkpointing as configured."""
        self.time = time.monotonic()
        start_step = self.step
        self._echo(f"train: start at step {self.step}/{self.max_steps} ({self.accelerator.num_processes} process(es), "
                   f"device {self.accelerator.device})")
        self.model.train()
        invocation_tokens, invocation_seconds = 0, 0.0
        final_val: float | None = None
        batches: Iterator[Any] | None = None
        while self.step < self.max_steps:
            if stop_after is not None and self.step - start_step >= stop_after:
                break
            started = time.perf_counter()
            if batches is None:
                batches = self._epoch_batches()
            batch = next(batches)
            tokens = real_tokens(batch)
            out = self.train_step(batch)
            loss = float(self.accelerator.reduce(out.loss.detach().float(), reduction="mean").item())
            seconds = time.perf_counter() - started  # .item() above synchronises the device
            self.step += 1
            self.batches_into_epoch += 1
            if self.batches_into_epoch >= self.batches_per_epoch:
                self.epoch, self.batches_into_epoch = self.epoch + 1, 0
                batches = None
            global_tokens = int(self.accelerator.reduce(torch.tensor(tokens, device=self.accelerator.device), "sum").item())
            invocation_tokens += global_tokens
            invocation_seconds += seconds
            self._window["loss"] += loss
            self._window["steps"] += 1
            self._window["tokens"] += global_tokens
            self._window["seconds"] += seconds
            self._window["grad_norm"] = float(self.last_grad_norm) if self.last_grad_norm is not None else math.nan
            self.log(out)

            if self.step % self.save_interval == 0 or self.step == self.max_steps:
                self.save_checkpoint()
            if self.val_interval and self.step % self.val_interval == 0 and self.step < self.max_steps:
                self.validate()

        if self.step >= self.max_steps:
            if self._window["steps"]:
                self._emit_train_metrics()
            final_val = self.validate()
        self.accelerator.wait_for_everyone()
        peak, kind = self._peak_memory()
        last_train = self._last_train_loss()
        elapsed = int(time.monotonic() - self.time)
        self._echo(f"train: stopped at step {self.step}/{self.max_steps} after {elapsed // 60:02d}:{elapsed % 60:02d}")
        return TrainResult(
            steps=self.step,
            resumed_from_step=self.resumed_from_step,
            final_train_loss=last_train,
            final_val_loss=final_val,
            tokens_per_s=invocation_tokens / invocation_seconds if invocation_seconds > 0 else None,
            real_tokens=invocation_tokens,
            train_seconds=invocation_seconds,
            peak_memory_gib=peak,
            peak_memory_kind=kind,
            world_size=self.accelerator.num_processes,
            history=self.history,
        )

    # -- metrics ------------------------------------------------------------

    def _last_train_loss(self) -> float | None:
        """Mean train loss of the last log interval (carried over a resume that trains no further step)."""
        logged = next((h["train/loss"] for h in reversed(self.history) if "train/loss" in h), None)
        return logged if logged is not None else self._restored_train_loss

    def _peak_memory(self) -> tuple[float, str]:
        peak, kind = peak_memory()
        peak_t = self.accelerator.reduce(torch.tensor(peak, device=self.accelerator.device), reduction="max")
        return float(peak_t.item()), kind

    def _publish(self, metrics: dict[str, float]) -> None:
        entry = {"step": float(self.step), **metrics}
        self.history.append(entry)
        if self.metrics_sink is not None and self.accelerator.is_main_process:
            self.metrics_sink(self.step, metrics)

    def _emit_train_metrics(self) -> None:
        w = self._window
        peak, kind = peak_memory()
        metrics = {
            "train/loss": w["loss"] / w["steps"],
            "train/lr": float(self.scheduler.get_last_lr()[0]),
            "train/grad_norm": w["grad_norm"],
            "perf/tokens_per_s": w["tokens"] / w["seconds"] if w["seconds"] > 0 else math.nan,
            f"perf/peak_{'cuda_allocated' if kind == 'cuda_max_allocated' else 'rss'}_gib": peak,
        }
        self._publish(metrics)
        self._echo(
            f"train: step={self.step}/{self.max_steps} epoch={self.step / self.batches_per_epoch:.2f} loss={metrics['train/loss']:.4f} "
            f"lr={metrics['train/lr']:.3e} grad_norm={w['grad_norm']:.3f} tokens/s={metrics['perf/tokens_per_s']:.1f} "
            f"peak={peak:.2f}GiB ({kind})"
        )
        self._window = {"loss": 0.0, "steps": 0, "tokens": 0, "seconds": 0.0, "grad_norm": 0.0}

    def log(self, model_output) -> None:
        if self.step % self.logging_interval == 0 and self._window["steps"]:
            self._emit_train_metrics()

    @torch.no_grad()
    def validate(self) -> float | None:
        """Mean batch loss over the eval set, all processes (the stock definition); None without eval data."""
        if self.val_loader is None:
            return None
        model = self.accelerator.unwrap_model(self.model)
        model.eval()
        loss_sum = torch.zeros(1, device=self.accelerator.device)
        loss_count = torch.zeros(1, device=self.accelerator.device)
        try:
            for batch in self.val_loader:
                batch = batch.to(self.accelerator.device)
                with self.accelerator.autocast():
                    out = model(batch)
                loss_sum += out.loss.detach().float()
                loss_count += 1
        finally:
            model.train()
        total = self.accelerator.reduce(loss_sum, reduction="sum")
        count = self.accelerator.reduce(loss_count, reduction="sum")
        val_loss = float((total / count.clamp_min(1)).item())
        self._publish({"val/loss": val_loss})
        self._echo(f"train: VALIDATION step={self.step}/{self.max_steps} val_loss={val_loss:.4f}")
        return val_loss

    # -- checkpoints --------------------------------------------------------

    def save_checkpoint(self) -> Path | None:
        """Write ``step-NNNNNNN/`` atomically: a temp folder renamed into place once complete."""
        if self.checkpoint_dir is None:
            return None
        acc = self.accelerator
        final = self.checkpoint_dir / f"{CHECKPOINT_PREFIX}{self.step:07d}"
        tmp = self.checkpoint_dir / f"{TMP_PREFIX}{final.name}"
        if acc.is_main_process:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        acc.wait_for_everyone()
        torch.save(_to_cpu(_rng_state()), tmp / f"rng-{acc.process_index}.pt")
        acc.wait_for_everyone()
        if acc.is_main_process:
            save_weights(acc.unwrap_model(self.model), tmp / WEIGHTS_NAME)
            torch.save(_to_cpu(self.optimizer.state_dict()), tmp / OPTIMIZER_NAME)
            torch.save(_to_cpu(self.scheduler.state_dict()), tmp / SCHEDULER_NAME)
            files = sorted(p.name for p in tmp.iterdir())
            for name in files:
                _fsync(tmp / name)
            manifest = {
                "format": CHECKPOINT_FORMAT,
                "step": self.step,
                "epoch": self.epoch,
                "batches_into_epoch": self.batches_into_epoch,
                "fingerprint": self.fingerprint,
                "world_size": acc.num_processes,
                "files": {name: (tmp / name).stat().st_size for name in files},
                "extra": {"config": asdict(self.config), "last_train_loss": self._last_train_loss()},
            }
            (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            _fsync(tmp / MANIFEST_NAME)
            _fsync(tmp)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            _fsync(self.checkpoint_dir)
            self._prune_checkpoints()
        acc.wait_for_everyone()
        self._echo(f"train: checkpoint {final} saved")
        return final

    def _prune_checkpoints(self) -> None:
        keep = list_checkpoints(self.checkpoint_dir, self.fingerprint)[-self.config.keep_checkpoints :]
        keep_names = {info.path.name for info in keep}
        for path in self.checkpoint_dir.iterdir():
            if path.is_dir() and path.name not in keep_names and (
                CHECKPOINT_RE.match(path.name) or path.name.startswith(TMP_PREFIX)
            ):
                shutil.rmtree(path, ignore_errors=True)

    def restore(self, info: CheckpointInfo) -> None:
        """Resume from a complete checkpoint of this run: weights, optimizer, schedule, RNG, data position."""
        if info.fingerprint != self.fingerprint:
            raise RuntimeError(f"{info.path}: made by another run (fingerprint differs), refusing to resume from it")
        if info.world_size != self.accelerator.num_processes:
            raise RuntimeError(f"{info.path}: made with {info.world_size} processes, this run has "
                               f"{self.accelerator.num_processes}")
        load_weights(self.accelerator.unwrap_model(self.model), info.path / WEIGHTS_NAME)
        # Loaded on CPU; Optimizer.load_state_dict moves each state tensor to its parameter's device.
        self.optimizer.load_state_dict(torch.load(info.path / OPTIMIZER_NAME, map_location="cpu", weights_only=True))
        self.scheduler.load_state_dict(torch.load(info.path / SCHEDULER_NAME, map_location="cpu", weights_only=True))
        rng = info.path / f"rng-{self.accelerator.process_index}.pt"
        _set_rng_state(torch.load(rng, map_location="cpu", weights_only=True))
        self.step, self.epoch, self.batches_into_epoch = info.step, info.epoch, info.batches_into_epoch
        self.resumed_from_step = info.step
        self._restored_train_loss = info.extra.get("last_train_loss")
        self._echo(f"train: resumed from checkpoint {info.path} (step {info.step}, epoch {info.epoch})")


def die_with_parent() -> bool:
    """Linux: get SIGKILL when the launcher dies (PR_SET_PDEATHSIG).

    ``accelerate launch`` / torchrun start the workers in their own process groups:
    a ``kill -9`` of the launcher (or of DVC's process group) leaves them running,
    still writing checkpoints, next to the rerun. Returns False where unsupported.
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import signal

    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(1, int(signal.SIGKILL), 0, 0, 0) != 0:  # PR_SET_PDEATHSIG = 1
        return False
    if os.getppid() != parent:  # the launcher died before the call
        os.kill(os.getpid(), signal.SIGKILL)
    return True


class TrainingLockedError(RuntimeError):
    """Another training run holds the checkpoint folder's lock."""


class RunLock:
    """An exclusive ``flock`` on ``<checkpoint_dir>/.lock`` for the whole run (main process).

    Two trainings writing the same checkpoints (a rerun next to a survivor of a
    crash) fail loudly instead. The kernel drops the lock when its holder dies.
    """

    def __init__(self, directory: Path):
        self.path = Path(directory) / ".lock"
        self.handle = None

    def acquire(self) -> None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise TrainingLockedError(f"{self.path}: another training run holds the lock ({holder}); "
                                      "stop it before rerunning") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        handle.flush()
        self.handle = handle

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()  # closing drops the flock
            self.handle = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def clean_checkpoint_dir(directory: Path, fingerprint: str) -> list[str]:
    """Remove half-written temp folders and checkpoints of other runs; returns what was removed."""
    directory = Path(directory)
    removed = []
    if not directory.is_dir():
        return removed
    for path in sorted(directory.iterdir()):
        if not path.is_dir():
            continue
        info = read_checkpoint(path)
        stale = path.name.startswith(TMP_PREFIX) or (CHECKPOINT_RE.match(path.name) and (
            info is None or info.fingerprint != fingerprint))
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return removed


WEIGHT_FILES = {WEIGHTS_NAME, "model.safetensors.index.json", "pytorch_model.bin"}


def base_layout_state_dict(model: torch.nn.Module, base_weights: Path) -> dict[str, torch.Tensor]:
    """The trained tensors under exactly the names the base weights file has.

    A tied tensor stored under both names in the base file (Hub layout) is written
    under both (a copy each, as safetensors wants); one stored once stays once.
    Names the base file has and the model lacks are an error.
    """
    from safetensors import safe_open

    with safe_open(str(base_weights), framework="pt") as handle:
        base_names = set(handle.keys())
    state = model.state_dict()
    unknown = sorted(base_names - set(state))
    if unknown:
        raise RuntimeError(f"{base_weights}: {len(unknown)} tensors the model does not have: {unknown[:8]}")
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in state.items():
        if name not in base_names:
            continue
        out = tensor.detach().cpu().contiguous()
        tensors[name] = out.clone() if tensor.data_ptr() in seen else out
        seen.add(tensor.data_ptr())
    return tensors


def export_model_folder(model: torch.nn.Module, base_dir: Path, out_dir: Path) -> Path:
    """A complete model folder: everything of the base folder but its weights, plus the trained weights.

    The stock Trainer writes only ``model.safetensors``; ``pipeline.models.load_lfm``
    also needs config.json, the tokenizer files and the Mimi checkpoint (and
    ``mimi_config.json`` for a fabricated folder). The weights keep the base
    file's tensor names. Written atomically; the weights' coverage of the model
    is checked before the folder is swapped in.
    """
    from pipeline.io import atomic_dir
    from pipeline.models import uncovered_weight_keys

    base_dir, out_dir = Path(base_dir), Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        for item in sorted(base_dir.iterdir()):
            if item.name.startswith(".") or item.name in WEIGHT_FILES or re.match(r"model-\d+-of-\d+\.safetensors$", item.name):
                continue
            if item.is_dir():
                shutil.copytree(item, tmp / item.name)
            else:
                shutil.copy2(item, tmp / item.name)
        save_file(base_layout_state_dict(model, base_dir / WEIGHTS_NAME), str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        missing = uncovered_weight_keys(model, tmp / WEIGHTS_NAME)
        if missing:
            raise RuntimeError(f"{out_dir}/{WEIGHTS_NAME}: {len(missing)} weights missing from the export: {missing[:8]}")
    return out_dir


def result_dict(result: TrainResult) -> dict[str, Any]:
    out = {f.name: getattr(result, f.name) for f in fields(result) if f.name != "history"}
    return out
