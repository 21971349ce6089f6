"""Dataset stage: generate or ingest tool-aware rows, validate them, split them, check for leaks.

    python -m tasks.dataset                  # run the stage with params.yaml's `dataset` group
    python -m tasks.dataset validate PATH..  # check JSONL files, one `PATH:LINE: reason` per bad row

What the stage does (format and rules: ``docs/data-format.md``):

1. Rows come from ``dataset.source``:
   - ``ingest``: the user's JSONL at ``dataset.ingest_path``;
   - ``generate``: synthetic v4-style rows from ``pipeline/catalog.py``, seeded.
2. Every row goes through the same parser (``pipeline.records``). Bad rows go to
   ``data/dataset/quarantine.jsonl`` with path, line, reason and raw text; the
   stage fails if their share exceeds ``dataset.max_bad_fraction``.
3. Rows are split by class into train / eval / heldout / novel_facts. Held-out
   and novel-facts rows may share no normalised user/assistant text and no fact
   value with train or eval; :func:`find_leaks` checks that after splitting.
   Generated held-out rows come from the reserved side of every pool, so they
   pass; ingested held-out rows are picked among rows that share nothing with
   any other row; novel facts are always generated (for ingested data, redrawn
   when they would share text or a fact value with the ingested rows).
4. The splits must be big enough to train on: ``eval_size`` rows in eval and at
   least one row of every class in train; otherwise the stage fails naming the
   counts per split and class against the params (a tiny or empty ingest file
   would otherwise surface only in preprocess).
5. Splits are written atomically; per-class counts, bad counts and the bad
   fraction go to ``reports/metrics/dataset.details.json``; the rows written
   (DVC's metrics) to ``reports/metrics/dataset.json``.
"""
from __future__ import annotations

import argparse
import random
import sys
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Literal, TextIO

from pipeline import templates
from pipeline.artifacts import DATASET_DIR, SPLIT_IDS_JSON, metrics_json
from pipeline.catalog import TOOLS, RowMaker, is_hard_negative
from pipeline.jsonl import write_jsonl
from pipeline.metrics_models import DatasetDetails, write_stage_metrics
from pipeline.io import write_json
from pipeline.params import PARAMS_FILE, StageError, StageParams, field, load_stage_params, stage_main
from pipeline.records import (CLASSES, BadLine, DatasetRow, ReadResult, iter_leak_keys, normalize_text,
                              parse_lines, read_rows, write_rows)
from pipeline.splits import changes_since, content_hash, hash_split, split_ids, split_of
from pipeline.row_bounds import RowBounds
from pipeline.templates import Side

SPLITS = ("train", "eval", "heldout", "novel_facts")
TRAINING_SPLITS = ("train", "eval")
PROTECTED_SPLITS = ("heldout", "novel_facts")
METRICS_PATH = metrics_json("dataset")
# The ids of each split as the last run wrote them (a `persist: true` out, so DVC keeps it while the
# stage runs): how the metrics know which rows are new and that none moved.
SPLIT_IDS_PATH = SPLIT_IDS_JSON

Splits = dict[str, list[DatasetRow]]


class DatasetError(StageError):
    """The stage cannot produce a sound dataset; the message says why."""


# --------------------------------------------------------------------------- params

