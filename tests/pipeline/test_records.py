"""Dataset rows: what a valid row is, what each invalid row is told, and that files lose nothing."""
from __future__ import annotations

import copy
import json

import pytest

from pipeline.jsonl import JsonlError
from pipeline.records import (DatasetRow, RowError, fact_values, iter_leak_keys, normalize_text, parse_lines,
                              read_rows, write_rows)

WEATHER = {"name": "weather", "description": "get current weather and forecasts for a location"}
ALARM = {"name": "alarm", "description": "set or cancel alarms"}
TRAFFIC = {"name": "traffic", "description": "check live traffic conditions on roads"}

VALID = {
    "tool_match": {
        "id": "m1", "class": "tool_match", "tools": [WEATHER, ALARM],
        "user": "what's the weather in Paris", "assistant": "Sure, checking the weather in Paris.",
        "tool_call": {"name": "weather", "arguments": {"city": "Paris"}},
    },
    "tool_result_speak": {
        "id": "r1", "class": "tool_result_speak", "tools": [WEATHER, ALARM],
        "user": "what's the weather in Paris",
        "assistant": "Right now in Paris it's 14 degrees with light rain.",
        "turn1": {"user": "what's the weather in Paris", "assistant": "Sure, checking the weather in Paris.",
                  "tool_call": {"name": "weather", "arguments": {"city": "Paris"}}},
        "facts": "Paris: 14°C, light rain, wind 12 km/h",
    },
    "tool_miss": {
        "id": "x1", "class": "tool_miss", "tools": [WEATHER, ALARM],
        "user": "how's traffic on Highway 9", "assistant": "Sorry, I can't check traffic right now.",
        "requested_tool": "traffic",
    },
    "non_tool": {
        "id": "n1", "class": "non_tool", "tools": [WEATHER],
        "user": "Good morning!", "assistant": "Good morning! How can I help?",
    },
}


def mutated(row_class: str, **changes) -> dict:
    """A valid row of ``row_class`` with top-level keys changed (value ``...`` deletes the key)."""
    obj = copy.deepcopy(VALID[row_class])
    for key, value in changes.items():
        if value is ...:
            del obj[key]
        else:
            obj[key] = value
    return obj


@pytest.mark.parametrize("row_class", list(VALID))
def test_valid_rows_round_trip_unchanged(row_class):
    row = DatasetRow.from_json(VALID[row_class])
    assert row.row_class == row_class
    assert row.to_json() == VALID[row_class]
    assert json.loads(row.to_line()) == VALID[row_class]


def test_unknown_keys_are_kept_not_dropped():
    obj = mutated("non_tool", source="distilled-v4", score=0.9)
    assert DatasetRow.from_json(obj).to_json() == obj


def test_optional_fields_may_be_null():
    row = DatasetRow.from_json(mutated("non_tool", tool_call=None, facts=None))
    assert row.tool_call is None and row.facts is None


def test_facts_may_be_an_object():
    row = DatasetRow.from_json(mutated("tool_result_speak", facts={"city": "Paris", "temp_c": 14}))
    assert row.facts == {"city": "Paris", "temp_c": 14}


INVALID = [
    ([1, 2], "not a JSON object (got list)"),
    (mutated("non_tool", id=...), "missing field 'id'"),
    (mutated("non_tool", user=...), "missing field 'user'"),
    (mutated("non_tool", assistant="   "), "empty field 'assistant'"),
    (mutated("non_tool", user=42), "field 'user' must be a string, got int"),
    (mutated("non_tool", **{"class": "chitchat"}), "unknown class 'chitchat'"),
    (mutated("non_tool", tools=[]), "empty field 'tools'"),
    (mutated("non_tool", tools="weather"), "field 'tools' must be a list, got str"),
    (mutated("non_tool", tools=[{"name": "weather"}]), "missing field 'tools[0].description'"),
    (mutated("non_tool", tools=[WEATHER, WEATHER]), "tool 'weather' is listed twice"),
    (mutated("non_tool", requested_tool="traffic"), "field 'requested_tool' is not allowed on a non_tool row"),
    (mutated("tool_match", tool_call=...), "missing field 'tool_call'"),
    (mutated("tool_match", tool_call={"name": "traffic", "arguments": {}}),
     "tool_match calls 'traffic', which is not among the listed tools (weather, alarm)"),
    (mutated("tool_match", tool_call={"name": "weather", "arguments": "Paris"}),
     "field 'tool_call.arguments' must be an object, got str"),
    (mutated("tool_miss", requested_tool=...), "missing field 'requested_tool'"),
    (mutated("tool_miss", requested_tool="weather"), "tool_miss requests 'weather', which IS listed"),
    (mutated("tool_miss", tools=[WEATHER, TRAFFIC]), "tool_miss requests 'traffic', which IS listed"),
    (mutated("tool_result_speak", facts=...), "missing field 'facts'"),
    (mutated("tool_result_speak", facts=""), "empty field 'facts'"),
    (mutated("tool_result_speak", facts=["Paris"]), "field 'facts' must be a string or an object, got list"),
    (mutated("tool_result_speak", turn1=...), "missing field 'turn1'"),
    (mutated("tool_result_speak", user="something else"), "'user' must repeat 'turn1.user'"),
    (mutated("tool_result_speak", turn1={"user": "what's the weather in Paris", "assistant": "Sure."}),
     "missing field 'turn1.tool_call'"),
    (mutated("non_tool", user="hi\0there"), "field 'user' contains U+0000 (speech synthesis stops reading at it)"),
    (mutated("tool_result_speak", turn1={**VALID["tool_result_speak"]["turn1"], "assistant": "\0Sure."}),
     "field 'turn1.assistant' contains U+0000"),
    (mutated("non_tool", id="../../reports/x"), "field 'id' must be usable as a file name"),
    (mutated("non_tool", id="a\\b"), "field 'id' must be usable as a file name"),
    (mutated("non_tool", id="a\nb"), "field 'id' must be usable as a file name"),
    (mutated("non_tool", id=".."), "field 'id' must be usable as a file name"),
    (mutated("non_tool", id="x" * 201), "field 'id' must be usable as a file name"),
]


