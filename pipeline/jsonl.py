"""JSON Lines: the one reader and the one writer of every ``*.jsonl`` file the pipeline touches.

One line is the bytes between two ``b"\\n"``; nothing else ends a line (not ``\\r``, U+2028,
U+2029 or U+0085, which ``str.splitlines`` would split on). A line holds one JSON object.
A blank line (spaces, tabs, ``\\r`` only) is skipped and not counted.

The reader is strict where Python's ``json`` module is lenient, so that a value it accepts
can be written back and read again unchanged by every later stage:

- valid UTF-8 only, and no lone surrogate escape (``"\\ud800"``: Python decodes it, but the
  string can never be written as UTF-8 again);
- no ``NaN`` / ``Infinity`` (not JSON), no float literal that overflows to infinity;
- integers within 64 bits (pyarrow, numpy and other JSON readers agree on those; a
  5000-digit literal makes Python raise mid-parse);
- nesting at most ``MAX_DEPTH`` objects/arrays deep (later code walks values recursively);
- no key twice in one object (JSON readers disagree on which one wins).

What to do with a bad line is the caller's explicit choice, ``on_bad``:

- ``"fail"``: raise :class:`JsonlError` ``FILE:LINE: reason`` at the first bad line (the file is
  a stage's own output, so a bad line means damage);
- ``"quarantine"``: keep going and return every bad line as a :class:`BadLine` (path, line,
  reason, raw text), for the caller to write, count or report; never dropped silently.

The writer (:func:`encode_line`, :func:`write_jsonl`) writes what the reader reads: UTF-8,
no NaN, and U+2028 / U+2029 / U+0085 escaped, so no line it writes splits under any line
reader. For ASCII content (and any text without those three characters) its bytes equal
``json.dumps(obj, ensure_ascii=False)``.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

from pipeline.io import write_text
from pipeline.params import StageError

MAX_DEPTH = 32
"""Deepest nesting of objects and arrays a line may have (a row needs 4)."""
MAX_NUMBER_CHARS = 40
"""Longest number literal (a float has at most 17 significant digits; more is not data)."""
INT_RANGE = (-(2**63), 2**63 - 1)

OnBad = Literal["fail", "quarantine"]

_BLANK = b" \t\r"
_LINE_BREAKS_IN_STRINGS = {0x2028: "\\u2028", 0x2029: "\\u2029", 0x85: "\\u0085"}
_SURROGATE = re.compile("[\ud800-\udfff]")


class JsonlError(StageError, ValueError):
    """A JSONL file cannot be used: a bad line under ``on_bad="fail"`` (``FILE:LINE: reason``) or an unreadable file."""


class MissingFile(StageError, FileNotFoundError):
    """A JSON/JSONL input does not exist; the message names it (and the stage that makes it)."""


class LineError(ValueError):
    """Why one line is not a usable JSON object (``reason``, one line)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class BadLine:
    """A line that is not valid; kept (never dropped) for the quarantine file or the report."""

    path: str
    line: int
    reason: str
    raw: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"

    def to_json(self) -> dict:
        return {"path": self.path, "line": self.line, "reason": self.reason, "raw": self.raw}


@dataclass(frozen=True)
class Line:
    """One good line: its number (from 1), the decoded object, and the line as written."""

    number: int
    value: dict[str, Any]
    raw: str


@dataclass
class JsonlFile:
    """What one JSONL file held: good lines, bad lines, and how many non-blank lines there were."""

    path: str
    lines: list[Line]
    bad: list[BadLine]
    lines_read: int

    @property
    def values(self) -> list[dict[str, Any]]:
        return [line.value for line in self.lines]


# --------------------------------------------------------------------------- one line

def _reject_constant(name: str) -> Any:
    raise LineError(f"{name} is not valid JSON (numbers must be finite)")


def _parse_int(literal: str) -> int:
    if len(literal) > MAX_NUMBER_CHARS:
        raise LineError(f"integer with {len(literal.lstrip('-'))} digits (more than 64 bits)")
    value = int(literal)
    if not INT_RANGE[0] <= value <= INT_RANGE[1]:
        raise LineError(f"integer {literal} does not fit in 64 bits")
    return value


def _parse_float(literal: str) -> float:
    if len(literal) > MAX_NUMBER_CHARS:
        raise LineError(f"number literal of {len(literal)} characters (at most {MAX_NUMBER_CHARS})")
    value = float(literal)
    if not math.isfinite(value):
        raise LineError(f"number {literal} is out of range (not a finite 64-bit float)")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise LineError(f"key {_shown(key)} occurs twice in one object")
        obj[key] = value
    return obj


def _shown(text: str) -> str:
    """A string for a message: quoted, escaped (a lone surrogate prints as \\ud800), shortened."""
    shown = json.dumps(text)
    return shown if len(shown) <= 40 else shown[:37] + '..."'


