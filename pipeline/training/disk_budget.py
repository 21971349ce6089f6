"""The train stage's up-front disk budget: refuse a volume that cannot hold the run's checkpoints.

With the 1.5 B model a checkpoint is ~9 GB (bf16 weights + AdamW's two bf16
moments); a run keeps ``keep_checkpoints`` of them and writes the next one
before pruning, then writes the final model folder. A volume that fills at
step 900 of a night's run loses the night, so the stage checks before it
writes anything: the peak it will need is

    checkpoints: max(1, keep_checkpoints + 1 - complete checkpoints already there) x one checkpoint
    + the final model folder (its weights + the base folder's other files)

(checkpoints already on disk count toward the keep: they are pruned only after
this run's next one is safe). Sizes are computed from the model's tensors, not
guessed; nothing is deleted to make room.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.params import StageError
from pipeline.training.checkpoints import list_checkpoints

# torch.save / safetensors headers, the scheduler, RNG states and the manifest: a generous allowance per checkpoint.
CHECKPOINT_OVERHEAD_BYTES = 16 * 1024**2
# AdamW keeps two moments (exp_avg, exp_avg_sq) per trainable tensor, in the parameter's dtype, plus a step count.
ADAMW_MOMENTS = 2
ADAMW_STEP_BYTES = 4


class DiskBudgetError(StageError):
    """The volume cannot hold this run's checkpoints and final folder (one line: needed vs free)."""


def unique_tensors(model: torch.nn.Module) -> list[torch.Tensor]:
    """The model's state tensors, one per storage (tied weights once), as checkpoints store them."""
    seen: set[int] = set()
    tensors = []
    for tensor in model.state_dict().values():
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        tensors.append(tensor)
    return tensors


def weights_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in unique_tensors(model))


def optimizer_state_bytes(model: torch.nn.Module) -> int:
    """AdamW's state for ``model``'s trainable parameters (moments in the parameter's dtype)."""
    seen: set[int] = set()
    total = 0
    for param in model.parameters():
        if not param.requires_grad or param.data_ptr() in seen:
            continue
        seen.add(param.data_ptr())
        total += ADAMW_MOMENTS * param.numel() * param.element_size() + ADAMW_STEP_BYTES
    return total


def folder_bytes(folder: Path, skip: set[str] = frozenset()) -> int:
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name not in skip)


def _existing_parent(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return path


@dataclass(frozen=True)
class DiskBudget:
    checkpoint_bytes: int  # one checkpoint: weights + optimizer state + overhead
    final_bytes: int  # the final model folder
    keep_checkpoints: int
    existing_checkpoints: int  # complete checkpoints already in the folder (any run)

    @property
    def new_checkpoints(self) -> int:
        """Checkpoints on disk at the peak that are not there yet (at least the one being written)."""
        return max(1, self.keep_checkpoints + 1 - self.existing_checkpoints)

    @property
    def needed_bytes(self) -> int:
        return self.new_checkpoints * self.checkpoint_bytes + self.final_bytes


def estimate(model: torch.nn.Module, keep_checkpoints: int, checkpoint_dir: Path, base_dir: Path) -> DiskBudget:
    """The peak extra bytes this run will write, from the model's tensors and the base folder's other files."""
    from pipeline.training.model_folder import WEIGHT_FILES

    weights = weights_bytes(model)
    return DiskBudget(
        checkpoint_bytes=weights + optimizer_state_bytes(model) + CHECKPOINT_OVERHEAD_BYTES,
        final_bytes=weights + folder_bytes(base_dir, skip=set(WEIGHT_FILES)),
        keep_checkpoints=keep_checkpoints,
        existing_checkpoints=len(list_checkpoints(checkpoint_dir)),
    )


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


def check_disk_budget(model: torch.nn.Module, keep_checkpoints: int, checkpoint_dir: Path, final_dir: Path,
                      base_dir: Path) -> DiskBudget:
    """Raise ``DiskBudgetError`` (needed vs free, one line) if the volume(s) cannot hold the run; nothing is deleted."""
    budget = estimate(model, keep_checkpoints, checkpoint_dir, base_dir)
    checkpoint_volume, final_volume = _existing_parent(checkpoint_dir), _existing_parent(final_dir)
    needs = {checkpoint_volume: budget.new_checkpoints * budget.checkpoint_bytes}
    if os.stat(final_volume).st_dev == os.stat(checkpoint_volume).st_dev:
        needs[checkpoint_volume] += budget.final_bytes
    else:
        needs[final_volume] = budget.final_bytes
    for volume, needed in needs.items():
        free = shutil.disk_usage(volume).free
        if needed > free:
            raise DiskBudgetError(
                f"not enough disk for {checkpoint_dir}: needs {_gb(needed)} ({needed} bytes: "
                f"{budget.new_checkpoints} new checkpoint(s) of {_gb(budget.checkpoint_bytes)} for keep_checkpoints "
                f"{keep_checkpoints} + 1 while writing, {budget.existing_checkpoints} already there, + the final folder "
                f"{_gb(budget.final_bytes)}), {volume} has {_gb(free)} ({free} bytes) free; nothing was deleted "
                f"(free space, or lower train.keep_checkpoints)")
    return budget
