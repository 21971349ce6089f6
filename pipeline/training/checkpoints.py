"""The checkpoint format: complete, atomic folders, and nothing of another run lost before ours is safe.

``models/checkpoints/step-NNNNNNN/`` holds ``model.safetensors`` (one name per
tied tensor), ``optimizer.pt``, ``scheduler.pt``, one ``rng-<rank>.pt`` per
process and ``trainer_state.json`` (step, data position, run fingerprint, the
size and sha256 of every file). It is written as ``.tmp-step-NNNNNNN/``, fsynced and
renamed into place, the manifest last; a folder counts only if its manifest is there and every file
it lists has its size, so a kill at any moment leaves either a complete
checkpoint or an ignored temp folder.

Before a resume every file is hashed against the manifest (``resume_checkpoint``):
a checkpoint whose bytes changed since it was written (same size included) or
whose manifest is unreadable is named in one line and skipped for the previous
good one. Checkpoints of format 1 (before the hashes) are checked by size only.

Checkpoints of another run (another fingerprint), and debris, are removed only
by ``prune`` after a checkpoint of this run has been committed: until the new run
has one safe checkpoint, the old ones stay. A folder in the way of the new one
(another run's checkpoint of the same step) is first moved aside, never deleted
before the rename.

Security: ``.pt`` files are read back only with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from pipeline.io import atomic_path, disk_error, sha256_file

CHECKPOINT_PREFIX = "step-"
CHECKPOINT_RE = re.compile(r"^step-(\d{7})$")
TMP_PREFIX = ".tmp-"  # a checkpoint being written
DAMAGED_PREFIX = ".damaged-"  # a checkpoint that failed its hashes, kept for inspection (never pruned, never read)
ASIDE_PREFIX = ".aside-"  # another run's checkpoint moved out of the way of ours, removed by the next prune
MANIFEST_NAME = "trainer_state.json"
WEIGHTS_NAME = "model.safetensors"
OPTIMIZER_NAME = "optimizer.pt"
SCHEDULER_NAME = "scheduler.pt"
CHECKPOINT_FORMAT = 2  # 2: the manifest lists each file's sha256
READABLE_FORMATS = (1, 2)  # 1: sizes only (checkpoints written before the hashes)


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint folder, as its manifest describes it."""

    path: Path
    step: int
    epoch: int
    batches_into_epoch: int
    fingerprint: str
    world_size: int
    extra: dict[str, Any] = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)  # file name -> hex digest (empty for format 1)


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step:07d}"


# --- reading -----------------------------------------------------------------


def read_checkpoint(path: Path) -> Checkpoint | None:
    """The checkpoint's manifest if the folder is complete (every listed file at its size), else None."""
    return inspect_checkpoint(path)[0]


def inspect_checkpoint(path: Path) -> tuple[Checkpoint | None, str | None]:
    """(checkpoint, None) for a complete folder; (None, why) for a ``step-*`` folder that is not (sizes only)."""
    path = Path(path)
    match = CHECKPOINT_RE.match(path.name)
    manifest = path / MANIFEST_NAME
    if not match:
        return None, "not a checkpoint folder name"
    if not manifest.is_file():
        return None, f"no {MANIFEST_NAME}"
    try:
        state = json.loads(manifest.read_text())
        if state.get("format") not in READABLE_FORMATS:
            return None, f"{MANIFEST_NAME}: unknown format {state.get('format')!r}"
        if int(state["step"]) != int(match.group(1)):
            return None, f"{MANIFEST_NAME} says step {state['step']}"
        if state["format"] >= 2 and set(state["sha256"]) != set(state["files"]):
            return None, f"{MANIFEST_NAME}: the hashes do not cover the files"
        for name, size in state["files"].items():
            if not (path / name).is_file():
                return None, f"{name} is missing"
            if (path / name).stat().st_size != size:
                return None, f"{name} has {(path / name).stat().st_size} bytes, the manifest says {size}"
        return Checkpoint(
            path=path,
            step=int(state["step"]),
            epoch=int(state["epoch"]),
            batches_into_epoch=int(state["batches_into_epoch"]),
            fingerprint=str(state["fingerprint"]),
            world_size=int(state["world_size"]),
            extra=dict(state.get("extra", {})),
            sha256=dict(state.get("sha256", {})),
        ), None
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as err:
        return None, f"{MANIFEST_NAME} unreadable ({type(err).__name__})"


