"""Stable splits: a row's split is a function of its id (and the seed), never of the file around it."""
from __future__ import annotations

import random

from pipeline.records import DatasetRow
from pipeline.splits import changes_since, content_hash, hash_split, split_of, unit


def row(row_id: str, user: str) -> DatasetRow:
    return DatasetRow(id=row_id, row_class="non_tool", tools=(), user=user, assistant=f"reply to {user}")


def test_a_rows_point_depends_on_its_id_and_the_seed_only():
    assert unit(41, "row-1") == unit(41, "row-1") != unit(42, "row-1")
    points = [unit(41, f"row-{i}") for i in range(2000)]
    assert all(0 <= p < 1 for p in points) and 0.03 < sum(p < 0.05 for p in points) / 2000 < 0.07


def test_hash_split_ignores_order_and_the_other_rows():
    rows = [row(f"r{i}", f"question {i}") for i in range(200)]
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    assert hash_split(rows, 7, 0.1, 0.2) == hash_split(shuffled, 7, 0.1, 0.2)
    alone = {r.id: split_of(7, r.id, 0.1, 0.2) for r in rows}
    together = hash_split(rows + [row(f"n{i}", f"new {i}") for i in range(100)], 7, 0.1, 0.2).splits
    assert {r.id: name for name, members in together.items() for r in members if r.id in alone} == alone


def test_a_leak_leaves_a_training_row_out_unless_the_last_run_trained_on_it():
    rows = [row(f"r{i}", "the same question") for i in range(100)]  # every row touches every other
    fresh = hash_split(rows, 7, 0.1, 0.2)
    assert fresh.splits["heldout"] and not fresh.splits["train"] and not fresh.splits["eval"]
    trained = frozenset(r.id for r in rows if split_of(7, r.id, 0.1, 0.2) != "heldout")
    kept = hash_split(rows, 7, 0.1, 0.2, trained_before=trained)
    assert not kept.splits["heldout"] and {r.id for r in kept.splits["train"] + kept.splits["eval"]} == trained
    assert len(kept.leak_excluded) == len(fresh.splits["heldout"])


def test_content_hash_is_order_free_and_content_sensitive():
    rows = [row("a", "one"), row("b", "two")]
    assert content_hash(rows) == content_hash(rows[::-1]) != content_hash([row("a", "one"), row("b", "Two")])


def test_changes_since_counts_new_rows_and_moved_rows():
    assert changes_since(None, {"train": ["a"]}) == {"new_rows": {"train": None}, "moved_rows": None, "moved_examples": []}
    change = changes_since({"train": ["a", "b"], "heldout": ["c"]}, {"train": ["a", "c", "d"], "heldout": []})
    assert change == {"new_rows": {"train": 1, "heldout": 0}, "moved_rows": 1, "moved_examples": ["c"]}
