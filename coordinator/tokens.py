"""Turning ``generate_interleaved`` items into numpy codes, without importing torch.

Why duck typing: the coordinator must sit in any serving process (DESIGN.md,
principle 8), so it cannot import torch just to recognise a tensor. LFM2.5-Audio
yields text tokens as shape ``[1]`` tensors and audio frames as shape ``[8]``
tensors (8 Mimi codebooks); anything with ``.detach()/.cpu()/.numpy()`` or the
array protocol converts the same way.
"""
from __future__ import annotations

from enum import Enum
from typing import Any

import numpy as np


class ItemKind(str, Enum):
    TEXT = "text"
    AUDIO = "audio"


def to_codes(item: Any) -> np.ndarray:
    """Return the item's integer codes as a flat numpy array (a view when possible).

    Accepts numpy arrays, Python/numpy ints, and tensor-likes
    (``x.detach().cpu().numpy()`` is applied for whichever of those methods exist).
    """
    if type(item) is np.ndarray:
        arr = item
    elif isinstance(item, (int, np.integer)) and not isinstance(item, bool):
        return np.array([int(item)], dtype=np.int64)
    else:
        x = item
        for name in ("detach", "cpu", "numpy"):
            method = getattr(x, name, None)
            if callable(method):
                x = method()
        arr = np.asarray(x)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    return arr


def classify(codes: np.ndarray, n_codebooks: int, index: int | None = None) -> ItemKind:
    """1 code = text token, ``n_codebooks`` codes = audio frame; anything else is an error."""
    size = codes.size
    if codes.dtype.kind not in "iu":
        raise ValueError(f"stream item {index}: codes must be integers, got dtype {codes.dtype}")
    if size == 1:
        return ItemKind.TEXT
    if size == n_codebooks:
        return ItemKind.AUDIO
    raise ValueError(
        f"stream item {index}: expected 1 code (text token) or {n_codebooks} codes (audio frame), "
        f"got {size} (shape {codes.shape})"
    )
