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
                                             "blip_sha256": ..., "mimi_sha256": ...,
                                             "codes_sha256": sha256 of the .npy bytes}

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
        return cls(
            _codes=cf,
            detection=spec,
            frame_rate_hz=float(frame_rate_hz),
            sample_rate=int(sample_rate),
            blip_sha256=provenance.get("blip_sha256"),
            mimi_sha256=provenance.get("mimi_sha256"),
            codes_sha256=provenance.get("codes_sha256"),
            source=source,
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
        signature = cls.from_codes(
            arr,
            detection=spec,
            frame_rate_hz=float(key("frame_rate_hz", (int, float))),
            sample_rate=key("sample_rate", int),
            source=str(npy),
            blip_sha256=meta.get("blip_sha256"),
            mimi_sha256=meta.get("mimi_sha256"),
            codes_sha256=actual_sha,
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
    def detection_latency_ms(self) -> float:
        """Audio time until a full match can be confirmed (last detection frame + 1 frames)."""
        frames = self.detection.frames or tuple(range(self.n_frames))
        return (max(frames) + 1) * 1000.0 / self.frame_rate_hz


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
