"""Coordinator runtime: watch the model's token stream for the tool-invocation blip.

numpy only: never imports torch, prefect or ``pipeline`` (DESIGN.md, principle 7),
so it can sit inside any serving process. See ``docs/coordinator.md``.
"""
from .coordinator import Coordinator, DispatchContext, Trigger, Turn
from .detector import Decision, DecisionReason, DecisionState, StreamingBlipDetector
from .matchers import (
    AnyOfCodebooks,
    CodebookMatch,
    FullMatch,
    Matcher,
    matcher_from_detection,
    matcher_from_signature,
)
from .signature import END_OF_AUDIO_CODE, BlipSignature, DetectionSpec, SignatureError
from .timeline import EventKind, Timeline, TimelineEvent
from .tokens import IM_END_TOKEN, TEXT_END_TOKEN

__all__ = [
    "AnyOfCodebooks", "BlipSignature", "CodebookMatch", "Coordinator", "Decision", "DecisionReason",
    "DecisionState", "DetectionSpec", "DispatchContext", "END_OF_AUDIO_CODE", "EventKind", "FullMatch",
    "IM_END_TOKEN", "Matcher", "SignatureError", "StreamingBlipDetector", "TEXT_END_TOKEN", "Timeline",
    "TimelineEvent", "Trigger", "Turn", "matcher_from_detection", "matcher_from_signature",
]
