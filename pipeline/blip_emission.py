"""Blip-emission scoring: did the model open its replies with the blip's codes?

The card's table (held-out tool_match acks) -- full 8-codebook bit-exact,
codebook 0 only, cb0 OR cb3 -- plus the per-position rates (codebook x frame),
computed with the coordinator's own matchers and ``BlipSignature`` accessors
(so the wrong-index trap ``blip.squeeze(0)[:, 0]`` cannot happen here), and
what the card lacks:

- the streaming detector's decisions (the matcher the signature asks for, as
  the coordinator runs it): true-positive rate on tool_match replies and
  **false-positive rate** on negative replies (non_tool + tool_miss);
- the **decision frame**: the audio frame at which the detector decided, and
  for a blip of several copies the copy that matched (``copy_index``);
- the **decision latency**: ms of audio the detector needed to fire,
  ``(frame_index + 1) x 80 ms``, median over the tool_match replies it matched.

A reply shorter than the blip (fewer audio frames) cannot be compared
frame-by-frame: its matcher results are ``None`` with a reason, and the rates
leave it out (counted in ``n_unscorable``). The detector still decides such a
reply when its turn ended (end of audio / ``<|im_end|>`` -> NO_MATCH), which is
what a serving coordinator would do; a reply cut by ``max_new_tokens`` before
the detector decided is left out of the detector rates (``n_undecided``).
A rate over zero rows is ``None`` with a reason in ``unavailable``, never 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Sequence

import numpy as np

from coordinator.constants import END_OF_AUDIO_CODE
from coordinator.detector import Decision, StreamingBlipDetector
from coordinator.matchers import AnyOfCodebooks, CodebookMatch, FullMatch, Matcher, matcher_from_signature
from coordinator.signature import BlipSignature
from pipeline.params import StageParams

#: The card's three matchers, by metric name.
CARD_MATCHERS: dict[str, Matcher] = {
    "full": FullMatch(),
    "cb0": CodebookMatch(codebooks=(0,)),
    "cb0_or_cb3": AnyOfCodebooks(codebooks=(0, 3)),
}
POSITIVE_CLASSES = ("tool_match",)
NEGATIVE_CLASSES = ("non_tool", "tool_miss")


@dataclass(frozen=True)
class EvalBlipParams(StageParams):
    """Which classes' replies count as negatives for the detector's false-positive rate."""

    SECTION = "eval_blip"
    negative_classes: tuple[Literal["non_tool", "tool_miss", "tool_result_speak"], ...] = NEGATIVE_CLASSES

    def check(self) -> None:
        if not self.negative_classes:
            raise self.bad("negative_classes", "must name at least one class")


@dataclass(frozen=True)
class AudioReply:
    """The audio side of one generated reply, as the scorer needs it.

    ``audio_codes``: (n_codebooks, T) int64, the end-of-audio frame excluded.
    ``end_of_audio``: the model emitted the end-of-audio frame (2048s).
    ``turn_ended``: the turn ended by ``<|im_end|>`` (False: cut by max_new_tokens).
    """

    row_id: str
    row_class: str
    audio_codes: np.ndarray
    end_of_audio: bool
    turn_ended: bool

    @property
    def n_frames(self) -> int:
        return int(np.asarray(self.audio_codes).shape[1]) if np.asarray(self.audio_codes).ndim == 2 else 0


@dataclass(frozen=True)
class RowBlip:
    row_id: str
    row_class: str
    n_frames: int
    matches: dict[str, bool | None]
    reason: str | None  # why the matchers could not compare (None when they could)
    decision: dict[str, Any] | None  # detector decision, None when undecided

    def to_json(self) -> dict:
        return {"id": self.row_id, "class": self.row_class, "n_frames": self.n_frames, "matches": self.matches,
                "reason": self.reason, "decision": self.decision}


def _check_codes(reply: AudioReply, n_codebooks: int) -> np.ndarray:
    codes = np.asarray(reply.audio_codes)
    if codes.size == 0:
        return np.zeros((n_codebooks, 0), dtype=np.int64)
    if codes.ndim != 2 or codes.shape[0] != n_codebooks:
        raise ValueError(
            f"row {reply.row_id}: audio_codes must be (n_codebooks={n_codebooks}, frames), got shape {codes.shape}"
        )
    if codes.dtype.kind not in "iu":
        raise ValueError(f"row {reply.row_id}: audio_codes must be integers, got {codes.dtype}")
    return codes.astype(np.int64, copy=False)


def detector_decision(signature: BlipSignature, matcher: Matcher | None, reply: AudioReply) -> Decision | None:
    """Replay the reply's audio through a fresh ``StreamingBlipDetector``; None if it never decided."""
    detector = StreamingBlipDetector(signature, matcher)
    codes = _check_codes(reply, signature.n_codebooks)
    for i in range(codes.shape[1]):
        decision = detector.feed(codes[:, i])
        if decision.decided:
            return decision
    if reply.end_of_audio:
        decision = detector.feed(np.full(signature.n_codebooks, END_OF_AUDIO_CODE, dtype=np.int64))
        if decision.decided:
            return decision
    if reply.turn_ended:
        return detector.end_of_turn()
    return None


