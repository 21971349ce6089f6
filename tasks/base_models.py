"""Stage `base_models`: the LFM2.5-Audio and Kokoro folders every later stage loads.

Production downloads the Hub repos named in params; the smoke profile fabricates
tiny random-init folders with the same layout, offline and seeded. Either way
the result is a local folder, loaded later through ``pipeline.models`` only.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from pipeline.io import ParamsError, atomic_dir, load_params, require

LFM_DIR = Path("models/base/lfm2.5-audio")
KOKORO_DIR = Path("models/base/kokoro")
KOKORO_FILES = ("config.json", "kokoro-v1_0.pth")


@dataclass(frozen=True)
class BaseModelsParams:
    source: str  # "hub" | "fabricate"
    lfm_repo: str
    kokoro_repo: str
    kokoro_voices: tuple[str, ...]
    fabricate_seed: int
    reference_config: Path

    @classmethod
    def from_params(cls, params: dict) -> "BaseModelsParams":
        section = "base_models"
        source = require(params, "source", section, str)
        if source not in ("hub", "fabricate"):
            raise ParamsError(f"params.yaml: 'base_models.source' must be 'hub' or 'fabricate', got {source!r}")
        voices = require(params, "kokoro_voices", section, list)
        if "am_adam" not in voices:
            raise ParamsError("params.yaml: 'base_models.kokoro_voices' must include the assistant voice 'am_adam'")
        return cls(
            source=source,
            lfm_repo=require(params, "lfm_repo", section, str),
            kokoro_repo=require(params, "kokoro_repo", section, str),
            kokoro_voices=tuple(voices),
            fabricate_seed=require(params, "fabricate_seed", section, int),
            reference_config=Path(require(params, "reference_config", section, str)),
        )


def download_from_hub(params: BaseModelsParams) -> None:
    """Production: the real weights, by Hub id, into the same local folders."""
    from huggingface_hub import hf_hub_download, snapshot_download

    with atomic_dir(LFM_DIR) as tmp:
        snapshot_download(params.lfm_repo, local_dir=tmp)
    with atomic_dir(KOKORO_DIR) as tmp:
        for name in (*KOKORO_FILES, *(f"voices/{voice}.pt" for voice in params.kokoro_voices)):
            hf_hub_download(params.kokoro_repo, name, local_dir=tmp)


def fabricate(params: BaseModelsParams) -> None:
    """Smoke profile: tiny random-init folders, offline and deterministic."""
    from pipeline.fabricate import fabricate_lfm_folder
    from pipeline.fabricate_kokoro import fabricate_kokoro_folder

    reference = json.loads(params.reference_config.read_text())
    with atomic_dir(LFM_DIR) as tmp:
        fabricate_lfm_folder(tmp, reference, seed=params.fabricate_seed)
    with atomic_dir(KOKORO_DIR) as tmp:
        fabricate_kokoro_folder(tmp, seed=params.fabricate_seed, voices=list(params.kokoro_voices))


def main() -> int:
    try:
        params = BaseModelsParams.from_params(load_params("base_models"))
    except ParamsError as err:
        print(f"base_models: {err}", file=sys.stderr)
        return 1
    (download_from_hub if params.source == "hub" else fabricate)(params)
    from pipeline.models import check_lfm_folder

    check_lfm_folder(LFM_DIR)
    print(f"base_models: {params.source} -> {LFM_DIR}, {KOKORO_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
