"""The inference path every evaluation stage and the demo share: here, the params of a run and the model on its device.

The path is four modules, one concern each:

- ``pipeline.inference`` (this one): the params an inference run over a row file
  shares (``InferenceRunParams``) and the model loaded on its device (``load_model``);
- ``pipeline.user_audio``: each row's spoken request, from the TTS manifest and cache;
- ``pipeline.generation``: the chat layout the model was trained on,
  ``generate_reply`` (row + user audio -> ``Reply``) and ``generate_replies``
  (many rows, ``batch_size`` at a time through ``pipeline.batch_decode``);
- ``pipeline.reply``: the ``Reply`` record, torch-free, so CPU stages read stored replies without torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from pipeline.generation import GenerationParams
from pipeline.models import LoadedLFM, load_lfm, resolve_device
from pipeline.params import field

Dtype = Literal["bfloat16", "float32", "float16"]
TORCH_DTYPES: dict[str, torch.dtype] = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}


@dataclass(frozen=True, kw_only=True)
class InferenceRunParams(GenerationParams):
    """The keys every stage that generates over a row file shares: model, rows, user audio, generation.

    One definition, so ``eval_classes`` and ``eval_narration`` read these keys the
    same way and every error names ``<group>.<key>``; each stage's params add
    only their own keys (and ``SECTION``) to it.
    """

    model_dir: Path
    rows: Path
    tts_manifest: Path
    tts_cache_dir: Path
    device: str = "auto"  # auto: cuda when available, else cpu
    dtype: Dtype = "bfloat16"
    max_rows: int | None = field(None, lo=1)
    max_skipped_fraction: float = field(0.0, lo=0, hi=1)
    batch_size: int = field(1, lo=1)  # rows decoded together (pipeline.batch_decode); 1 = stock, one row at a time

    def check(self) -> None:
        check_batch_size(self)


def check_batch_size(params) -> None:
    """Batching decodes greedily only: a batch_size > 1 with a sampling temperature is refused."""
    if params.batch_size > 1 and not params.greedy:
        raise params.bad("batch_size", f"is {params.batch_size}, but the batched decoder is greedy only "
                                       "(set text_temperature and audio_temperature to null, or batch_size to 1)")


def load_model(model_dir: Path, device: str = "auto", dtype: Dtype = "bfloat16") -> LoadedLFM:
    """The model folder loaded for inference on ``device`` (``ModelFolderError`` naming what is wrong with it)."""
    return load_lfm(Path(model_dir), device=resolve_device(device), dtype=TORCH_DTYPES[dtype])
