"""The base model folders: where they come from, and whether they can come at all.

Production downloads the Hub repos named in params; the smoke and learn profiles
fabricate tiny random-init folders with the same layout, offline and seeded.
``preflight`` answers, before any stage runs, whether the hub source can work on
this machine (folders present, or the Hub reachable), so an offline machine fails
in one line that says what to do instead of a traceback minutes into a run.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipeline.artifacts import BASE_KOKORO_DIR, BASE_LFM_DIR
from pipeline.hub_layout import KOKORO_REQUIRED_FILES, ModelFolderError, check_kokoro_folder, check_lfm_folder
from pipeline.io import atomic_dir
from pipeline.params import StageError, StageParams, field, parse_params, read_params_file

ASSISTANT_VOICE = "am_adam"  # the card's assistant voice; tts.assistant_voice must be one of kokoro_voices
SMOKE_HINT = "or run the offline smoke profile (`make run`)"


class HubUnavailable(StageError):
    """The Hub source cannot work on this machine; the message says what to do."""


@dataclass(frozen=True)
class BaseModelsParams(StageParams):
    SECTION = "base_models"
    source: Literal["hub", "fabricate"]
    lfm_repo: str
    kokoro_repo: str
    kokoro_voices: tuple[str, ...]
    reference_config: Path
    fabricate_seed: int = field(0, lo=0, hi=2**32 - 1)
    # tiny: smoke/learn folders (3.4 M-param LFM, small Mimi, ALBERT shrunk); full: production shapes, random
    # weights (the rehearsal profile: 1.47 B-param LFM, stock Mimi, Kokoro-82M)
    fabricate_size: Literal["tiny", "full"] = "tiny"

    def check(self) -> None:
        if ASSISTANT_VOICE not in self.kokoro_voices:
            raise self.bad("kokoro_voices", f"must include the assistant voice '{ASSISTANT_VOICE}'")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def folders_present(root: Path = Path(".")) -> bool:
    try:
        check_lfm_folder(root / BASE_LFM_DIR)
        check_kokoro_folder(root / BASE_KOKORO_DIR)
    except ModelFolderError:
        return False
    return True


def preflight(params: BaseModelsParams, root: Path = Path("."), timeout_s: float = 10.0) -> None:
    """Raise HubUnavailable (one line, what to do) if the base models can be neither found nor downloaded."""
    if params.source == "fabricate" or folders_present(root):
        return
    repos = f"{params.lfm_repo} and {params.kokoro_repo}"
    if _offline():
        raise HubUnavailable(f"base models not in {root / 'models/base'} and HF_HUB_OFFLINE=1 forbids downloading {repos}: "
                             f"run with HF_HUB_OFFLINE=0 on a machine that reaches the Hub, {SMOKE_HINT}")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    api = HfApi()
    for repo in (params.lfm_repo, params.kokoro_repo):
        try:
            api.model_info(repo, timeout=timeout_s)
        except GatedRepoError:
            raise HubUnavailable(f"{repo} is gated: accept its licence on huggingface.co and log in "
                                 f"(`hf auth login` or HF_TOKEN), {SMOKE_HINT}") from None
        except RepositoryNotFoundError:
            raise HubUnavailable(f"{repo} not found on the Hub (or it needs a token: `hf auth login` or HF_TOKEN); "
                                 f"check base_models.lfm_repo / kokoro_repo, {SMOKE_HINT}") from None
        except HfHubHTTPError as err:
            raise HubUnavailable(f"the Hub refused {repo}: {str(err).splitlines()[0]}, {SMOKE_HINT}") from None
        except Exception as err:  # noqa: BLE001 - any transport error means: no Hub from here
            raise HubUnavailable(f"cannot reach the Hugging Face Hub for {repo} ({type(err).__name__}): check the "
                                 f"network or HF_ENDPOINT, set HF_HUB_OFFLINE=1 with the folders in models/base, "
                                 f"{SMOKE_HINT}") from None


def preflight_workspace(workdir: str | os.PathLike) -> None:
    """``preflight`` for a workspace's params.yaml (what the flows call before any stage runs)."""
    root = Path(workdir)
    raw = read_params_file(root / "params.yaml").get(BaseModelsParams.SECTION)
    if raw is None:
        return  # a pipeline without base models (the toy pipeline)
    preflight(parse_params(BaseModelsParams, raw), root)


def download_from_hub(params: BaseModelsParams) -> None:
    """Production: the real weights, by Hub id, into the same local folders."""
    from huggingface_hub import hf_hub_download, snapshot_download

    preflight(params)
    with atomic_dir(BASE_LFM_DIR) as tmp:
        snapshot_download(params.lfm_repo, local_dir=tmp)
    with atomic_dir(BASE_KOKORO_DIR) as tmp:
        for name in (*KOKORO_REQUIRED_FILES, *(f"voices/{voice}.pt" for voice in params.kokoro_voices)):
            hf_hub_download(params.kokoro_repo, name, local_dir=tmp)


def fabricate(params: BaseModelsParams) -> None:
    """Offline profiles: random-init folders (tiny, or production shapes), deterministic."""
    from pipeline.fabricate import fabricate_lfm_folder
    from pipeline.fabricate_kokoro import fabricate_kokoro_folder

    reference = json.loads(params.reference_config.read_text())
    with atomic_dir(BASE_LFM_DIR) as tmp:
        fabricate_lfm_folder(tmp, reference, seed=params.fabricate_seed, size=params.fabricate_size)
    with atomic_dir(BASE_KOKORO_DIR) as tmp:
        fabricate_kokoro_folder(tmp, seed=params.fabricate_seed, voices=list(params.kokoro_voices),
                                size=params.fabricate_size)
