"""Training data: the preprocessed splits, a resumable data order, and what counts as a real token.

The splits are liquid-audio's ``preprocess_dataset`` folders read by its own
``LFM2DataLoader`` (rows padded to ``context_length``) and batched by its
``lfm2_collator``: the stock data path. What is added is the order: a seeded
shuffle per epoch, sharded over the processes, that can start part-way into an
epoch, so a resumed run sees exactly the rows the uninterrupted one would have.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import torch
from liquid_audio.data.dataloader import lfm2_collator
from liquid_audio.utils import LFMModality
from torch.utils.data import DataLoader, Dataset, Sampler

from pipeline.params import StageError

PAD_TEXT_ID = 0  # <|pad|>: LFM2DataLoader pads rows with text id 0 / modality TEXT


class TrainDataError(StageError):
    """A preprocessed split is missing, empty, or holds a row longer than the context."""


def open_split(path: Path, context_length: int, required: bool = True):
    """liquid-audio's LFM2DataLoader over a preprocessed split, every row checked against the context up front."""
    from liquid_audio.data.dataloader import LFM2DataLoader

    path = Path(path)
    if not (path / "dataset_info.json").is_file() and not (path / "state.json").is_file():
        if required:
            raise TrainDataError(f"{path}: not a preprocessed dataset folder (run the preprocess stage first)")
        return None
    data = LFM2DataLoader(str(path), context_length=context_length)
    if required and len(data) == 0:
        raise TrainDataError(f"{path}: dataset has no rows")
    too_long = [(i, len(flags[0])) for i, flags in enumerate(data.dataset["modality_flag"]) if len(flags[0]) > context_length]
    if too_long:
        shown = ", ".join(f"row {i}: {n} tokens" for i, n in too_long[:5])
        raise TrainDataError(f"{path}: {len(too_long)} row(s) longer than train.context_length={context_length} ({shown})")
    return data


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


def make_loader(data: Dataset, sampler: ResumableSampler, *, batch_size: int, workers: int, seed: int,
                pin_memory: bool) -> DataLoader:
    """The stock Trainer's DataLoader (``lfm2_collator``), ordered by ``sampler``."""
    return DataLoader(
        data,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=lfm2_collator,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=False,  # the train sampler's position changes between iterators
        prefetch_factor=2 if workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),  # keeps the global RNG untouched
    )


def real_tokens(batch) -> int:
    """Non-padding positions of a collated batch: every audio position plus every text id but <|pad|>."""
    non_text = int((batch.modality_flag != int(LFMModality.TEXT)).sum())
    return non_text + int((batch.text != PAD_TEXT_ID).sum())