@pytest.mark.parametrize(("obj", "reason"), INVALID, ids=[reason for _, reason in INVALID])
def test_invalid_rows_raise_row_error_with_reason(obj, reason):
    with pytest.raises(RowError) as caught:
        DatasetRow.from_json(obj, where="train.jsonl:7")
    assert caught.value.reason.startswith(reason)
    assert str(caught.value).startswith("train.jsonl:7: ")


def test_parse_lines_keeps_every_bad_line_with_its_number_and_raw_text():
    good = json.dumps(VALID["non_tool"])
    lines = [good, "", "{oops", good, b"\xff\xfe", "   ", json.dumps(VALID["tool_miss"])]
    result = parse_lines(lines, "in.jsonl")
    assert [row.id for row in result.rows] == ["n1", "x1"]
    assert [(bad.line, bad.reason.split(" (")[0]) for bad in result.bad] == [
        (3, "invalid JSON"), (4, "duplicate id 'n1'"), (5, "not valid UTF-8")]
    assert result.bad[0].raw == "{oops"
    assert str(result.bad[1]) == "in.jsonl:4: duplicate id 'n1' (first on line 1)"
    assert result.lines_read == 5  # blank lines are not rows
    assert result.bad_fraction == pytest.approx(3 / 5)


def test_parse_lines_on_bad_fail_raises_at_the_first_bad_row_naming_file_and_line():
    good = json.dumps(VALID["non_tool"])
    with pytest.raises(JsonlError, match=r"^train.jsonl:3: duplicate id 'n1' \(first on line 1\)$"):
        parse_lines([good, "", good, "{oops"], "train.jsonl", on_bad="fail")


def test_ids_that_are_ordinary_file_names_are_valid():
    for row_id in ("train-00017", "v4.distilled:17", "row 17", "ligne-é", "x" * 200):
        assert DatasetRow.from_json(mutated("non_tool", id=row_id)).id == row_id


def test_read_rows_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl: file not found"):
        read_rows(tmp_path / "nope.jsonl")


def test_write_then_read_rows_is_lossless(tmp_path):
    rows = [DatasetRow.from_json(obj) for obj in VALID.values()]
    write_rows(tmp_path / "rows.jsonl", rows)
    assert read_rows(tmp_path / "rows.jsonl").rows == rows


def test_normalize_text_lowercases_strips_punctuation_collapses_spaces():
    assert normalize_text("  What's the   WEATHER in Paris?! ") == "whats the weather in paris"


def test_fact_values_of_a_string_are_its_fields():
    assert fact_values("Paris: 14°C, light rain, wind 12 km/h") == {"paris", "14c", "light rain", "wind 12 kmh"}
    assert fact_values("alarm set for 7:30 AM tomorrow") == {"alarm set for 730 am tomorrow"}


def test_fact_values_of_an_object_are_its_leaf_values():
    assert fact_values({"city": "Paris", "temp": 14, "extra": {"sky": ["Light rain"]}}) == {"paris", "14", "light rain"}


def test_leak_keys_cover_both_turns_and_the_facts():
    keys = set(iter_leak_keys(DatasetRow.from_json(VALID["tool_result_speak"])))
    assert ("text", "sure checking the weather in paris") in keys
    assert ("text", "right now in paris its 14 degrees with light rain") in keys
    assert ("fact", "light rain") in keys
