"""The "v4 vs v4.1 arm" table of the sweep's report: the same data and recipe trained without and with the blip.

Both arms are experiments of one sweep (flows/sweeps/v4.2-blip.yaml: ``v4.1-default``, ``v4-no-blip``), so the
table is built from the leaderboard rows the sweep has just ranked, and lives in the sweep's own report
(reports/sweep/leaderboard.md). The model card does not read the leaderboard: a file that exists only after a
sweep cannot be a DVC dep of the report stage, and an undeclared one would leave the card stale.
"""
from __future__ import annotations

import re
from typing import Any

import yaml

from pipeline.card_text import delta, pct, published

ARMS = {"v4": [], "v4.1": ["tool_match"]}  # preprocess.blip_on of each arm (DESIGN.md, "Names")
ARM_OVERRIDE = re.compile(r"^\+?preprocess\.blip_on=(\[.*\])$")
ARM_METRICS = ("overall_accuracy", "tool_match_accuracy", "cb0_match_rate", "false_positive_rate")


def arm_of(blip_on: Any) -> str | None:
    blip_on = list(blip_on) if isinstance(blip_on, (list, tuple)) else blip_on
    return next((arm for arm, value in ARMS.items() if blip_on == value), None)


def arms_among(rows: list[dict], default_blip_on: Any) -> dict[str, dict[str, Any]]:
    """The arms among a sweep's finished experiments: no override (the workspace's own ``preprocess.blip_on``)
    or ``preprocess.blip_on`` as the only override. The first experiment of each arm counts."""
    arms: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row.get("kind") != "experiment":
            continue
        overrides = (row.get("overrides") or "").strip()
        if not overrides:
            arm = arm_of(default_blip_on)
        elif match := ARM_OVERRIDE.match(overrides):
            arm = arm_of(yaml.safe_load(match.group(1)))
        else:
            continue
        if arm is not None and arm not in arms:
            arms[arm] = {key: row.get(key) for key in ARM_METRICS} | {"source": f"experiment '{row.get('name')}'"}
    return arms


def arms_section(arms: dict[str, dict[str, Any]], baselines: dict) -> list[str]:
    """Markdown lines of the table; empty unless both arms are there. ``baselines``: configs/baselines.yaml."""
    if not all(arm in arms for arm in ARMS):
        return []

    def at(*keys: str) -> Any:
        node: Any = baselines
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        return node

    rows = (("Overall accuracy", "overall_accuracy", at("classes", "overall", "v4"), at("classes", "overall", "v4.1")),
            ("tool_match accuracy", "tool_match_accuracy", at("classes", "tool_match", "v4"),
             at("classes", "tool_match", "v4.1")),
            ("cb0 blip match on tool_match", "cb0_match_rate", None, at("blip", "v4.1", "cb0")),
            ("Detector false positives on non_tool/tool_miss", "false_positive_rate", None, None))
    lines = ["## v4 vs v4.1 arm", "",
             "The same data and recipe trained twice: without the blip (`preprocess.blip_on: []`, the v4 arm) and with "
             "it on tool_match acks (`[tool_match]`, the v4.1 arm). Only the blip differs, so the Δ is the blip's effect.",
             "", "| | v4 arm | v4.1 arm | Δ (v4.1 − v4) | published v4 | published v4.1 |", "|---|---|---|---|---|---|"]
    for label, key, pub_v4, pub_v41 in rows:
        v4, v41 = arms["v4"].get(key), arms["v4.1"].get(key)
        lines.append(f"| {label} | {pct(v4)} | {pct(v41)} | {delta(v41, None if v4 is None else 100 * v4)} | "
                     f"{published(pub_v4)} | {published(pub_v41)} |")
    lines += ["", f"v4 arm: {arms['v4']['source']}; v4.1 arm: {arms['v4.1']['source']}.", ""]
    return lines
