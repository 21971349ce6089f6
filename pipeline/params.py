"""One params mechanism for every stage: a typed dataclass per ``params.yaml`` group, checked by pydantic.

A stage declares its group as a frozen dataclass (``@dataclass(frozen=True) class XParams(StageParams)``,
``SECTION``, bounds with ``field(default, lo=, hi=)``). :func:`params_model` turns that declaration into a
frozen pydantic model (``extra='forbid'``, strict scalars: no bool for an int, no string for a number, NaN and
infinities refused, bounds as ``Field`` constraints), which :func:`parse_params` validates the YAML mapping with
before building the dataclass. The same models give ``schemas/params.schema.json`` (``devtools.schemas``).

Every error is one line of one shape: ``params.yaml: 'group.key' <why>``. Cross-key rules go in the class's
``check()``, raising ``self.bad(key, why)``. Entry points wrap their work in ``stage_main`` so an expected error
(any ``StageError``) prints ``<stage>: <message>`` and exits 1, never a traceback.
"""
from __future__ import annotations

import dataclasses
import functools
import sys
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin

import yaml
from pydantic import (AllowInfNan, BaseModel, BeforeValidator, ConfigDict, Field, Strict, StrictBool, StrictStr,
                      ValidationError, create_model)

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


# --------------------------------------------------------------------------- dataclass -> pydantic model

_BOUND_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def _nonempty_path(value: Any) -> Any:
    if isinstance(value, Path) or isinstance(value, str) and value:
        return value
    raise ValueError("not a path")


def _constraints(bounds: tuple | None) -> list:
    if bounds is None:
        return []
    lo, hi, lo_open, hi_open = bounds
    limits = {}
    if lo is not None:
        limits["gt" if lo_open else "ge"] = lo
    if hi is not None:
        limits["lt" if hi_open else "le"] = hi
    return [Field(**limits)]


def _pydantic_type(tp: Any, bounds: tuple | None) -> Any:
    """The annotation pydantic validates ``tp`` with: strict scalars, finite floats, bounds on numbers."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (types.UnionType, typing.Union):
        return typing.Union[tuple(_pydantic_type(a, bounds) for a in args)]
    if origin is Literal or tp is type(None) or tp is Any:
        return tp
    if origin is tuple:
        return tuple[_pydantic_type(args[0], bounds), ...]
    if origin is list:
        return list[_pydantic_type(args[0], bounds)]
    if origin is dict:
        return dict[StrictStr, _pydantic_type(args[1], None)]
    if tp is bool:
        return StrictBool
    if tp is int:
        return Annotated[int, Strict(), *_constraints(bounds)]
    if tp is float:
        return Annotated[float, Strict(), AllowInfNan(False), *_constraints(bounds)]
    if tp is str:
        return StrictStr
    if tp is Path:
        return Annotated[Path, BeforeValidator(_nonempty_path)]
    raise TypeError(f"params: unsupported annotation {tp!r}")


@functools.cache
def params_model(cls: type) -> type[BaseModel]:
    """The frozen pydantic model of a params dataclass (one per class; also the source of its JSON Schema)."""
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        description = f.metadata.get("doc") or None
        if f.default is not dataclasses.MISSING:
            spec = Field(f.default, description=description)
        elif f.default_factory is not dataclasses.MISSING:
            spec = Field(default_factory=f.default_factory, description=description)
        else:
            spec = Field(description=description)
        fields[f.name] = (_pydantic_type(hints[f.name], f.metadata.get("bounds")), spec)
    config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=(), title=getattr(cls, "SECTION", "") or None)
    doc = cls.__doc__ if cls.__doc__ and not cls.__doc__.startswith(f"{cls.__name__}(") else None  # not the generated one
    return create_model(cls.__name__, __config__=config, __doc__=doc, **fields)


# --------------------------------------------------------------------------- one-line messages

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


def _is_float(tp: Any) -> bool:
    return tp is float or any(_is_float(a) for a in get_args(tp))


def _span(bounds: tuple) -> str:
    lo, hi, lo_open, hi_open = bounds
    return (f"{'(' if lo_open else '['}{'-inf' if lo is None else f'{lo:g}'}, "
            f"{'inf' if hi is None else f'{hi:g}'}{')' if hi_open else ']'}")


def _why(cls: type, err: ValidationError, raw: dict) -> tuple[str, str]:
    """(key, reason) of the first problem pydantic found, in the words of every params error."""
    errors = err.errors(include_url=False)
    unknown = sorted((e["loc"][0] for e in errors if e["type"] == "extra_forbidden"), key=str)
    if unknown:
        known = ", ".join(sorted(params_model(cls).model_fields))
        return str(unknown[0]), f"is not a known key (known: {known})"
    key = errors[0]["loc"][0]
    if errors[0]["type"] == "missing":
        return key, "is missing"
    hint = typing.get_type_hints(cls)[key]
    bound = next((e for e in errors if e["loc"][0] == key and e["type"] in _BOUND_ERRORS), None)
    if bound is not None:
        value = float(bound["input"]) if _is_float(hint) else bound["input"]
        bounds = next(f.metadata["bounds"] for f in dataclasses.fields(cls) if f.name == key)
        return key, f"must be in {_span(bounds)}, got {value!r}"
    return key, f"must be {_type_name(hint)}, got {raw[key]!r}"


# --------------------------------------------------------------------------- groups

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
    try:
        model = params_model(cls).model_validate(raw)
    except ValidationError as err:
        raise bad(*_why(cls, err, raw)) from None
    obj = cls(**{name: getattr(model, name) for name in model.model_fields_set})
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


def group_classes(modules: Iterable[str] | None = None) -> dict[str, type]:
    """SECTION -> the params group's class, over the StageParams dataclasses imported so far (of ``modules`` only,
    if given). Where several classes read one group (a stage may parse a view of another stage's group, as
    eval_screen does of eval_classes), the group's own declaration is the one with the most keys."""
    found: dict[str, type] = {}
    pending = list(StageParams.__subclasses__())
    while pending:
        cls = pending.pop()
        pending += cls.__subclasses__()
        section = getattr(cls, "SECTION", "")
        if not section or not dataclasses.is_dataclass(cls) or (modules is not None and cls.__module__ not in modules):
            continue
        if section not in found or len(dataclasses.fields(cls)) > len(dataclasses.fields(found[section])):
            found[section] = cls
    return found
