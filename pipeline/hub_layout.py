"""The file layout of the two Hub repos the pipeline loads, and the checks on a local folder.

Both the production loaders (``pipeline.models``, ``pipeline.kokoro_model``) and the
offline fabricators (``pipeline.fabricate*``) follow this layout, so it is defined
once here, without torch: a stage that only checks a folder does not depend on the
code that loads or fabricates one.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.params import StageError

# LiquidAI/LFM2.5-Audio-1.5B
MIMI_WEIGHTS_NAME = "tokenizer-e351c8d8-checkpoint125.safetensors"  # = liquid_audio's loaders.MIMI_NAME (tested)
MIMI_CONFIG_NAME = "mimi_config.json"  # project-specific: only fabricated folders have one
LFM_WEIGHTS_NAME = "model.safetensors"
LFM_REQUIRED_FILES = ("config.json", LFM_WEIGHTS_NAME, "tokenizer.json", "tokenizer_config.json", MIMI_WEIGHTS_NAME)

# hexgrad/Kokoro-82M
KOKORO_REPO_ID = "hexgrad/Kokoro-82M"
KOKORO_CONFIG_NAME = "config.json"
KOKORO_WEIGHTS_NAME = "kokoro-v1_0.pth"  # KModel.MODEL_NAMES[KOKORO_REPO_ID]
KOKORO_REQUIRED_FILES = (KOKORO_CONFIG_NAME, KOKORO_WEIGHTS_NAME)
KOKORO_COMPONENTS = ("bert", "bert_encoder", "predictor", "text_encoder", "decoder")
STATE_DICT_PREFIX = "module."  # the Hub checkpoint was saved from DataParallel


class ModelFolderError(StageError, RuntimeError):
    """A model folder is incomplete or its weights do not match the model."""


def voice_path(folder: Path, voice: str) -> Path:
    return Path(folder) / "voices" / f"{voice}.pt"


def kokoro_voices_in(path: Path) -> list[str]:
    return sorted(p.stem for p in (Path(path) / "voices").glob("*.pt"))


def check_lfm_folder(path: Path) -> None:
    path = Path(path)
    if not path.is_dir():
        raise ModelFolderError(f"{path}: model folder not found (run the base_models stage first)")
    missing = [name for name in LFM_REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise ModelFolderError(f"{path}: incomplete LFM2.5-Audio folder, missing {', '.join(missing)}")


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
