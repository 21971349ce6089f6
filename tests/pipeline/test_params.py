"""One params mechanism: typed groups, unknown keys refused, bounds, one message shape."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from pipeline.params import ParamsError, StageParams, field, load_stage_params, parse_params, stage_main


@dataclass(frozen=True)
class ToyParams(StageParams):
    SECTION = "toy"
    model_dir: Path
    rate: float = field(1.0, lo=0, hi=10, lo_open=True)
    repeats: int = field(1, lo=1, hi=8)
    tones_hz: tuple[float, ...] = field((1200.0, 1800.0), lo=1, hi=12000)
    mode: Literal["fast", "slow"] = "fast"
    limit: int | None = None
    voices: dict[str, str] = field({})

    def check(self) -> None:
        if self.mode == "slow" and self.repeats > 2:
            raise self.bad("repeats", "must be <= 2 in slow mode")


def test_a_valid_group_parses_to_typed_values():
    p = parse_params(ToyParams, {"model_dir": "m", "rate": 2, "tones_hz": [100, 200], "limit": None})
    assert p == ToyParams(model_dir=Path("m"), rate=2.0, tones_hz=(100.0, 200.0))
    assert isinstance(p.rate, float) and isinstance(p.tones_hz, tuple)


@pytest.mark.parametrize("raw, message", [
    ({}, "params.yaml: 'toy.model_dir' is missing"),
    ({"model_dir": "m", "rte": 1}, "params.yaml: 'toy.rte' is not a known key"),
    ({"model_dir": "m", "rate": float("nan")}, "params.yaml: 'toy.rate' must be a number, got nan"),
    ({"model_dir": "m", "rate": float("inf")}, "params.yaml: 'toy.rate' must be a number, got inf"),
    ({"model_dir": "m", "rate": 0}, "params.yaml: 'toy.rate' must be in (0, 10], got 0.0"),
    ({"model_dir": "m", "repeats": 1_000_000_000}, "params.yaml: 'toy.repeats' must be in [1, 8], got 1000000000"),
    ({"model_dir": "m", "repeats": True}, "params.yaml: 'toy.repeats' must be an integer, got True"),
    ({"model_dir": "m", "tones_hz": [100, 20000]}, "params.yaml: 'toy.tones_hz' must be in [1, 12000], got 20000.0"),
    ({"model_dir": "m", "tones_hz": "1200"}, "params.yaml: 'toy.tones_hz' must be a list of a number"),
    ({"model_dir": "m", "mode": "medium"}, "params.yaml: 'toy.mode' must be one of 'fast', 'slow'"),
    ({"model_dir": "m", "limit": 2.5}, "params.yaml: 'toy.limit' must be an integer or null, got 2.5"),
    ({"model_dir": 3}, "params.yaml: 'toy.model_dir' must be a path, got 3"),
    ({"model_dir": "m", "mode": "slow", "repeats": 3}, "params.yaml: 'toy.repeats' must be <= 2 in slow mode"),
])
def test_a_bad_group_fails_in_one_line_naming_the_key(raw, message):
    with pytest.raises(ParamsError) as err:
        parse_params(ToyParams, raw)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_a_stage_entry_turns_expected_errors_into_one_line_and_exit_1(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text("toy:\n  model_dir: m\n  repeats: 0\n")
    assert stage_main("toy", lambda: load_stage_params(ToyParams) and 0) == 1
    assert capsys.readouterr().err == "toy: params.yaml: 'toy.repeats' must be in [1, 8], got 0\n"
    Path("params.yaml").write_text("toy: [unclosed\n")
    assert stage_main("toy", lambda: load_stage_params(ToyParams) and 0) == 1
    assert capsys.readouterr().err.startswith("toy: params.yaml:2: invalid YAML")


def test_an_unexpected_error_still_raises():
    """Only expected errors become one line; a bug keeps its traceback."""
    with pytest.raises(ZeroDivisionError):
        stage_main("toy", lambda: 1 // 0)
