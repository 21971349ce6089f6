"""Training data: the preprocessed splits, a resumable data order, and what counts as a real token.

The splits are liquid-audio's ``preprocess_dataset`` folders read by its own
``LFM2DataLoader`` (rows padded to ``context_length``) and batched by its
``lfm2_collator``: the stock data path. What is added is the order: a seeded
shuffle per epoch, sharded over the processes, that can start part-way into an
epoch, so a resumed run sees exactly the rows the uninterrupted one would have.

Length-aware batches (``train.pad_to: longest``): each row is cut back to its
real length and a batch is padded to its longest row only, and the sampler
groups rows of similar length into the same step. The model has no attention
mask and only causal layers, so right padding never changes the loss on the
real rows: fewer pad positions is the same loss for less compute.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from liquid_audio.data.dataloader import lfm2_collator
from liquid_audio.data.types import LFM2AudioRow
from liquid_audio.utils import LFMModality
from torch.utils.data import DataLoader, Dataset, Sampler

from pipeline.interleave import RECORD_NAME, Schedule, read_record
from pipeline.params import StageError

PAD_TEXT_ID = 0  # <|pad|>: LFM2DataLoader pads rows with text id 0 / modality TEXT
BUCKET_BATCHES = 32  # global batches per length bucket: rows are sorted by length within 32 batches' worth


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


def split_schedule(train: Path, eval_split: Path | None = None) -> Schedule:
    """The interleave schedule the preprocessed samples were laid out with (``interleave.json`` of each split).

    Training carries it into the model folder, so it must be there and the splits must agree.
    """
    schedule = read_record(train)
    if schedule is None:
        raise TrainDataError(f"{train}: no interleave record ({RECORD_NAME}; rerun the preprocess stage)")
    other = read_record(eval_split) if eval_split is not None and Path(eval_split).is_dir() else None
    if other is not None and other != schedule:
        raise TrainDataError(f"{train}/{RECORD_NAME} records {schedule.to_json()}, "
                             f"but {eval_split}/{RECORD_NAME} records {other.to_json()}")
    return schedule


class ResumableSampler(Sampler[int]):
    """Seeded shuffle per epoch, this process's shard, optionally started part-way in.

    Every process draws the same permutation (seed + epoch) and takes every
    ``world``-th index, padded by wrapping around so all shards are equally long
    (as ``DistributedSampler``): the processes stay in lockstep under DDP.

    With ``lengths`` (and ``batch_size``) the epoch's permutation is bucketed:
    cut into runs of ``BUCKET_BATCHES`` global batches, each run sorted by row
    length, cut into global batches (``batch_size`` x ``world`` rows) whose order
    is shuffled again, the one short batch kept last. Each step then holds
    rows of similar length on every process; the epoch still holds every row
    once, and the order is a pure function of (seed, epoch), so a resume is exact.
    """

    def __init__(self, n: int, *, seed: int, rank: int = 0, world: int = 1, shuffle: bool = True, pad: bool = True,
                 lengths: Sequence[int] | None = None, batch_size: int = 1):
        if n < 1:
            raise ValueError("empty dataset")
        if lengths is not None and len(lengths) != n:
            raise ValueError(f"{len(lengths)} lengths for {n} rows")
        self.n, self.seed, self.rank, self.world, self.shuffle, self.pad = n, seed, rank, world, shuffle, pad
        self.lengths, self.batch_size = (list(lengths) if lengths is not None else None), batch_size
        self.epoch = 0
        self.skip = 0

    def set_position(self, epoch: int, skip_samples: int = 0) -> None:
        self.epoch, self.skip = epoch, skip_samples

    def shard(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.shuffle:
            order = torch.randperm(self.n, generator=generator).tolist()
        else:
            order = list(range(self.n))
        if self.pad:
            total = math.ceil(self.n / self.world) * self.world
            order = (order * math.ceil(total / self.n))[:total]
        if self.lengths is not None:
            order = self._bucketed(order, generator)
        return order[self.rank :: self.world]

    def _bucketed(self, order: list[int], generator: torch.Generator) -> list[int]:
        """Global batches of similar-length rows, in shuffled order; rank r's batch k lies in global batch k."""
        size = self.batch_size * self.world
        span = size * BUCKET_BATCHES
        batches: list[list[int]] = []
        for start in range(0, len(order), span):
            bucket = sorted(order[start : start + span], key=lambda i: self.lengths[i])  # stable: ties keep order
            batches += [bucket[b : b + size] for b in range(0, len(bucket), size)]
        short = [batches.pop()] if len(batches[-1]) < size else []  # the epoch's short batch stays last
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        return [i for batch in batches + short for i in batch]

    def __iter__(self) -> Iterator[int]:
        return iter(self.shard()[self.skip :])

    def __len__(self) -> int:
        return len(self.shard()) - self.skip


