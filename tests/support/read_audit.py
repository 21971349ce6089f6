"""What a stage reads, recorded as it runs, checked against its entry in dvc.yaml.

Run as ``python tests/support/read_audit.py STAGE LOG`` in a workspace: it installs a Python audit hook
(``sys.addaudithook``; the ``open`` event also fires for an open that fails because the file is absent),
wraps the params loader (``pipeline.params.read_params_file`` hands out a mapping that records every key
looked up; ``load_stage_params`` records its whole group), then runs ``tasks.STAGE`` as ``python -m`` would
and writes what was read to LOG (JSON). ``violations`` compares that record with the stage's ``deps``,
``outs`` and ``params`` in dvc.yaml.

Limits: an open made inside a C extension without Python's ``open`` (pyarrow's Parquet reader, safetensors,
libsndfile, ``torch.load`` on a path) raises no audit event. Those libraries read model folders and the TTS
cache, whose checksums are read through Python first (``sha256_file``), or paths a stage also opens in Python.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Reads that are declared although the path is not in the stage's deps, one line each.
# A content-addressed cache read through a declared manifest that pins each entry's checksum: the manifest
# (data/tts/<split>.jsonl) names shard and row, the shard's name carries the sha256 of its bytes, checked
# before use (pipeline/tts_cache.py). A changed clip is a new shard name in the manifest, so DVC sees it.
THROUGH_A_MANIFEST = {"data/tts/cache/": "data/tts/"}  # cache folder -> where its manifests live
# DVC's own configuration, which DVCLive (train) opens to find the repo it logs into: not an input of any out.
DVC_CONFIG = (".dvc/config", ".dvc/config.local", ".dvcignore")
PARAMS_FILE = "params.yaml"  # declared through `params:`, read only by the loader (checked)


@dataclass(frozen=True)
class StageDecl:
    """A stage's entry in dvc.yaml: what it says it reads and writes."""

    deps: tuple[str, ...]
    outs: tuple[str, ...]
    params: tuple[str, ...]


def _paths(entries: list) -> tuple[str, ...]:
    """dvc.yaml list entries: a path, or a one-key mapping ``{path: {options}}``."""
    return tuple(e if isinstance(e, str) else next(iter(e)) for e in entries or ())


def stage_decl(dvc_yaml: dict, stage: str) -> StageDecl:
    spec = dvc_yaml["stages"][stage]
    outs = _paths(spec.get("outs")) + _paths(spec.get("metrics")) + _paths(spec.get("plots"))
    params = []
    for entry in spec.get("params") or ():
        if isinstance(entry, dict):  # {other_file.yaml: [keys]}: not params.yaml
            continue
        params.append(entry)
    return StageDecl(_paths(spec.get("deps")), outs, tuple(params))


def _under(path: str, declared: str) -> bool:
    declared = declared.rstrip("/")
    return path == declared or path.startswith(declared + "/")


def source_of(path: str) -> str:
    """A module's compiled file stands for its source: ``pkg/__pycache__/m.cpython-312.pyc`` -> ``pkg/m.py``."""
    parent, name = os.path.split(path)
    if os.path.basename(parent) == "__pycache__" and name.endswith(".pyc"):
        return os.path.join(os.path.dirname(parent), name.split(".")[0] + ".py")
    return path


def file_violations(reads: list[str], decl: StageDecl, loader_only_params: bool = True) -> list[str]:
    """Workspace files read (relative paths) that are neither a declared dep nor one of the stage's outs."""
    bad = []
    for path in sorted(set(map(source_of, reads))):
        if path == PARAMS_FILE:
            if not loader_only_params:
                bad.append(f"{path}: read outside pipeline.params (its keys escape the params audit)")
            continue
        if path in DVC_CONFIG or any(_under(path, d) for d in decl.deps) or any(_under(path, o) for o in decl.outs):
            continue
        if any(_under(path, cache) and any(_under(d, manifests) and d.endswith(".jsonl") for d in decl.deps)
               for cache, manifests in THROUGH_A_MANIFEST.items()):
            continue
        bad.append(f"{path}: read but not a declared dep or out")
    return bad


def _covers(outer: str, inner: str) -> bool:
    """``outer`` names ``inner`` or a group holding it (``train`` covers ``train.lr``)."""
    return inner == outer or inner.startswith(outer + ".")


def params_violations(read_keys: list[str], decl: StageDecl) -> list[str]:
    """Keys read but not declared, and keys declared but never read."""
    bad = []
    for key in sorted(set(read_keys)):
        if key == "":
            bad.append("params.yaml: the whole file is read (every group a dependency)")
        elif not any(_covers(p, key) for p in decl.params):
            bad.append(f"params.yaml: '{key}' read but not in the stage's params")
    for declared in decl.params:
        if not any(_covers(declared, key) or _covers(key, declared) for key in read_keys):
            bad.append(f"params.yaml: '{declared}' declared but nothing reads it")
    return bad


