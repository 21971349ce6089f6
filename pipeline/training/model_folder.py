"""The model folders training reads and writes: the base model in, a complete trained folder out.

In: ``pipeline.models.load_lfm`` (weight coverage checked), after every
safetensors file of the folder has been opened, so a truncated or damaged file
fails naming itself (safetensors' own error does not say which file).

Out: the stock Trainer writes only ``model.safetensors``; ``load_lfm`` also needs
config.json, the tokenizer files and the Mimi checkpoint (and ``mimi_config.json``
for a fabricated folder). The export is the base folder with its weights replaced,
under the base file's tensor names, and the interleave schedule of the training
data recorded (``interleave.json``, replacing any the base folder had), written
atomically.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch

from pipeline.interleave import RECORD_NAME, Schedule, write_record
from pipeline.training.checkpoints import WEIGHTS_NAME, save_safetensors

WEIGHT_FILES = {WEIGHTS_NAME, "model.safetensors.index.json", "pytorch_model.bin"}
SHARD_RE = re.compile(r"model-\d+-of-\d+\.safetensors$")


def check_safetensors_files(folder: Path) -> None:
    """Every ``*.safetensors`` under ``folder`` has a readable header that its size covers."""
    from safetensors import SafetensorError, safe_open

    from pipeline.models import ModelFolderError

    folder = Path(folder)
    for file in sorted(folder.rglob("*.safetensors")):
        if any(part.startswith(".") for part in file.relative_to(folder).parts):
            continue  # hidden (a download cache, say): not part of the model, as in hash_tree
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except SafetensorError as err:
            raise ModelFolderError(f"{file}: unreadable safetensors file ({err})") from None


def load_base_model(model_dir: Path) -> torch.nn.Module:
    """The LFM2.5-Audio model of a local folder, on CPU in bf16 (the trainer moves it); ModelFolderError if unusable."""
    from pipeline.models import check_lfm_folder, load_lfm

    check_lfm_folder(model_dir)
    check_safetensors_files(model_dir)
    return load_lfm(Path(model_dir), device="cpu", dtype=torch.bfloat16).model  # the processor (Mimi) is not needed


def base_layout_state_dict(model: torch.nn.Module, base_weights: Path) -> dict[str, torch.Tensor]:
    """The trained tensors under exactly the names the base weights file has.

    A tied tensor stored under both names in the base file (Hub layout) is written
    under both (a copy each, as safetensors wants); one stored once stays once.
    Names the base file has and the model lacks are an error.
    """
    from safetensors import safe_open

    with safe_open(str(base_weights), framework="pt") as handle:
        base_names = set(handle.keys())
    state = model.state_dict()
    unknown = sorted(base_names - set(state))
    if unknown:
        raise RuntimeError(f"{base_weights}: {len(unknown)} tensors the model does not have: {unknown[:8]}")
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in state.items():
        if name not in base_names:
            continue
        out = tensor.detach().cpu().contiguous()
        tensors[name] = out.clone() if tensor.data_ptr() in seen else out
        seen.add(tensor.data_ptr())
    return tensors


def copy_tree(source: Path, target: Path) -> None:
    """Copy a folder's files (contents only: new files get the umask's mode, as every output)."""
    target.mkdir(exist_ok=True)
    for item in sorted(source.iterdir()):
        if item.is_dir():
            copy_tree(item, target / item.name)
        else:
            shutil.copyfile(item, target / item.name)


def export_model_folder(model: torch.nn.Module, base_dir: Path, out_dir: Path, schedule: Schedule) -> Path:
    """A complete model folder: everything of the base folder but its weights, plus the trained weights
    and the interleave ``schedule`` they were trained with (``interleave.json``, which decoding follows).

    Written into a temp folder that replaces ``out_dir`` only once complete and its
    weights are checked to cover the model.
    """
    from pipeline.io import atomic_dir
    from pipeline.models import uncovered_weight_keys

    base_dir, out_dir = Path(base_dir), Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        for item in sorted(base_dir.iterdir()):
            if item.name.startswith(".") or item.name in WEIGHT_FILES or item.name == RECORD_NAME \
                    or SHARD_RE.match(item.name):
                continue
            if item.is_dir():
                copy_tree(item, tmp / item.name)
            else:
                shutil.copyfile(item, tmp / item.name)
        save_safetensors(base_layout_state_dict(model, base_dir / WEIGHTS_NAME), tmp / WEIGHTS_NAME)
        write_record(tmp, schedule)
        missing = uncovered_weight_keys(model, tmp / WEIGHTS_NAME)
        if missing:
            raise RuntimeError(f"{out_dir}/{WEIGHTS_NAME}: {len(missing)} weights missing from the export: {missing[:8]}")
    return out_dir
