"""The blip stage: files are reproducible, bad params name their key and write nothing."""
from __future__ import annotations

import soundfile
import yaml

from tasks import blip as blip_stage

DEFAULTS = dict(tones_hz=[1200, 1800], duration_ms=160, attack_ms=5, release_ms=20,
                sample_rate=24000, amplitude=0.5, repeats=1, gap_ms=0)


def test_stage_is_byte_identical_and_writes_nothing_on_bad_params(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"blip": DEFAULTS}))
    assert blip_stage.main() == 0
    first = (tmp_path / blip_stage.BLIP_WAV).read_bytes()
    assert blip_stage.main() == 0
    assert (tmp_path / blip_stage.BLIP_WAV).read_bytes() == first
    data, rate = soundfile.read(tmp_path / blip_stage.BLIP_WAV, dtype="int16")
    assert rate == 24000 and data.shape == (3840,)

    (tmp_path / blip_stage.BLIP_WAV).unlink()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"blip": {**DEFAULTS, "tones_hz": [20000]}}))
    capsys.readouterr()
    assert blip_stage.main() == 1
    err = capsys.readouterr().err
    assert err.startswith("blip: params.yaml: 'blip.tones_hz'") and err.count("\n") == 1  # one line, no traceback
    assert not (tmp_path / blip_stage.BLIP_WAV).exists()
