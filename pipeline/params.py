"""One params mechanism for every stage: a typed dataclass per ``params.yaml`` group.

A stage declares its group as a frozen dataclass; ``parse_params`` checks it against the
YAML mapping: unknown keys rejected, missing keys without a default reported, each value
checked against its annotation (int, float, str, bool, Path, ``X | None``, ``tuple[X, ...]``,
``list[X]``, ``dict[str, X]``, ``Literal[...]``) and against the bounds in its field's
metadata (``bounded(lo, hi)``). NaN and infinities are never a valid number. Every error is
one line of one shape: ``params.yaml: 'group.key' <why>``. Cross-key rules go in the class's
``check()``, raising ``self.bad(key, why)``.

Entry points wrap their work in ``stage_main`` so an expected error (any ``StageError``)
prints ``<stage>: <message>`` and exits 1, never a traceback.
"""
from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

PARAMS_FILE = Path("params.yaml")


class StageError(Exception):
    """An expected failure of a stage (bad input, params, missing file): one line, exit 1."""


class ParamsError(StageError, ValueError):
    """A params.yaml key is missing or invalid; the message names the key."""


def bounded(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False) -> dict:
    """Field metadata: the value (or each item of a list) must lie in [lo, hi] (open where asked)."""
    return {"bounds": (lo, hi, lo_open, hi_open)}


def field(default: Any = dataclasses.MISSING, *, lo: float | None = None, hi: float | None = None,
          lo_open: bool = False, hi_open: bool = False, doc: str = "") -> Any:
    """A dataclass field with bounds: ``duration_ms: float = field(160.0, lo=0, hi=2000, lo_open=True)``."""
    meta = {"doc": doc}
    if lo is not None or hi is not None:
        meta.update(bounded(lo, hi, lo_open=lo_open, hi_open=hi_open))
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (types.UnionType, typing.Union):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in get_args(tp))
    if origin in (tuple, list):
        return f"a list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return f"a mapping of {_type_name(get_args(tp)[1])}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", Path: "a path"}.get(tp, str(tp))


class _Mismatch(Exception):
    pass


def _convert(value: Any, tp: Any) -> Any:
    """``value`` as type ``tp``, or _Mismatch. Lists become tuples where the annotation says tuple."""
    origin = get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        for option in get_args(tp):
            try:
                return _convert(value, option)
            except _Mismatch:
                continue
        raise _Mismatch
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if origin is Literal:
        if value in get_args(tp) and not isinstance(value, bool) or value is None and None in get_args(tp):
            return value
        raise _Mismatch
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        items = [_convert(v, get_args(tp)[0]) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise _Mismatch
        return {k: _convert(v, get_args(tp)[1]) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if tp is Path:
        if isinstance(value, str) and value:
            return Path(value)
        raise _Mismatch
    raise TypeError(f"params: unsupported annotation {tp!r}")


def _out_of_bounds(value: Any, bounds: tuple) -> str | None:
    lo, hi, lo_open, hi_open = bounds
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if v is None:
            continue
        if lo is not None and (v < lo or lo_open and v == lo) or hi is not None and (v > hi or hi_open and v == hi):
            left = "(" if lo_open else "["
            right = ")" if hi_open else "]"
            span = f"{left}{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}{right}"
            return f"must be in {span}, got {v!r}"
    return None


T = TypeVar("T")


class StageParams:
    """Base of a stage's params dataclass; ``SECTION`` names its ``params.yaml`` group."""

    SECTION: typing.ClassVar[str] = ""

    @classmethod
    def from_params(cls: type[T], raw: Any) -> T:
        """This group parsed from its raw ``params.yaml`` mapping."""
        return parse_params(cls, raw, cls.SECTION)

    def bad(self, key: str, why: str) -> ParamsError:
        return ParamsError(f"{PARAMS_FILE}: '{self.SECTION}.{key}' {why}")

    def check(self) -> None:
        """Cross-key rules; raise ``self.bad(key, why)``."""


def parse_params(cls: type[T], raw: Any, section: str | None = None) -> T:
    """Build ``cls`` (a dataclass) from the YAML mapping ``raw``; ParamsError on the first problem."""
    section = section or getattr(cls, "SECTION", "") or cls.__name__

    def bad(key: str, why: str) -> ParamsError:
        return ParamsError(f"{PARAMS_FILE}: '{section}.{key}' {why}" if key else f"{PARAMS_FILE}: '{section}' {why}")

    if not isinstance(raw, dict):
        raise bad("", f"must be a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(raw) - set(fields), key=str)
    if unknown:
        raise bad(str(unknown[0]), f"is not a known key (known: {', '.join(sorted(fields))})")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise bad(name, "is missing")
            continue
        try:
            value = _convert(raw[name], hints[name])
        except _Mismatch:
            raise bad(name, f"must be {_type_name(hints[name])}, got {raw[name]!r}") from None
        if "bounds" in f.metadata and (why := _out_of_bounds(value, f.metadata["bounds"])):
            raise bad(name, why)
        values[name] = value
    obj = cls(**values)
    check = getattr(obj, "check", None)
    if callable(check):
        check()
    return obj


def read_params_file(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    path = Path(path)
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found (run from the workspace root)") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ParamsError(f"{path}{where}: invalid YAML ({getattr(err, 'problem', None) or err})") from None
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: must be a mapping of params groups")
    return params


def load_section(section: str, path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """One stage's group of ``params.yaml`` as a raw mapping (each stage reads only its own keys)."""
    params = read_params_file(path)
    if section not in params or not isinstance(params[section], dict):
        raise ParamsError(f"{path}: missing section '{section}'")
    return params[section]


def load_stage_params(cls: type[T], path: str | Path = PARAMS_FILE) -> T:
    """``cls.SECTION`` of ``params.yaml``, parsed and checked."""
    return parse_params(cls, load_section(cls.SECTION, path), cls.SECTION)


def stage_main(stage: str, work: Callable[[], int | None], expected: tuple[type[BaseException], ...] = ()) -> int:
    """Run a stage's entry; an expected error prints ``<stage>: <message>`` and returns 1.

    Expected: any ``StageError``, a missing or unreadable file (its message names the path), and ``expected``.
    """
    try:
        return work() or 0
    except (StageError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, *expected) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"{stage}: {message}", file=sys.stderr)
        return 1
