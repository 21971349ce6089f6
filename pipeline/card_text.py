"""Percentages as the model card and the sweep's report print them (one spelling for both)."""
from __future__ import annotations


def pct(rate: float | None, digits: int = 1) -> str:
    """A rate (0..1) in percent; None is "unavailable", never a made-up number."""
    return "unavailable" if rate is None else f"{100 * rate:.{digits}f}%"


def published(value: float | None) -> str:
    """A published number, already in percent (configs/baselines.yaml); "—" where the card has none."""
    return "—" if value is None else f"{value:.1f}%"


def delta(rate: float | None, reference: float | None) -> str:
    """``rate`` (0..1) minus ``reference`` (percent), in points."""
    if rate is None or reference is None:
        return "—"
    d = round(100 * rate - reference, 1)
    return "0" if d == 0 else (f"+{d:.1f}" if d > 0 else f"−{abs(d):.1f}")
