"""The blip's Mimi codes, loaded once and read only through named accessors.

Why this module exists: the v4.1 card's recipe stores the blip as a
``(1, 8, F)`` array (batch, codebook, frame) and tells you to index
``blip.squeeze(0)[0]``. The near-identical ``blip.squeeze(0)[:, 0]`` reads
*all codebooks at frame 0* instead of *codebook 0 across frames* and gives a
0% match rate that looks like a broken model. ``BlipSignature`` never hands
out the raw array: callers ask for ``cb0_across_frames`` or
``all_codebooks_at_frame(i)`` by name, so the axis is always explicit.

On-disk contract (written by the ``blip_codes`` stage)::

    data/blips/tool_invoke.codes.npy        int64, shape (1, 8, F)
    data/blips/tool_invoke.signature.json   {"axes": ["batch", "codebook", "frame"],
                                             "shape": [1, 8, F], "n_frames": F,
                                             "n_codebooks": 8,
                                             "detection": {"codebooks": [0], "frames": [0, 1]},
                                             "frame_rate_hz": 12.5, "sample_rate": 24000,
                                             "cb0_across_frames": [...],  # the WHOLE blip
                                             "copies": [{"frame_start": 0, "n_frames": 2,
                                                         "cb0_across_frames": [...]}, ...],
                                             "blip_sha256": ..., "mimi_sha256": ...,
                                             "codes_sha256": sha256 of the .npy bytes}

``copies`` (optional; absent = one copy spanning the whole blip, as before)
lists the frame span of each repeat of a ``blip.repeats`` blip. The detector
fires on ANY copy: the first at frame 0, a later one at its own offset, so one
badly reproduced copy no longer turns the whole blip into a miss. A copy's
codes are the blip's codes over its span (a copy that does not start on a
frame boundary has its own codes, hence a span, not a shift); its
``cb0_across_frames`` is cross-checked against the .npy. The top-level
``cb0_across_frames`` stays the whole blip's, for older readers.

Several codebooks in ``detection.codebooks`` are alternatives (``[0, 3]`` =
cb0 OR cb3, as ``params.yaml``'s ``blip_codes.detect_codebooks`` documents);
an optional ``"mode": "all"`` asks for all of them instead (``FullMatch`` when
that is every codebook). See ``coordinator.matchers``. Extra top-level keys
written by the stage (``roundtrip``, ``preview_sha256``...) are ignored, except
``cb0_across_frames``, which is cross-checked against the .npy.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .constants import END_OF_AUDIO_CODE, MIMI_FRAME_RATE_HZ, MIMI_SAMPLE_RATE

AXES = ("batch", "codebook", "frame")
DetectionMode = Literal["all", "any"]


class SignatureError(ValueError):
    """The blip codes or their signature are unusable; the message names the file and key."""


@dataclass(frozen=True)
class DetectionSpec:
    """Which codebooks and frames of the blip the detector compares.

    Why: the card's measurements show that only the semantic codebook 0 is
    reproduced reliably by the bf16 fine-tune (cb0 98%, cb3 94%, cb5 0%), so
    the stage that writes the blip records what is worth matching.
    """

    codebooks: tuple[int, ...] = (0,)
    frames: tuple[int, ...] | None = None  # None = every frame of the blip
    mode: DetectionMode = "any"  # how several codebooks combine: "any" = OR, "all" = AND

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"codebooks": list(self.codebooks)}
        if self.frames is not None:
            out["frames"] = list(self.frames)
        if self.mode != "any":
            out["mode"] = self.mode
        return out


@dataclass(frozen=True)
class BlipCopy:
    """One repeat of the blip: the frames ``frame_start .. frame_start + n_frames - 1`` of the whole blip."""

    frame_start: int
    n_frames: int

    @property
    def frame_stop(self) -> int:
        """One past the copy's last frame."""
        return self.frame_start + self.n_frames

    @property
    def frames(self) -> range:
        return range(self.frame_start, self.frame_stop)


