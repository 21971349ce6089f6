"""Tables for people: markdown rendering and Prefect artifacts (documents are read by pipeline.metrics_models).

A metric that is missing or unreadable is shown as "unavailable", never as zero
and never left out (DESIGN.md, principle 8).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

UNAVAILABLE = "unavailable"


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


def publish_table(key: str, rows: list[dict], description: str, missing: str = UNAVAILABLE) -> None:
    from prefect.artifacts import create_table_artifact

    shown = [{k: cell(v, missing) if v is None else v for k, v in row.items()} for row in rows]
    create_table_artifact(shown, key=key, description=description)


def publish_unavailable(key: str, title: str, why: str) -> None:
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(f"**{title}: {UNAVAILABLE}** — {why}", key=key, description=f"{title} ({UNAVAILABLE})")
