"""Stage `base_models`: the LFM2.5-Audio and Kokoro folders every later stage loads (``pipeline.base_models``).

Either way the result is a local folder, loaded later through ``pipeline.models`` only.
"""
from __future__ import annotations

import sys

from pipeline.artifacts import BASE_KOKORO_DIR, BASE_LFM_DIR
from pipeline.base_models import BaseModelsParams, download_from_hub, fabricate
from pipeline.hub_layout import check_lfm_folder
from pipeline.params import load_stage_params, stage_main


def make_folders() -> int:
    params = load_stage_params(BaseModelsParams)
    (download_from_hub if params.source == "hub" else fabricate)(params)
    check_lfm_folder(BASE_LFM_DIR)
    print(f"base_models: {params.source} -> {BASE_LFM_DIR}, {BASE_KOKORO_DIR}")
    return 0


def main() -> int:
    return stage_main("base_models", make_folders)


if __name__ == "__main__":
    sys.exit(main())
