"""The tool-invocation blip: its params and its synthesis (numpy only).

The blip is a short two-tone cue (card: 160 ms, 1.2 + 1.8 kHz, 5 ms attack,
20 ms release). Every tool_match ack starts with it, so its Mimi codes become
the signature the coordinator watches for. Same params -> identical samples.
Used by the ``blip`` stage and by the sweep's pre-screen, so both synthesise
a variant the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.params import StageParams, field

INT16_FULL_SCALE = 32767
MAX_TOTAL_MS = 2000.0  # a blip of seconds is a mistake, not a cue (and an allocation)


@dataclass(frozen=True)
class BlipParams(StageParams):
    SECTION = "blip"
    tones_hz: tuple[float, ...] = field((1200.0, 1800.0), lo=0, hi=96_000, lo_open=True)
    duration_ms: float = field(160.0, lo=0, hi=1000, lo_open=True)
    attack_ms: float = field(5.0, lo=0, hi=1000)
    release_ms: float = field(20.0, lo=0, hi=1000)
    sample_rate: int = field(24_000, lo=8_000, hi=192_000)
    amplitude: float = field(0.5, lo=0, hi=1, lo_open=True)
    repeats: int = field(1, lo=1, hi=8)  # v4.2 idea: a longer blip with redundancy
    gap_ms: float = field(0.0, lo=0, hi=1000)  # silence between repeats

    def check(self) -> None:
        if not 1 <= len(self.tones_hz) <= 8:
            raise self.bad("tones_hz", f"must list 1 to 8 tones, got {len(self.tones_hz)}")
        nyquist = self.sample_rate / 2
        for tone in self.tones_hz:
            if not tone < nyquist:
                raise self.bad("tones_hz", f"tone {tone:g} must be in (0, {nyquist:g}) Hz (Nyquist at sample_rate {self.sample_rate})")
        if self.attack_ms + self.release_ms > self.duration_ms:
            raise self.bad("attack_ms", f"+ release_ms ({self.attack_ms:g} + {self.release_ms:g}) exceeds duration_ms ({self.duration_ms:g})")
        if self.total_ms > MAX_TOTAL_MS:
            raise self.bad("repeats", f"x duration_ms + gaps = {self.total_ms:g} ms exceeds {MAX_TOTAL_MS:g} ms")

    @property
    def total_ms(self) -> float:
        return self.repeats * self.duration_ms + (self.repeats - 1) * self.gap_ms

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
