"""What happened when, in one turn: the record a demo plots.

Why: the whole point of the blip is latency (dispatch while the ack is still
being spoken), so each turn keeps wall-clock timestamps of detection, ack end
and dispatch next to the audio frame index they happened at.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable


class EventKind(str, Enum):
    BLIP_DETECTED = "blip_detected"  # detector said MATCH
    BLIP_MISSED = "blip_missed"  # detector said NO_MATCH (detail = reason)
    ACK_END = "ack_end"  # end of audio / <|im_end|> / stream exhausted (detail says which)
    DISPATCHED = "dispatched"  # dispatch fired (detail = "early" | "ack_end")
    DISPATCH_DONE = "dispatch_done"  # the dispatch coroutine returned
    DISPATCH_FAILED = "dispatch_failed"  # it raised or was cancelled (detail = repr)
    TURN_END = "turn_end"  # the stream was exhausted
    TURN_ABANDONED = "turn_abandoned"  # the consumer stopped iterating before the end


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    """One event. ``t_s`` is seconds since the turn started.

    ``frame_index`` is the audio frame being processed for audio-triggered
    events; for events triggered by a text token or the stream's end it is the
    number of audio frames seen so far. ``item_index`` counts every stream item.
    """

    kind: EventKind
    t_s: float
    frame_index: int | None
    item_index: int | None
    detail: str | None = None

    def to_record(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "t_s": self.t_s,
            "frame_index": self.frame_index,
            "item_index": self.item_index,
            "detail": self.detail,
        }


@dataclass
class Timeline:
    """Append-only list of events (appends are thread-safe in CPython)."""

    clock: Callable[[], float] = time.perf_counter
    t0: float = field(default=0.0)
    events: list[TimelineEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.t0:
            self.t0 = self.clock()

    def add(self, kind: EventKind, frame_index: int | None, item_index: int | None, detail: str | None = None) -> TimelineEvent:
        event = TimelineEvent(kind, self.clock() - self.t0, frame_index, item_index, detail)
        self.events.append(event)
        return event

    def kinds(self) -> list[str]:
        """Event kinds in order, with details, e.g. ``["blip_detected", "dispatched:early"]``."""
        return [e.kind.value + (f":{e.detail}" if e.detail else "") for e in list(self.events)]

    def first(self, kind: EventKind) -> TimelineEvent | None:
        return next((e for e in list(self.events) if e.kind is kind), None)

    def to_records(self) -> list[dict[str, Any]]:
        """JSON-ready list of dicts, for plots."""
        return [e.to_record() for e in list(self.events)]
