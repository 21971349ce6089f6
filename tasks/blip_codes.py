"""Stage `blip_codes`: the blip's Mimi round trip and the detection signature.

Training prepends Mimi's *reconstruction* of the blip (preview.wav) to every
tool_match ack, so the codes the model learns to emit are the codes of the
preview, not of the raw blip. When Mimi's round trip is not a fixed point the
two differ, and a coordinator watching the raw blip's codes would never match.
So ``codes.npy`` holds the codes of the preview (what training sees), and the
signature records whether the round trip was stable, codebook by codebook.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.audio import read_wav, to_int16, write_wav
from pipeline.io import ParamsError, atomic_path, load_params, sha256_file, write_json
from pipeline.models import MIMI_FRAME_SAMPLES, MIMI_SAMPLE_RATE, decode_codes, encode_codes, load_mimi
from pipeline.mimi_config import MIMI_WEIGHTS_NAME

BLIP_WAV = Path("data/blips/tool_invoke.wav")
CODES_NPY = Path("data/blips/tool_invoke.codes.npy")
PREVIEW_WAV = Path("data/blips/tool_invoke.preview.wav")
SIGNATURE_JSON = Path("data/blips/tool_invoke.signature.json")
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


def run(blip_wav: Path, model_dir: Path, detect_codebooks: list[int]) -> dict:
    if not detect_codebooks or any(not isinstance(k, int) or not 0 <= k < 8 for k in detect_codebooks):
        raise ParamsError(f"params.yaml: 'blip_codes.detect_codebooks' must list codebooks in 0..7, got {detect_codebooks!r}")
    blip, sample_rate = read_wav(blip_wav)
    mimi = load_mimi(model_dir)
    trip = round_trip(mimi, blip, sample_rate)

    with atomic_path(CODES_NPY) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, trip.codes)
    write_wav(PREVIEW_WAV, trip.preview, MIMI_SAMPLE_RATE)
    hashes = {
        "blip_sha256": sha256_file(blip_wav),
        "mimi_sha256": sha256_file(Path(model_dir) / MIMI_WEIGHTS_NAME),
        "codes_sha256": sha256_file(CODES_NPY),
        "preview_sha256": sha256_file(PREVIEW_WAV),
    }
    document = signature_document(trip, detect_codebooks, hashes)
    write_json(SIGNATURE_JSON, document)
    return document


def main() -> int:
    try:
        params = load_params("blip_codes")
        document = run(BLIP_WAV, Path(params["model_dir"]), list(params["detect_codebooks"]))
    except (ParamsError, KeyError) as err:
        print(f"blip_codes: {err}", file=sys.stderr)
        return 1
    stable = document["roundtrip"]["stable_codebooks"]
    print(
        f"blip_codes: {document['n_frames']} frames, cb0 across frames {document['cb0_across_frames']}, "
        f"round trip stable on codebooks {stable}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