@dataclass(frozen=True)
class DatasetParams(StageParams):
    """The ``dataset`` group of params.yaml."""

    SECTION = "dataset"

    source: Literal["generate", "ingest"]
    seed: int
    train_size: int = field(lo=1)          # generate only; ingest keeps every row not held out or in eval
    eval_size: int = field(lo=1)
    heldout_per_class: int = field(lo=0)
    novel_facts: int = field(lo=0)
    max_bad_fraction: float = field(lo=0, hi=1)
    class_shares: dict[str, float]  # generate only: share of each class in train and eval
    hard_negative_share: float = field(lo=0, hi=1)  # generate only: share of tool_miss rows listing a related tool
    tools_per_row: tuple[int, ...] = field(lo=1, hi=8)  # generate only: inclusive [low, high] of listed tools
    ingest_path: Path | None = None        # required for ingest
    heldout_share: float = field(0.04, lo=0, hi=1)  # ingest: rows whose id hashes below this are held out
    eval_share: float = field(0.1, lo=0, hi=1)      # ingest: the next share of the hash range is eval
    # Row size bounds (pipeline.row_bounds: why, and the defaults' reasoning); a row past one is a bad row.
    max_text_chars: int = field(RowBounds.max_text_chars, lo=1)
    max_facts: int = field(RowBounds.max_facts, lo=1)
    max_fact_chars: int = field(RowBounds.max_fact_chars, lo=1)
    max_tools: int = field(RowBounds.max_tools, lo=1)
    max_row_bytes: int = field(RowBounds.max_row_bytes, lo=2)

    @property
    def bounds(self) -> RowBounds:
        return RowBounds(self.max_text_chars, self.max_facts, self.max_fact_chars, self.max_tools, self.max_row_bytes)

    @property
    def shares(self) -> dict[str, float]:
        """``class_shares`` in class order (ties in ``allocate`` go by this order)."""
        return {name: self.class_shares[name] for name in CLASSES}

    def check(self) -> None:
        if self.source == "ingest" and self.ingest_path is None:
            raise self.bad("ingest_path", "is required when dataset.source is 'ingest'")
        shares = self.class_shares
        if (set(shares) != set(CLASSES) or not all(value > 0 for value in shares.values())
                or abs(sum(shares.values()) - 1.0) > 1e-6):
            raise self.bad("class_shares", f"must give a share > 0 to each of {', '.join(CLASSES)}, summing to 1, "
                                           f"got {shares!r}")
        if self.heldout_share + self.eval_share >= 1:
            raise self.bad("eval_share", f"+ heldout_share must be < 1 (nothing left to train on), got "
                                         f"{self.eval_share} + {self.heldout_share}")
        if len(self.tools_per_row) != 2 or self.tools_per_row[0] > self.tools_per_row[1]:
            raise self.bad("tools_per_row", f"must be [low, high] with low <= high, got {list(self.tools_per_row)}")


# --------------------------------------------------------------------------- counting and stratifying

def allocate(total: int, weights: dict[str, float]) -> dict[str, int]:
    """Split ``total`` into integers proportional to ``weights`` (largest remainder; ties by key order)."""
    weight_sum = sum(weights.values())
    if total == 0 or weight_sum == 0:
        return {key: 0 for key in weights}
    exact = {key: total * weight / weight_sum for key, weight in weights.items()}
    counts = {key: int(value) for key, value in exact.items()}
    by_remainder = sorted(weights, key=lambda key: exact[key] - counts[key], reverse=True)  # stable on ties
    for key in by_remainder[: total - sum(counts.values())]:
        counts[key] += 1
    return counts


def class_counts(rows: list[DatasetRow]) -> dict[str, int]:
    counted = Counter(row.row_class for row in rows)
    return {name: counted[name] for name in CLASSES}


def stratified_take(rows: list[DatasetRow], n: int, rng: random.Random) -> tuple[list[DatasetRow], list[DatasetRow]]:
    """Draw ``n`` rows with the class proportions of ``rows``; return (drawn, rest), each in input order."""
    if n > len(rows):
        raise DatasetError(f"cannot draw {n} rows from {len(rows)}")
    quota = allocate(n, {name: float(count) for name, count in class_counts(rows).items()})
    chosen: set[int] = set()
    for name in CLASSES:
        members = [i for i, row in enumerate(rows) if row.row_class == name]
        chosen.update(rng.sample(members, quota[name]))
    return ([row for i, row in enumerate(rows) if i in chosen],
            [row for i, row in enumerate(rows) if i not in chosen])


# --------------------------------------------------------------------------- generation

def generate_rows(maker: RowMaker, counts: dict[str, int], id_prefix: str, hard_negative_share: float,
                  unique: bool = False, avoid: frozenset[tuple[str, str]] = frozenset()) -> list[DatasetRow]:
    """``counts[class]`` rows per class in shuffled order; exactly round(share * n) tool_miss rows are hard.

    A row is redrawn (up to 50 times) if ``unique`` and its user text and facts repeat an earlier
    row (so every held-out row is a distinct test), or if it has a leak key in ``avoid``.
    """
    n_hard = round(hard_negative_share * counts["tool_miss"])
    plan = [(name, False) for name in CLASSES if name != "tool_miss" for _ in range(counts[name])]
    plan += [("tool_miss", True)] * n_hard + [("tool_miss", False)] * (counts["tool_miss"] - n_hard)
    maker.rng.shuffle(plan)
    makers: dict[str, Callable[[str, bool], DatasetRow]] = {
        "tool_match": lambda row_id, _: maker.tool_match(row_id),
        "tool_result_speak": lambda row_id, _: maker.tool_result_speak(row_id),
        "tool_miss": maker.tool_miss,
        "non_tool": lambda row_id, _: maker.non_tool(row_id),
    }
    retries = 50 if unique or avoid else 1
    rows: list[DatasetRow] = []
    seen: set[tuple[str, str]] = set()
    for index, (name, hard) in enumerate(plan, start=1):
        for _ in range(retries):
            row = makers[name](f"{id_prefix}-{index:05d}", hard)
            key = (normalize_text(row.user), str(row.facts))
            if not (unique and key in seen) and avoid.isdisjoint(iter_leak_keys(row)):
                break
        seen.add(key)
        rows.append(row)
    return rows


