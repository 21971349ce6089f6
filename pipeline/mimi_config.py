"""The Mimi codec's architecture settings, and a small variant for offline runs.

liquid-audio builds Mimi with ``moshi.models.loaders.get_mimi(None)``, which reads
module-level kwargs. The real checkpoint needs the stock settings; a fabricated
offline folder ships a ``mimi_config.json`` with smaller settings, and every
process that loads that folder must apply them before building Mimi. This module
is the one place that knows how.
"""
from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path
from typing import Any, Iterator

from liquid_audio.moshi.models import loaders

from pipeline.hub_layout import MIMI_CONFIG_NAME, MIMI_WEIGHTS_NAME  # noqa: F401 (MIMI_WEIGHTS_NAME: old import path)

# Small Mimi with the stock code path: same strides (12.5 Hz frames at 24 kHz),
# same 2048-entry codebooks, far fewer channels and layers (~1 M params).
SMALL_MIMI: dict[str, dict[str, Any]] = {
    "seanet": {"dimension": 32, "n_filters": 4},
    "quantizer": {"dimension": 16, "n_q": 8, "input_dimension": 32, "output_dimension": 32},
    "transformer": {
        "d_model": 32,
        "num_heads": 2,
        "num_layers": 1,
        "dim_feedforward": 64,
        "input_dimension": 32,
        "output_dimensions": [32],
    },
}

_SECTIONS = {"seanet": "_seanet_kwargs", "quantizer": "_quantizer_kwargs", "transformer": "_transformer_kwargs"}


def read_overrides(model_dir: Path) -> dict[str, dict[str, Any]] | None:
    """Return the folder's Mimi overrides, or None for a stock (Hub) folder."""
    path = Path(model_dir) / MIMI_CONFIG_NAME
    if not path.exists():
        return None
    overrides = json.loads(path.read_text())
    unknown = set(overrides) - set(_SECTIONS)
    if unknown:
        raise ValueError(f"{path}: unknown sections {sorted(unknown)} (expected {sorted(_SECTIONS)})")
    return overrides


@contextlib.contextmanager
def mimi_settings(overrides: dict[str, dict[str, Any]] | None) -> Iterator[None]:
    """Apply Mimi overrides to moshi's loader while building Mimi, then restore the stock ones."""
    saved = {name: copy.deepcopy(getattr(loaders, name)) for name in _SECTIONS.values()}
    try:
        for section, values in (overrides or {}).items():
            getattr(loaders, _SECTIONS[section]).update(values)
        yield
    finally:
        for name, value in saved.items():
            target = getattr(loaders, name)
            target.clear()
            target.update(value)