@dataclass(frozen=True, eq=False)
class BlipSignature:
    """The blip's codes as (codebook, frame), read-only, plus provenance.

    Build with :meth:`load` (files) or :meth:`from_codes` (an in-memory
    ``(1, n_codebooks, n_frames)`` array). Read with the named accessors; there
    is deliberately no ``__getitem__`` and no public array attribute.
    """

    _codes: np.ndarray = field(repr=False)  # (codebook, frame), read-only
    detection: DetectionSpec = DetectionSpec()
    frame_rate_hz: float = MIMI_FRAME_RATE_HZ
    sample_rate: int = MIMI_SAMPLE_RATE
    blip_sha256: str | None = None
    mimi_sha256: str | None = None
    codes_sha256: str | None = None
    source: str | None = None  # the .npy path it was loaded from, for messages
    copies: tuple[BlipCopy, ...] = ()  # the repeats' frame spans; from_codes defaults to one whole copy

    # ------------------------------------------------------------------ build
    @classmethod
    def from_codes(
        cls,
        codes: np.ndarray,
        *,
        detection: DetectionSpec | None = None,
        frame_rate_hz: float = MIMI_FRAME_RATE_HZ,
        sample_rate: int = MIMI_SAMPLE_RATE,
        source: str | None = None,
        copies: tuple[BlipCopy, ...] | None = None,
        **provenance: str | None,
    ) -> "BlipSignature":
        """Wrap an array laid out exactly like the .npy file: (batch=1, codebook, frame).

        Why only 3-D: accepting a squeezed 2-D array would reintroduce the
        guess about which axis is which that this class exists to remove.
        """
        where = source or "codes"
        arr = np.asarray(codes)
        if arr.ndim != 3 or arr.shape[0] != 1:
            raise SignatureError(
                f"{where}: expected shape (1, n_codebooks, n_frames) = {AXES}, got {arr.shape}"
            )
        if arr.dtype.kind not in "iu":
            raise SignatureError(f"{where}: codes must be integers, got dtype {arr.dtype}")
        if arr.shape[1] < 1 or arr.shape[2] < 1:
            raise SignatureError(f"{where}: empty codes array {arr.shape}")
        if arr.min() < 0 or arr.max() >= END_OF_AUDIO_CODE:
            raise SignatureError(
                f"{where}: codes must lie in [0, {END_OF_AUDIO_CODE - 1}] "
                f"({END_OF_AUDIO_CODE} is the end-of-audio marker), got [{arr.min()}, {arr.max()}]"
            )
        cf = np.array(arr[0], dtype=np.int64, copy=True)  # (codebook, frame)
        cf.setflags(write=False)
        n_codebooks, n_frames = cf.shape
        spec = detection or DetectionSpec(codebooks=(0,), frames=None)
        _check_detection(spec, n_codebooks, n_frames, where)
        spans = tuple(copies) if copies else (BlipCopy(0, n_frames),)
        _check_copies(spans, n_frames, where)
        return cls(
            _codes=cf,
            detection=spec,
            frame_rate_hz=float(frame_rate_hz),
            sample_rate=int(sample_rate),
            blip_sha256=provenance.get("blip_sha256"),
            mimi_sha256=provenance.get("mimi_sha256"),
            codes_sha256=provenance.get("codes_sha256"),
            source=source,
            copies=spans,
        )

    @classmethod
    def load(
        cls, codes_npy_path: str | os.PathLike, signature_json_path: str | os.PathLike
    ) -> "BlipSignature":
        """Load and cross-check ``tool_invoke.codes.npy`` against its signature JSON.

        Why the checks: a stale or hand-edited codes file silently turns every
        tool ack into a miss; failing loudly at startup is cheaper.
        """
        npy = Path(codes_npy_path)
        sig_path = Path(signature_json_path)
        try:
            raw = npy.read_bytes()
        except FileNotFoundError:
            raise SignatureError(f"{npy}: blip codes file not found") from None
        try:
            meta = json.loads(sig_path.read_text())
        except FileNotFoundError:
            raise SignatureError(f"{sig_path}: signature file not found") from None
        except json.JSONDecodeError as err:
            raise SignatureError(f"{sig_path}:{err.lineno}: invalid JSON ({err.msg})") from None
        if not isinstance(meta, dict):
            raise SignatureError(f"{sig_path}: expected a JSON object")

        def key(name: str, kind: type | tuple[type, ...]) -> Any:
            if name not in meta:
                raise SignatureError(f"{sig_path}: missing key '{name}'")
            value = meta[name]
            if not isinstance(value, kind) or isinstance(value, bool):
                raise SignatureError(f"{sig_path}: key '{name}' has wrong type: {value!r}")
            return value

        expected_sha = key("codes_sha256", str)
        actual_sha = hashlib.sha256(raw).hexdigest()
        if actual_sha != expected_sha.lower():
            raise SignatureError(
                f"{npy}: sha256 {actual_sha} does not match codes_sha256 {expected_sha} "
                f"recorded in {sig_path} (codes file changed or corrupted; rerun the blip_codes stage)"
            )
        try:
            arr = np.load(io.BytesIO(raw), allow_pickle=False)
        except Exception as err:  # noqa: BLE001 - any parse failure is a bad file
            raise SignatureError(f"{npy}: not a readable .npy array ({err})") from None

        axes = key("axes", list)
        if tuple(axes) != AXES:
            raise SignatureError(f"{sig_path}: key 'axes' must be {list(AXES)}, got {axes}")
        shape = tuple(key("shape", list))
        if shape != tuple(arr.shape):
            raise SignatureError(
                f"{sig_path}: key 'shape' {list(shape)} disagrees with {npy} shape {list(arr.shape)}"
            )
        if arr.ndim == 3:
            if key("n_codebooks", int) != arr.shape[1]:
                raise SignatureError(
                    f"{sig_path}: key 'n_codebooks' {meta['n_codebooks']} disagrees with {npy} shape {list(arr.shape)}"
                )
            if key("n_frames", int) != arr.shape[2]:
                raise SignatureError(
                    f"{sig_path}: key 'n_frames' {meta['n_frames']} disagrees with {npy} shape {list(arr.shape)}"
                )
        spec = _parse_detection(key("detection", dict), sig_path)
        copies_block = meta.get("copies")
        recorded_copies = None if copies_block is None else _parse_copies(copies_block, sig_path)
        signature = cls.from_codes(
            arr,
            detection=spec,
            frame_rate_hz=float(key("frame_rate_hz", (int, float))),
            sample_rate=key("sample_rate", int),
            source=str(npy),
            blip_sha256=meta.get("blip_sha256"),
            mimi_sha256=meta.get("mimi_sha256"),
            codes_sha256=actual_sha,
            copies=None if recorded_copies is None else tuple(c for c, _ in recorded_copies),
        )
        for i, (copy, cb0) in enumerate(recorded_copies or ()):
            if cb0 is not None and cb0 != signature.copy_cb0_across_frames(i).tolist():
                raise SignatureError(
                    f"{sig_path}: key 'copies[{i}].cb0_across_frames' {cb0} disagrees with {npy} "
                    f"codebook 0 over frames {copy.frame_start}..{copy.frame_stop - 1} "
                    f"{signature.copy_cb0_across_frames(i).tolist()}"
                )
        recorded_cb0 = meta.get("cb0_across_frames")
        if recorded_cb0 is not None and list(recorded_cb0) != signature.cb0_across_frames.tolist():
            raise SignatureError(
                f"{sig_path}: key 'cb0_across_frames' {recorded_cb0} disagrees with {npy} "
                f"codebook 0 across frames {signature.cb0_across_frames.tolist()}"
            )
        return signature

    # -------------------------------------------------------------- accessors
    @property
    def n_frames(self) -> int:
        """Number of Mimi frames in the blip (2 = 160 ms at 12.5 Hz)."""
        return int(self._codes.shape[1])

    @property
    def n_codebooks(self) -> int:
        """Number of Mimi codebooks per frame (8 for LFM2.5-Audio)."""
        return int(self._codes.shape[0])

    @property
    def cb0_across_frames(self) -> np.ndarray:
        """Codebook 0 over frames 0..F-1, shape (F,): THE detection target (card: ``[430, 127]``)."""
        return self.codebook_across_frames(0)

    def codebook_across_frames(self, k: int) -> np.ndarray:
        """Codebook ``k`` over frames 0..F-1, shape (F,), read-only."""
        if not 0 <= k < self.n_codebooks:
            raise IndexError(f"codebook {k} out of range [0, {self.n_codebooks})")
        return self._codes[k, :]

    def all_codebooks_at_frame(self, i: int) -> np.ndarray:
        """All codebooks at frame ``i``, shape (n_codebooks,), read-only.

        NOT the detection target: this is the card's pitfall
        ``blip.squeeze(0)[:, 0]`` (``[430, 13, 1903, 1548, ...]``). It is what a
        whole-frame comparison (``FullMatch``) uses, which the card measured at
        0% because the deep codebooks drift.
        """
        if not 0 <= i < self.n_frames:
            raise IndexError(f"frame {i} out of range [0, {self.n_frames})")
        return self._codes[:, i]

    def code(self, *, codebook: int, frame: int) -> int:
        """One code, addressed by keyword so the axis order cannot be confused."""
        return int(self.codebook_across_frames(codebook)[frame])

    def as_npy_layout(self) -> np.ndarray:
        """A fresh (1, n_codebooks, n_frames) int64 copy, the on-disk layout (for writers/tests)."""
        return self._codes[np.newaxis].copy()

    @property
    def n_copies(self) -> int:
        """How many repeats the blip has (1 unless ``blip.repeats`` > 1 wrote ``copies``)."""
        return len(self.copies)

    def copy_cb0_across_frames(self, copy_index: int) -> np.ndarray:
        """Codebook 0 over copy ``copy_index``'s own frames, shape (copy n_frames,), read-only."""
        copy = self.copies[copy_index]
        return self._codes[0, copy.frame_start : copy.frame_stop]

    def copy_index_at_frame(self, frame: int) -> int | None:
        """The first copy whose span contains ``frame`` (None for a frame outside every copy)."""
        for i, copy in enumerate(self.copies):
            if frame in copy.frames:
                return i
        return None

    @property
    def detection_latency_ms(self) -> float:
        """Audio time until a full match of the FIRST copy can be confirmed (its last detection frame + 1)."""
        first = self.copies[0].frames
        frames = [f for f in (self.detection.frames or first) if f in first] or list(first)
        return (max(frames) + 1) * 1000.0 / self.frame_rate_hz


