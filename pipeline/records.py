"""Dataset rows: typed dataclasses, strict parsing, and JSONL reading/writing.

One row is one JSON object on one line (the format is documented in
``docs/data-format.md``). Every stage that reads ``data/dataset/*.jsonl`` goes
through :func:`read_rows`, so a row is judged by the same rules everywhere:

- :meth:`DatasetRow.from_json` turns a decoded object into a row or raises
  :class:`RowError` with a one-line reason (never another exception);
- :func:`read_rows` reads a file line by line and returns the good rows plus a
  :class:`BadLine` (path, line number, reason, raw text) for every bad one, so
  nothing is dropped silently.

:func:`normalize_text` and :func:`fact_values` define what "the same text" and
"the same fact" mean for the held-out leakage check and for narration scoring.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Iterator

from pipeline.io import write_text

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
        row_id = _text(obj, "id", "id")
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
        return json.dumps(self.to_json(), ensure_ascii=False)


# --------------------------------------------------------------------------- reading and writing files

@dataclass(frozen=True)
class BadLine:
    """A line that is not a valid row; kept (never dropped) for the quarantine file."""

    path: str
    line: int
    reason: str
    raw: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"

    def to_json(self) -> dict:
        return {"path": self.path, "line": self.line, "reason": self.reason, "raw": self.raw}


@dataclass
class ReadResult:
    """What one JSONL file held: good rows, bad lines, and how many non-blank lines were read."""

    rows: list[DatasetRow]
    bad: list[BadLine]
    lines_read: int

    @property
    def bad_fraction(self) -> float:
        return len(self.bad) / self.lines_read if self.lines_read else 0.0


def parse_lines(lines: Iterable[bytes | str], path: str) -> ReadResult:
    """Parse JSONL lines (line numbers start at 1; blank lines are skipped, not counted).

    Every non-blank line ends up either as a row or as a BadLine; an id already
    seen earlier in the same file makes the later line bad.
    """
    rows: list[DatasetRow] = []
    bad: list[BadLine] = []
    first_line_of: dict[str, int] = {}
    lines_read = 0
    for number, raw in enumerate(lines, start=1):
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                lines_read += 1
                bad.append(BadLine(path, number, f"not valid UTF-8 ({err.reason} at byte {err.start})",
                                   raw.decode("utf-8", errors="replace").rstrip("\r\n")))
                continue
        raw = raw.rstrip("\r\n")
        if not raw.strip():
            continue
        lines_read += 1
        try:
            row = DatasetRow.from_json(_decode(raw))
            if row.id in first_line_of:
                raise RowError(f"duplicate id '{row.id}' (first on line {first_line_of[row.id]})")
        except RowError as err:
            bad.append(BadLine(path, number, err.reason, raw))
            continue
        first_line_of[row.id] = number
        rows.append(row)
    return ReadResult(rows, bad, lines_read)


def _decode(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as err:
        raise RowError(f"invalid JSON ({err.msg} at column {err.colno})") from None
    except RecursionError:
        raise RowError("invalid JSON (nested too deeply)") from None


def read_rows(path: str | os.PathLike) -> ReadResult:
    """Read a JSONL file of rows. A missing file raises FileNotFoundError naming it; bad rows never raise."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise FileNotFoundError(f"{path}: is a directory, not a JSONL file") from None
    return parse_lines(data.split(b"\n"), str(path))


def write_rows(path: str | os.PathLike, rows: Iterable[DatasetRow]) -> None:
    """Write rows as JSONL, atomically (an interrupted write leaves the old file or none)."""
    write_jsonl(path, (row.to_json() for row in rows))


def write_jsonl(path: str | os.PathLike, objects: Iterable[dict]) -> None:
    write_text(path, "".join(json.dumps(obj, ensure_ascii=False) + "\n" for obj in objects))


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
