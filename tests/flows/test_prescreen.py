"""CPU pre-screen: false-trigger rate and signature stability (preview + speech) of a blip variant."""
from __future__ import annotations

import numpy as np
import pytest
import yaml

from flows.prescreen import PrescreenResult, apply_overrides, screen_codes


def codes(cb0: list[int], rest: int = 7) -> np.ndarray:
    """(1, 8, F) codes whose codebook 0 across frames is `cb0`; the other codebooks hold `rest`."""
    out = np.full((1, 8, len(cb0)), rest, dtype=np.int64)
    out[0, 0, :] = cb0
    return out


BLIP = codes([430, 127])
SPEECH = [codes([1049, 127, 5]), codes([430, 127, 9]), codes([430, 5, 5]), codes([1049, 127, 1])]


def test_false_trigger_rate_counts_openings_that_already_carry_the_signature():
    result = screen_codes(BLIP, [BLIP], SPEECH, max_false_trigger_rate=0.25)
    assert (result.false_trigger_rate, result.roundtrip_stable, result.passed) == (0.25, True, True)
    assert result.signature == (430, 127)

    strict = screen_codes(BLIP, [BLIP], SPEECH, max_false_trigger_rate=0.0)
    assert not strict.passed and "false-trigger rate 0.250 > 0.0" in strict.reason


def test_signature_is_codebook_0_across_frames_not_all_codebooks_at_frame_0():
    blip = codes([430, 127], rest=13)  # blip[0, :, 0] = [430, 13, 13, ...]: the wrong index
    opening_like_wrong_index = np.full((1, 8, 2), 13)
    opening_like_wrong_index[0, 0, 0] = 430
    assert screen_codes(blip, [blip], [opening_like_wrong_index], 0.0).false_trigger_rate == 0.0


def test_a_signature_lost_after_speech_and_missing_audio_are_rejected_with_reasons():
    acks = [codes([430, 127, 3]), codes([430, 128, 3])]  # the second ack no longer opens with the signature
    unstable = screen_codes(BLIP, acks, SPEECH[:1], 1.0)
    assert not unstable.roundtrip_stable and "loses cb0 [430, 127] in 1/2 acks" in unstable.reason
    no_audio = screen_codes(BLIP, [], [], 1.0)
    assert no_audio.false_trigger_rate is None and "unavailable" in no_audio.reason


def test_overrides_use_dvc_set_syntax():
    params = {"blip": {"tones_hz": [1200, 1800], "repeats": 1}, "preprocess": {"x": 1}}
    out = apply_overrides(params, ["blip.tones_hz=[1000,1500]", "blip.repeats=2", "+preprocess.max_text_preamble_tokens=6"])
    assert out == {"blip": {"tones_hz": [1000, 1500], "repeats": 2}, "preprocess": {"x": 1, "max_text_preamble_tokens": 6}}
    assert params["blip"]["repeats"] == 1  # not modified in place
    with pytest.raises(ValueError, match=r"override 'blip.gap_ms=40': Could not override 'blip.gap_ms'.*\+blip.gap_ms=40"):
        apply_overrides(params, ["blip.gap_ms=40"])
    with pytest.raises(ValueError, match="override 'nope.x=1': Could not override 'nope.x'"):
        apply_overrides(params, ["nope.x=1"])


@pytest.mark.parametrize("sweep_file", ["v4.2-blip.yaml", "learn-arms.yaml"])
def test_every_shipped_variant_overrides_keys_params_yaml_has_with_valid_values(repo_root, sweep_file):
    from flows.sweep import load_sweep
    from pipeline.blip import BlipParams
    from pipeline.params import parse_params
    from tasks.preprocess import PreprocessParams

    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    variants = load_sweep(repo_root / "flows/sweeps" / sweep_file).variants
    shipped = {v.name: v.overrides for v in load_sweep(repo_root / "flows/sweeps/v4.2-blip.yaml").variants}
    for variant in variants:
        assert shipped.get(variant.name) == variant.overrides, f"{variant.name}: not as in v4.2-blip.yaml"
        assert not any(o.startswith("+") for o in variant.overrides), f"{variant.name}: a key params.yaml lacks"
        changed = apply_overrides(params, variant.overrides)  # raises on a key params.yaml lacks
        BlipParams.from_params(changed["blip"])
        parse_params(PreprocessParams, changed["preprocess"])
    preamble = next(v for v in variants if v.name == "text-preamble-2")
    assert apply_overrides(params, preamble.overrides)["preprocess"]["first_text_chunk"] == 2