def verify_checkpoint(checkpoint: Checkpoint) -> str | None:
    """None if every file hashes to the manifest's sha256; else what differs (format 1: nothing to check)."""
    for name, expected in sorted(checkpoint.sha256.items()):
        try:
            actual = sha256_file(checkpoint.path / name)
        except OSError as err:
            return f"{name} unreadable ({err.strerror or err})"
        if actual != expected:
            return f"{name} hashes to {actual[:16]}..., the manifest says {expected[:16]}..."
    return None


def resume_checkpoint(directory: Path, fingerprint: str,
                      echo: Callable[[str], None] = print) -> Checkpoint | None:
    """This run's newest checkpoint whose files all hash to its manifest.

    Every damaged ``step-*`` folder newer than it (changed bytes, unreadable manifest,
    missing or short file; a folder without a manifest was never committed and is left to ``prune``) is named in one line through ``echo`` and moved aside to
    ``.damaged-step-NNNNNNN`` (kept, never read or pruned), so no later run or prune counts
    it. Other runs' checkpoints are passed over silently: they are not damage. Main process only.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return None
    folders = sorted((p for p in directory.iterdir() if p.is_dir() and CHECKPOINT_RE.match(p.name)),
                     key=lambda p: p.name, reverse=True)
    for folder in folders:
        if not (folder / MANIFEST_NAME).is_file():
            continue  # never committed (the manifest goes in last): debris for ``prune``, not damage
        checkpoint, why = inspect_checkpoint(folder)
        if checkpoint is not None and checkpoint.fingerprint != fingerprint:
            continue
        if checkpoint is not None:
            why = verify_checkpoint(checkpoint)
            if why is None:
                return checkpoint
        aside = directory / f"{DAMAGED_PREFIX}{folder.name}"
        shutil.rmtree(aside, ignore_errors=True)  # an earlier damaged copy of the same step
        os.replace(folder, aside)
        echo(f"train: {folder}: damaged checkpoint ({why}); not resumed from, moved to {aside}")
    return None


def list_checkpoints(directory: Path, fingerprint: str | None = None) -> list[Checkpoint]:
    """Complete checkpoints, oldest first; half-written temp folders and (given a fingerprint) other runs left out."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [info for p in directory.iterdir() if p.is_dir() and (info := read_checkpoint(p)) is not None]
    if fingerprint is not None:
        found = [info for info in found if info.fingerprint == fingerprint]
    return sorted(found, key=lambda info: info.step)


def latest_checkpoint(directory: Path, fingerprint: str | None = None) -> Checkpoint | None:
    found = list_checkpoints(directory, fingerprint)
    return found[-1] if found else None


# --- weights and RNG ---------------------------------------------------------


def unique_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict with one name per shared storage (tied weights), as safetensors requires."""
    seen: set[int] = set()
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        tensors[name] = tensor.detach().contiguous().cpu()
    return tensors


def save_safetensors(tensors: dict[str, torch.Tensor], target: Path) -> None:
    """``save_file`` through ``atomic_path``: safetensors creates files 0600, our outputs follow the umask."""
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})


def save_weights(model: torch.nn.Module, target: Path) -> None:
    save_safetensors(unique_state_dict(model), target)


def load_weights(model: torch.nn.Module, source: Path) -> None:
    """Load a weights file into ``model`` in place (ties kept); every tensor must be covered."""
    tensors = load_file(str(source))
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    state = model.state_dict()
    provided = {state[name].data_ptr() for name in tensors if name in state}
    uncovered = [name for name in missing if state[name].data_ptr() not in provided]
    if uncovered or unexpected:
        raise RuntimeError(f"{source}: weights do not match the model: missing {uncovered[:8]}, unexpected {unexpected[:8]}")


def to_cpu(obj: Any) -> Any:
    """Tensors (nested in dicts/lists) moved to plain ``cpu``: a checkpoint must not name a device
    (``cuda:1``, accelerate's ``cpu:0``) that the loading process may not have."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu")
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def rng_state() -> dict[str, Any]:
    """This process's torch, CUDA, Python and NumPy RNG states, as tensors and plain values (weights_only-loadable)."""
    py_version, py_state, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_kind, torch.from_numpy(np_keys.astype(np.int64)), np_pos, np_has_gauss, np_gauss],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return to_cpu(state)


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))
    kind, keys, pos, has_gauss, np_gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, np_gauss))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def rng_file(folder: Path, rank: int) -> Path:
    return Path(folder) / f"rng-{rank}.pt"