def _maker(config: DatasetParams, split: str, side: Side) -> RowMaker:
    return RowMaker(random.Random(f"{config.seed}:{split}"), side, config.tools_per_row)


def generate_novel_facts(config: DatasetParams, training_rows: list[DatasetRow] = ()) -> list[DatasetRow]:
    """tool_result_speak rows whose facts come from the held-out side of every pool.

    ``training_rows`` matter for ingested data only: a row sharing text or a fact value with
    them is redrawn (generated training rows cannot share any, by construction).
    """
    counts = {name: config.novel_facts if name == "tool_result_speak" else 0 for name in CLASSES}
    avoid = frozenset(key for row in training_rows for key in iter_leak_keys(row))
    return generate_rows(_maker(config, "novel_facts", "heldout"), counts, "novel", 0.0, unique=True, avoid=avoid)


def generate_splits(config: DatasetParams) -> Splits:
    """All four splits, synthetic; train/eval from the train side, heldout/novel_facts from the held-out side."""
    held_out_counts = {name: config.heldout_per_class for name in CLASSES}
    return {
        "train": generate_rows(_maker(config, "train", "train"), allocate(config.train_size, config.shares),
                               "train", config.hard_negative_share),
        "eval": generate_rows(_maker(config, "eval", "train"), allocate(config.eval_size, config.shares),
                              "eval", config.hard_negative_share),
        "heldout": generate_rows(_maker(config, "heldout", "heldout"), held_out_counts,
                                 "heldout", config.hard_negative_share, unique=True),
        "novel_facts": generate_novel_facts(config),
    }


def revalidate(splits: Splits, bounds: RowBounds = RowBounds()) -> tuple[Splits, ReadResult]:
    """Round-trip generated rows through the parser, so they meet exactly the rules ingested rows meet."""
    checked: Splits = {}
    bad: list[BadLine] = []
    lines_read = 0
    for name, rows in splits.items():
        result = parse_lines((row.to_line() for row in rows), f"<generated {name}>", on_bad="quarantine",
                             row_check=bounds.line_check())
        checked[name] = result.rows
        bad += result.bad
        lines_read += result.lines_read
    return checked, ReadResult([row for rows in checked.values() for row in rows], bad, lines_read)


# --------------------------------------------------------------------------- ingest split

def split_ingested(rows: list[DatasetRow], config: DatasetParams,
                   previous_ids: dict[str, list[str]] | None = None) -> tuple[Splits, list[DatasetRow]]:
    """Stable splits (``pipeline.splits``): each row by its id's hash; returns (splits, leak-excluded rows).

    Held-out rows are those whose id hashes below ``heldout_share``, so appending rows or
    shuffling the file moves no row. A class with fewer than ``heldout_per_class`` of them is
    topped up with rows generated from the held-out side of the pools (a function of the
    seed and the shortfall only), marked ``"origin": "generated"`` and counted in the metrics.
    Novel facts are generated from the seed alone. A leak is resolved by leaving a row out
    (counted), never by moving one; ``previous_ids`` (the last run's splits) tell which
    training rows are old and so keep their place (``pipeline.splits.hash_split``).
    """
    held = Counter(row.row_class for row in rows
                   if split_of(config.seed, row.id, config.heldout_share, config.eval_share) == "heldout")
    shortfall = {name: max(0, config.heldout_per_class - held[name]) for name in CLASSES}
    topped_up = generate_rows(_maker(config, "heldout", "heldout"), shortfall, "heldout-gen",
                              config.hard_negative_share, unique=True)
    topped_up = [replace(row, extra={**row.extra, "origin": "generated"}) for row in topped_up]
    novel = generate_novel_facts(config)
    trained_before = frozenset(row_id for name in TRAINING_SPLITS for row_id in (previous_ids or {}).get(name, []))
    assigned = hash_split(rows, config.seed, config.heldout_share, config.eval_share, [*topped_up, *novel],
                          trained_before)
    splits = assigned.splits
    return ({"train": splits["train"], "eval": splits["eval"], "heldout": splits["heldout"] + topped_up,
             "novel_facts": novel}, assigned.leak_excluded)


