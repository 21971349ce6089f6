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
from typing import Annotated, Any, Callable, Iterable, Iterator, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

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


# --------------------------------------------------------------------------- the JSON contract (pydantic)
# The models below say what a row line may hold (they also give schemas/dataset-row.schema.json);
# _reason turns pydantic's first error into the one-line reason every bad row is told.

MAX_ID_CHARS = 200
_ID_MESSAGE = (f"must be usable as a file name: at most {MAX_ID_CHARS} characters, "
               "no '/', '\\' or control characters")


def _rule(reason: str) -> PydanticCustomError:
    return PydanticCustomError("row_rule", "{reason}", {"reason": reason})


def _nonblank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("empty", "empty")
    if "\0" in value:
        raise PydanticCustomError("nul", "contains U+0000")
    return value


def _file_name(value: str) -> str:
    if value in (".", ".."):
        raise PydanticCustomError("file_name", "not a file name")
    return value


Text = Annotated[str, AfterValidator(_nonblank), Field(min_length=1)]
"""A non-blank string without U+0000 (speech synthesis stops reading at it)."""
RowId = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS, pattern=r"^[^/\\\x00-\x1f\x7f]*$"),
                  AfterValidator(_nonblank), AfterValidator(_file_name)]
"""Ids name files (``reports/demo/<id>.wav``): no path separators, no control characters."""


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class ToolModel(_Part):
    """One tool listed to the model in the system prompt."""

    name: Text
    description: Text


class ToolCallModel(_Part):
    """The call a tool_match reply stands for: tool name plus JSON arguments."""

    name: Text
    arguments: dict[str, Any]


class Turn1Model(_Part):
    """The tool_match exchange that precedes a tool_result_speak narration."""

    user: Text
    assistant: Text
    tool_call: ToolCallModel


class RowModel(BaseModel):
    """One line of ``data/dataset/*.jsonl``; unknown keys are allowed and kept (written back unchanged)."""

    model_config = ConfigDict(frozen=True, extra="allow", title="dataset row")

    id: RowId
    row_class: Literal[CLASSES] = Field(alias="class")  # type: ignore[valid-type]
    tools: list[ToolModel] = Field(min_length=1)
    user: Text
    assistant: Text
    tool_call: ToolCallModel | None = None
    turn1: Turn1Model | None = None
    facts: str | dict[str, Any] | None = Field(None, description="tool_result_speak: the tool's result, text or object")
    requested_tool: Text | None = None

    @field_validator("facts", mode="before")
    @classmethod
    def _facts(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, (str, dict)):
            raise PydanticCustomError("facts_type", "facts type")
        if isinstance(value, (str, dict)) and not (value.strip() if isinstance(value, str) else value):
            raise PydanticCustomError("empty", "empty")
        return value

    @model_validator(mode="after")
    def _class_rules(self) -> RowModel:
        names = [tool.name for tool in self.tools]
        listed = ", ".join(names)
        for name in names:
            if names.count(name) > 1:
                raise _rule(f"tool '{name}' is listed twice")
        required = {"tool_match": ("tool_call",), "tool_result_speak": ("facts", "turn1"),
                    "tool_miss": ("requested_tool",), "non_tool": ()}[self.row_class]
        for key in ("tool_call", "facts", "turn1", "requested_tool"):
            if key in required and getattr(self, key) is None:
                raise _rule(f"missing field '{key}'")
            if key not in required and getattr(self, key) is not None:
                raise _rule(f"field '{key}' is not allowed on a {self.row_class} row")
        if self.tool_call is not None and self.tool_call.name not in names:
            raise _rule(f"tool_match calls '{self.tool_call.name}', which is not among the listed tools ({listed})")
        if self.turn1 is not None:
            if self.turn1.tool_call.name not in names:
                raise _rule(f"turn1 calls '{self.turn1.tool_call.name}', which is not among the listed tools ({listed})")
            if self.turn1.user != self.user:
                raise _rule("'user' must repeat 'turn1.user' (the request the narration answers)")
        if self.requested_tool is not None and self.requested_tool in names:
            raise _rule(f"tool_miss requests '{self.requested_tool}', which IS listed (that would be a tool_match)")
        return self


_OBJECTS = {"tool_call": "name and arguments", "turn1": "user, assistant and tool_call", "tools": "name and description"}


