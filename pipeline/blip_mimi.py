"""The blip's Mimi round trip and its detection signature document.

Training prepends Mimi's *reconstruction* of the blip (the preview) to every
tool_match ack, so the codes the model learns to emit are the codes of the
preview, not of the raw blip. When Mimi's round trip is not a fixed point the
two differ, and a coordinator watching the raw blip's codes would never match.
Used by the ``blip_codes`` stage and by the sweep's pre-screen.

A blip of ``repeats`` copies records each copy's frame span (``copies``), so
the coordinator can fire on any copy. A copy that does not start on a frame
boundary (e.g. 160 ms cues with a 40 ms gap: copy 1 starts at frame 2.5) has
codes of its own, so its span is the frames its samples touch and its codes
are the preview's codes there, never a shifted copy of the first.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coordinator.constants import MIMI_FRAME_SAMPLES, MIMI_SAMPLE_RATE
from coordinator.signature import BlipCopy
from pipeline.audio import to_int16
from pipeline.models import decode_codes, encode_codes

AXES = ("batch", "codebook", "frame")


@dataclass(frozen=True)
class BlipRoundTrip:
    raw_codes: np.ndarray  # (1, 8, F): codes of the synthesised blip
    preview: np.ndarray  # int16 at 24 kHz: Mimi's reconstruction, F whole frames long
    codes: np.ndarray  # (1, 8, F): codes of the preview = what the model is trained to emit

    @property
    def n_frames(self) -> int:
        return int(self.codes.shape[2])

    def stable_codebooks(self) -> list[int]:
        """Codebooks whose codes survive the round trip unchanged in every frame."""
        same = (self.raw_codes == self.codes).all(axis=2)[0]
        return [int(k) for k in np.flatnonzero(same)]


def round_trip(mimi, blip: np.ndarray, sample_rate: int) -> BlipRoundTrip:
    """Encode the blip, decode it (the preview), encode the preview again."""
    raw_codes = encode_codes(mimi, blip, sample_rate)
    # The preview is stored as 16-bit PCM: encode exactly those samples, as training will.
    preview = to_int16(decode_codes(mimi, raw_codes)[: raw_codes.shape[2] * MIMI_FRAME_SAMPLES])
    codes = encode_codes(mimi, preview, MIMI_SAMPLE_RATE)
    if codes.shape != raw_codes.shape:
        raise RuntimeError(f"preview encodes to {codes.shape}, raw blip to {raw_codes.shape}: frame count changed")
    return BlipRoundTrip(raw_codes=raw_codes, preview=preview, codes=codes)


def copy_spans(repeats: int, duration_ms: float, gap_ms: float, n_frames: int) -> tuple[BlipCopy, ...]:
    """The Mimi frames each of ``repeats`` cues (``duration_ms`` each, ``gap_ms`` apart) touches.

    One cue is the whole blip (all ``n_frames``). A later cue starts in the
    frame holding its first sample and ends in the frame holding its last,
    clipped to the blip's frames.
    """
    if repeats == 1:
        return (BlipCopy(0, n_frames),)
    samples_per_ms = MIMI_SAMPLE_RATE / 1000
    spans = []
    for i in range(repeats):
        start = round(i * (duration_ms + gap_ms) * samples_per_ms)
        stop = start + round(duration_ms * samples_per_ms)
        first, end = start // MIMI_FRAME_SAMPLES, min(n_frames, -(-stop // MIMI_FRAME_SAMPLES))
        if first < end:
            spans.append(BlipCopy(first, end - first))
    return tuple(spans)


def signature_document(trip: BlipRoundTrip, detect_codebooks: list[int], hashes: dict[str, str],
                       copies: tuple[BlipCopy, ...] | None = None) -> dict:
    """signature.json: names the axes, the detection target, the copies and the provenance.

    ``copies`` defaults to one copy spanning the whole blip. The top-level
    ``cb0_across_frames`` is the WHOLE blip's (kept for older readers); each
    copy's own codebook 0 is under ``copies[i].cb0_across_frames``.
    """
    copies = copies or (BlipCopy(0, trip.n_frames),)
    return {
        "axes": list(AXES),
        "shape": list(trip.codes.shape),
        "n_frames": trip.n_frames,
        "n_codebooks": int(trip.codes.shape[1]),
        "detection": {"codebooks": detect_codebooks, "frames": list(range(trip.n_frames))},
        "frame_rate_hz": MIMI_SAMPLE_RATE / MIMI_FRAME_SAMPLES,
        "sample_rate": MIMI_SAMPLE_RATE,
        "cb0_across_frames": trip.codes[0, 0, :].tolist(),
        "copies": [{"frame_start": c.frame_start, "n_frames": c.n_frames,
                    "cb0_across_frames": trip.codes[0, 0, c.frame_start : c.frame_stop].tolist()} for c in copies],
        "roundtrip": {
            "stable_codebooks": trip.stable_codebooks(),
            "raw_cb0_across_frames": trip.raw_codes[0, 0, :].tolist(),
        },
        **hashes,
    }