def _child(where: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


def _check_tree(value: Any) -> None:
    """Bounded depth and valid Unicode everywhere (iterative: a deep value cannot recurse us out)."""
    stack: list[tuple[Any, str, int]] = [(value, "", 1)]
    while stack:
        node, where, depth = stack.pop()
        if isinstance(node, str):
            if match := _SURROGATE.search(node):
                raise LineError(f"'{where}' holds a lone surrogate {json.dumps(match.group())} (not valid Unicode)")
            continue
        if not isinstance(node, (dict, list)):
            continue
        if depth > MAX_DEPTH:
            raise LineError(f"nested deeper than {MAX_DEPTH} levels (at '{where if len(where) <= 60 else where[:60] + '...'}')")
        for key, child in node.items() if isinstance(node, dict) else enumerate(node):
            if isinstance(key, str) and _SURROGATE.search(key):
                raise LineError(f"key {_shown(key)} holds a lone surrogate (not valid Unicode)")
            stack.append((child, _child(where, key), depth + 1))


def decode_line(raw: bytes | str) -> dict[str, Any]:
    """The JSON object on one line, or LineError with the reason; never another exception."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")  # a lone surrogate in a str then fails as invalid UTF-8
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise LineError(f"not valid UTF-8 ({err.reason} at byte {err.start})") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_int=_parse_int, parse_float=_parse_float,
                           object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as err:
        if text.startswith("\ufeff"):
            raise LineError("starts with a byte-order mark (save the file as UTF-8 without BOM)") from None
        raise LineError(f"invalid JSON ({err.msg} at column {err.colno})") from None
    except RecursionError:
        raise LineError(f"nested deeper than {MAX_DEPTH} levels") from None
    if not isinstance(value, dict):
        raise LineError(f"not a JSON object (got {type(value).__name__ if value is not None else 'null'})")
    _check_tree(value)
    return value


def encode_line(obj: dict[str, Any]) -> str:
    """One line (no newline) that :func:`decode_line` reads back as ``obj``; ValueError if none can."""
    try:
        text = json.dumps(obj, ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")
    except (ValueError, UnicodeEncodeError) as err:
        raise ValueError(f"cannot write as a JSON line: {err}") from None
    return text.translate(_LINE_BREAKS_IN_STRINGS)


def _raw_text(raw: bytes | str) -> str:
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogatepass").decode("utf-8", "backslashreplace").rstrip("\r")
    return raw.decode("utf-8", "backslashreplace").rstrip("\r")


# --------------------------------------------------------------------------- files

def split_lines(data: bytes) -> list[bytes]:
    """A file's lines: split on b"\\n" only (line N is item N-1)."""
    return data.split(b"\n")


def iter_lines(chunks: Iterable[bytes | str], path: str) -> Iterator[Line | BadLine]:
    """Each non-blank line, numbered from 1, as a Line or a BadLine (blank lines are skipped)."""
    for number, raw in enumerate(chunks, start=1):
        blank = raw.strip(_BLANK) if isinstance(raw, bytes) else raw.strip(" \t\r")
        if not blank:
            continue
        try:
            value = decode_line(raw)
        except LineError as err:
            yield BadLine(path, number, err.reason, _raw_text(raw))
            continue
        yield Line(number, value, _raw_text(raw))


def parse_jsonl(chunks: Iterable[bytes | str], path: str, *, on_bad: OnBad) -> JsonlFile:
    """Decode lines (see :func:`iter_lines`) under the ``on_bad`` policy."""
    result = JsonlFile(path, [], [], 0)
    for item in iter_lines(chunks, path):
        result.lines_read += 1
        if isinstance(item, BadLine):
            if on_bad == "fail":
                raise JsonlError(str(item))
            result.bad.append(item)
        else:
            result.lines.append(item)
    return result


def read_bytes(path: str | os.PathLike, missing: str = "file not found") -> bytes:
    """A file's bytes; MissingFile (``PATH: <missing>``) or JsonlError naming the path otherwise."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise MissingFile(f"{path}: {missing}") from None
    except IsADirectoryError:
        raise JsonlError(f"{path}: is a directory, not a JSON Lines file") from None
    except OSError as err:
        raise JsonlError(f"{path}: cannot read ({err.strerror})") from None


def read_jsonl(path: str | os.PathLike, *, on_bad: OnBad, missing: str = "file not found") -> JsonlFile:
    """Read a JSONL file under the ``on_bad`` policy; ``missing`` ends the message of a missing file."""
    return parse_jsonl(split_lines(read_bytes(path, missing)), str(path), on_bad=on_bad)


def jsonl_text(objects: Iterable[dict[str, Any]]) -> str:
    return "".join(encode_line(obj) + "\n" for obj in objects)


def write_jsonl(path: str | os.PathLike, objects: Iterable[dict[str, Any]]) -> None:
    """Write one object a line, atomically (an interrupted write leaves the old file or none)."""
    write_text(path, jsonl_text(objects))
