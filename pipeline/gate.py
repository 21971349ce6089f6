"""The champion/challenger gate of a nightly run: promote tonight's model, hold it back, or say nothing changed.

Pure: it reads metrics files through the accessors below (the one place that knows which
file and key holds each number) and judges with :func:`judge`; git, DVC and GTO live in
``flows/nightly.py``. The champion is the last promoted night; its numbers are the
``metrics`` it recorded in its own ``reports/nightly/decision.json`` (in git, at its commit).

Rules (the ``promote`` group of params.yaml, :class:`PromoteParams`):

- floors, always: tonight's number against an absolute bound (a null floor is off);
- allowed drops, only against a champion scored on the same rows (the dataset's held-out and
  novel-facts content hashes): otherwise the decision says so and the floors judge alone.

A number that is unavailable (a file not written, a key absent, a rate with no rows) fails a
floor and a drop rule whose champion had it; it is never read as zero.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pipeline.artifacts import DECISION_JSON, details_json
from pipeline.params import StageError, StageParams, field

DECISION_PATH = DECISION_JSON
PROMOTED, HELD_BACK, UNCHANGED = "promoted", "held_back", "unchanged"
Outcome = Literal["promoted", "held_back", "unchanged"]

# --------------------------------------------------------------------------- where each number lives

CLASSES_DETAILS = details_json("eval_classes")
BLIP_DETAILS = details_json("eval_blip")
NARRATION_DETAILS = details_json("eval_narration")
DATASET_DETAILS = details_json("dataset")
# gate name -> (details file, key); higher is better except where LOWER_IS_BETTER
SCALAR_SOURCES: dict[str, tuple[Path, str]] = {
    "accuracy": (CLASSES_DETAILS, "overall_accuracy"),
    "cb0_tpr": (BLIP_DETAILS, "cb0_match_rate"),
    "blip_tpr": (BLIP_DETAILS, "detector_true_positive_rate"),
    "fpr": (BLIP_DETAILS, "false_positive_rate"),
    "latency_ms": (BLIP_DETAILS, "decision_latency_ms"),
    "faithful": (NARRATION_DETAILS, "faithful_rate"),
}
LOWER_IS_BETTER = frozenset({"fpr", "latency_ms"})
CLASS_PREFIX = "accuracy."  # accuracy.<class>: eval_classes' per_class


class GateError(StageError):
    """The gate cannot judge (e.g. a champion whose metrics are missing); one line."""


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError, OSError):
        return None
    return data if isinstance(data, dict) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def read_night_metrics(root: Path) -> dict[str, float | None]:
    """Tonight's numbers from the stages' detail reports in workspace ``root`` (None = unavailable)."""
    files = {path: _read_json(root / path) for path, _ in SCALAR_SOURCES.values()}
    metrics = {name: _number((files[path] or {}).get(key)) for name, (path, key) in SCALAR_SOURCES.items()}
    per_class = (files[CLASSES_DETAILS] or {}).get("per_class") or {}
    for name, value in sorted(per_class.items()):
        metrics[CLASS_PREFIX + name] = _number(value.get("accuracy") if isinstance(value, dict) else value)
    return metrics


def read_eval_set(root: Path) -> dict[str, str] | None:
    """The content hashes of the rows the models are scored on (dataset stage), or None if unknown."""
    details = _read_json(root / DATASET_DETAILS) or {}
    hashes = {key: details.get(key) for key in ("heldout_hash", "novel_facts_hash")}
    return hashes if all(isinstance(v, str) for v in hashes.values()) else None


# --------------------------------------------------------------------------- params

@dataclass(frozen=True)
class PromoteParams(StageParams):
    """The ``promote`` group: absolute floors (null = off) and the drops allowed against the champion."""

    SECTION = "promote"

    min_cb0_tpr: float | None = field(None, lo=0, hi=1)      # cb0 match rate on held-out tool_match
    min_blip_tpr: float | None = field(None, lo=0, hi=1)     # streaming detector fires on tool_match
    max_fpr: float | None = field(None, lo=0, hi=1)          # detector fires on negatives
    min_faithful: float | None = field(None, lo=0, hi=1)     # narration faithful rate (novel facts)
    min_accuracy: float | None = field(None, lo=0, hi=1)     # overall class accuracy
    max_latency_ms: float | None = field(None, lo=0)         # decision latency
    max_accuracy_drop: float = field(0.0, lo=0, hi=1)        # overall accuracy, absolute points
    max_class_accuracy_drop: float = field(0.0, lo=0, hi=1)  # each class's accuracy
    max_cb0_tpr_drop: float = field(0.0, lo=0, hi=1)
    max_blip_tpr_drop: float = field(0.0, lo=0, hi=1)
    max_fpr_rise: float = field(0.0, lo=0, hi=1)
    max_latency_rise_ms: float = field(0.0, lo=0)

    def floors(self) -> dict[str, tuple[str, float]]:
        """metric -> (params key, bound) for the floors that are on."""
        keys = {"cb0_tpr": "min_cb0_tpr", "blip_tpr": "min_blip_tpr", "fpr": "max_fpr", "faithful": "min_faithful",
                "accuracy": "min_accuracy", "latency_ms": "max_latency_ms"}
        return {metric: (key, getattr(self, key)) for metric, key in keys.items() if getattr(self, key) is not None}

    def allowed_change(self, metric: str) -> tuple[str, float]:
        """(params key, allowed worsening) of a metric against the champion."""
        if metric.startswith(CLASS_PREFIX):
            return "max_class_accuracy_drop", self.max_class_accuracy_drop
        key = {"accuracy": "max_accuracy_drop", "cb0_tpr": "max_cb0_tpr_drop", "blip_tpr": "max_blip_tpr_drop",
               "fpr": "max_fpr_rise", "latency_ms": "max_latency_rise_ms"}.get(metric)
        return (key, getattr(self, key)) if key else ("", 0.0)


# --------------------------------------------------------------------------- judging

@dataclass(frozen=True)
class RuleResult:
    rule: str                 # the params key
    metric: str
    kind: Literal["floor", "drop"]
    challenger: float | None
    champion: float | None    # None for floors
    threshold: float          # the bound (floor) or the worst value allowed (drop)
    passed: bool

    def describe(self) -> str:
        def show(v: float | None) -> str:
            return "unavailable" if v is None else f"{v:.4g}"
        versus = f"champion {show(self.champion)}, " if self.kind == "drop" else ""
        return f"{self.rule}: {self.metric} {versus}challenger {show(self.challenger)}, threshold {self.threshold:.4g}"


@dataclass(frozen=True)
class Champion:
    version: str
    commit: str
    metrics: dict[str, float | None]
    eval_set: dict[str, str] | None


@dataclass(frozen=True)
class Decision:
    decision: Outcome
    reason: str
    metrics: dict[str, float | None]
    eval_set: dict[str, str] | None
    champion: Champion | None
    compared_with_champion: bool
    rules: tuple[RuleResult, ...]

    @property
    def failed(self) -> list[RuleResult]:
        return [rule for rule in self.rules if not rule.passed]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["rules"] = [asdict(rule) for rule in self.rules]
        data["failed"] = [asdict(rule) for rule in self.failed]
        return data

    def summary(self) -> str:
        lines = [f"Nightly decision: {self.decision} — {self.reason}"]
        lines += [f"- failed {rule.describe()}" for rule in self.failed]
        return "\n".join(lines)


TOLERANCE = 1e-9  # a drop of exactly the allowed amount passes, whatever the float rounding


def _worse(metric: str, value: float, bound: float) -> bool:
    return value > bound + TOLERANCE if metric in LOWER_IS_BETTER else value < bound - TOLERANCE


def floor_rules(params: PromoteParams, metrics: dict[str, float | None]) -> list[RuleResult]:
    results = []
    for metric, (key, bound) in params.floors().items():
        value = metrics.get(metric)
        results.append(RuleResult(key, metric, "floor", value, None, bound,
                                  value is not None and not _worse(metric, value, bound)))
    return results


def drop_rules(params: PromoteParams, metrics: dict[str, float | None],
               champion: dict[str, float | None]) -> list[RuleResult]:
    """Each metric the champion has against its allowed worsening (a metric the champion lacks is not compared)."""
    results = []
    for metric, before in sorted(champion.items()):
        key, allowed = params.allowed_change(metric)
        if not key or before is None:
            continue
        bound = before + allowed if metric in LOWER_IS_BETTER else before - allowed
        value = metrics.get(metric)
        results.append(RuleResult(key, metric, "drop", value, before, round(bound, 10),
                                  value is not None and not _worse(metric, value, bound)))
    return results


def judge(params: PromoteParams, metrics: dict[str, float | None], eval_set: dict[str, str] | None,
          champion: Champion | None) -> Decision:
    """promoted or held_back: the floors always, the drops against a champion scored on the same rows."""
    rules = floor_rules(params, metrics)
    compared = champion is not None and eval_set is not None and champion.eval_set == eval_set
    if champion is None:
        basis = "no champion yet: judged on the floors alone"
    elif not compared:
        basis = (f"champion {champion.version} was scored on other rows (held-out/novel-facts hashes differ): "
                 "judged on the floors alone")
    else:
        rules += drop_rules(params, metrics, champion.metrics)
        basis = f"against champion {champion.version} on the same held-out rows"
    failed = [rule for rule in rules if not rule.passed]
    outcome: Outcome = HELD_BACK if failed else PROMOTED
    reason = (f"{len(failed)} of {len(rules)} rules failed ({', '.join(r.rule for r in failed)}), {basis}" if failed
              else f"all {len(rules)} rules passed, {basis}")
    return Decision(outcome, reason, metrics, eval_set, champion, compared, tuple(rules))


def unchanged(metrics: dict[str, float | None], eval_set: dict[str, str] | None, last_night: str,
              champion: Champion | None) -> Decision:
    """Nothing reran since the night ``last_night`` decided on: no new decision, prod stays."""
    return Decision(UNCHANGED, f"nothing reran since night {last_night} (same dvc.lock): it was already decided",
                    metrics, eval_set, champion, False, ())


def champion_from_record(version: str, commit: str, record_text: str | None, where: str) -> Champion:
    """The champion's numbers from its night's decision.json text; GateError if they are missing."""
    if record_text is None:
        raise GateError(f"champion {version} ({commit[:10]}): {where} not found at its commit")
    try:
        record = json.loads(record_text)
    except ValueError:
        raise GateError(f"champion {version} ({commit[:10]}): {where} is not JSON") from None
    metrics = record.get("metrics") if isinstance(record, dict) else None
    if not isinstance(metrics, dict) or not metrics:
        raise GateError(f"champion {version} ({commit[:10]}): {where} has no metrics")
    eval_set = record.get("eval_set")
    return Champion(version, commit, {k: _number(v) for k, v in metrics.items()},
                    eval_set if isinstance(eval_set, dict) else None)
