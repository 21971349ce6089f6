"""Stable splits: a row's split depends only on a hash of its id, never on the file around it.

Nightly retraining appends rows to the ingest file. A split drawn at random from the
whole file moves rows between splits when rows are added (the challenger then trains on
the champion's test rows, and two nights are not scored on the same rows). Here each row
gets a point ``unit(seed, id)`` in [0, 1) from sha256; ``unit < heldout_share`` is
held out, the next ``eval_share`` is eval, the rest train. Appending rows, or shuffling
the file, changes no existing row's point, so no existing row changes split.

Leaks (a shared normalised text or fact value between a protected row and a training row)
are resolved by leaving a row out, never by moving one: a training row touching a held-out
or novel-facts row is left out, except that a row the last run trained on stays and the *new*
held-out row touching it is left out instead. Both are counted (``leak_excluded``). Pure
functions; the dataset stage does the I/O.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pipeline.records import DatasetRow, iter_leak_keys

HASH_SPLITS = ("train", "eval", "heldout")  # the splits the hash assigns (novel_facts are generated)


def unit(seed: int, row_id: str) -> float:
    """The row's fixed point in [0, 1): the first 8 bytes of sha256("seed:id")."""
    digest = hashlib.sha256(f"{seed}:{row_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def split_of(seed: int, row_id: str, heldout_share: float, eval_share: float) -> str:
    point = unit(seed, row_id)
    if point < heldout_share:
        return "heldout"
    return "eval" if point < heldout_share + eval_share else "train"


@dataclass(frozen=True)
class HashSplit:
    """Rows per split (each in id order) and the rows left out because they would leak."""

    splits: dict[str, list[DatasetRow]]
    leak_excluded: list[DatasetRow]


def hash_split(rows: Iterable[DatasetRow], seed: int, heldout_share: float, eval_share: float,
               protected_extra: Iterable[DatasetRow] = (), trained_before: frozenset[str] = frozenset()) -> HashSplit:
    """Assign every row by its id's hash, then resolve leaks without moving any row the last run placed.

    ``trained_before``: ids the last run put in train or eval. A *new* row hashed into heldout
    that shares a leak key with one of them is left out (it would otherwise push an old
    training row out); then every train/eval row sharing a leak key with a held-out row or
    with ``protected_extra`` (generated held-out top-up, novel facts) is left out. So an old row
    keeps its split, a held-out row never enters training, and every row left out is counted.
    """
    splits: dict[str, list[DatasetRow]] = {name: [] for name in HASH_SPLITS}
    for row in sorted(rows, key=lambda r: r.id):
        splits[split_of(seed, row.id, heldout_share, eval_share)].append(row)
    excluded: list[DatasetRow] = []
    old_training_keys = {key for name in ("train", "eval") for row in splits[name] if row.id in trained_before
                         for key in iter_leak_keys(row)}
    kept_heldout = []
    for row in splits["heldout"]:
        touches_old = row.id not in trained_before and old_training_keys.intersection(iter_leak_keys(row))
        (excluded if touches_old else kept_heldout).append(row)
    splits["heldout"] = kept_heldout
    protected_keys = {key for row in [*kept_heldout, *protected_extra] for key in iter_leak_keys(row)}
    for name in ("train", "eval"):
        kept = []
        for row in splits[name]:
            (excluded if protected_keys.intersection(iter_leak_keys(row)) else kept).append(row)
        splits[name] = kept
    return HashSplit(splits, sorted(excluded, key=lambda r: r.id))


def content_hash(rows: Iterable[DatasetRow]) -> str:
    """sha256 of the rows' canonical JSON, in id order: the same rows give the same hash in any order."""
    lines = sorted(json.dumps(row.to_json(), sort_keys=True, ensure_ascii=False) for row in rows)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def split_ids(splits: Mapping[str, Iterable[DatasetRow]]) -> dict[str, list[str]]:
    return {name: sorted(row.id for row in rows) for name, rows in splits.items()}


def changes_since(previous: Mapping[str, list[str]] | None, current: Mapping[str, list[str]]) -> dict:
    """New rows per split, and rows that moved between splits, since the ``previous`` run's ids (None: first run)."""
    if previous is None:
        return {"new_rows": {name: None for name in current}, "moved_rows": None, "moved_examples": []}
    before = {row_id: name for name, ids in previous.items() for row_id in ids}
    moved = sorted(row_id for name, ids in current.items() for row_id in ids
                   if row_id in before and before[row_id] != name)
    return {"new_rows": {name: sum(row_id not in before for row_id in ids) for name, ids in current.items()},
            "moved_rows": len(moved), "moved_examples": moved[:5]}
