"""Atomic file output shared by every stage (params: ``pipeline.params``; JSONL: ``pipeline.jsonl``).

Every stage writes through these helpers so that an interrupted run never
leaves a half-written artifact behind (DESIGN.md, principle 8).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from pipeline.params import StageError

_UMASK = os.umask(0)
os.umask(_UMASK)

LOW_SPACE_BYTES = 1 << 20  # a write that failed with less free than this on its filesystem ran out of space
_DISK_ERRNOS = {errno.ENOSPC: "no space left", errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only file system",
                errno.EXDEV: "staging folder on another file system", errno.EACCES: "permission denied"}


class DiskError(StageError, OSError):
    """A write failed for want of space or permission, or across file systems; one line naming the path and the need."""


def real_path(target: str | os.PathLike) -> Path:
    """``target`` with its symlinks resolved (the folder it names may not exist yet): temp files are staged
    beside what is really written, on its file system, never beside a link into another one. Without a
    symlink on the way, ``target`` as given (relative paths stay relative in messages)."""
    resolved = os.path.realpath(target)
    return Path(target) if resolved == os.path.abspath(target) else Path(resolved)


def disk_error(err: BaseException, target: Path, written: int = 0) -> DiskError | None:
    """``err`` as one line naming ``target`` and what is needed, if it is a disk or file-system fault; else None.

    torch and safetensors wrap ENOSPC in a RuntimeError ("unexpected pos ..."): a failure with less than
    ``LOW_SPACE_BYTES`` free on the target's file system counts as out of space too.
    """
    code = getattr(err, "errno", None)
    where = target.parent
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        free = None
    if code not in _DISK_ERRNOS and not (free is not None and free < LOW_SPACE_BYTES and isinstance(err, (OSError, RuntimeError))):
        return None
    if code in (errno.EROFS, errno.EACCES):
        return DiskError(f"{target}: cannot write ({_DISK_ERRNOS[code]} at {where}); make it writable or point the "
                         "output elsewhere. Nothing was replaced.")
    if code == errno.EXDEV:
        return DiskError(f"{target}: cannot rename a temp file across file systems; stage it beside {target.parent}. "
                         "Nothing was replaced.")
    have = "unknown" if free is None else f"{free / 2**20:.1f} MiB"
    need = f"more than {written / 2**20:.1f} MiB" if written else "more space"
    return DiskError(f"{target}: no space left on {where} ({have} free; the write needs {need}). "
                     "Free space there and rerun; nothing was replaced and the temp file is removed.")


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "", tmp_dir: str | os.PathLike | None = None) -> Iterator[Path]:
    """Yield a temp path next to ``target`` (or in ``tmp_dir``); rename it onto ``target`` on success.

    On any exception the temp file is removed and ``target`` is untouched. ``tmp_dir``
    (same filesystem) keeps the temp file out of a folder DVC tracks as one output, so a
    killed writer cannot leave it there. A symlinked ``target`` (or folder) is resolved first:
    the file it points to is replaced, from a temp file on its own file system. A full disk,
    a read-only volume or a cross-device rename raises ``DiskError``, one line naming ``target``.
    """
    target = real_path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        where = real_path(tmp_dir) if tmp_dir is not None else target.parent
        where.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or target.suffix, dir=where)
    except OSError as err:
        raise (disk_error(err, target) or err) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual mode
        os.replace(tmp_path, target)
    except (OSError, RuntimeError) as err:
        written = tmp_path.stat().st_size if tmp_path.exists() else 0
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if (fault := disk_error(err, target, written)) is not None:
            raise fault from None
        raise
    finally:
        with contextlib.suppress(OSError):
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


# What one invocation measured and did - wall clock, memory, the checkpoint it resumed from, its cache hits and the
# work it spent on misses, what it found new since the run before: two runs that make the same outputs differ in them (a rerun finds the cache a first run
# filled), so they go to <stage>.timings.json and never into an output DVC hashes.
INVOCATION_KEYS = frozenset({
    "seconds", "wall_seconds", "train_seconds", "tokens_per_s", "peak_memory_gib", "peak_memory_kind",
    "mean_seconds_per_row", "mimi_throughput", "audio_seconds_per_second", "resumed_from_step",
    # cache use: tts (pipeline.tts_cache), preprocess (the Mimi codes cache)
    "syntheses", "cache_hits", "hit_rate", "audio_seconds_synthesized", "shards_written", "cache_repair",
    "codes_cache", "mimi_audio_seconds_encoded",
    # the dataset compared with the splits of the run before (pipeline.splits.changes_since)
    "new_rows", "moved_rows", "moved_examples",
})


def timings_path(metrics_path: str | os.PathLike) -> Path:
    """``reports/metrics/<stage>.timings.json``: what the invocation measured and did (a DVC metric, not cached)."""
    metrics_path = Path(metrics_path)
    return metrics_path.with_name(f"{metrics_path.stem}.timings.json")


def write_metrics(metrics_path: str | os.PathLike, headline: dict[str, float | int | None], details: dict) -> None:
    """A stage's report in up to three files: ``details`` (everything, nested as needed) beside ``metrics_path``,
    and at ``metrics_path`` the few flat headline numbers DVC shows (`dvc metrics show`, `dvc exp show`),
    so that those tables stay a screen wide.

    The top-level ``INVOCATION_KEYS`` of ``details`` go to ``timings_path`` instead: details documents are
    cached outputs that later stages read, so with the timings out a forced rerun with nothing changed
    writes them byte for byte (and `dvc.lock` can show that a run is reproducible)."""
    nested = [key for key, value in headline.items() if isinstance(value, (dict, list, str))]
    if nested:
        raise ValueError(f"{metrics_path}: headline metrics must be numbers, not {nested}")
    timings = {key: details[key] for key in sorted(INVOCATION_KEYS & set(details))}
    write_json(details_path(metrics_path), {key: value for key, value in details.items() if key not in timings})
    if timings:
        write_json(timings_path(metrics_path), timings)
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
    """Yield a fresh temp folder next to ``target`` (resolved, as in ``atomic_path``); swap it in on success."""
    target = real_path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as err:
        raise (disk_error(err, target) or err) from None
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
    except (OSError, RuntimeError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if (fault := disk_error(err, target)) is not None:
            raise fault from None
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
