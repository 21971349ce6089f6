"""The ``train`` params group and the identity of a training run.

``TrainParams`` is ``params.yaml``'s ``train`` group, parsed by ``pipeline.params``
(unknown keys refused, types and bounds checked). Its defaults are the card's
v4.1 recipe, as in the repo's ``params.yaml``.

The run fingerprint says which checkpoints belong to this run: the params that
change the optimisation trajectory, the process count and the contents of the
inputs. A checkpoint with another fingerprint is never resumed from.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pipeline.artifacts import BASE_LFM_DIR
from pipeline.params import StageParams, field


@dataclass(frozen=True)
class TrainParams(StageParams):
    """One training run; ``batch_size`` is per process (``num_processes`` of them under ``accelerate launch``)."""

    SECTION: ClassVar[str] = "train"

    model_dir: Path = BASE_LFM_DIR
    num_processes: int = field(2, lo=1, hi=64)
    mixed_precision: Literal["bf16", "no"] = "bf16"  # the weights are bf16: fp16 autocast does not fit
    cuda_alloc_conf: str | None = "expandable_segments:True"  # exported as PYTORCH_CUDA_ALLOC_CONF
    batch_size: int = field(2, lo=1, hi=1024)
    max_steps: int = field(1120, lo=1, hi=10_000_000)
    context_length: int = field(512, lo=1, hi=131_072)  # the longest row allowed
    # longest: a batch is padded to its longest row, rows grouped by length; context_length: every row padded to
    # context_length in plain shuffled order (the stock Trainer, kept to reproduce it). Same loss on the real rows.
    pad_to: Literal["longest", "context_length"] = "longest"
    lr: float = field(5e-5, lo=0, hi=1, lo_open=True)
    warmup_steps: int = field(100, lo=0)
    min_lr_ratio: float = field(0.1, lo=0, hi=1)
    betas: tuple[float, ...] = field((0.9, 0.95), lo=0, hi=1, hi_open=True)
    weight_decay: float = field(0.1, lo=0, hi=1)
    max_grad_norm: float | None = field(None, lo=0, lo_open=True)  # None: no clipping (the stock Trainer never clips)
    seed: int = field(0, lo=0, hi=2**32 - 1)  # numpy's seed range
    log_interval: int = field(10, lo=1)
    val_interval: int = field(100, lo=0)  # 0: validate only at the end
    save_interval: int = field(100, lo=1)
    keep_checkpoints: int = field(2, lo=1, hi=1000)
    dataloader_workers: int = field(2, lo=0, hi=64)

    # Params that change the optimisation trajectory: a checkpoint made under other values is not resumed from.
    TRAJECTORY: ClassVar[tuple[str, ...]] = (
        "max_steps", "batch_size", "context_length", "lr", "warmup_steps", "min_lr_ratio", "betas",
        "weight_decay", "max_grad_norm", "mixed_precision", "seed", "pad_to")
    # What a checkpoint's manifest records of the params (the trainer's view: no paths, no launcher settings).
    RECIPE: ClassVar[tuple[str, ...]] = TRAJECTORY + (
        "log_interval", "val_interval", "save_interval", "keep_checkpoints", "dataloader_workers")

    def check(self) -> None:
        if len(self.betas) != 2:
            raise self.bad("betas", f"must be two numbers, got {list(self.betas)!r}")
        if self.warmup_steps >= self.max_steps:
            raise self.bad("warmup_steps", f"must be < max_steps ({self.max_steps}), got {self.warmup_steps}")

    def _as_json(self, names: tuple[str, ...]) -> dict[str, Any]:
        return {name: list(v) if isinstance(v := getattr(self, name), tuple) else v for name in names}

    def trajectory(self) -> dict[str, Any]:
        document = self._as_json(self.TRAJECTORY)
        if document["pad_to"] == "context_length":
            del document["pad_to"]  # the stock order: checkpoints written before pad_to existed still resume
        return document

    def recipe(self) -> dict[str, Any]:
        return self._as_json(self.RECIPE)


def run_fingerprint(params: TrainParams, world_size: int, inputs: dict[str, str]) -> str:
    """Identity of a training run: trajectory params, process count and input hashes."""
    document = {"config": params.trajectory(), "world_size": world_size, "inputs": dict(sorted(inputs.items()))}
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
