"""Model loading: the real from_pretrained(Path) path, with the checks liquid-audio lacks."""
from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from pipeline.fabricate import SPECIAL_TOKENS
from pipeline.models import ModelFolderError, load_lfm, load_processor


def test_fabricated_folder_has_the_hub_layout(tiny_lfm_dir):
    names = {p.name for p in tiny_lfm_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "tokenizer-e351c8d8-checkpoint125.safetensors"} <= names


def test_tokenizer_uses_the_real_special_token_ids(tiny_lfm):
    tokenizer = tiny_lfm.processor.text
    for token_id, token in SPECIAL_TOKENS.items():
        assert tokenizer.convert_tokens_to_ids(token) == token_id
    ids = tokenizer.encode("<|im_start|>user\nhi<|im_end|>", add_special_tokens=False)
    assert ids[0] == 6 and ids[-1] == 7


def test_model_loads_every_weight_from_the_file(tiny_lfm, tiny_lfm_dir):
    on_disk = load_file(str(tiny_lfm_dir / "model.safetensors"))
    state = tiny_lfm.model.state_dict()
    for name, tensor in on_disk.items():
        assert torch.equal(state[name], tensor), name


def test_fabrication_is_deterministic(tiny_lfm_dir, tmp_path):
    import json

    from pipeline.fabricate import fabricate_lfm_folder
    from tests.conftest import REFERENCE_CONFIG

    again = fabricate_lfm_folder(tmp_path / "again", json.loads(REFERENCE_CONFIG.read_text()), seed=0)
    for path in tiny_lfm_dir.iterdir():
        assert (again.path / path.name).read_bytes() == path.read_bytes(), path.name


def test_incomplete_folder_names_the_missing_file(tiny_lfm_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_lfm_dir, broken)
    (broken / "tokenizer-e351c8d8-checkpoint125.safetensors").unlink()
    with pytest.raises(ModelFolderError, match="missing tokenizer-e351c8d8-checkpoint125.safetensors"):
        load_processor(broken)


def test_missing_weight_key_fails_instead_of_staying_random(tiny_lfm_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_lfm_dir, broken)
    weights = load_file(str(broken / "model.safetensors"))
    dropped = sorted(k for k in weights if k.startswith("depth_linear"))
    for key in dropped:
        del weights[key]
    save_file(weights, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelFolderError, match="depth_linear"):
        load_lfm(broken)


def test_the_loaded_model_carries_its_folders_interleave_record(tiny_lfm, tiny_lfm_dir, tmp_path):
    from pipeline.interleave import RECORD_NAME, Schedule, ScheduleError, write_record

    assert tiny_lfm.schedule == Schedule(6, 6, 12)  # a base folder, no record: the model's own interleave
    trained = tmp_path / "trained"
    shutil.copytree(tiny_lfm_dir, trained)
    write_record(trained, Schedule(2, 6, 12))
    assert load_lfm(trained).schedule == Schedule(2, 6, 12)
    (trained / RECORD_NAME).write_text('{"first_text": "two", "n_text": 6, "n_audio": 12}')
    with pytest.raises(ScheduleError, match=f"{trained / RECORD_NAME}: not a valid interleave record"):
        load_lfm(trained)


def test_a_string_path_is_never_passed_to_liquid_audio(tiny_lfm_dir):
    """liquid-audio sends a str to the Hub; our loader takes str or Path and passes a Path."""
    loaded = load_lfm(str(tiny_lfm_dir))
    assert loaded.path == tiny_lfm_dir


def test_auto_device_is_cuda_when_present_else_cpu():
    import torch

    from pipeline.models import resolve_device

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu" and resolve_device("cuda:1") == "cuda:1"
