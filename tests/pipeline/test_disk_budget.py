"""The train stage's disk budget: the estimate is what a checkpoint really takes, the rule counts what is there."""
from __future__ import annotations

import copy

import pytest
import torch

from pipeline.training.checkpoints import save_weights
from pipeline.training.config import TrainParams
from pipeline.training.disk_budget import (CHECKPOINT_OVERHEAD_BYTES, DiskBudget, DiskBudgetError, check_disk_budget,
                                           optimizer_state_bytes, weights_bytes)
from pipeline.training.trainer import build_optimizer


def test_weights_and_adamw_state_estimates_match_what_is_saved(tiny_lfm, tmp_path):
    model = copy.deepcopy(tiny_lfm.model).train()
    save_weights(model, tmp_path / "model.safetensors")
    on_disk = (tmp_path / "model.safetensors").stat().st_size
    assert weights_bytes(model) <= on_disk < weights_bytes(model) + 256 * 1024  # + the safetensors header

    optimizer, _ = build_optimizer(model, TrainParams(max_steps=4, warmup_steps=1), torch.device("cpu"))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    state = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values()
                if isinstance(t, torch.Tensor))
    assert state == optimizer_state_bytes(model)
    torch.save(optimizer.state_dict(), tmp_path / "optimizer.pt")
    assert (tmp_path / "optimizer.pt").stat().st_size < state + CHECKPOINT_OVERHEAD_BYTES


@pytest.mark.parametrize("keep, existing, new", [(2, 0, 3), (2, 1, 2), (2, 2, 1), (2, 5, 1), (1, 0, 2)])
def test_checkpoints_already_on_disk_count_toward_the_peak(keep, existing, new):
    budget = DiskBudget(checkpoint_bytes=9_000, final_bytes=3_000, keep_checkpoints=keep, existing_checkpoints=existing)
    assert budget.new_checkpoints == new
    assert budget.needed_bytes == new * 9_000 + 3_000


def test_the_production_model_needs_about_27_gb_of_checkpoints():
    """1.47 B bf16 parameters: ~2.94 GB of weights + ~5.9 GB of AdamW moments = ~8.8 GB a checkpoint (the card's ~9 GB)."""
    params = 1_470_291_072
    budget = DiskBudget(checkpoint_bytes=params * 2 * 3, final_bytes=params * 2, keep_checkpoints=2, existing_checkpoints=0)
    assert 26e9 < budget.needed_bytes - budget.final_bytes < 27e9


def test_a_roomy_volume_passes_and_nothing_is_written(tiny_lfm, tiny_lfm_dir, tmp_path):
    budget = check_disk_budget(tiny_lfm.model, 2, tmp_path / "models/checkpoints", tmp_path / "models/final", tiny_lfm_dir)
    assert budget.checkpoint_bytes > weights_bytes(tiny_lfm.model) * 3 and budget.final_bytes > weights_bytes(tiny_lfm.model)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DiskBudgetError, match=r"needs .* free; nothing was deleted"):
        check_disk_budget(tiny_lfm.model, 10**9, tmp_path / "models/checkpoints", tmp_path / "models/final", tiny_lfm_dir)