def load_pt(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True)


# --- writing -----------------------------------------------------------------


def temp_folder(directory: Path, step: int) -> Path:
    return Path(directory) / f"{TMP_PREFIX}{checkpoint_name(step)}"


def start_checkpoint(directory: Path, step: int) -> Path:
    """A fresh, empty temp folder for step ``step`` (main process; the others then write their RNG into it)."""
    tmp = temp_folder(directory, step)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)  # debris of a crash while writing this very step: ours, never complete
    tmp.mkdir()
    return tmp


@contextlib.contextmanager
def removed_on_failure(tmp: Path):
    """Writing the temp folder ``tmp``: on a failure it is removed (nothing of it stays on a full disk) and a
    disk fault becomes one ``DiskError`` line naming the checkpoint and the space it needs (torch reports
    ENOSPC as ``RuntimeError: ... unexpected pos``). Committed checkpoints are never touched."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        written = sum(f.stat().st_size for f in tmp.iterdir() if f.is_file()) if tmp.is_dir() else 0
        shutil.rmtree(tmp, ignore_errors=True)
        final = tmp.with_name(tmp.name.removeprefix(TMP_PREFIX))
        if (fault := disk_error(err, final, written)) is not None:
            raise fault from None
        raise


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_checkpoint(tmp: Path, *, step: int, epoch: int, batches_into_epoch: int, fingerprint: str,
                      world_size: int, extra: dict[str, Any]) -> Path:
    """fsync and hash every file, write the manifest (last), rename the temp folder to ``step-NNNNNNN``; returns that path.

    A folder already at that name (another run's checkpoint of the same step, or an
    incomplete one) is moved aside first and removed by the next ``prune``: nothing
    is deleted before the new checkpoint is in place.
    """
    directory = tmp.parent
    final = directory / checkpoint_name(step)
    files = sorted(p.name for p in tmp.iterdir())
    for name in files:
        _fsync(tmp / name)
    manifest = {
        "format": CHECKPOINT_FORMAT,
        "step": step,
        "epoch": epoch,
        "batches_into_epoch": batches_into_epoch,
        "fingerprint": fingerprint,
        "world_size": world_size,
        "files": {name: (tmp / name).stat().st_size for name in files},
        "sha256": {name: sha256_file(tmp / name) for name in files},
        "extra": extra,
    }
    (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    _fsync(tmp / MANIFEST_NAME)
    _fsync(tmp)
    if final.exists():
        aside = directory / f"{ASIDE_PREFIX}{final.name}"
        shutil.rmtree(aside, ignore_errors=True)  # an earlier aside of the same name: its step was committed since
        os.replace(final, aside)
    os.replace(tmp, final)
    _fsync(directory)
    return final


def prune(directory: Path, fingerprint: str, keep: int) -> list[str]:
    """Keep this run's ``keep`` newest checkpoints; remove every other checkpoint folder and all debris.

    Call only after this run's newest checkpoint is committed. Returns the names of
    the removed folders that were not this run's own (other runs, temp, aside).
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    ours = list_checkpoints(directory, fingerprint)
    keep_names = {info.path.name for info in ours[-keep:]}
    own_names = {info.path.name for info in ours}
    foreign = []
    for path in sorted(directory.iterdir()):
        if not path.is_dir() or path.name in keep_names:
            continue
        if CHECKPOINT_RE.match(path.name) or path.name.startswith((TMP_PREFIX, ASIDE_PREFIX)):
            shutil.rmtree(path, ignore_errors=True)
            if path.name not in own_names:
                foreign.append(path.name)
    return foreign
