"""Dataset rows: typed dataclasses, strict parsing, and reading/writing row files.

One row is one JSON object on one line (the format is documented in
``docs/data-format.md``; lines and JSON are read and written by ``pipeline.jsonl``,
the one JSONL layer). Every stage that reads ``data/dataset/*.jsonl`` goes
through :func:`read_rows`, so a row is judged by the same rules everywhere:

- :meth:`DatasetRow.from_json` turns a decoded object into a row or raises
  :class:`RowError` with a one-line reason (never another exception);
- :func:`read_rows` reads a file line by line; under ``on_bad="quarantine"`` it
  returns the good rows plus a :class:`BadLine` (path, line number, reason, raw
  text) for every bad one, so nothing is dropped silently; under ``"fail"`` it
  raises ``FILE:LINE: reason`` at the first.

:func:`normalize_text` and :func:`fact_values` define what "the same text" and
"the same fact" mean for the held-out leakage check and for narration scoring.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Iterator

from pipeline.jsonl import BadLine, JsonlError, Line, OnBad, encode_line, iter_lines, read_bytes, split_lines, write_jsonl

__all__ = ["BadLine", "write_jsonl"]  # re-exported: one JSONL layer, reachable from the row module

CLASSES = ("tool_match", "tool_result_speak", "tool_miss", "non_tool")
"""The four row classes, in the order reports list them."""

_KNOWN_KEYS = ("id", "class", "tools", "user", "assistant", "tool_call", "facts", "turn1", "requested_tool")


class RowError(ValueError):
    """A row breaks the data format; ``reason`` says how in one line."""

    def __init__(self, reason: str, where: str = ""):
        super().__init__(f"{where}: {reason}" if where else reason)
        self.reason = reason
        self.where = where


# --------------------------------------------------------------------------- field readers
# Each takes the enclosing object and a dotted ``name`` used in error messages.

def _require(obj: dict, key: str, name: str) -> Any:
    if obj.get(key) is None:
        raise RowError(f"missing field '{name}'")
    return obj[key]


def _text(obj: dict, key: str, name: str) -> str:
    value = _require(obj, key, name)
    if not isinstance(value, str):
        raise RowError(f"field '{name}' must be a string, got {type(value).__name__}")
    if not value.strip():
        raise RowError(f"empty field '{name}'")
    if "\0" in value:
        raise RowError(f"field '{name}' contains U+0000 (speech synthesis stops reading at it)")
    return value


_UNSAFE_ID = re.compile(r"[/\\\x00-\x1f\x7f]")
MAX_ID_CHARS = 200


def _row_id(obj: dict) -> str:
    """Ids name files (``reports/demo/<id>.wav``): no path separators, no control characters."""
    value = _text(obj, "id", "id")
    if _UNSAFE_ID.search(value) or value in (".", "..") or len(value) > MAX_ID_CHARS:
        raise RowError(f"field 'id' must be usable as a file name: at most {MAX_ID_CHARS} characters, "
                       "no '/', '\\' or control characters")
    return value


def _forbid(obj: dict, key: str, row_class: str) -> None:
    if obj.get(key) is not None:
        raise RowError(f"field '{key}' is not allowed on a {row_class} row")


# --------------------------------------------------------------------------- dataclasses

@dataclass(frozen=True)
class Tool:
    """One tool listed to the model in the system prompt."""

    name: str
    description: str

    @classmethod
    def from_json(cls, obj: Any, name: str = "tool") -> Tool:
        if not isinstance(obj, dict):
            raise RowError(f"'{name}' must be an object with name and description")
        return cls(_text(obj, "name", f"{name}.name"), _text(obj, "description", f"{name}.description"))

    def to_json(self) -> dict:
        return {"name": self.name, "description": self.description}


@dataclass(frozen=True)
class ToolCall:
    """The call a tool_match reply stands for: tool name plus JSON arguments."""

    name: str
    arguments: dict[str, Any]

    @classmethod
    def from_json(cls, obj: Any, name: str = "tool_call") -> ToolCall:
        if not isinstance(obj, dict):
            raise RowError(f"'{name}' must be an object with name and arguments")
        arguments = _require(obj, "arguments", f"{name}.arguments")
        if not isinstance(arguments, dict):
            raise RowError(f"field '{name}.arguments' must be an object, got {type(arguments).__name__}")
        return cls(_text(obj, "name", f"{name}.name"), arguments)

    def to_json(self) -> dict:
        return {"name": self.name, "arguments": self.arguments}


@dataclass(frozen=True)
class Turn1:
    """The tool_match exchange that precedes a tool_result_speak narration."""

    user: str
    assistant: str
    tool_call: ToolCall

    @classmethod
    def from_json(cls, obj: Any) -> Turn1:
        if not isinstance(obj, dict):
            raise RowError("'turn1' must be an object with user, assistant and tool_call")
        return cls(
            _text(obj, "user", "turn1.user"),
            _text(obj, "assistant", "turn1.assistant"),
            ToolCall.from_json(_require(obj, "tool_call", "turn1.tool_call"), "turn1.tool_call"),
        )

    def to_json(self) -> dict:
        return {"user": self.user, "assistant": self.assistant, "tool_call": self.tool_call.to_json()}


@dataclass(frozen=True)
class DatasetRow:
    """One training/eval example. Which optional fields are set depends on ``row_class``:

    - tool_match: ``tool_call`` (its tool is listed in ``tools``)
    - tool_result_speak: ``facts`` and ``turn1`` (``user`` repeats ``turn1.user``)
    - tool_miss: ``requested_tool`` (not listed in ``tools``)
    - non_tool: none

    Unknown JSON keys are kept in ``extra`` and written back unchanged.
    """

    id: str
    row_class: str
    tools: tuple[Tool, ...]
    user: str
    assistant: str
    tool_call: ToolCall | None = None
    facts: str | dict | None = None
    turn1: Turn1 | None = None
    requested_tool: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tool_names(self) -> tuple[str, ...]:
        return tuple(tool.name for tool in self.tools)

    @classmethod
    def from_json(cls, obj: Any, where: str = "") -> DatasetRow:
        """Build a row from a decoded JSON value; raise RowError (with ``where``) if it is invalid."""
        try:
            return cls._parse(obj)
        except RowError as err:
            raise RowError(err.reason, where) from None

    @classmethod
    def _parse(cls, obj: Any) -> DatasetRow:
        if not isinstance(obj, dict):
            raise RowError(f"not a JSON object (got {type(obj).__name__})")
        row_id = _row_id(obj)
        row_class = _text(obj, "class", "class")
        if row_class not in CLASSES:
            raise RowError(f"unknown class '{row_class}' (expected one of {', '.join(CLASSES)})")
        tools = cls._parse_tools(_require(obj, "tools", "tools"))
        row = cls(
            id=row_id,
            row_class=row_class,
            tools=tools,
            user=_text(obj, "user", "user"),
            assistant=_text(obj, "assistant", "assistant"),
            extra={key: value for key, value in obj.items() if key not in _KNOWN_KEYS},
        )
        names = row.tool_names
        if row_class == "tool_match":
            call = ToolCall.from_json(_require(obj, "tool_call", "tool_call"))
            if call.name not in names:
                raise RowError(f"tool_match calls '{call.name}', which is not among the listed tools ({', '.join(names)})")
            for key in ("facts", "turn1", "requested_tool"):
                _forbid(obj, key, row_class)
            return replace(row, tool_call=call)
        if row_class == "tool_result_speak":
            facts = _require(obj, "facts", "facts")
            if not isinstance(facts, (str, dict)):
                raise RowError(f"field 'facts' must be a string or an object, got {type(facts).__name__}")
            if not (facts.strip() if isinstance(facts, str) else facts):
                raise RowError("empty field 'facts'")
            turn1 = Turn1.from_json(_require(obj, "turn1", "turn1"))
            if turn1.tool_call.name not in names:
                raise RowError(f"turn1 calls '{turn1.tool_call.name}', which is not among the listed tools ({', '.join(names)})")
            if turn1.user != row.user:
                raise RowError("'user' must repeat 'turn1.user' (the request the narration answers)")
            for key in ("tool_call", "requested_tool"):
                _forbid(obj, key, row_class)
            return replace(row, facts=facts, turn1=turn1)
        if row_class == "tool_miss":
            requested = _text(obj, "requested_tool", "requested_tool")
            if requested in names:
                raise RowError(f"tool_miss requests '{requested}', which IS listed (that would be a tool_match)")
            for key in ("tool_call", "facts", "turn1"):
                _forbid(obj, key, row_class)
            return replace(row, requested_tool=requested)
        for key in ("tool_call", "facts", "turn1", "requested_tool"):  # non_tool
            _forbid(obj, key, row_class)
        return row

    @staticmethod
    def _parse_tools(value: Any) -> tuple[Tool, ...]:
        if not isinstance(value, list):
            raise RowError(f"field 'tools' must be a list, got {type(value).__name__}")
        if not value:
            raise RowError("empty field 'tools'")
        tools = tuple(Tool.from_json(item, f"tools[{i}]") for i, item in enumerate(value))
        seen: set[str] = set()
        for tool in tools:
            if tool.name in seen:
                raise RowError(f"tool '{tool.name}' is listed twice")
            seen.add(tool.name)
        return tools

    def to_json(self) -> dict:
        """The row as a JSON object: required keys first, then the optional ones that are set, then extras."""
        obj: dict[str, Any] = {
            "id": self.id,
            "class": self.row_class,
            "tools": [tool.to_json() for tool in self.tools],
            "user": self.user,
            "assistant": self.assistant,
        }
        if self.tool_call is not None:
            obj["tool_call"] = self.tool_call.to_json()
        if self.turn1 is not None:
            obj["turn1"] = self.turn1.to_json()
        if self.facts is not None:
            obj["facts"] = self.facts
        if self.requested_tool is not None:
            obj["requested_tool"] = self.requested_tool
        obj.update(self.extra)
        return obj

    def to_line(self) -> str:
        """One JSONL line (no newline); the same row always gives the same bytes."""
        return encode_line(self.to_json())


# --------------------------------------------------------------------------- reading and writing files

@dataclass
class ReadResult:
    """What one row file held: good rows, bad lines, and how many non-blank lines were read."""

    rows: list[DatasetRow]
    bad: list[BadLine]
    lines_read: int

    @property
    def bad_fraction(self) -> float:
        return len(self.bad) / self.lines_read if self.lines_read else 0.0


def parse_lines(lines: Iterable[bytes | str], path: str, on_bad: OnBad = "quarantine",
                row_check: Callable[[Line], str | None] | None = None) -> ReadResult:
    """Parse JSONL lines into rows (line numbers start at 1; blank lines are skipped, not counted).

    Every non-blank line ends up either as a row or as a BadLine (``on_bad="fail"``: the
    first bad line raises JsonlError ``FILE:LINE: reason``); an id already seen earlier in
    the same file makes the later line bad. ``row_check`` (``pipeline.row_bounds``) runs on
    each decoded line before the row is parsed; a reason it returns makes the line bad.
    """
    rows: list[DatasetRow] = []
    bad: list[BadLine] = []
    first_line_of: dict[str, int] = {}
    lines_read = 0
    for item in iter_lines(lines, path):
        lines_read += 1
        if not isinstance(item, BadLine):
            try:
                if row_check is not None and (reason := row_check(item)) is not None:
                    raise RowError(reason)
                row = DatasetRow.from_json(item.value)
                if row.id in first_line_of:
                    raise RowError(f"duplicate id '{row.id}' (first on line {first_line_of[row.id]})")
                first_line_of[row.id] = item.number
                rows.append(row)
                continue
            except RowError as err:
                item = BadLine(path, item.number, err.reason, item.raw)
        if on_bad == "fail":
            raise JsonlError(str(item))
        bad.append(item)
    return ReadResult(rows, bad, lines_read)


def read_rows(path: str | os.PathLike, on_bad: OnBad = "quarantine",
              row_check: Callable[[Line], str | None] | None = None) -> ReadResult:
    """Read a JSONL file of rows. A missing file raises MissingFile naming it; ``on_bad`` decides bad rows."""
    return parse_lines(split_lines(read_bytes(path)), str(path), on_bad, row_check)


def write_rows(path: str | os.PathLike, rows: Iterable[DatasetRow]) -> None:
    """Write rows as JSONL, atomically (an interrupted write leaves the old file or none)."""
    write_jsonl(path, (row.to_json() for row in rows))


# --------------------------------------------------------------------------- text identity

_PUNCTUATION = re.compile(r"[^\w\s]")
_FACT_FIELD_SEPARATORS = re.compile(r"[,;\n]|:\s")


def normalize_text(text: str) -> str:
    """Lowercase, strip punctuation, collapse whitespace: "What's up?" -> "whats up"."""
    return " ".join(_PUNCTUATION.sub("", text.lower()).split())


def row_texts(row: DatasetRow) -> list[str]:
    """The user and assistant texts of a row (turn 1's too), as written."""
    texts = [row.user, row.assistant]
    if row.turn1 is not None:
        texts += [row.turn1.user, row.turn1.assistant]
    return texts


def fact_values(facts: str | dict | list | Any) -> set[str]:
    """The normalised values inside a facts block.

    An object contributes its leaf values (keys are labels, not facts). A string
    is split into fields at ``,`` ``;`` newlines and ``": "`` so that
    ``"Paris: 14°C, light rain, wind 12 km/h"`` gives
    ``{"paris", "14c", "light rain", "wind 12 kmh"}`` (``7:30`` stays whole).
    """
    if facts is None:
        return set()
    if isinstance(facts, dict):
        return set().union(*(fact_values(value) for value in facts.values())) if facts else set()
    if isinstance(facts, list):
        return set().union(*(fact_values(value) for value in facts)) if facts else set()
    fields = _FACT_FIELD_SEPARATORS.split(facts) if isinstance(facts, str) else [str(facts)]
    return {value for value in map(normalize_text, fields) if value}


def iter_leak_keys(row: DatasetRow) -> Iterator[tuple[str, str]]:
    """What a held-out row must not share with training: ("text", normalised text) and ("fact", value)."""
    for text in row_texts(row):
        yield "text", normalize_text(text)
    for value in fact_values(row.facts):
        yield "fact", value
