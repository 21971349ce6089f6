"""Tables for people: markdown rendering, Prefect artifacts, metrics files read for display.

A metric that is missing or unreadable is shown as "unavailable", never as zero
and never left out (DESIGN.md, principle 8).
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pipeline.artifacts import details_json, metrics_json

UNAVAILABLE = "unavailable"
# What the eval stages write (contract: docs/orchestration.md): the full reports (DVC-cached outs) and their
# headline numbers (DVC's metrics, in git, so readable at any experiment's commit).
CLASS_DETAILS = str(details_json("eval_classes"))
BLIP_DETAILS = str(details_json("eval_blip"))
CLASS_METRICS = str(metrics_json("eval_classes"))
BLIP_METRICS = str(metrics_json("eval_blip"))


def cell(value: Any, missing: str = UNAVAILABLE) -> str:
    if value is None:
        return missing
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(rows: Iterable[Mapping[str, Any]], columns: list[str], missing: str = UNAVAILABLE) -> str:
    """`missing` is shown for None: "unavailable" for metrics, "-" where None just means "not applicable"."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(col), missing) for col in columns) + " |" for row in rows]
    return "\n".join(lines)


def read_metrics(path: Path) -> tuple[dict | None, str | None]:
    """(metrics, None) or (None, why it is unavailable)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None, f"{path}: not written"
    except (OSError, json.JSONDecodeError) as err:
        return None, f"{path}: unreadable ({err})"
    if not isinstance(data, dict):
        return None, f"{path}: expected a JSON object, got {type(data).__name__}"
    return data, None


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists are shown as they are."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def per_class(metrics: Mapping[str, Any]) -> dict[str, dict]:
    """eval_classes.details.json's classes as {class: {"accuracy", "n"}}: `per_class` holds the accuracy (a number,
    or a dict with `accuracy`), `per_class_counts` the row counts (`n`)."""
    counts = metrics.get("per_class_counts") or {}
    classes = {}
    for name, value in (metrics.get("per_class") or {}).items():
        row = dict(value) if isinstance(value, Mapping) else {"accuracy": value}
        if "n" not in row and isinstance(counts.get(name), Mapping):
            row["n"] = counts[name].get("n")
        classes[name] = row
    return classes


def publish_table(key: str, rows: list[dict], description: str, missing: str = UNAVAILABLE) -> None:
    from prefect.artifacts import create_table_artifact

    shown = [{k: cell(v, missing) if v is None else v for k, v in row.items()} for row in rows]
    create_table_artifact(shown, key=key, description=description)


def publish_unavailable(key: str, title: str, why: str) -> None:
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(f"**{title}: {UNAVAILABLE}** — {why}", key=key, description=f"{title} ({UNAVAILABLE})")