def row_lengths(data: Dataset) -> list[int] | None:
    """Real (unpadded) length of every row of an ``LFM2DataLoader``, read from its modality column; None otherwise."""
    table = getattr(data, "dataset", None)
    if table is None or "modality_flag" not in getattr(table, "column_names", ()):
        return None
    return [len(flags[0]) for flags in table["modality_flag"]]


class UnpaddedRows(Dataset):
    """A split's rows cut back to their real length (the stock loader pads every row to ``context_length``)."""

    def __init__(self, data: Dataset, lengths: Sequence[int]):
        self.data, self.lengths = data, list(lengths)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, idx: int) -> LFM2AudioRow:
        return trim_row(self.data[idx], self.lengths[idx])


def trim_row(row: LFM2AudioRow, length: int) -> LFM2AudioRow:
    """Drop the right padding: every pad position is one text id (<|pad|>) at the end of the row."""
    pad = int(row.modality_flag.shape[1]) - length
    if pad == 0:
        return row
    return LFM2AudioRow(text=row.text[:, : row.text.shape[1] - pad], audio_in=row.audio_in,
                        audio_in_lens=row.audio_in_lens, audio_out=row.audio_out,
                        modality_flag=row.modality_flag[:, :length], supervision_mask=row.supervision_mask[:, :length])


def pad_row(row: LFM2AudioRow, length: int) -> LFM2AudioRow:
    """Right-pad a row to ``length`` exactly as ``LFM2DataLoader`` does (text <|pad|>, modality TEXT, unsupervised)."""
    pad = length - int(row.modality_flag.shape[1])
    if pad == 0:
        return row
    return LFM2AudioRow(text=F.pad(row.text, (0, pad), value=PAD_TEXT_ID), audio_in=row.audio_in,
                        audio_in_lens=row.audio_in_lens, audio_out=row.audio_out,
                        modality_flag=F.pad(row.modality_flag, (0, pad), value=int(LFMModality.TEXT)),
                        supervision_mask=F.pad(row.supervision_mask, (0, pad), value=False))


class PadTo:
    """Collator: rows padded to ``length`` (None: the batch's longest row), then the stock ``lfm2_collator``."""

    def __init__(self, length: int | None):
        self.length = length

    def __call__(self, rows: list[LFM2AudioRow]):
        length = self.length or max(int(row.modality_flag.shape[1]) for row in rows)
        return lfm2_collator([pad_row(row, length) for row in rows])


def make_loader(data: Dataset, sampler: ResumableSampler, *, batch_size: int, workers: int, seed: int,
                pin_memory: bool, collate=lfm2_collator) -> DataLoader:
    """The stock Trainer's DataLoader (``lfm2_collator`` unless told), ordered by ``sampler``."""
    return DataLoader(
        data,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate,
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


def positions(batch) -> int:
    """Every position of a collated batch, padding included (rows x padded length)."""
    return int(batch.modality_flag.numel())
