"""The one place models are loaded (DESIGN.md, principle 4).

Every stage loads LFM2.5-Audio, its processor and Mimi through these functions,
which call liquid-audio's real ``from_pretrained(Path)``. They add the checks
liquid-audio lacks: a folder missing a file, or weights that do not cover the
model (liquid-audio loads with ``strict=False``, leaving such weights random
without a word), fail here with a message naming the folder and the keys.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.fabricate import LFM_REQUIRED_FILES
from pipeline.mimi_config import mimi_settings, read_overrides

MIMI_SAMPLE_RATE = 24_000
MIMI_FRAME_SAMPLES = 1920  # 12.5 Hz frames
N_CODEBOOKS = 8
END_OF_AUDIO = 2048


class ModelFolderError(RuntimeError):
    """A model folder is incomplete or its weights do not match the model."""


@dataclass
class LoadedLFM:
    model: torch.nn.Module  # liquid_audio LFM2AudioModel
    processor: object  # liquid_audio LFM2AudioProcessor (Mimi already loaded)
    path: Path


def check_lfm_folder(path: Path) -> None:
    path = Path(path)
    if not path.is_dir():
        raise ModelFolderError(f"{path}: model folder not found (run the base_models stage first)")
    missing = [name for name in LFM_REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise ModelFolderError(f"{path}: incomplete LFM2.5-Audio folder, missing {', '.join(missing)}")


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
    """LFM2AudioModel + processor from a local folder, with weight coverage checked."""
    from liquid_audio import LFM2AudioModel

    path = Path(path)
    processor = load_processor(path, device=device)
    # liquid-audio returns the module in training mode (dropout on: greedy decoding would not be
    # deterministic). Inference wants eval mode; the train stage switches to train() itself.
    model = LFM2AudioModel.from_pretrained(path, device=device, dtype=dtype).eval()
    missing = uncovered_weight_keys(model, path / "model.safetensors")
    if missing:
        shown = ", ".join(missing[:8]) + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else "")
        raise ModelFolderError(f"{path}/model.safetensors: {len(missing)} model weights missing: {shown}")
    return LoadedLFM(model=model, processor=processor, path=path)


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
    tensor = torch.from_numpy(np.ascontiguousarray(wave)).reshape(1, 1, -1)
    codes = mimi.encode(tensor)[:, :N_CODEBOOKS]
    return codes.to(torch.int64).cpu().numpy()


@torch.no_grad()
def decode_codes(mimi, codes: np.ndarray) -> np.ndarray:
    """Mimi's reconstruction of (1, 8, frames) codes: float32 mono at 24 kHz."""
    wave = mimi.decode(torch.as_tensor(np.asarray(codes), dtype=torch.long))
    return wave.reshape(-1).float().cpu().numpy()


# --- Kokoro (TTS) ------------------------------------------------------------
from pipeline.fabricate_kokoro import (  # noqa: E402
    KOKORO_COMPONENTS,
    KOKORO_CONFIG_NAME,
    KOKORO_REPO_ID,
    KOKORO_REQUIRED_FILES,
    KOKORO_WEIGHTS_NAME,
    STATE_DICT_PREFIX,
    voice_path,
)


@dataclass
class LoadedKokoro:
    model: torch.nn.Module  # kokoro KModel (eval mode)
    pipelines: dict[str, object]  # lang code ('a' American, 'b' British) -> KPipeline around ``model``
    voices: dict[str, Path]  # voice name -> local .pt (pass str(path) as KPipeline's voice)
    path: Path
    g2p: str  # "offline" | "spacy" (pipeline.tts.g2p)

    @property
    def pipeline(self):
        """The American English KPipeline."""
        return self.pipelines["a"]

    def pipeline_for(self, voice: str):
        """Kokoro voices start with their language: bf_/bm_ speak British English, the rest American."""
        return self.pipelines.get(voice[:1], self.pipeline)


def kokoro_voices_in(path: Path) -> list[str]:
    return sorted(p.stem for p in (Path(path) / "voices").glob("*.pt"))


def check_kokoro_folder(path: Path, voices: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """The voices to use; raises ModelFolderError naming every missing file."""
    path = Path(path)
    if not path.is_dir():
        raise ModelFolderError(f"{path}: Kokoro folder not found (run the base_models stage first)")
    wanted = list(voices) if voices is not None else kokoro_voices_in(path)
    missing = [name for name in KOKORO_REQUIRED_FILES if not (path / name).is_file()]
    missing += [str(voice_path(path, v).relative_to(path)) for v in wanted if not voice_path(path, v).is_file()]
    if not wanted:
        missing.append("voices/<name>.pt (no voice at all)")
    if missing:
        raise ModelFolderError(f"{path}: incomplete Kokoro folder, missing {', '.join(missing)}")
    return wanted


def _check_kokoro_weights(model: torch.nn.Module, weights_file: Path) -> None:
    """KModel falls back to ``strict=False`` on a key mismatch; here a mismatch is an error."""
    checkpoint = torch.load(weights_file, map_location="cpu", weights_only=True)
    problems = [f"component '{c}' missing" for c in KOKORO_COMPONENTS if c not in checkpoint]
    problems += [f"unknown component '{c}'" for c in checkpoint if c not in KOKORO_COMPONENTS]
    for component in KOKORO_COMPONENTS:
        if component not in checkpoint:
            continue
        given = {k.removeprefix(STATE_DICT_PREFIX) for k in checkpoint[component]}
        expected = set(getattr(model, component).state_dict())
        absent, extra = sorted(expected - given), sorted(given - expected)
        if absent:
            problems.append(f"{component}: {len(absent)} weights missing ({', '.join(absent[:4])})")
        if extra:
            problems.append(f"{component}: {len(extra)} unexpected weights ({', '.join(extra[:4])})")
    if problems:
        raise ModelFolderError(f"{weights_file}: weights do not match the model: {'; '.join(problems)}")


def load_kokoro(
    path: Path,
    voices: list[str] | tuple[str, ...] | None = None,
    g2p: str = "offline",
    device: str = "cpu",
) -> LoadedKokoro:
    """Kokoro's real KModel + KPipeline from a local folder, nothing fetched from the Hub.

    ``KModel(repo_id, config=<path>, model=<path>)`` reads the .pth with
    ``torch.load(weights_only=True)``; voices are local ``.pt`` paths (KPipeline
    loads them with ``weights_only=True`` too). ``voices`` defaults to every
    ``voices/*.pt`` in the folder. G2P: see ``pipeline.tts.g2p``.
    """
    from kokoro import KModel

    from pipeline.tts.g2p import check_g2p, english_pipeline

    path = Path(path)
    wanted = check_kokoro_folder(path, voices)
    check_g2p(g2p)
    try:
        model = KModel(repo_id=KOKORO_REPO_ID, config=str(path / KOKORO_CONFIG_NAME), model=str(path / KOKORO_WEIGHTS_NAME))
    except (RuntimeError, KeyError, ValueError) as err:
        raise ModelFolderError(f"{path}: Kokoro config and weights do not fit together: {err}") from None
    _check_kokoro_weights(model, path / KOKORO_WEIGHTS_NAME)
    model = model.to(device).eval()
    pipelines = {"a": english_pipeline(model, g2p=g2p, repo_id=KOKORO_REPO_ID)}
    if any(v.startswith("b") for v in wanted):
        pipelines["b"] = english_pipeline(model, g2p=g2p, repo_id=KOKORO_REPO_ID, british=True)
    return LoadedKokoro(model=model, pipelines=pipelines, voices={v: voice_path(path, v) for v in wanted}, path=path, g2p=g2p)
