"""Row size bounds: a row past one is a bad row named FILE:LINE with the field, its size and the params key."""
from __future__ import annotations

import json

import pytest

from pipeline.records import parse_lines
from pipeline.row_bounds import RowBounds

SMALL = RowBounds(max_text_chars=50, max_facts=3, max_fact_chars=60, max_tools=2, max_row_bytes=2000)


def speak(**changes) -> dict:
    row = {"id": "r", "class": "tool_result_speak", "tools": [{"name": "weather", "description": "forecasts"}],
           "user": "how warm is it", "assistant": "It is warm.",
           "turn1": {"user": "how warm is it", "assistant": "Checking.",
                     "tool_call": {"name": "weather", "arguments": {"city": "Quito"}}},
           "facts": {"city": "Quito", "temp_c": 21}}
    row.update(changes)
    return row


def check(row: dict, bounds: RowBounds = SMALL) -> str | None:
    """The reason the row is bad (None: it is a good row)."""
    result = parse_lines([json.dumps(row)], "rows.jsonl", row_check=bounds.line_check())
    assert len(result.rows) + len(result.bad) == 1
    return str(result.bad[0]) if result.bad else None


@pytest.mark.parametrize("row, reason", [
    (speak(assistant="x" * 51), "rows.jsonl:1: field 'assistant' has 51 characters, more than dataset.max_text_chars = 50"),
    (speak(turn1={"user": "u" * 60, "assistant": "a", "tool_call": {"name": "weather", "arguments": {}}}),
     "rows.jsonl:1: field 'turn1.user' has 60 characters, more than dataset.max_text_chars = 50"),
    (speak(tools=[{"name": f"t{i}", "description": "d"} for i in range(3)]),
     "rows.jsonl:1: field 'tools' lists 3 tools, more than dataset.max_tools = 2"),
    (speak(facts={f"k{i}": i for i in range(4)}), "rows.jsonl:1: field 'facts' has 4 facts, more than dataset.max_facts = 3"),
    (speak(facts="a, b; c, d"), "rows.jsonl:1: field 'facts' has 4 facts, more than dataset.max_facts = 3"),
    (speak(facts={"a": "x" * 40, "b": "y" * 19}), "rows.jsonl:1: field 'facts' has 61 characters, "
                                                  "more than dataset.max_fact_chars = 60"),
    (speak(notes=["z" * 49] * 40), "rows.jsonl:1: row has 2"),  # many fields, each within its bound
])
def test_a_row_past_a_bound_is_bad_naming_field_size_and_key(row, reason):
    assert check(row).startswith(reason)


def test_a_row_at_every_bound_is_good():
    at_limits = speak(assistant="x" * 50, facts={"a": "x" * 40, "b": "y" * 18}, tools=[
        {"name": "weather", "description": "forecasts"}, {"name": "maps", "description": "directions"}])
    assert check(at_limits) is None
    assert check(speak(facts="a, b; c")) is None


def test_the_defaults_fit_every_generated_row_and_refuse_the_issues_giant_rows():
    """The defaults sit far above real rows (generated ones pass) and below what broke tts, preprocess and eval."""
    from tasks.dataset import DatasetParams, generate_splits
    from tests.tasks.test_dataset import config

    assert DatasetParams.__dataclass_fields__["max_text_chars"].default == RowBounds().max_text_chars
    splits = generate_splits(config())
    lines = [row.to_line() for rows in splits.values() for row in rows]
    assert not parse_lines(lines, "generated", row_check=RowBounds().line_check()).bad
    assert "dataset.max_row_bytes = 32768" in check(speak(assistant="word " * 40_000), RowBounds())  # the 200 kB reply
    assert "dataset.max_text_chars = 4000" in check(speak(assistant="word " * 40_000), RowBounds(max_row_bytes=10**7))
    facts = {f"fact_{i}": i for i in range(10_000)}
    assert "max_facts" in check(speak(facts=facts), RowBounds(max_row_bytes=10**7))  # the row that hung eval_classes