def _parse_copies(block: Any, where: Path) -> list[tuple[BlipCopy, list[int] | None]]:
    """The ``copies`` list -> (span, recorded cb0 or None) per copy; shapes checked, codes later."""
    if not isinstance(block, list) or not block:
        raise SignatureError(f"{where}: 'copies' must be a non-empty list, got {block!r}")
    parsed = []
    for i, entry in enumerate(block):
        if not isinstance(entry, dict) or set(entry) - {"frame_start", "n_frames", "cb0_across_frames"}:
            raise SignatureError(
                f"{where}: 'copies[{i}]' must be an object with frame_start, n_frames[, cb0_across_frames], got {entry!r}"
            )
        numbers = [entry.get("frame_start"), entry.get("n_frames")]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in numbers):
            raise SignatureError(f"{where}: 'copies[{i}]' frame_start and n_frames must be ints, got {entry!r}")
        cb0 = entry.get("cb0_across_frames")
        if cb0 is not None and (not isinstance(cb0, list) or not all(isinstance(c, int) for c in cb0)):
            raise SignatureError(f"{where}: 'copies[{i}].cb0_across_frames' must be a list of ints, got {cb0!r}")
        parsed.append((BlipCopy(*numbers), cb0))
    return parsed


def _check_copies(copies: tuple[BlipCopy, ...], n_frames: int, where: str) -> None:
    for i, copy in enumerate(copies):
        if copy.n_frames < 1 or copy.frame_start < 0 or copy.frame_stop > n_frames:
            raise SignatureError(
                f"{where}: copy {i} spans frames {copy.frame_start}..{copy.frame_stop - 1}, outside the blip's "
                f"frames 0..{n_frames - 1}"
            )
    if copies[0].frame_start != 0:
        raise SignatureError(f"{where}: the first copy must start at frame 0, got {copies[0].frame_start}")
    starts = [c.frame_start for c in copies]
    if starts != sorted(set(starts)):
        raise SignatureError(f"{where}: copies must start at increasing frames, got {starts}")


