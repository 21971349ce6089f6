"""The blip: samples follow the formula, repeats lay out copies, bad params name their key."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.blip import BlipParams, envelope, synthesize_blip
from pipeline.params import ParamsError

DEFAULTS = dict(tones_hz=[1200, 1800], duration_ms=160, attack_ms=5, release_ms=20,
                sample_rate=24000, amplitude=0.5, repeats=1, gap_ms=0)


def test_default_blip_is_160ms_of_24khz_int16():
    samples = synthesize_blip(BlipParams.from_params(DEFAULTS))
    assert samples.dtype == np.int16 and samples.shape == (3840,)


def test_samples_follow_the_two_tone_formula():
    blip = BlipParams.from_params(DEFAULTS)
    samples = synthesize_blip(blip)
    n = np.arange(3840)
    t = n / 24000
    env = np.ones(3840)
    env[:120] = n[:120] / 120  # 5 ms attack
    env[-480:] = np.arange(479, -1, -1) / 480  # 20 ms release, 0 on the last sample
    expected = 0.5 * env * (np.sin(2 * np.pi * 1200 * t) + np.sin(2 * np.pi * 1800 * t)) / 2
    np.testing.assert_array_equal(samples, np.round(expected * 32767).astype(np.int16))
    assert samples[0] == 0 and samples[-1] == 0


def test_envelope_rises_holds_and_falls():
    env = envelope(BlipParams.from_params(DEFAULTS))
    assert env[0] == 0 and env[120] == 1 and env[-481] == 1 and env[-1] == 0
    assert np.all(np.diff(env[:121]) > 0) and np.all(np.diff(env[-480:]) < 0)


def test_repeats_with_gap_lay_out_cues_and_silence():
    blip = BlipParams.from_params({**DEFAULTS, "repeats": 2, "gap_ms": 40})
    samples = synthesize_blip(blip)
    single = synthesize_blip(BlipParams.from_params(DEFAULTS))
    assert samples.shape == (3840 * 2 + 960,)
    np.testing.assert_array_equal(samples[:3840], single)
    assert not samples[3840:3840 + 960].any()
    np.testing.assert_array_equal(samples[-3840:], single)


@pytest.mark.parametrize(
    "override, key",
    [
        ({"duration_ms": 0}, "blip.duration_ms"),
        ({"duration_ms": -5}, "blip.duration_ms"),
        ({"tones_hz": [1200, 12000]}, "blip.tones_hz"),
        ({"tones_hz": [1200, 13000]}, "blip.tones_hz"),
        ({"attack_ms": 100, "release_ms": 80}, "blip.attack_ms"),
        ({"amplitude": 0}, "blip.amplitude"),
        ({"amplitude": 1.5}, "blip.amplitude"),
        ({"repeats": 0}, "blip.repeats"),
        ({"colour": "red"}, "blip.colour"),
        ({"duration_ms": float("nan")}, "blip.duration_ms"),
        ({"duration_ms": 5000}, "blip.duration_ms"),
        ({"repeats": 1_000_000_000}, "blip.repeats"),
        ({"repeats": 8, "duration_ms": 300}, "blip.repeats"),
        ({"tones_hz": []}, "blip.tones_hz"),
        ({"sample_rate": 24000.5}, "blip.sample_rate"),
    ],
)
def test_invalid_params_name_the_key(override, key):
    with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
        BlipParams.from_params({**DEFAULTS, **override})


def test_every_bad_blip_param_is_one_line():
    with pytest.raises(ParamsError) as err:
        BlipParams.from_params({**DEFAULTS, "duration_ms": float("nan")})
    assert str(err.value) == "params.yaml: 'blip.duration_ms' must be a number, got nan"
