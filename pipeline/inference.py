"""The inference path every evaluation stage and the demo share: here, the params of a run and the model on its device.

The path is four modules, one concern each:

- ``pipeline.inference`` (this one): the params an inference run over a row file
  shares (``InferenceRunParams``) and the model loaded on its device (``load_model``);
- ``pipeline.user_audio``: each row's spoken request, from the TTS manifest and cache;
  a row whose prompt is past its bound is skipped like a row without audio (``bound_prompts``);
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

from pipeline.generation import GenerationParams, prompt_tokens
from pipeline.models import LoadedLFM, load_lfm, resolve_device
from pipeline.params import field
from pipeline.records import DatasetRow
from pipeline.user_audio import UserAudio

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
    max_prompt_tokens: int = field(4096, lo=1)  # a row whose prompts prefill more positions is skipped (bound_prompts)

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


def model_context(lfm: LoadedLFM) -> int:
    """The positions the model's backbone is configured for (``max_position_embeddings``)."""
    return int(lfm.model.conf.lfm.max_position_embeddings)


def bound_prompts(lfm: LoadedLFM, rows: list[DatasetRow], audio: dict[str, UserAudio | str],
                  params: InferenceRunParams) -> dict[str, UserAudio | str]:
    """``audio`` with every row past a prompt bound turned into why, as a row without audio is.

    Before any decoding, each row's prompts are counted (``prompt_tokens``: system turn, user audio,
    and for tool_result_speak the facts turn). A row is skipped when they prefill more than
    ``max_prompt_tokens`` positions, or when they and the most its turns may decode (``max_new_tokens``
    each) do not fit the model's context. Both are counts, never a clock: the same rows are skipped on
    every machine. Together with ``max_new_tokens`` they bound each row's work.
    """
    context = model_context(lfm)
    bounded = dict(audio)
    for row in rows:
        wave = audio.get(row.id)
        if wave is None or isinstance(wave, str):
            continue
        tokens = prompt_tokens(lfm, row, wave)
        turns = 2 if row.row_class == "tool_result_speak" else 1
        if tokens > params.max_prompt_tokens:
            bounded[row.id] = (f"prompt of {tokens} tokens, more than "
                               f"{params.SECTION}.max_prompt_tokens = {params.max_prompt_tokens}")
        elif tokens + turns * params.max_new_tokens > context:
            bounded[row.id] = (f"prompt of {tokens} tokens + {turns} x {params.SECTION}.max_new_tokens = "
                               f"{params.max_new_tokens} is more than the model's context of {context} positions")
    return bounded