@pytest.mark.slow
def test_prescreen_variant_through_the_real_mimi_code_path(tiny_lfm_dir, repo_root, tmp_path):
    from flows.prescreen import _mimi, prescreen_variant, variant_signature
    from pipeline.audio import to_float32
    from pipeline.blip import BlipParams, synthesize_blip
    from pipeline.blip_mimi import round_trip

    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    params["blip_codes"]["model_dir"] = str(tiny_lfm_dir)  # Mimi loaded by prescreen_variant itself
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    tiny_mimi = _mimi(str(tiny_lfm_dir))
    rng = np.random.default_rng(0)
    speech_like = (rng.standard_normal(24_000) * 0.1 * np.sin(np.linspace(0, 40, 24_000)) ** 2).astype(np.float32)
    # An opening that is the variant's preview itself: its codes are the signature (Mimi is causal).
    preview = round_trip(tiny_mimi, synthesize_blip(BlipParams.from_params({"duration_ms": 240})), 24_000).preview
    opens_with_the_preview = np.concatenate([to_float32(preview), speech_like])

    result = prescreen_variant(tmp_path, ["blip.duration_ms=240"], [speech_like, opens_with_the_preview],
                               max_false_trigger_rate=0.0)
    assert len(result.signature) == 3  # 240 ms = 3 Mimi frames
    assert result.false_trigger_rate == 0.5 and not result.passed and "false-trigger rate 0.500" in result.reason
    assert result.roundtrip_stable  # Mimi is causal: the preview keeps its codes whatever follows
    again = prescreen_variant(tmp_path, ["blip.duration_ms=240"], [speech_like], mimi=tiny_mimi)
    assert again.signature == result.signature and again.false_trigger_rate == 0.0  # deterministic
    assert variant_signature(tmp_path, ["blip.duration_ms=240"]) == result.signature
    assert len(variant_signature(tmp_path, [])) == 2  # the default blip: 160 ms


def test_a_blip_variant_with_the_defaults_or_an_earlier_variants_signature_is_rejected_naming_the_twin():
    from flows.prescreen import flag_twins

    def passed(signature):
        return PrescreenResult(0.0, True, None, signature)

    default = (430, 127)
    variants = [
        ("tones-1000-1500", ["blip.tones_hz=[1000,1500]"], passed((430, 127))),  # the default's codes
        ("long", ["blip.duration_ms=240"], passed((430, 127, 88))),
        ("long-louder", ["blip.duration_ms=240", "blip.amplitude=0.6"], passed((430, 127, 88))),
        ("oversample", ["preprocess.tool_match_oversample=2"], passed((430, 127))),  # shares it by design
        ("new", ["+blip.gap_ms=40"], passed((5, 6))),
        ("long-oversampled", ["blip.duration_ms=240", "preprocess.tool_match_oversample=2"],
         passed((430, 127, 88))),  # long's blip, other training rows: not a twin
        ("long-oversampled-again", ["preprocess.tool_match_oversample=2", "blip.duration_ms=240"],
         passed((430, 127, 88))),
    ]
    out = flag_twins(variants, default)
    assert not out["tones-1000-1500"].passed and "equals the default (params.yaml)'s" in out["tones-1000-1500"].reason
    assert not out["long-louder"].passed and "equals 'long''s" in out["long-louder"].reason
    assert "equals 'long-oversampled''s with the same other overrides" in out["long-oversampled-again"].reason
    assert [name for name, r in out.items() if r.passed] == ["long", "oversample", "new", "long-oversampled"]
    assert out["long"] is variants[1][2]  # untouched results are the same objects


def test_an_already_rejected_twin_keeps_both_reasons():
    from flows.prescreen import flag_twins

    result = PrescreenResult(0.5, True, "false-trigger rate 0.500 > 0.0", (1, 2))
    out = flag_twins([("a", ["blip.tones_hz=[1]"], result)], (1, 2))
    assert out["a"].reason.startswith("false-trigger rate") and "equals the default" in out["a"].reason


def test_which_variants_change_the_blip_is_read_by_dvcs_override_parser():
    from flows.prescreen import changes_blip

    assert changes_blip(["blip.duration_ms=240"]) and changes_blip(["+blip.new_key=[1,2]"])
    assert not changes_blip(["preprocess.blip_on=[]", "+train.lr=0.1"])
    assert not changes_blip(["not an override"])  # invalid: the pre-screen rejects it, naming the override
