"""Stage `blip`: synthesise the tool-invocation blip from params (``pipeline.blip``)."""
from __future__ import annotations

import sys

from pipeline.artifacts import BLIP_WAV
from pipeline.audio import write_wav
from pipeline.blip import BlipParams, synthesize_blip
from pipeline.params import load_stage_params, stage_main


def write_blip() -> int:
    blip = load_stage_params(BlipParams)  # bad params: one line, nothing written
    samples = synthesize_blip(blip)
    write_wav(BLIP_WAV, samples, blip.sample_rate)
    print(f"blip: wrote {BLIP_WAV} ({len(samples)} samples, {len(samples) / blip.sample_rate * 1000:.0f} ms)")
    return 0


def main() -> int:
    return stage_main("blip", write_blip)


if __name__ == "__main__":
    sys.exit(main())
