"""The one place LFM2.5-Audio is loaded (DESIGN.md, principle 4); Kokoro: ``pipeline.kokoro_model``.

Every stage loads LFM2.5-Audio, its processor and Mimi through these functions,
which call liquid-audio's real ``from_pretrained(Path)``. They add the checks
liquid-audio lacks: a folder missing a file, or weights that do not cover the
model (liquid-audio loads with ``strict=False``, leaving such weights random
without a word), fail here with a message naming the folder and the keys.
``load_lfm`` also reads the interleave schedule the folder was trained with
(``interleave.json``, ``pipeline.interleave``); every decoding path follows
``LoadedLFM.schedule``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from coordinator.constants import MIMI_SAMPLE_RATE, N_CODEBOOKS
from pipeline.hub_layout import LFM_WEIGHTS_NAME, ModelFolderError, check_lfm_folder
from pipeline.interleave import Schedule, trained_schedule
from pipeline.mimi_config import mimi_settings, read_overrides

__all__ = ["LoadedLFM", "ModelFolderError", "check_lfm_folder", "decode_codes", "encode_codes", "load_lfm",
           "load_mimi", "load_processor", "resolve_device", "uncovered_weight_keys"]


def resolve_device(device: str) -> str:
    """``auto`` -> cuda when available, else cpu (every stage's ``device`` param)."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


@dataclass
class LoadedLFM:
    model: torch.nn.Module  # liquid_audio LFM2AudioModel
    processor: object  # liquid_audio LFM2AudioProcessor (Mimi already loaded)
    path: Path
    folder_schedule: Schedule | None = None  # what load_lfm read from the folder (pipeline.interleave.trained_schedule)

    @property
    def schedule(self) -> Schedule:
        """The interleave to decode with: the one the folder records it was trained with, else the model's own."""
        return self.folder_schedule or Schedule.of_model(self.model)


def _tensor_names_in(weights_file: Path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(weights_file), framework="pt") as handle:
        return set(handle.keys())


def uncovered_weight_keys(model: torch.nn.Module, weights_file: Path) -> list[str]:
    """Model tensors that the file does not provide (tied aliases count as provided)."""
    in_file = _tensor_names_in(weights_file)
    provided_storage = {t.data_ptr() for name, t in model.state_dict().items() if name in in_file}
    return sorted(
        name
        for name, tensor in model.state_dict().items()
        if name not in in_file and tensor.data_ptr() not in provided_storage
    )


def load_processor(path: Path, device: str = "cpu"):
    """LFM2AudioProcessor with its Mimi codec built (small Mimi settings applied if the folder has them)."""
    from liquid_audio import LFM2AudioProcessor

    path = Path(path)
    check_lfm_folder(path)
    processor = LFM2AudioProcessor.from_pretrained(path, device=device)
    with mimi_settings(read_overrides(path)):
        try:
            processor.mimi  # lazy in liquid-audio: build it while the settings apply
        except RuntimeError as err:  # strict load_state_dict mismatch
            raise ModelFolderError(f"{path}: Mimi checkpoint does not match the Mimi model: {err}") from None
    return processor


def load_lfm(path: Path, device: str = "cpu", dtype: torch.dtype = torch.bfloat16) -> LoadedLFM:
    """LFM2AudioModel + processor from a local folder, with weight coverage checked and its interleave record read."""
    from liquid_audio import LFM2AudioModel

    path = Path(path)
    processor = load_processor(path, device=device)
    schedule = trained_schedule(path)  # a bad interleave.json fails before the weights load
    # liquid-audio returns the module in training mode (dropout on: greedy decoding would not be
    # deterministic). Inference wants eval mode; the train stage switches to train() itself.
    model = LFM2AudioModel.from_pretrained(path, device=device, dtype=dtype).eval()
    missing = uncovered_weight_keys(model, path / LFM_WEIGHTS_NAME)
    if missing:
        shown = ", ".join(missing[:8]) + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else "")
        raise ModelFolderError(f"{path}/model.safetensors: {len(missing)} model weights missing: {shown}")
    return LoadedLFM(model=model, processor=processor, path=path, folder_schedule=schedule)


def load_mimi(path: Path, device: str = "cpu"):
    """The Mimi codec exactly as liquid-audio trains with it (``processor.mimi``)."""
    return load_processor(path, device=device).mimi


@torch.no_grad()
def encode_codes(mimi, wave: np.ndarray, sample_rate: int = MIMI_SAMPLE_RATE) -> np.ndarray:
    """Mimi codes of a mono waveform: shape (1, 8, frames) int64 = (batch, codebook, frame).

    Accepts int16 or float samples; resamples to 24 kHz the way liquid-audio's mapper does.
    """
    from pipeline.audio import resample, to_float32

    wave = resample(to_float32(np.asarray(wave)), sample_rate, MIMI_SAMPLE_RATE)
    tensor = torch.from_numpy(np.ascontiguousarray(wave)).reshape(1, 1, -1).to(next(mimi.parameters()).device)
    codes = mimi.encode(tensor)[:, :N_CODEBOOKS]
    return codes.to(torch.int64).cpu().numpy()


@torch.no_grad()
def decode_codes(mimi, codes: np.ndarray) -> np.ndarray:
    """Mimi's reconstruction of (1, 8, frames) codes: float32 mono at 24 kHz."""
    wave = mimi.decode(torch.as_tensor(np.asarray(codes), dtype=torch.long, device=next(mimi.parameters()).device))
    return wave.reshape(-1).float().cpu().numpy()