# --------------------------------------------------------------------------- the recorder (runs in the stage)


class TrackedParams(dict):
    """A params mapping that records each key looked up, dotted from the root (``train.lr``).

    Descending into a group records nothing by itself; a leaf value, an absent key, or listing a group's keys
    (iteration, ``items()``, ``len``) records the key or the group. The root listed records ``""``.
    """

    def __init__(self, data: dict, prefix: str, reads: set[str]):
        super().__init__(data)
        self._prefix, self._reads = prefix, reads

    def _dotted(self, key: Any) -> str:
        return f"{self._prefix}.{key}" if self._prefix else str(key)

    def _value(self, key: Any, value: Any) -> Any:
        if isinstance(value, dict):
            return TrackedParams(value, self._dotted(key), self._reads)
        self._reads.add(self._dotted(key))
        return value

    def __getitem__(self, key):
        if not dict.__contains__(self, key):
            self._reads.add(self._dotted(key))
        return self._value(key, dict.__getitem__(self, key))

    def get(self, key, default=None):
        return self[key] if dict.__contains__(self, key) else self._absent(key, default)

    def _absent(self, key, default):
        self._reads.add(self._dotted(key))
        return default

    def __contains__(self, key):
        if not dict.__contains__(self, key) or not isinstance(dict.__getitem__(self, key), dict):
            self._reads.add(self._dotted(key))
        return dict.__contains__(self, key)

    def _all(self) -> None:
        self._reads.add(self._prefix)

    def __iter__(self):
        self._all()
        return dict.__iter__(self)

    def __len__(self):
        self._all()
        return dict.__len__(self)

    def keys(self):
        self._all()
        return dict.keys(self)

    def items(self):
        self._all()
        return [(k, self._value(k, v)) for k, v in dict.items(self)]

    def values(self):
        return [v for _, v in self.items()]


def _is_read(mode: Any, flags: Any) -> bool:
    if isinstance(mode, str):  # builtins.open / io.open
        return "r" in mode or "+" in mode and "w" not in mode
    if isinstance(flags, int):  # os.open
        return flags & os.O_ACCMODE in (os.O_RDONLY, os.O_RDWR) and not flags & os.O_CREAT
    return False


def record(stage: str, log: Path) -> int:
    """Run ``tasks.<stage>`` with the audit on; write ``{"files": [...], "params": [...]}`` to ``log``."""
    import runpy

    root = os.getcwd()
    files: set[str] = set()
    written: set[str] = set()
    params_outside_loader: list[str] = []
    keys: set[str] = set()

    def hook(event: str, args: tuple) -> None:
        if event != "open" or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        path = os.path.abspath(os.fsdecode(args[0]))
        if not path.startswith(root + os.sep):
            return
        rel = os.path.relpath(path, root)
        if not _is_read(args[1], args[2]):
            written.add(rel)
            return
        if os.path.isdir(path) or rel in written:  # fsync/rmtree of a folder; reading back what it wrote
            return
        if rel == PARAMS_FILE and not any(f.f_code.co_filename.endswith(os.path.join("pipeline", "params.py"))
                                          for f in _frames()):
            params_outside_loader.append(rel)
        files.add(rel)

    sys.path[0] = root  # as `python -m` has it (not this script's folder)
    sys.addaudithook(hook)  # before the first import from the workspace: its modules are reads too
    import pipeline.params as loader

    read_file, load_group = loader.read_params_file, loader.load_stage_params

    def read_params_file(*a, **kw):
        return TrackedParams(read_file(*a, **kw), "", keys)

    def load_stage_params(cls, *a, **kw):
        keys.add(cls.SECTION)  # the whole group is handed out
        return load_group(cls, *a, **kw)

    loader.read_params_file, loader.load_stage_params = read_params_file, load_stage_params
    sys.argv = [f"tasks.{stage}"]
    code = 0
    try:
        runpy.run_module(f"tasks.{stage}", run_name="__main__", alter_sys=True)
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    finally:
        report = {"files": sorted(files), "params": sorted(keys),
                  "params_outside_loader": bool(params_outside_loader)}
        log.write_text(json.dumps(report, indent=1))  # written files are recorded, not read: no recursion
    return code


def _frames():
    frame = sys._getframe(1)
    while frame is not None:
        yield frame
        frame = frame.f_back


def violations(log: dict, decl: StageDecl) -> list[str]:
    return (file_violations(log["files"], decl, loader_only_params=not log.get("params_outside_loader"))
            + params_violations(log["params"], decl))


if __name__ == "__main__":
    sys.exit(record(sys.argv[1], Path(sys.argv[2]).resolve()))
