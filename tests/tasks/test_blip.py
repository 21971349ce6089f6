"""The blip stage: samples follow the formula, files are reproducible, bad params name their key."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile
import yaml

from pipeline.io import ParamsError
from tasks import blip as blip_stage
from tasks.blip import BlipParams, envelope, synthesize_blip

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
    ],
)
def test_invalid_params_name_the_key(override, key):
    with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
        BlipParams.from_params({**DEFAULTS, **override})


def test_stage_is_byte_identical_and_writes_nothing_on_bad_params(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"blip": DEFAULTS}))
    assert blip_stage.main() == 0
    first = (tmp_path / blip_stage.OUTPUT).read_bytes()
    assert blip_stage.main() == 0
    assert (tmp_path / blip_stage.OUTPUT).read_bytes() == first
    data, rate = soundfile.read(tmp_path / blip_stage.OUTPUT, dtype="int16")
    assert rate == 24000 and data.shape == (3840,)

    (tmp_path / blip_stage.OUTPUT).unlink()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"blip": {**DEFAULTS, "tones_hz": [20000]}}))
    assert blip_stage.main() == 1
    assert "blip.tones_hz" in capsys.readouterr().err
    assert not (tmp_path / blip_stage.OUTPUT).exists()
