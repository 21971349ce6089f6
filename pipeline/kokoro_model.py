"""The one place Kokoro (the TTS model) is loaded: kokoro's real ``KModel`` + ``KPipeline``.

kokoro's ``KModel`` falls back to ``strict=False`` on a key mismatch; here a mismatch
is a ``ModelFolderError`` naming the file and the components.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.hub_layout import (KOKORO_COMPONENTS, KOKORO_CONFIG_NAME, KOKORO_REPO_ID, KOKORO_WEIGHTS_NAME,
                                 STATE_DICT_PREFIX, ModelFolderError, check_kokoro_folder, voice_path)


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
