"""What counts as "the model emitted the blip": matcher objects.

Why several matchers: the card measured, on 40 held-out tool acks,

============================  ==========
matcher                       match rate
============================  ==========
all 8 codebooks bit-exact     0 %   (deep codebooks drift under bf16)
codebook 0 only               95 %
codebook 0 OR codebook 3      95 %
============================  ==========

so the matcher is a choice recorded with the blip (``detection`` block of the
signature JSON), not a constant. Every matcher is reduced to the same shape,
a :class:`MatchPlan`: a set of *alternatives*, each a tuple of codebooks that
must all equal the blip across every detection frame. The stream matches if
at least one alternative survives all detection frames of at least one of the
blip's copies (``blip.repeats``: any copy is enough, so redundancy helps).

- :class:`FullMatch` — one alternative: all codebooks.
- :class:`CodebookMatch` — one alternative: the listed codebooks (default cb0).
- :class:`AnyOfCodebooks` — one alternative per listed codebook (cb0 OR cb3).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from .signature import BlipSignature, DetectionSpec

# Check kinds in a compiled plan (small ints keep the per-frame loop cheap).
CHECK_ONE = 1  # payload: (codebook, expected code)
CHECK_ALL = 2  # payload: (None, expected list of all codes at this frame)
CHECK_SOME = 3  # payload: (codebooks tuple, expected codes tuple)


@dataclass(frozen=True)
class MatchPlan:
    """A matcher compiled against one signature: what to compare at each frame.

    The blip may have several copies (``BlipSignature.copies``); each
    (copy, codebook group) pair is a *lane*, and the stream matches as soon as
    one lane has matched every detection frame of its copy. ``lanes[j]`` is
    ``(copy_index, alternative_index)``. ``checks[i]`` is ``None`` when no lane
    compares frame ``i``, else one ``(kind, codebooks, expected)`` triple per
    lane (``None`` for a lane that does not compare frame ``i``).
    ``lanes_ending_at[i]`` lists the lanes whose copy is complete at frame
    ``i``; ``last_frame`` is the last frame at which a MATCH can be declared.
    """

    alternatives: tuple[tuple[int, ...], ...]
    frames: tuple[int, ...]
    last_frame: int
    checks: tuple[tuple[tuple[int, object, object] | None, ...] | None, ...]
    lanes: tuple[tuple[int, int], ...] = ()
    lanes_ending_at: tuple[tuple[int, ...], ...] = ()


@dataclass(frozen=True, kw_only=True)
class Matcher(ABC):
    """Base class: decides whether a sequence of audio frames is the blip.

    ``frames=None`` compares every frame of the blip; a tuple restricts the
    comparison to those frame indices (absolute: a copy compares the listed
    frames inside its own span; MATCH is decided at its largest).
    """

    frames: tuple[int, ...] | None = None

    @abstractmethod
    def alternatives(self, n_codebooks: int) -> tuple[tuple[int, ...], ...]:
        """Codebook groups; the stream matches if any group matches on all detection frames of a copy."""

    def plan(self, signature: BlipSignature) -> MatchPlan:
        """Compile against a signature (done once, so ``feed`` does no lookups)."""
        if not isinstance(signature, BlipSignature):
            raise TypeError(
                f"expected a BlipSignature, got {type(signature).__name__}: build it with "
                "BlipSignature.load(...) so the codebook/frame axes cannot be swapped"
            )
        n_cb = signature.n_codebooks
        alts = self.alternatives(n_cb)
        if not alts or any(not a for a in alts):
            raise ValueError(f"{self!r}: needs at least one non-empty codebook group")
        for alt in alts:
            for k in alt:
                if not 0 <= k < n_cb:
                    raise ValueError(f"{self!r}: codebook {k} outside [0, {n_cb})")
        frames = tuple(sorted(set(self.frames))) if self.frames is not None else tuple(range(signature.n_frames))
        if not frames or frames[0] < 0 or frames[-1] >= signature.n_frames:
            raise ValueError(f"{self!r}: frames {self.frames} outside [0, {signature.n_frames})")
        copy_frames = [(c, tuple(f for f in frames if f in copy.frames)) for c, copy in enumerate(signature.copies)]
        copy_frames = [(c, fs) for c, fs in copy_frames if fs]  # a copy with no detection frame is not watched
        lanes = tuple((c, a) for c, _ in copy_frames for a in range(len(alts)))
        lane_frames = [fs for _, fs in copy_frames for _ in alts]
        last_frame = max(fs[-1] for fs in lane_frames)
        all_cbs = tuple(range(n_cb))
        checks: list[tuple[tuple[int, object, object] | None, ...] | None] = []
        for i in range(last_frame + 1):
            if i not in frames:
                checks.append(None)
                continue
            column = signature.all_codebooks_at_frame(i)  # codes of frame i, indexed by codebook
            per_lane: list[tuple[int, object, object] | None] = []
            for (_, a), fs in zip(lanes, lane_frames):
                alt = alts[a]
                if i not in fs:
                    per_lane.append(None)
                elif len(alt) == 1:
                    per_lane.append((CHECK_ONE, alt[0], int(column[alt[0]])))
                elif tuple(sorted(alt)) == all_cbs:
                    per_lane.append((CHECK_ALL, None, [int(c) for c in column]))
                else:
                    per_lane.append((CHECK_SOME, tuple(alt), tuple(int(column[k]) for k in alt)))
            checks.append(tuple(per_lane))
        ending = tuple(tuple(j for j, fs in enumerate(lane_frames) if fs[-1] == i) for i in range(last_frame + 1))
        return MatchPlan(alternatives=alts, frames=frames, last_frame=last_frame, checks=tuple(checks),
                         lanes=lanes, lanes_ending_at=ending)

    def matching_copy(self, signature: BlipSignature, window: np.ndarray) -> int | None:
        """Offline oracle: the first copy that ``window`` (n_codebooks, n_frames of the reply's
        opening) reproduces on some codebook group, or None.

        Why: a slow, obviously-correct reference the streaming detector is
        tested against. A copy the window is too short for cannot match.
        """
        plan = self.plan(signature)
        window = np.asarray(window)
        if window.ndim != 2 or window.shape[0] != signature.n_codebooks:
            return None
        for copy_index, copy in enumerate(signature.copies):
            copy_frames = [i for i in plan.frames if i in copy.frames]
            if not copy_frames or window.shape[1] <= copy_frames[-1]:
                continue
            for alt in plan.alternatives:
                if all(int(window[k, i]) == signature.code(codebook=k, frame=i) for i in copy_frames for k in alt):
                    return copy_index
        return None

    def matches(self, signature: BlipSignature, window: np.ndarray) -> bool:
        """Offline oracle: does ``window`` reproduce any copy of the blip? (see :meth:`matching_copy`)."""
        return self.matching_copy(signature, window) is not None


@dataclass(frozen=True, kw_only=True)
class FullMatch(Matcher):
    """All codebooks bit-exact. Strictest; the card measured 0% on real outputs."""

    def alternatives(self, n_codebooks: int) -> tuple[tuple[int, ...], ...]:
        return (tuple(range(n_codebooks)),)


@dataclass(frozen=True, kw_only=True)
class CodebookMatch(Matcher):
    """Only the listed codebooks, all of them, must match (default: semantic cb0, 95%)."""

    codebooks: tuple[int, ...] = (0,)

    def alternatives(self, n_codebooks: int) -> tuple[tuple[int, ...], ...]:
        return (tuple(self.codebooks),)


@dataclass(frozen=True, kw_only=True)
class AnyOfCodebooks(Matcher):
    """Matches if ANY one listed codebook matches across all detection frames (cb0 OR cb3)."""

    codebooks: tuple[int, ...] = (0, 3)

    def alternatives(self, n_codebooks: int) -> tuple[tuple[int, ...], ...]:
        return tuple((k,) for k in self.codebooks)


def matcher_from_detection(spec: DetectionSpec, n_codebooks: int) -> Matcher:
    """Factory: the signature's ``detection`` block -> a matcher.

    One codebook -> ``CodebookMatch``. Several codebooks are alternatives by
    default (``mode: "any"``, ``[0, 3]`` = cb0 OR cb3 -> ``AnyOfCodebooks``);
    ``mode: "all"`` -> all must match (``FullMatch`` when that is every codebook,
    else ``CodebookMatch``).
    """
    frames = spec.frames
    cbs = tuple(spec.codebooks)
    if len(cbs) == 1:
        return CodebookMatch(codebooks=cbs, frames=frames)
    if spec.mode == "any":
        return AnyOfCodebooks(codebooks=cbs, frames=frames)
    if tuple(sorted(cbs)) == tuple(range(n_codebooks)):
        return FullMatch(frames=frames)
    return CodebookMatch(codebooks=cbs, frames=frames)


def matcher_from_signature(signature: BlipSignature) -> Matcher:
    """The matcher the blip's own signature asks for."""
    return matcher_from_detection(signature.detection, signature.n_codebooks)