# --------------------------------------------------------------------------- leakage

def find_leaks(splits: Splits) -> list[str]:
    """One message per (protected row, key) that also occurs in train or eval."""
    seen: dict[tuple[str, str], str] = {}
    for split in TRAINING_SPLITS:
        for row in splits[split]:
            for key in iter_leak_keys(row):
                seen.setdefault(key, f"{split} row {row.id}")
    return [f"{split} row {row.id} shares {kind} '{value}' with {seen[(kind, value)]}"
            for split in PROTECTED_SPLITS for row in splits[split]
            for kind, value in dict.fromkeys(iter_leak_keys(row)) if (kind, value) in seen]


def check_no_leakage(splits: Splits) -> None:
    leaks = find_leaks(splits)
    if leaks:
        shown = "\n  ".join(leaks[:10])
        raise DatasetError(f"{len(leaks)} leak(s) from held-out/novel facts into train/eval, first: {leaks[0]}\n  {shown}")


# --------------------------------------------------------------------------- sizes

def size_shortfalls(splits: Splits, config: DatasetParams) -> list[str]:
    """What is too small to train on, per split and class, against the params ([] = enough).

    Training needs every behaviour (at least one train row of each class) and the
    validation loss needs ``dataset.eval_size`` rows.
    """
    def rows(n: int) -> str:
        return f"{n} row" if n == 1 else f"{n} rows"

    shortfalls = []
    train = class_counts(splits["train"])
    if not all(train.values()):
        shown = ", ".join(f"{name} {count}" for name, count in train.items())
        shortfalls.append(f"train has {rows(len(splits['train']))} ({shown}; needs at least 1 of each class)")
    if len(splits["eval"]) < config.eval_size:
        shortfalls.append(f"eval has {rows(len(splits['eval']))}, dataset.eval_size is {config.eval_size}")
    return shortfalls


def check_sizes(splits: Splits, config: DatasetParams, read: ReadResult) -> None:
    shortfalls = size_shortfalls(splits, config)
    if shortfalls:
        source = f"{config.ingest_path}: {len(read.rows)} good rows" if config.source == "ingest" else "generated rows"
        ingested_heldout = sum(row.extra.get("origin") != "generated" for row in splits["heldout"])
        held = (f"; {ingested_heldout} went to heldout (dataset.heldout_per_class is {config.heldout_per_class})"
                if config.source == "ingest" else "")
        raise DatasetError(f"{source}, too few for the params: {'; '.join(shortfalls)}{held}")


# --------------------------------------------------------------------------- the stage

def hard_negative_fraction(rows: list[DatasetRow]) -> float | None:
    """Share of tool_miss rows that are hard negatives; None (unavailable) without tool_miss rows."""
    misses = [row for row in rows if row.row_class == "tool_miss"]
    return round(sum(map(is_hard_negative, misses)) / len(misses), 4) if misses else None


def dataset_metrics(config: DatasetParams, read: ReadResult, splits: Splits | None,
                    leak_excluded: list[DatasetRow] = (), previous_ids: dict[str, list[str]] | None = None,
                    ) -> dict[str, Any]:
    metrics: dict[str, Any] = {
        "source": config.source,
        "rows_read": read.lines_read,
        "bad_rows": len(read.bad),
        "bad_fraction": round(read.bad_fraction, 6),
        "max_bad_fraction": config.max_bad_fraction,
    }
    if splits is not None:
        metrics["counts"] = {name: {**class_counts(rows), "total": len(rows)} for name, rows in splits.items()}
        metrics["hard_negative_fraction"] = {name: hard_negative_fraction(rows) for name, rows in splits.items()}
        metrics["heldout_generated"] = class_counts(
            [row for row in splits["heldout"] if row.extra.get("origin") == "generated"])
        metrics["leak_excluded"] = class_counts(list(leak_excluded))
        # two models are compared only when they were scored on the same rows (pipeline/gate.py)
        metrics["heldout_hash"] = content_hash(splits["heldout"])
        metrics["novel_facts_hash"] = content_hash(splits["novel_facts"])
        metrics.update(changes_since(previous_ids, split_ids(splits)))
    if config.source == "generate":
        metrics["catalog"] = {"tools": len(TOOLS),
                              "ack_templates": len(templates.on_side(templates.ACK_TEMPLATES, "train")),
                              "refusal_templates": len(templates.on_side(templates.REFUSAL_TEMPLATES, "train"))}
    return metrics


