"""pipeline.training: params, data order, the trainer, checkpoints and export, on the tiny model (CPU, ctx 512)."""
from __future__ import annotations

import copy
import io
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from safetensors.torch import load_file

from pipeline.interleave import RECORD_NAME, Schedule, read_record, write_record
from pipeline.io import INVOCATION_KEYS
from pipeline.params import ParamsError, parse_params
from pipeline.training.checkpoints import (
    CHECKPOINT_PREFIX,
    MANIFEST_NAME,
    TMP_PREFIX,
    latest_checkpoint,
    list_checkpoints,
    prune,
    read_checkpoint,
    resume_checkpoint,
)
from pipeline.training.config import TrainParams, run_fingerprint
from pipeline.training.data import PadTo, ResumableSampler, UnpaddedRows, positions, real_tokens, row_lengths
from pipeline.training.model_folder import base_layout_state_dict, export_model_folder
from pipeline.training.trainer import Trainer

CTX = 512


# --- a tiny preprocessed dataset, made by liquid-audio's own mapper + preprocess_dataset ---------


def wav_bytes(seconds: float, sample_rate: int, freq: float, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + rng.normal(0, 0.01, t.size)
    buffer = io.BytesIO()
    soundfile.write(buffer, wave.astype(np.float32), sample_rate, format="WAV")
    return buffer.getvalue()


def tiny_chats(n: int, seed: int = 0) -> list:
    """Chats covering every segment kind: system/user text, user audio, assistant text, audio and interleaved."""
    from liquid_audio.data.types import AudioSegment, ChatMessage, InterleavedSegment, TextSegment

    chats = []
    for i in range(n):
        s = seed * 100 + i
        system = ChatMessage(role="system", content=[TextSegment(text="You are a helpful voice assistant.")])
        if i % 3 == 0:
            user = ChatMessage(role="user", content=[AudioSegment(audio=wav_bytes(0.8, 16_000, 220 + 20 * i, s))])
            reply = ChatMessage(role="assistant", content=[
                InterleavedSegment(text=f"Sure, checking that for you ({i}).", audio=wav_bytes(0.9, 24_000, 400 + 15 * i, s))])
        elif i % 3 == 1:
            user = ChatMessage(role="user", content=[TextSegment(text=f"what's the weather in city {i}?")])
            reply = ChatMessage(role="assistant", content=[
                TextSegment(text="Let me look."), AudioSegment(audio=wav_bytes(0.5, 24_000, 600 + 10 * i, s))])
        else:
            user = ChatMessage(role="user", content=[AudioSegment(audio=wav_bytes(0.5, 16_000, 300 + 5 * i, s)),
                                                     TextSegment(text="and a joke please")])
            reply = ChatMessage(role="assistant", content=[TextSegment(text=f"Here is joke number {i}.")])
        chats.append([system, user, reply])
    return chats


def write_tiny_dataset(processor, out: Path, n: int, seed: int = 0, mapper=None) -> Path:
    """liquid-audio's preprocess_dataset format (an HF datasets folder), as the preprocess stage writes it.

    ``mapper``: liquid-audio's own unless given (the preprocess stage's ``CachedCodesMapper``, say).
    """
    from liquid_audio.data.mapper import LFM2AudioChatMapper
    from liquid_audio.data.preprocess import preprocess_dataset

    preprocess_dataset(tiny_chats(n, seed), out, mapper or LFM2AudioChatMapper(processor), max_context_length=CTX)
    return out


@pytest.fixture(scope="session")
def tiny_data(tiny_lfm, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("preprocessed")
    return {
        "train": write_tiny_dataset(tiny_lfm.processor, root / "train", 6, seed=0),
        "eval": write_tiny_dataset(tiny_lfm.processor, root / "eval", 2, seed=1),
    }


@pytest.fixture(scope="module")
def base_model(tiny_lfm_dir):
    """The tiny model as loaded from its folder, kept pristine: each trainer trains a deep copy."""
    from pipeline.models import load_lfm

    return load_lfm(tiny_lfm_dir).model


def small_params(**overrides) -> TrainParams:
    values = dict(max_steps=4, batch_size=2, context_length=CTX, lr=1e-3, warmup_steps=1, log_interval=1,
                  val_interval=2, save_interval=2, keep_checkpoints=2, max_grad_norm=1.0, seed=0, dataloader_workers=0)
    values.update(overrides)
    return TrainParams(**values)


def make_trainer(base_model, tiny_data, params, ckpt: Path | None, fingerprint="fp", sink=None, echo=None) -> Trainer:
    from liquid_audio.data.dataloader import LFM2DataLoader

    return Trainer(
        copy.deepcopy(base_model),
        LFM2DataLoader(str(tiny_data["train"]), CTX),
        LFM2DataLoader(str(tiny_data["eval"]), CTX),
        params,
        checkpoint_dir=ckpt,
        fingerprint=fingerprint,
        metrics_sink=sink,
        echo=echo or (lambda line: None),
    )


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def umask_mode(kind: str) -> int:
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if kind == "dir" else 0o666) & ~umask


def modes_off_the_umask(folder: Path) -> list[str]:
    """Files and folders under ``folder`` whose mode is not what the umask gives a new one."""
    return [f"{p.relative_to(folder)}: {oct(p.stat().st_mode & 0o777)}" for p in [folder, *folder.rglob("*")]
            if p.stat().st_mode & 0o777 != umask_mode("dir" if p.is_dir() else "file")]


# --- params and the run fingerprint ---------------------------------------------------------------


def test_params_defaults_are_the_card_recipe():
    p = TrainParams()
    assert (p.batch_size, p.max_steps, p.context_length, p.lr, p.warmup_steps, p.betas) == (2, 1120, 512, 5e-5, 100, (0.9, 0.95))
    assert p.max_grad_norm is None and p.mixed_precision == "bf16" and p.num_processes == 2


@pytest.mark.parametrize("raw, message", [
    ({"learning_rate": 1e-4}, "'train.learning_rate' is not a known key"),
    ({"lr": 0}, "'train.lr' must be in (0, 1]"),
    ({"lr": float("nan")}, "'train.lr' must be a number, got nan"),
    ({"lr": float("inf")}, "'train.lr' must be a number, got inf"),
    ({"lr": 3.0}, "'train.lr' must be in (0, 1]"),
    ({"lr": "5e-5"}, "'train.lr' must be a number"),  # YAML reads 5e-5 (no dot) as a string
    ({"max_steps": 0}, "'train.max_steps' must be in [1, 1e+07]"),
    ({"max_steps": 10**9}, "'train.max_steps' must be in [1, 1e+07]"),
    ({"batch_size": 0}, "'train.batch_size' must be in [1, 1024]"),
    ({"batch_size": "2"}, "'train.batch_size' must be an integer"),
    ({"keep_checkpoints": 0}, "'train.keep_checkpoints' must be in [1, 1000]"),
    ({"warmup_steps": 1120}, "'train.warmup_steps' must be < max_steps (1120)"),
    ({"betas": [0.9]}, "'train.betas' must be two numbers"),
    ({"betas": [0.9, 1.0]}, "'train.betas' must be in [0, 1)"),
    ({"max_grad_norm": 0}, "'train.max_grad_norm' must be in (0, inf]"),
    ({"max_grad_norm": "1.0"}, "'train.max_grad_norm' must be a number or null"),
    ({"mixed_precision": "fp16"}, "'train.mixed_precision' must be one of 'bf16', 'no'"),
    ({"num_processes": 0}, "'train.num_processes' must be in [1, 64]"),
    ({"seed": -1}, "'train.seed' must be in [0, 4.29497e+09]"),
])
def test_bad_params_fail_in_one_line_naming_the_key(raw, message):
    with pytest.raises(ParamsError) as err:
        parse_params(TrainParams, raw)
    assert str(err.value).startswith(f"params.yaml: {message}") and "\n" not in str(err.value)


def test_fingerprint_depends_on_trajectory_not_on_logging():
    base = small_params()
    fp = run_fingerprint(base, 1, {"data": "a"})
    assert fp == run_fingerprint(small_params(log_interval=5, save_interval=1, val_interval=0), 1, {"data": "a"})
    assert fp != run_fingerprint(small_params(lr=2e-3), 1, {"data": "a"})
    assert fp != run_fingerprint(base, 2, {"data": "a"})
    assert fp != run_fingerprint(base, 1, {"data": "b"})


def test_fingerprint_of_the_card_recipe_is_unchanged():
    """Checkpoints written before this code still resume: the fingerprint document is the same."""
    stock = TrainParams(pad_to="context_length")
    assert run_fingerprint(stock, 2, {"train_data": "a", "model": "b"}) == (
        "207c85dfbf9aea3528beab40abd69639596100f484b4924e905c6183ee3f61ef")


def test_length_aware_batches_are_another_run():
    """pad_to: longest groups rows differently, so its checkpoints are not the stock order's."""
    inputs = {"data": "a"}
    assert run_fingerprint(small_params(), 1, inputs) != run_fingerprint(small_params(pad_to="context_length"), 1, inputs)


# --- data order -----------------------------------------------------------------------------------


def test_sampler_is_seeded_sharded_and_resumable():
    full = ResumableSampler(5, seed=3)
    full.set_position(epoch=1)
    order = list(full)
    assert sorted(order) == list(range(5))
    again = ResumableSampler(5, seed=3)
    again.set_position(epoch=1, skip_samples=2)
    assert list(again) == order[2:]
    shards = [ResumableSampler(5, seed=3, rank=r, world=2) for r in range(2)]
    for s in shards:
        s.set_position(epoch=1)
    assert len(list(shards[0])) == len(list(shards[1])) == 3  # padded so both processes take 3 steps
    assert set(shards[0]) | set(shards[1]) == set(range(5))


def test_real_tokens_count_excludes_padding(tiny_data):
    from liquid_audio.data.dataloader import LFM2DataLoader, lfm2_collator

    data = LFM2DataLoader(str(tiny_data["train"]), CTX)
    unpadded = sum(len(data.dataset[i]["modality_flag"][0]) for i in range(2))
    batch = lfm2_collator([data[0], data[1]])
    assert batch.modality_flag.shape == (2, CTX)
    assert real_tokens(batch) == unpadded < 2 * CTX


def epoch_of(sampler: ResumableSampler, epoch: int, skip: int = 0) -> list[int]:
    sampler.set_position(epoch, skip)
    return list(sampler)


@pytest.mark.parametrize("world", [1, 2])
def test_bucketed_sampler_yields_every_row_once_per_epoch_in_a_seeded_order(world):
    lengths = torch.randint(10, 500, (37,), generator=torch.Generator().manual_seed(1)).tolist()
    make = lambda seed, rank: ResumableSampler(37, seed=seed, rank=rank, world=world, lengths=lengths, batch_size=2)
    for epoch in range(3):
        shards = [epoch_of(make(5, r), epoch) for r in range(world)]
        assert len({len(s) for s in shards}) == 1  # every process takes the same number of steps
        seen = [i for s in shards for i in s]
        assert sorted(set(seen)) == list(range(37)) and len(seen) == math.ceil(37 / world) * world
        assert shards == [epoch_of(make(5, r), epoch) for r in range(world)]  # a pure function of (seed, epoch)
    assert epoch_of(make(5, 0), 0) != epoch_of(make(5, 0), 1) != epoch_of(make(6, 0), 1)


def test_bucketed_sampler_resumes_exactly_from_a_saved_position():
    lengths = list(range(50, 0, -1))
    full = ResumableSampler(50, seed=3, lengths=lengths, batch_size=4)
    order = epoch_of(full, 2)
    again = ResumableSampler(50, seed=3, lengths=lengths, batch_size=4)
    assert epoch_of(again, 2, skip=12) == order[12:]


def test_bucketed_sampler_groups_rows_of_similar_length():
    lengths = torch.randint(10, 500, (256,), generator=torch.Generator().manual_seed(2)).tolist()

    def padded_positions(sampler):
        order = epoch_of(sampler, 0)
        return sum(len(b) * max(lengths[i] for i in b) for b in (order[k : k + 4] for k in range(0, 256, 4)))

    plain = padded_positions(ResumableSampler(256, seed=0))
    bucketed = padded_positions(ResumableSampler(256, seed=0, lengths=lengths, batch_size=4))
    assert bucketed < 0.75 * plain


def test_loss_on_a_batch_padded_to_its_longest_row_equals_the_loss_padded_to_the_context(base_model, tiny_data):
    """No attention mask, causal layers only: right padding does not change the loss on the real rows (float32)."""
    from liquid_audio.data.dataloader import LFM2DataLoader, lfm2_collator

    model = copy.deepcopy(base_model).float().eval()
    stock = LFM2DataLoader(str(tiny_data["train"]), CTX)
    rows = [stock[i] for i in range(len(stock))]
    lengths = row_lengths(stock)
    assert len(set(lengths)) > 1
    unpadded = UnpaddedRows(stock, lengths)
    longest = PadTo(None)([unpadded[i] for i in range(len(stock))])
    assert longest.modality_flag.shape[1] == max(lengths) < CTX
    assert real_tokens(longest) == real_tokens(lfm2_collator(rows))
    with torch.no_grad():
        loss_ctx = model(lfm2_collator(rows)).loss
        loss_longest = model(longest).loss
    torch.testing.assert_close(loss_longest, loss_ctx, rtol=1e-5, atol=1e-6)


def test_length_aware_batches_pad_less_over_the_same_rows(base_model, tiny_data):
    """pad_to: longest batches carry the stock batches' rows' real tokens with fewer positions; same batch count."""
    def one_epoch(pad_to):
        trainer = make_trainer(base_model, tiny_data, small_params(pad_to=pad_to), None)
        trainer.train_sampler.set_position(0)
        batches = list(trainer.train_loader)
        return trainer.batches_per_epoch, batches

    stock_count, stock = one_epoch("context_length")
    ours_count, ours = one_epoch("longest")
    assert stock_count == ours_count == len(stock) == len(ours)
    assert all(b.modality_flag.shape[1] == CTX for b in stock)
    assert sum(map(real_tokens, ours)) == sum(map(real_tokens, stock))
    assert sum(map(positions, ours)) < 0.8 * sum(map(positions, stock))


# --- the trainer ----------------------------------------------------------------------------------


@pytest.mark.parametrize("warmup", [0, 3])
def test_schedule_matches_the_stock_one_in_a_single_process(warmup):
    """Same LinearLR warmup + cosine to 0.1 x lr as liquid-audio's Trainer (which with 1 process steps it once)."""
    params = TrainParams(max_steps=10, warmup_steps=warmup, lr=1e-3, min_lr_ratio=0.1, dataloader_workers=0)
    trainer = Trainer(torch.nn.Linear(2, 2), [0, 1], None, params, echo=lambda line: None)
    param = torch.nn.Parameter(torch.zeros(1))
    stock_opt = torch.optim.AdamW([param], lr=params.lr)
    stock = torch.optim.lr_scheduler.SequentialLR(stock_opt, [
        torch.optim.lr_scheduler.LinearLR(stock_opt, start_factor=1e-8, end_factor=1.0, total_iters=warmup),
        torch.optim.lr_scheduler.CosineAnnealingLR(stock_opt, T_max=params.max_steps - warmup, eta_min=1e-4),
    ], milestones=[warmup]) if warmup else torch.optim.lr_scheduler.CosineAnnealingLR(stock_opt, T_max=10, eta_min=1e-4)
    ours_lrs, stock_lrs = [], []
    for _ in range(params.max_steps):
        trainer.optimizer.step()
        trainer.scheduler.step()
        stock_opt.step()
        stock.step()
        ours_lrs.append(trainer.optimizer.param_groups[0]["lr"])
        stock_lrs.append(stock_opt.param_groups[0]["lr"])
    assert ours_lrs == pytest.approx(stock_lrs, rel=1e-12, abs=1e-15)
    assert ours_lrs[-1] == pytest.approx(1e-4)


def test_stock_and_our_step_agree_without_clipping(base_model, tiny_data):
    """Our train_step is liquid-audio's plus clipping: with clipping off, one step of each gives the same weights.

    The stock step is ``liquid_audio.trainer.Trainer.train_step`` itself, run on our trainer's model,
    optimizer, scheduler and accelerator (all it reads).
    """
    from liquid_audio.trainer import Trainer as StockTrainer

    params = small_params(max_grad_norm=None, max_steps=2)
    ours, stock = (make_trainer(base_model, tiny_data, params, None) for _ in range(2))
    batch = ours.collate([ours.train_loader.dataset[0], ours.train_loader.dataset[1]])
    torch.manual_seed(0)
    ours.train_step(batch)
    torch.manual_seed(0)
    StockTrainer.train_step(stock, batch)
    a, b = weights(ours.model), weights(stock.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert ours.last_grad_norm is not None and float(ours.last_grad_norm) > 0


def test_clipping_bounds_the_update(base_model, tiny_data):
    trainer = make_trainer(base_model, tiny_data, small_params(max_grad_norm=1e-3, max_steps=2), None)
    batch = trainer.collate([trainer.train_loader.dataset[0], trainer.train_loader.dataset[1]])
    trainer.optimizer.zero_grad()
    trainer.model.train()
    with trainer.accelerator.autocast():
        trainer.model(batch.to(trainer.accelerator.device)).loss.backward()
    raw = float(torch.nn.utils.get_total_norm([p.grad for p in trainer.model.parameters() if p.grad is not None]))
    trainer.train_step(batch)
    clipped = float(torch.nn.utils.get_total_norm([p.grad for p in trainer.model.parameters() if p.grad is not None]))
    assert raw > 1e-3 and clipped == pytest.approx(1e-3, rel=0.05)


@pytest.fixture(scope="module")
def straight(base_model, tiny_data, tmp_path_factory):
    """4 uninterrupted steps (checkpoint every 2): the reference the other tests compare with."""
    logged: list[tuple[int, dict]] = []
    params = small_params(max_steps=4, warmup_steps=1, lr=1e-3, min_lr_ratio=0.1, save_interval=2, val_interval=2)
    trainer = make_trainer(base_model, tiny_data, params, tmp_path_factory.mktemp("straight"),
                           sink=lambda s, m: logged.append((s, m)))
    return trainer, trainer.train(), logged, params


def test_train_reports_metrics(straight):
    _, result, logged, _ = straight
    assert result.steps == 4 and result.resumed_from_step is None
    assert math.isfinite(result.final_train_loss) and math.isfinite(result.final_val_loss)
    assert result.tokens_per_s > 0 and result.peak_memory_gib > 0 and result.peak_memory_kind == "cpu_peak_rss"
    assert result.metrics()["global_batch_size"] == 2 and "history" not in result.metrics()
    names = set().union(*(m for _, m in logged))
    assert {"train/loss", "train/lr", "train/grad_norm", "perf/tokens_per_s", "perf/padding_fraction",
            "perf/peak_rss_gib", "val/loss"} <= names
    assert 0 <= result.metrics()["padding_fraction"] < 1
    assert [s for s, m in logged if "train/loss" in m] == [1, 2, 3, 4]
    assert [s for s, m in logged if "val/loss" in m] == [2, 4]


def test_schedule_steps_once_per_optimizer_step(straight):
    """Warmup then cosine to min_lr_ratio * lr at max_steps (the stock wrapper would step it per process)."""
    _, result, _, params = straight
    lrs = [h["train/lr"] for h in result.history if "train/lr" in h]
    assert lrs[0] == pytest.approx(params.lr)  # warmup (1 step) done
    assert lrs[1] > lrs[2] > lrs[3] == pytest.approx(params.lr * params.min_lr_ratio)  # cosine floor at max_steps


def test_resume_from_a_checkpoint_is_exact(straight, base_model, tiny_data, tmp_path):
    """Stop after 2 of 4 steps, restore from the checkpoint in a new trainer: the straight run's weights, bit for bit."""
    reference, result, _, params = straight
    first = make_trainer(base_model, tiny_data, params, tmp_path)
    first.train(stop_after=2)
    info = latest_checkpoint(tmp_path, "fp")
    assert info.step == 2 and info.extra["last_train_loss"] is not None
    second = make_trainer(base_model, tiny_data, params, tmp_path)
    second.restore(info)
    resumed = second.train()
    assert resumed.resumed_from_step == 2 and resumed.steps == 4
    a, b = weights(reference.model), weights(second.model)
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run diverged from the straight run"
    assert resumed.final_val_loss == result.final_val_loss
    # The details document (stage output, hashed by DVC) describes the weights, not the invocation: equal.
    assert resumed.real_tokens == result.real_tokens > 0 and resumed.padded_tokens == result.padded_tokens
    details = lambda run: {k: v for k, v in run.metrics().items() if k not in INVOCATION_KEYS}  # noqa: E731
    assert details(resumed) == details(result)
    with pytest.raises(RuntimeError, match="another run"):
        make_trainer(base_model, tiny_data, params, tmp_path, fingerprint="other").restore(info)


# --- checkpoints ----------------------------------------------------------------------------------


def test_checkpoints_are_complete_atomic_pruned_and_follow_the_umask(base_model, tiny_data, tmp_path):
    ckpt = tmp_path / "ckpt"
    trainer = make_trainer(base_model, tiny_data, small_params(max_steps=3, save_interval=1, keep_checkpoints=2,
                                                               val_interval=0), ckpt)
    trainer.train()
    names = sorted(p.name for p in ckpt.iterdir())
    assert names == [f"{CHECKPOINT_PREFIX}0000002", f"{CHECKPOINT_PREFIX}0000003"]
    step3 = ckpt / f"{CHECKPOINT_PREFIX}0000003"
    assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng-0.pt", MANIFEST_NAME} <= {p.name for p in step3.iterdir()}
    assert modes_off_the_umask(ckpt) == []  # safetensors alone would write the weights 0600
    torch.load(step3 / "optimizer.pt", weights_only=True)  # loadable without unpickling arbitrary objects
    torch.load(step3 / "rng-0.pt", weights_only=True)

    # A half-written temp folder (the kill came mid-save) and a folder with a truncated file are ignored.
    shutil.copytree(step3, ckpt / f"{TMP_PREFIX}{CHECKPOINT_PREFIX}0000004")
    broken = ckpt / f"{CHECKPOINT_PREFIX}0000005"
    shutil.copytree(step3, broken)
    manifest = json.loads((broken / MANIFEST_NAME).read_text())
    manifest["step"] = 5
    (broken / MANIFEST_NAME).write_text(json.dumps(manifest))
    with open(broken / "model.safetensors", "r+b") as handle:
        handle.truncate(100)
    no_manifest = ckpt / f"{CHECKPOINT_PREFIX}0000006"
    shutil.copytree(step3, no_manifest)
    (no_manifest / MANIFEST_NAME).unlink()
    assert latest_checkpoint(ckpt, "fp").step == 3
    assert latest_checkpoint(ckpt, "another run") is None
    assert [i.step for i in list_checkpoints(ckpt)] == [2, 3]

    # Pruning after this run's newest checkpoint: debris goes, this run's newest `keep` stay.
    assert prune(ckpt, "fp", keep=1) == [f"{TMP_PREFIX}{CHECKPOINT_PREFIX}0000004", f"{CHECKPOINT_PREFIX}0000005",
                                         f"{CHECKPOINT_PREFIX}0000006"]
    assert sorted(p.name for p in ckpt.iterdir()) == [f"{CHECKPOINT_PREFIX}0000003"]


def flip_bytes(path: Path, offset: int, count: int = 8) -> None:
    """Change ``count`` bytes at ``offset`` (negative: from the end) in place: same size, as silent corruption does."""
    with open(path, "r+b") as handle:
        handle.seek(offset, os.SEEK_END if offset < 0 else os.SEEK_SET)
        where = handle.tell()
        old = handle.read(count)
        handle.seek(where)
        handle.write(bytes(b ^ 0xFF for b in old))


def test_a_damaged_checkpoint_is_named_moved_aside_and_the_previous_good_one_resumed(base_model, tiny_data, tmp_path):
    """Weights changed after the save (same size, valid header) or a damaged header: never resumed from, said so."""
    ckpt = tmp_path / "ckpt"
    make_trainer(base_model, tiny_data, small_params(max_steps=3, save_interval=1, keep_checkpoints=3,
                                                     val_interval=0), ckpt).train()
    manifest = json.loads((ckpt / "step-0000003" / MANIFEST_NAME).read_text())
    assert set(manifest["sha256"]) == set(manifest["files"]) and MANIFEST_NAME not in manifest["files"]
    flip_bytes(ckpt / "step-0000003" / "model.safetensors", -16)  # inside the last tensor's data
    flip_bytes(ckpt / "step-0000002" / "model.safetensors", 0)  # the safetensors header length
    lines: list[str] = []
    resume = resume_checkpoint(ckpt, "fp", echo=lines.append)
    assert resume is not None and resume.step == 1
    assert len(lines) == 2 and all("damaged checkpoint (model.safetensors hashes to" in line for line in lines)
    assert str(ckpt / "step-0000003") in lines[0] and str(ckpt / "step-0000002") in lines[1]
    assert sorted(p.name for p in ckpt.iterdir() if p.is_dir()) == [
        ".damaged-step-0000002", ".damaged-step-0000003", "step-0000001"]  # kept for inspection, out of the way
    trainer = make_trainer(base_model, tiny_data, small_params(max_steps=3, save_interval=1, keep_checkpoints=3,
                                                               val_interval=0), ckpt)
    trainer.restore(resume)
    assert trainer.train().resumed_from_step == 1

    # A manifest that is not JSON is damage too; a run's only checkpoint damaged means a fresh start, said so.
    (ckpt / "step-0000003" / MANIFEST_NAME).write_text("{not json")
    lines.clear()
    assert resume_checkpoint(ckpt, "fp", echo=lines.append).step == 2
    assert lines == [f"train: {ckpt / 'step-0000003'}: damaged checkpoint ({MANIFEST_NAME} unreadable "
                     f"(JSONDecodeError)); not resumed from, moved to {ckpt / '.damaged-step-0000003'}"]


@pytest.fixture(scope="module")
def another_run(base_model, tiny_data, tmp_path_factory) -> Path:
    """The checkpoint folder of a run with another fingerprint (and seed): checkpoints at steps 2 and 4."""
    ckpt = tmp_path_factory.mktemp("another_run") / "ckpt"
    make_trainer(base_model, tiny_data, small_params(max_steps=4, save_interval=2, val_interval=0, seed=1), ckpt,
                 fingerprint="another run").train()
    return ckpt


def another_runs_checkpoints(another_run: Path, ckpt: Path) -> dict[str, bytes]:
    """A copy of ``another_run`` at ``ckpt``; returns the weights' bytes of each checkpoint."""
    shutil.copytree(another_run, ckpt)
    return {p.parent.name: p.read_bytes() for p in sorted(ckpt.glob("step-*/model.safetensors"))}


def test_another_runs_checkpoints_go_only_after_ours_is_committed(base_model, tiny_data, another_run, tmp_path,
                                                                  monkeypatch):
    """Our first checkpoint has the name of one of theirs (step 2): theirs is moved aside, never deleted first.

    A crash at the final rename (simulated: the rename fails) leaves their checkpoint's
    files on disk; a run that commits its checkpoint removes theirs only afterwards.
    """
    ckpt = tmp_path / "ckpt"
    theirs = another_runs_checkpoints(another_run, ckpt)
    assert sorted(theirs) == ["step-0000002", "step-0000004"]
    params = small_params(max_steps=4, save_interval=2, val_interval=0)

    real_replace = os.replace

    def crash_on_commit(src, dst):
        if Path(src).name.startswith(TMP_PREFIX):
            raise OSError("simulated crash at the final rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_commit)
    with pytest.raises(OSError, match="simulated crash"):
        make_trainer(base_model, tiny_data, params, ckpt).train()
    monkeypatch.undo()
    on_disk = {p.read_bytes() for p in ckpt.rglob("model.safetensors")}
    assert set(theirs.values()) <= on_disk, "another run's checkpoint was deleted before ours was in place"
    assert [i.step for i in list_checkpoints(ckpt, "another run")] == [4]  # step 2 is aside, not deleted

    seen_when_removed: list[object] = []

    def echo(line: str) -> None:
        if "stale checkpoint" in line:
            seen_when_removed.append(read_checkpoint(ckpt / "step-0000002"))

    make_trainer(base_model, tiny_data, params, ckpt, echo=echo).train(stop_after=2)
    assert len(seen_when_removed) == 1 and seen_when_removed[0].fingerprint == "fp", \
        "another run's checkpoints were removed before ours was committed"
    assert sorted(p.name for p in ckpt.iterdir() if p.is_dir()) == ["step-0000002"]


def test_a_run_stopped_before_its_first_checkpoint_leaves_other_runs_checkpoints(base_model, tiny_data, another_run,
                                                                                 tmp_path):
    ckpt = tmp_path / "ckpt"
    theirs = another_runs_checkpoints(another_run, ckpt)
    make_trainer(base_model, tiny_data, small_params(max_steps=4, save_interval=2, val_interval=0), ckpt).train(stop_after=1)
    assert {p.parent.name: p.read_bytes() for p in sorted(ckpt.glob("step-*/model.safetensors"))} == theirs


# --- the model folder out -------------------------------------------------------------------------


def test_exported_folder_loads_with_the_trained_weights(straight, tiny_lfm_dir, tmp_path):
    from pipeline.models import load_lfm

    trainer = straight[0]
    out = export_model_folder(trainer.model, tiny_lfm_dir, tmp_path / "final", Schedule(2, 6, 12))
    base_names = {p.name for p in tiny_lfm_dir.iterdir()}
    assert base_names <= {p.name for p in out.iterdir()}  # config, tokenizer, Mimi (+ mimi_config.json)
    assert modes_off_the_umask(out) == []
    reloaded = load_lfm(out)
    assert reloaded.schedule == Schedule(2, 6, 12), "the folder records the interleave it was trained with"
    trained = weights(trainer.model)
    on_disk = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(reloaded.model.state_dict()[k], trained[k]) for k in on_disk)
    base = load_file(str(tiny_lfm_dir / "model.safetensors"))
    assert set(on_disk) == set(base), "the export keeps the base file's tensor names"
    assert any(not torch.equal(base[k], on_disk[k]) for k in on_disk), "export holds the base weights"


def test_export_records_the_training_datas_schedule_not_the_base_folders(base_model, tiny_lfm_dir, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(tiny_lfm_dir, base)
    write_record(base, Schedule(6, 6, 12))  # a base that is itself a trained folder
    out = export_model_folder(base_model, base, tmp_path / "final", Schedule(3, 6, 12))
    assert read_record(out) == Schedule(3, 6, 12) and (out / RECORD_NAME).is_file()


def test_export_mirrors_a_base_file_that_stores_tied_tensors_twice(base_model, tmp_path):
    from safetensors.torch import save_file

    state = base_model.state_dict()
    both = {k: v.clone().contiguous() for k, v in state.items()}  # every alias under its own name
    save_file(both, str(tmp_path / "model.safetensors"))
    tensors = base_layout_state_dict(base_model, tmp_path / "model.safetensors")
    assert set(tensors) == set(state)
    by_storage: dict[int, list[str]] = {}
    for name, tensor in state.items():
        by_storage.setdefault(tensor.data_ptr(), []).append(name)
    tied = [names for names in by_storage.values() if len(names) > 1]
    assert tied and all(torch.equal(tensors[a], tensors[b]) for a, b in tied)
    save_file(tensors, str(tmp_path / "again.safetensors"))  # no shared storage left


def test_a_truncated_weights_file_fails_naming_it(tiny_lfm_dir, tmp_path):
    from pipeline.models import ModelFolderError
    from pipeline.training.model_folder import load_base_model

    folder = tmp_path / "lfm"
    shutil.copytree(tiny_lfm_dir, folder)
    with open(folder / "model.safetensors", "r+b") as handle:
        handle.truncate(handle.seek(0, 2) - 1000)
    with pytest.raises(ModelFolderError, match=rf"^{folder / 'model.safetensors'}: unreadable safetensors file"):
        load_base_model(folder)


# --- the run lock: one training per checkpoint folder ---------------------------------------------


def test_the_run_lock_names_its_holder_refuses_a_second_run_and_leaves_an_empty_file(tmp_path):
    from pipeline.training.run_control import RunLock, TrainLockedError

    with RunLock(tmp_path):
        assert (tmp_path / ".lock").read_text() == f"pid {os.getpid()} on {os.uname().nodename}\n"
        with pytest.raises(TrainLockedError, match=rf"\.lock: another training run holds the lock \(pid {os.getpid()} "):
            RunLock(tmp_path).acquire()
    # The folder is a DVC output: a finished run leaves no pid there, so two identical runs hash alike.
    assert (tmp_path / ".lock").read_text() == ""
    with RunLock(tmp_path):  # free again
        pass
