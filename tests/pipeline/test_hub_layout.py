"""The Hub layout is defined once, without torch, and agrees with the libraries that load it."""
from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline import hub_layout
from pipeline.hub_layout import ModelFolderError, check_kokoro_folder, check_lfm_folder
from pipeline.params import StageError


def test_mimi_weights_name_is_the_one_liquid_audio_loads():
    from liquid_audio.moshi.models import loaders

    assert hub_layout.MIMI_WEIGHTS_NAME == loaders.MIMI_NAME


def test_kokoro_weights_name_is_the_one_kokoro_loads():
    from kokoro import KModel

    assert KModel.MODEL_NAMES[hub_layout.KOKORO_REPO_ID] == hub_layout.KOKORO_WEIGHTS_NAME


def test_the_layout_module_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None; import pipeline.hub_layout; "
            "assert 'liquid_audio' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_missing_folder_is_an_expected_error_naming_the_folder(tmp_path):
    with pytest.raises(ModelFolderError, match=f"{tmp_path / 'nope'}: model folder not found") as err:
        check_lfm_folder(tmp_path / "nope")
    assert isinstance(err.value, StageError)


def test_an_incomplete_folder_names_every_missing_file(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelFolderError) as err:
        check_lfm_folder(tmp_path)
    assert "missing model.safetensors, tokenizer.json, tokenizer_config.json, " + hub_layout.MIMI_WEIGHTS_NAME in str(err.value)
    with pytest.raises(ModelFolderError, match="missing kokoro-v1_0.pth, voices/am_adam.pt"):
        check_kokoro_folder(tmp_path, ["am_adam"])