def write_report(metrics_path: Path, metrics: dict[str, Any]) -> None:
    write_stage_metrics(DatasetDetails.of(metrics), metrics_path)


def read_previous_ids(path: Path) -> dict[str, list[str]] | None:
    """The last run's ids per split, or None (first run, or an unreadable file: then nothing is called new)."""
    import json

    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        return None
    return data


def run_stage(config: DatasetParams, out_dir: Path = DATASET_DIR, metrics_path: Path = METRICS_PATH) -> dict[str, Any]:
    """Produce the four splits, the quarantine file and the metrics; return the metrics.

    Raises DatasetError (after writing quarantine and metrics) when too many rows are bad
    or the splits are too small for the params, and when the splits cannot be made leak-free.
    Nothing is written to the splits unless every check passed.
    """
    if config.source == "ingest":
        assert config.ingest_path is not None
        read = read_rows(config.ingest_path, on_bad="quarantine", row_check=config.bounds.line_check())
        splits = None
    else:
        splits, read = revalidate(generate_splits(config), config.bounds)
    write_jsonl(out_dir / "quarantine.jsonl", (bad.to_json() for bad in read.bad))
    if read.bad_fraction > config.max_bad_fraction:
        write_report(metrics_path, dataset_metrics(config, read, None))
        raise DatasetError(
            f"{len(read.bad)} of {read.lines_read} rows are bad ({read.bad_fraction:.1%}), more than "
            f"dataset.max_bad_fraction = {config.max_bad_fraction:.1%}; see {out_dir / 'quarantine.jsonl'}")
    leak_excluded: list[DatasetRow] = []
    ids_path = out_dir / SPLIT_IDS_PATH.name
    previous_ids = read_previous_ids(ids_path)
    if splits is None:
        splits, leak_excluded = split_ingested(read.rows, config, previous_ids)
    try:
        check_sizes(splits, config, read)
    except DatasetError:
        write_report(metrics_path, dataset_metrics(config, read, splits))
        raise
    check_no_leakage(splits)
    for name in SPLITS:
        write_rows(out_dir / f"{name}.jsonl", splits[name])
    metrics = dataset_metrics(config, read, splits, leak_excluded, previous_ids)
    write_json(ids_path, split_ids(splits))
    write_report(metrics_path, metrics)
    return metrics


def validate_files(paths: list[Path], out: TextIO | None = None, err: TextIO | None = None,
                   bounds: RowBounds = RowBounds()) -> int:
    """Print every bad row as ``PATH:LINE: reason`` and a ``N rows, K bad`` summary (default: stdout/stderr).

    ``bounds``: the row size limits (the CLI takes them from params.yaml's ``dataset`` group when
    there is one, as the stage does). Returns 0 if all rows are good, 1 if any is bad, 2 if a file
    cannot be read.
    """
    out, err = out or sys.stdout, err or sys.stderr
    rows = bad = 0
    unreadable = False
    for path in paths:
        try:
            result = read_rows(path, on_bad="quarantine", row_check=bounds.line_check())
        except StageError as error:  # missing or unreadable file
            print(f"error: {error}", file=err)
            unreadable = True
            continue
        for line in result.bad:
            print(line, file=out)
        rows += result.lines_read
        bad += len(result.bad)
    print(f"{rows} rows, {bad} bad", file=out)
    return 2 if unreadable else 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.dataset", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command")
    validate = commands.add_parser("validate", help="check JSONL files against the data format")
    validate.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    args = parser.parse_args(argv)
    if args.command == "validate":
        def check() -> int:
            bounds = load_stage_params(DatasetParams).bounds if PARAMS_FILE.is_file() else RowBounds()
            return validate_files(args.paths, bounds=bounds)

        return stage_main("validate", check)

    def work() -> int:
        metrics = run_stage(load_stage_params(DatasetParams))
        sizes = ", ".join(f"{name} {counts['total']}" for name, counts in metrics["counts"].items())
        print(f"dataset: {sizes}; {metrics['bad_rows']} bad of {metrics['rows_read']} rows")
        return 0

    return stage_main("dataset", work)


if __name__ == "__main__":
    sys.exit(main())
