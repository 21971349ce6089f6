"""Streaming blip detector: one Mimi frame in, a decision out, as early as possible.

Why streaming instead of the card's "buffer 2 frames, then compare": a non-tool
turn opens with a different codebook-0 code at frame 0 (card: ``1049`` vs the
blip's ``430``), so the miss is known one frame (80 ms) earlier; and a turn
whose audio ends, or whose text ends, before the blip's frames arrived must be
a miss rather than "still waiting" (the card's loop would wait forever).

Decisions are sticky: once MATCH or NO_MATCH, every later ``feed`` returns the
same :class:`Decision` object, so the blip pattern reappearing later in the ack
can never produce a second match.

A blip of several copies (``blip.repeats``) matches on ANY copy: the first
copy is compared from frame 0, a later copy at its own frames, and the
decision says which copy matched (``copy_index``) and at which frame. A
mismatch in copy 0 therefore only ends the turn once every later copy has
failed too (or the audio ended before it).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from .matchers import CHECK_ALL, CHECK_ONE, Matcher, matcher_from_signature
from .constants import END_OF_AUDIO_CODE
from .signature import BlipSignature


class DecisionState(str, Enum):
    PENDING = "pending"
    MATCH = "match"
    NO_MATCH = "no_match"


class DecisionReason(str, Enum):
    MATCHED = "matched"  # every detection frame of one copy matched
    MISMATCH = "mismatch"  # a compared code differed (all alternatives ruled out)
    END_OF_AUDIO = "end_of_audio"  # codebook 0 == 2048 before the blip's frames were all seen
    END_OF_TURN = "end_of_turn"  # text-only end / stream exhausted before the blip's frames


@dataclass(frozen=True, slots=True)
class Decision:
    """Outcome so far. ``frame_index`` is the 0-based audio frame at which it was decided.

    For ``END_OF_TURN`` no frame triggered the decision; ``frame_index`` is then
    the number of audio frames seen (the index the missing frame would have had).
    ``matched_codebooks`` lists the codebook groups that matched (useful for
    ``AnyOfCodebooks``: was it cb0 or cb3?). ``copy_index`` is the blip copy
    that matched (0 = the first; None unless MATCH).
    """

    state: DecisionState
    frame_index: int | None = None
    reason: DecisionReason | None = None
    matched_codebooks: tuple[tuple[int, ...], ...] = ()
    copy_index: int | None = None

    @property
    def decided(self) -> bool:
        return self.state is not DecisionState.PENDING

    @property
    def is_match(self) -> bool:
        return self.state is DecisionState.MATCH


PENDING = Decision(DecisionState.PENDING)
_INT64 = np.dtype(np.int64)


class StreamingBlipDetector:
    """Feed audio frames one at a time (shape ``(n_codebooks,)`` integer codes).

    Cost per frame is a few hundred nanoseconds: the matcher is compiled to
    plain Python ints once, each frame is read with ``ndarray.item`` (no
    temporary arrays), and after the decision ``feed`` only counts frames.
    """

    __slots__ = (
        "signature", "matcher", "_plan", "_checks", "_ending", "_last", "_n_lanes", "_n_cb", "_shape",
        "_alive", "_all_alive", "_n_alive", "_decision", "_n_fed", "_memo",
    )

    def __init__(self, signature: BlipSignature, matcher: Matcher | None = None) -> None:
        if not isinstance(signature, BlipSignature):
            raise TypeError(
                f"StreamingBlipDetector needs a BlipSignature, got {type(signature).__name__} "
                "(a raw array is exactly how the card's wrong-index pitfall happens)"
            )
        self.signature = signature
        self.matcher = matcher if matcher is not None else matcher_from_signature(signature)
        self._plan = self.matcher.plan(signature)
        self._checks = self._plan.checks
        self._ending = self._plan.lanes_ending_at
        self._last = self._plan.last_frame
        self._n_lanes = len(self._plan.lanes)
        self._n_cb = signature.n_codebooks
        self._shape = (self._n_cb,)
        self._all_alive = [True] * self._n_lanes
        self._alive = list(self._all_alive)
        # Decisions are immutable, so identical ones are built once and reused:
        # a frozen dataclass costs ~1 µs to construct, more than a whole frame.
        self._memo: dict[tuple, Decision] = {}
        self.reset()

    def reset(self) -> None:
        """Start a new turn (reuses the compiled plan)."""
        self._alive[:] = self._all_alive
        self._n_alive = self._n_lanes
        self._decision = PENDING
        self._n_fed = 0

    @property
    def decision(self) -> Decision:
        return self._decision

    @property
    def frames_fed(self) -> int:
        return self._n_fed

    def feed(self, frame: np.ndarray) -> Decision:
        """Consume the next audio frame; return the (possibly still PENDING) decision."""
        i = self._n_fed
        self._n_fed = i + 1
        if self._decision is not PENDING:
            return self._decision
        if type(frame) is not np.ndarray or frame.dtype is not _INT64 or frame.shape != self._shape:
            frame = self._coerce(frame)  # slow path: lists, other int dtypes, (1, 8), bad input
        if frame.item(0) == END_OF_AUDIO_CODE:
            return self._decide(DecisionState.NO_MATCH, i, DecisionReason.END_OF_AUDIO)
        if i > self._last:  # unreachable once every lane has ended, kept as a guard
            return self._decide(DecisionState.NO_MATCH, i, DecisionReason.MISMATCH)
        checks = self._checks[i]
        alive = self._alive
        if checks is not None:
            for a in range(self._n_lanes):
                if not alive[a]:
                    continue
                check = checks[a]
                if check is None:
                    continue
                kind, where, expected = check
                if kind == CHECK_ONE:
                    ok = frame.item(where) == expected
                elif kind == CHECK_ALL:
                    ok = frame.tolist() == expected
                else:
                    ok = True
                    for k, v in zip(where, expected):
                        if frame.item(k) != v:
                            ok = False
                            break
                if not ok:
                    alive[a] = False
                    self._n_alive -= 1
            if self._n_alive == 0:
                return self._decide(DecisionState.NO_MATCH, i, DecisionReason.MISMATCH)
        for lane in self._ending[i]:
            if alive[lane]:
                return self._decide(DecisionState.MATCH, i, DecisionReason.MATCHED, self._plan.lanes[lane][0])
        return PENDING

    def end_of_turn(self) -> Decision:
        """The turn ended without more audio (text-only end, ``<|im_end|>``, stream exhausted)."""
        if self._decision is PENDING:
            return self._decide(DecisionState.NO_MATCH, self._n_fed, DecisionReason.END_OF_TURN)
        return self._decision

    # ------------------------------------------------------------------ helpers
    def _decide(
        self, state: DecisionState, index: int, reason: DecisionReason, copy_index: int | None = None
    ) -> Decision:
        matched: tuple[tuple[int, ...], ...] = ()
        if state is DecisionState.MATCH:
            alts = self._plan.alternatives
            matched = tuple(
                alts[a] for (c, a), ok in zip(self._plan.lanes, self._alive) if ok and c == copy_index
            )
        key = (state, index, reason, matched, copy_index)
        decision = self._memo.get(key)
        if decision is None:
            decision = self._memo[key] = Decision(state, index, reason, matched, copy_index)
        self._decision = decision
        return decision

    def _coerce(self, frame: object) -> np.ndarray:
        arr = np.asarray(frame).reshape(-1)
        if arr.shape != self._shape:
            raise ValueError(
                f"audio frame {self._n_fed - 1}: expected {self._n_cb} codes, got shape {np.shape(frame)}"
            )
        if arr.dtype.kind not in "iu":
            raise ValueError(f"audio frame {self._n_fed - 1}: codes must be integers, got dtype {arr.dtype}")
        return arr