def _reason(err: ValidationError) -> str:
    """The first problem pydantic found, as the one-line reason of a bad row."""
    error = err.errors(include_url=False)[0]
    kind, value = error["type"], error.get("input")
    name = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]).lstrip(".")
    name = name.replace("row_class", "class")
    if kind == "row_rule":
        return error["ctx"]["reason"]
    if kind == "missing" or value is None:
        return f"missing field '{name}'"
    if kind in ("empty", "too_short"):
        return f"empty field '{name}'"
    if kind == "nul":
        return f"field '{name}' contains U+0000 (speech synthesis stops reading at it)"
    if name == "id" and kind in ("file_name", "string_too_long", "string_pattern_mismatch"):
        return f"field 'id' {_ID_MESSAGE}"
    if name == "class" and kind == "literal_error":
        return f"unknown class '{value}' (expected one of {', '.join(CLASSES)})"
    if kind == "facts_type":
        return f"field 'facts' must be a string or an object, got {type(value).__name__}"
    if kind == "model_type":
        what = _OBJECTS.get(str(error["loc"][0]) if isinstance(error["loc"][-1], int) else str(error["loc"][-1]), "")
        return f"'{name}' must be an object with {what}" if what else f"'{name}' must be an object"
    expected = {"string_type": "a string", "list_type": "a list", "dict_type": "an object"}.get(kind)
    if expected:
        return f"field '{name}' must be {expected}, got {type(value).__name__}"
    return f"field '{name}': {error['msg']}"


# --------------------------------------------------------------------------- dataclasses

@dataclass(frozen=True)
class Tool:
    """One tool listed to the model in the system prompt."""

    name: str
    description: str

    def to_json(self) -> dict:
        return {"name": self.name, "description": self.description}


@dataclass(frozen=True)
class ToolCall:
    """The call a tool_match reply stands for: tool name plus JSON arguments."""

    name: str
    arguments: dict[str, Any]

    def to_json(self) -> dict:
        return {"name": self.name, "arguments": self.arguments}


@dataclass(frozen=True)
class Turn1:
    """The tool_match exchange that precedes a tool_result_speak narration."""

    user: str
    assistant: str
    tool_call: ToolCall

    def to_json(self) -> dict:
        return {"user": self.user, "assistant": self.assistant, "tool_call": self.tool_call.to_json()}


def _call(model: ToolCallModel | None) -> ToolCall | None:
    return None if model is None else ToolCall(model.name, model.arguments)


@dataclass(frozen=True)
class DatasetRow:
    """One training/eval example. Which optional fields are set depends on ``row_class``:

    - tool_match: ``tool_call`` (its tool is listed in ``tools``)
    - tool_result_speak: ``facts`` and ``turn1`` (``user`` repeats ``turn1.user``)
    - tool_miss: ``requested_tool`` (not listed in ``tools``)
    - non_tool: none

    Unknown JSON keys are kept in ``extra`` and written back unchanged. A line is checked
    by :class:`RowModel` (the JSON contract); this dataclass is the row every stage uses.
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
        if not isinstance(obj, dict):
            raise RowError(f"not a JSON object (got {type(obj).__name__})", where)
        try:
            model = RowModel.model_validate(obj)
        except ValidationError as err:
            raise RowError(_reason(err), where) from None
        turn1 = model.turn1
        return cls(
            id=model.id, row_class=model.row_class, tools=tuple(Tool(t.name, t.description) for t in model.tools),
            user=model.user, assistant=model.assistant, tool_call=_call(model.tool_call), facts=model.facts,
            turn1=None if turn1 is None else Turn1(turn1.user, turn1.assistant, _call(turn1.tool_call)),
            requested_tool=model.requested_tool,
            extra={key: value for key, value in obj.items() if key not in _KNOWN_KEYS},
        )

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


def select_rows(rows: list[DatasetRow], max_rows: int | None) -> list[DatasetRow]:
    """The rows an evaluation decodes (``eval_classes`` and its screen, ``eval_screen``, alike): all rows, or
    the first ``max_rows`` taken round-robin over the classes (keeps every class in)."""
    if max_rows is None or max_rows >= len(rows):
        return rows
    by_class = {c: [r for r in rows if r.row_class == c] for c in CLASSES}
    picked: list[DatasetRow] = []
    i = 0
    while len(picked) < max_rows:
        for c in CLASSES:
            if i < len(by_class[c]) and len(picked) < max_rows:
                picked.append(by_class[c][i])
        i += 1
    order = {r.id: n for n, r in enumerate(rows)}
    return sorted(picked, key=lambda r: order[r.id])