def _decision_json(decision: Decision | None) -> dict[str, Any] | None:
    if decision is None:
        return None
    return {
        "state": decision.state.value,
        "frame_index": decision.frame_index,
        "reason": decision.reason.value if decision.reason else None,
        "matched_codebooks": [list(group) for group in decision.matched_codebooks],
        "copy_index": decision.copy_index,
    }


def score_row(signature: BlipSignature, reply: AudioReply, detector_matcher: Matcher | None = None) -> RowBlip:
    if not isinstance(signature, BlipSignature):
        raise TypeError(
            f"score_row needs a BlipSignature, got {type(signature).__name__} "
            "(load it with BlipSignature.load so the codebook/frame axes cannot be swapped)"
        )
    codes = _check_codes(reply, signature.n_codebooks)
    n = codes.shape[1]
    if n >= signature.n_frames:
        window = codes[:, : signature.n_frames]
        matches: dict[str, bool | None] = {name: m.matches(signature, window) for name, m in CARD_MATCHERS.items()}
        reason = None
    else:
        matches = {name: None for name in CARD_MATCHERS}
        reason = "no audio in the reply" if n == 0 else f"only {n} audio frame(s); the blip has {signature.n_frames}"
    decision = detector_decision(signature, detector_matcher, reply)
    return RowBlip(reply.row_id, reply.row_class, n, matches, reason, _decision_json(decision))


def _rate(hits: int, n: int) -> float | None:
    return hits / n if n else None


@dataclass
class BlipEmissionReport:
    metrics: dict[str, Any]
    rows: list[RowBlip] = field(default_factory=list)
    per_position: list[list[float | None]] = field(default_factory=list)  # [codebook][frame]


