"""Stage `blip`: synthesise the tool-invocation blip from params.

The blip is a short two-tone cue (card: 160 ms, 1.2 + 1.8 kHz, 5 ms attack,
20 ms release). Every tool_match ack starts with it, so its Mimi codes become
the signature the coordinator watches for. Same params → byte-identical file.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.audio import write_wav
from pipeline.io import ParamsError, load_params

OUTPUT = Path("data/blips/tool_invoke.wav")
INT16_FULL_SCALE = 32767


@dataclass(frozen=True)
class BlipParams:
    tones_hz: tuple[float, ...] = (1200.0, 1800.0)
    duration_ms: float = 160.0
    attack_ms: float = 5.0
    release_ms: float = 20.0
    sample_rate: int = 24_000
    amplitude: float = 0.5
    repeats: int = 1  # v4.2 idea: a longer blip with redundancy
    gap_ms: float = 0.0  # silence between repeats

    @classmethod
    def from_params(cls, params: dict) -> "BlipParams":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(params) - known)
        if unknown:
            raise ParamsError(f"params.yaml: unknown key 'blip.{unknown[0]}' (known: {', '.join(sorted(known))})")
        values = dict(params)
        if "tones_hz" in values:
            tones = values["tones_hz"]
            if not isinstance(tones, (list, tuple)) or not tones:
                raise ParamsError(f"params.yaml: 'blip.tones_hz' must be a non-empty list of Hz, got {tones!r}")
            values["tones_hz"] = tuple(tones)
        blip = cls(**values)
        blip.validate()
        return blip

    def validate(self) -> None:
        """Raise ParamsError naming the first bad key; nothing is written for bad params."""

        def bad(key: str, why: str) -> ParamsError:
            return ParamsError(f"params.yaml: 'blip.{key}' {why}")

        def number(key: str) -> float:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise bad(key, f"must be a number, got {value!r}")
            return value

        if not isinstance(self.sample_rate, int) or isinstance(self.sample_rate, bool) or self.sample_rate <= 0:
            raise bad("sample_rate", f"must be a positive integer, got {self.sample_rate!r}")
        if number("duration_ms") <= 0:
            raise bad("duration_ms", f"must be > 0, got {self.duration_ms}")
        for key in ("attack_ms", "release_ms", "gap_ms"):
            if number(key) < 0:
                raise bad(key, f"must be >= 0, got {getattr(self, key)}")
        if self.attack_ms + self.release_ms > self.duration_ms:
            raise bad("attack_ms", f"+ release_ms ({self.attack_ms} + {self.release_ms}) exceeds duration_ms ({self.duration_ms})")
        if not 0 < number("amplitude") <= 1:
            raise bad("amplitude", f"must be in (0, 1], got {self.amplitude}")
        nyquist = self.sample_rate / 2
        for tone in self.tones_hz:
            if isinstance(tone, bool) or not isinstance(tone, (int, float)) or not 0 < tone < nyquist:
                raise bad("tones_hz", f"tone {tone!r} must be in (0, {nyquist:g}) Hz (Nyquist at sample_rate {self.sample_rate})")
        if not isinstance(self.repeats, int) or isinstance(self.repeats, bool) or self.repeats < 1:
            raise bad("repeats", f"must be an integer >= 1, got {self.repeats!r}")

    def samples(self, ms: float) -> int:
        return int(round(ms * self.sample_rate / 1000))


def envelope(blip: BlipParams) -> np.ndarray:
    """Linear attack from 0, hold at 1, linear release reaching 0 on the last sample."""
    n = blip.samples(blip.duration_ms)
    env = np.ones(n, dtype=np.float64)
    attack, release = blip.samples(blip.attack_ms), blip.samples(blip.release_ms)
    if attack:
        env[:attack] = np.arange(attack) / attack
    if release:
        env[n - release :] = np.arange(release - 1, -1, -1) / release
    return env


def one_blip(blip: BlipParams) -> np.ndarray:
    """One cue as float64 in [-amplitude, amplitude]: the tones' mean times the envelope."""
    t = np.arange(blip.samples(blip.duration_ms)) / blip.sample_rate
    tones = sum(np.sin(2 * np.pi * f * t) for f in blip.tones_hz) / len(blip.tones_hz)
    return blip.amplitude * envelope(blip) * tones


def synthesize_blip(blip: BlipParams) -> np.ndarray:
    """The full blip as int16: ``repeats`` cues separated by ``gap_ms`` of silence."""
    cue = one_blip(blip)
    gap = np.zeros(blip.samples(blip.gap_ms))
    parts: list[np.ndarray] = []
    for i in range(blip.repeats):
        if i:
            parts.append(gap)
        parts.append(cue)
    return np.round(np.concatenate(parts) * INT16_FULL_SCALE).astype(np.int16)


def main() -> int:
    try:
        blip = BlipParams.from_params(load_params("blip"))
    except (ParamsError, TypeError) as err:
        print(f"blip: {err}", file=sys.stderr)
        return 1
    samples = synthesize_blip(blip)
    write_wav(OUTPUT, samples, blip.sample_rate)
    print(f"blip: wrote {OUTPUT} ({len(samples)} samples, {len(samples) / blip.sample_rate * 1000:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
