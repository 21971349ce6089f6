"""Atomic file output shared by every stage (params: ``pipeline.params``; JSONL: ``pipeline.jsonl``).

Every stage writes through these helpers so that an interrupted run never
leaves a half-written artifact behind (DESIGN.md, principle 8).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator



_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "", tmp_dir: str | os.PathLike | None = None) -> Iterator[Path]:
    """Yield a temp path next to ``target`` (or in ``tmp_dir``); rename it onto ``target`` on success.

    On any exception the temp file is removed and ``target`` is untouched. ``tmp_dir``
    (same filesystem) keeps the temp file out of a folder DVC tracks as one output, so a
    killed writer cannot leave it there.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    where = Path(tmp_dir) if tmp_dir is not None else target.parent
    where.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or target.suffix, dir=where)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual mode
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | os.PathLike, text: str) -> None:
    write_bytes(target, text.encode("utf-8"))


def write_json(target: str | os.PathLike, obj: Any) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")  # NaN is not JSON


def details_path(metrics_path: str | os.PathLike) -> Path:
    """``reports/metrics/<stage>.details.json``: the stage's full report, beside its DVC metrics file."""
    metrics_path = Path(metrics_path)
    return metrics_path.with_name(f"{metrics_path.stem}.details.json")


def write_metrics(metrics_path: str | os.PathLike, headline: dict[str, float | int | None], details: dict) -> None:
    """A stage's report in two files: ``details`` (everything, nested as needed) beside ``metrics_path``,
    and at ``metrics_path`` the few flat headline numbers DVC shows (`dvc metrics show`, `dvc exp show`),
    so that those tables stay a screen wide."""
    nested = [key for key, value in headline.items() if isinstance(value, (dict, list, str))]
    if nested:
        raise ValueError(f"{metrics_path}: headline metrics must be numbers, not {nested}")
    write_json(details_path(metrics_path), details)
    write_json(metrics_path, headline)


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None


CHECKSUM_CHARS = 16  # hex digits of sha256 in a cache entry's name (TTS shards, Mimi codes): 64 bits


def short_checksum(data: bytes) -> str:
    """The first ``CHECKSUM_CHARS`` hex digits of ``data``'s sha256: what a cache entry's name carries."""
    return hashlib.sha256(data).hexdigest()[:CHECKSUM_CHARS]


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temp folder next to ``target``; swap it in for ``target`` on success."""
    import shutil

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)
        if target.exists():  # old aside first, new in, old gone: a crash never leaves no folder at all
            aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.replace(target, aside / target.name)
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(aside / target.name, target)  # put the old folder back
                raise
            finally:
                shutil.rmtree(aside)  # the old folder after a swap; empty after a put-back
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