def score_blip_emission(
    signature: BlipSignature,
    replies: Iterable[AudioReply],
    *,
    positive_classes: Sequence[str] = POSITIVE_CLASSES,
    negative_classes: Sequence[str] = NEGATIVE_CLASSES,
    detector_matcher: Matcher | None = None,
) -> BlipEmissionReport:
    """The card's blip table plus detector FPR and decision frames over ``replies``."""
    if not isinstance(signature, BlipSignature):
        raise TypeError(f"score_blip_emission needs a BlipSignature, got {type(signature).__name__}")
    matcher = detector_matcher or matcher_from_signature(signature)
    replies = list(replies)
    rows = [score_row(signature, r, matcher) for r in replies]
    pos_rows = [r for r in rows if r.row_class in positive_classes]
    neg_rows = [r for r in rows if r.row_class in negative_classes]
    n_cb, n_f = signature.n_codebooks, signature.n_frames
    unavailable: dict[str, str] = {}

    # card table: over tool_match replies long enough to compare
    scorable = [r for r in pos_rows if r.reason is None]
    rates: dict[str, Any] = {}
    counts: dict[str, dict[str, int]] = {}
    for name in CARD_MATCHERS:
        hits = sum(bool(r.matches[name]) for r in scorable)
        counts[name] = {"matched": hits, "n": len(scorable)}
        rates[f"{name}_match_rate"] = _rate(hits, len(scorable))
        if not scorable:
            unavailable[f"{name}_match_rate"] = (
                "no tool_match rows" if not pos_rows else
                f"none of the {len(pos_rows)} tool_match replies has >= {n_f} audio frames"
            )

    # per-position rates over every tool_match reply that reached that frame
    per_position: list[list[float | None]] = [[None] * n_f for _ in range(n_cb)]
    per_position_n = [0] * n_f
    pos_codes = [_check_codes(r, n_cb) for r in replies if r.row_class in positive_classes]
    hits = np.zeros((n_cb, n_f), dtype=np.int64)
    for codes in pos_codes:
        for i in range(min(n_f, codes.shape[1])):
            per_position_n[i] += 1
            for k in range(n_cb):
                hits[k, i] += int(codes[k, i] == signature.code(codebook=k, frame=i))
    for i in range(n_f):
        for k in range(n_cb):
            per_position[k][i] = _rate(int(hits[k, i]), per_position_n[i])
    if not any(per_position_n):
        unavailable["per_position"] = "no tool_match reply has any audio frame"
    per_codebook: list[float | None] = []
    for k in range(n_cb):
        ok = [all(int(c[k, i]) == signature.code(codebook=k, frame=i) for i in range(n_f))
              for c in pos_codes if c.shape[1] >= n_f]
        per_codebook.append(_rate(sum(ok), len(ok)))

    # detector: TPR on positives, FPR on negatives, decision frames
    def decided(group: list[RowBlip]) -> list[RowBlip]:
        return [r for r in group if r.decision is not None]

    pos_decided, neg_decided = decided(pos_rows), decided(neg_rows)
    tp = sum(r.decision["state"] == "match" for r in pos_decided)
    fp = sum(r.decision["state"] == "match" for r in neg_decided)
    detector_tpr = _rate(tp, len(pos_decided))
    fpr = _rate(fp, len(neg_decided))
    if detector_tpr is None:
        unavailable["detector_true_positive_rate"] = (
            "no tool_match rows" if not pos_rows else "no tool_match reply reached a detector decision")
    if fpr is None:
        unavailable["false_positive_rate"] = (
            f"no {'/'.join(negative_classes)} rows" if not neg_rows else "no negative reply reached a detector decision")

    negative_match_rates: dict[str, float | None] = {}
    neg_scorable = [r for r in neg_rows if r.reason is None]
    for name in CARD_MATCHERS:
        negative_match_rates[name] = _rate(sum(bool(r.matches[name]) for r in neg_scorable), len(neg_scorable))

    histogram: dict[str, dict[str, dict[str, int]]] = {}
    for group_name, group in (("tool_match", pos_decided), ("negative", neg_decided)):
        hist: dict[str, dict[str, int]] = {"match": {}, "no_match": {}}
        for r in group:
            state = r.decision["state"]
            key = str(r.decision["frame_index"])
            hist[state][key] = hist[state].get(key, 0) + 1
        histogram[group_name] = {state: dict(sorted(h.items(), key=lambda kv: int(kv[0]))) for state, h in hist.items()}
    match_frames = [r.decision["frame_index"] for r in pos_decided + neg_decided if r.decision["state"] == "match"]
    frame_ms = 1000.0 / signature.frame_rate_hz
    true_positives = [r.decision for r in pos_decided if r.decision["state"] == "match"]
    latencies_ms = [(d["frame_index"] + 1) * frame_ms for d in true_positives]
    if not latencies_ms:
        unavailable["decision_latency_ms"] = "the detector matched no tool_match reply"
    copy_counts: dict[str, int] = {}
    for d in true_positives:
        copy_counts[str(d["copy_index"])] = copy_counts.get(str(d["copy_index"]), 0) + 1

    metrics: dict[str, Any] = {
        **rates,
        "match_counts": counts,
        "per_position": per_position,
        "per_position_n": per_position_n,
        "per_codebook_rate": per_codebook,
        "detector_matcher": _describe(matcher),
        "detector_true_positive_rate": detector_tpr,
        "false_positive_rate": fpr,
        "false_positives": fp,
        "negative_match_rates": negative_match_rates,
        "decision_frame_histogram": histogram,
        "mean_match_decision_ms": (float(np.mean(match_frames)) + 1) * frame_ms if match_frames else None,
        "decision_latency_ms": float(np.median(latencies_ms)) if latencies_ms else None,
        "matched_copy_counts": dict(sorted(copy_counts.items())),
        "n_tool_match": len(pos_rows),
        "n_negative": len(neg_rows),
        "n_scorable_tool_match": len(scorable),
        "n_unscorable": len(pos_rows) - len(scorable),
        "n_undecided_tool_match": len(pos_rows) - len(pos_decided),
        "n_undecided_negative": len(neg_rows) - len(neg_decided),
        "unscorable": [{"id": r.row_id, "reason": r.reason} for r in pos_rows if r.reason is not None],
        "blip": {"n_frames": n_f, "n_codebooks": n_cb, "cb0_across_frames": signature.cb0_across_frames.tolist(),
                 "frame_rate_hz": signature.frame_rate_hz,
                 "copies": [{"frame_start": c.frame_start, "n_frames": c.n_frames,
                             "cb0_across_frames": signature.copy_cb0_across_frames(i).tolist()}
                            for i, c in enumerate(signature.copies)]},
        "unavailable": unavailable,
    }
    return BlipEmissionReport(metrics=metrics, rows=rows, per_position=per_position)


def _describe(matcher: Matcher) -> str:
    name = type(matcher).__name__
    codebooks = getattr(matcher, "codebooks", None)
    return f"{name}(codebooks={list(codebooks)})" if codebooks is not None else name
