"""The blip's Mimi round trip and its detection signature document.

Training prepends Mimi's *reconstruction* of the blip (the preview) to every
tool_match ack, so the codes the model learns to emit are the codes of the
preview, not of the raw blip. When Mimi's round trip is not a fixed point the
two differ, and a coordinator watching the raw blip's codes would never match.
Used by the ``blip_codes`` stage and by the sweep's pre-screen.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coordinator.constants import MIMI_FRAME_SAMPLES, MIMI_SAMPLE_RATE
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


def signature_document(trip: BlipRoundTrip, detect_codebooks: list[int], hashes: dict[str, str]) -> dict:
    """signature.json: names the axes, the detection target and the provenance."""
    return {
        "axes": list(AXES),
        "shape": list(trip.codes.shape),
        "n_frames": trip.n_frames,
        "n_codebooks": int(trip.codes.shape[1]),
        "detection": {"codebooks": detect_codebooks, "frames": list(range(trip.n_frames))},
        "frame_rate_hz": MIMI_SAMPLE_RATE / MIMI_FRAME_SAMPLES,
        "sample_rate": MIMI_SAMPLE_RATE,
        "cb0_across_frames": trip.codes[0, 0, :].tolist(),
        "roundtrip": {
            "stable_codebooks": trip.stable_codebooks(),
            "raw_cb0_across_frames": trip.raw_codes[0, 0, :].tolist(),
        },
        **hashes,
    }