def _parse_detection(block: dict[str, Any], where: Path) -> DetectionSpec:
    known = {"codebooks", "frames", "mode"}
    unknown = set(block) - known
    if unknown:
        raise SignatureError(f"{where}: unknown key(s) in 'detection': {sorted(unknown)}")
    cbs = block.get("codebooks")
    if not isinstance(cbs, list) or not cbs or not all(isinstance(c, int) and not isinstance(c, bool) for c in cbs):
        raise SignatureError(f"{where}: 'detection.codebooks' must be a non-empty list of ints, got {cbs!r}")
    frames = block.get("frames")
    if frames is not None and (
        not isinstance(frames, list) or not frames
        or not all(isinstance(f, int) and not isinstance(f, bool) for f in frames)
    ):
        raise SignatureError(f"{where}: 'detection.frames' must be a non-empty list of ints, got {frames!r}")
    mode = block.get("mode", "any")
    if mode not in ("all", "any"):
        raise SignatureError(f"{where}: 'detection.mode' must be 'all' or 'any', got {mode!r}")
    return DetectionSpec(
        codebooks=tuple(cbs), frames=None if frames is None else tuple(frames), mode=mode
    )


def _check_detection(spec: DetectionSpec, n_codebooks: int, n_frames: int, where: str) -> None:
    if not spec.codebooks or len(set(spec.codebooks)) != len(spec.codebooks):
        raise SignatureError(f"{where}: 'detection.codebooks' must be non-empty and unique: {spec.codebooks}")
    bad = [c for c in spec.codebooks if not 0 <= c < n_codebooks]
    if bad:
        raise SignatureError(f"{where}: 'detection.codebooks' {bad} outside [0, {n_codebooks})")
    if spec.frames is not None:
        if not spec.frames or len(set(spec.frames)) != len(spec.frames):
            raise SignatureError(f"{where}: 'detection.frames' must be non-empty and unique: {spec.frames}")
        bad = [f for f in spec.frames if not 0 <= f < n_frames]
        if bad:
            raise SignatureError(f"{where}: 'detection.frames' {bad} outside [0, {n_frames})")
