"""Stage `blip_codes`: the blip's Mimi round trip and the detection signature (``pipeline.blip_mimi``).

``codes.npy`` holds the codes of the preview (what training sees), and the
signature records whether the round trip was stable, codebook by codebook, and
the frame span of each copy of a ``blip.repeats`` blip (read from the ``blip``
params that synthesised the wav).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coordinator.constants import MIMI_SAMPLE_RATE
from pipeline.artifacts import BLIP_CODES_NPY, BLIP_PREVIEW_WAV, BLIP_SIGNATURE_JSON, BLIP_WAV
from pipeline.audio import read_wav, write_wav
from pipeline.blip import BlipParams
from pipeline.blip_mimi import copy_spans, round_trip, signature_document
from pipeline.hub_layout import MIMI_WEIGHTS_NAME
from pipeline.io import atomic_path, sha256_file, write_json
from pipeline.models import load_mimi, resolve_device
from pipeline.params import StageParams, field, load_stage_params, stage_main


@dataclass(frozen=True)
class BlipCodesParams(StageParams):
    SECTION = "blip_codes"
    model_dir: Path
    detect_codebooks: tuple[int, ...] = field((0,), lo=0, hi=7)  # the card's cb0-only matcher; (0, 3) = cb0 OR cb3
    device: str = "auto"  # where Mimi runs: auto = cuda when available, else cpu

    def check(self) -> None:
        if not self.detect_codebooks or len(set(self.detect_codebooks)) != len(self.detect_codebooks):
            raise self.bad("detect_codebooks", f"must list distinct codebooks in 0..7, got {list(self.detect_codebooks)}")


def run(blip_wav: Path, model_dir: Path, detect_codebooks: list[int], blip_params: BlipParams | None = None,
        device: str = "cpu") -> dict:
    """``blip_params``: the params the wav was synthesised with (its copies); None = one copy.

    The throughput (audio seconds through Mimi per second: encode, decode, encode) is returned in
    ``throughput``, not written: the signature is a data output, identical on every machine.
    """
    blip, sample_rate = read_wav(blip_wav)
    mimi = load_mimi(model_dir, device=resolve_device(device))
    started = time.perf_counter()
    trip = round_trip(mimi, blip, sample_rate)
    seconds = time.perf_counter() - started
    layout = blip_params or BlipParams(repeats=1)
    copies = copy_spans(layout.repeats, layout.duration_ms, layout.gap_ms, trip.n_frames)

    with atomic_path(BLIP_CODES_NPY) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, trip.codes)
    write_wav(BLIP_PREVIEW_WAV, trip.preview, MIMI_SAMPLE_RATE)
    hashes = {
        "blip_sha256": sha256_file(blip_wav),
        "mimi_sha256": sha256_file(Path(model_dir) / MIMI_WEIGHTS_NAME),
        "codes_sha256": sha256_file(BLIP_CODES_NPY),
        "preview_sha256": sha256_file(BLIP_PREVIEW_WAV),
    }
    document = signature_document(trip, detect_codebooks, hashes, copies)
    # work unit: audio-seconds Mimi encoded (the blip, then its preview; no cache here)
    document["roundtrip"]["mimi_audio_seconds_encoded"] = round(
        len(blip) / sample_rate + len(trip.preview) / MIMI_SAMPLE_RATE, 4)
    write_json(BLIP_SIGNATURE_JSON, document)
    audio_seconds = 3 * len(blip) / sample_rate
    return {**document, "throughput": {"device": resolve_device(device), "audio_seconds": audio_seconds,
                                       "seconds": seconds, "audio_seconds_per_second": audio_seconds / seconds}}


def write_codes() -> int:
    params = load_stage_params(BlipCodesParams)
    blip_params = load_stage_params(BlipParams)
    document = run(BLIP_WAV, params.model_dir, list(params.detect_codebooks), blip_params, device=params.device)
    rate = document["throughput"]
    stable = document["roundtrip"]["stable_codebooks"]
    copies = ", ".join(f"frames {c['frame_start']}..{c['frame_start'] + c['n_frames'] - 1} cb0 {c['cb0_across_frames']}"
                       for c in document["copies"])
    print(
        f"blip_codes: {document['n_frames']} frames, cb0 across frames {document['cb0_across_frames']}, "
        f"round trip stable on codebooks {stable}; copies: {copies}; Mimi on {rate['device']}: "
        f"{rate['audio_seconds_per_second']:.2f} audio s/s"
    )
    return 0


def main() -> int:
    return stage_main("blip_codes", write_codes)


if __name__ == "__main__":
    sys.exit(main())
