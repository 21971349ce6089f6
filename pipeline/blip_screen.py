"""The blip pre-screen's Mimi screening: a variant's blip through the same Mimi the pipeline trains with.

Two questions, answered before any GPU time is spent on a variant (flows/prescreen.py, flows/sweep.py):
1. Does the variant's detection signature (codebook 0 across the blip's F frames,
   taken from the preview round trip = what the model learns to emit) already
   occur at the start of ordinary (non-blip) assistant audio? Each such opening
   would fire the coordinator without a tool call: the false-trigger rate.
2. Is the preview's signature stable where training puts it: does the preview,
   followed by ordinary speech (as in every tool_match ack), still encode to the
   signature in codebook 0? If not, training rows do not carry the signature the
   coordinator watches for. (Whether the raw blip and its preview share codes does
   not matter: training and detection both use the preview's codes.)

`screen_codes` is the numpy-only core; `prescreen_variant` synthesises the blip from params (+ sweep
overrides, applied by DVC's own `-S` parser) and encodes through `pipeline.models`, as `blip_codes` does
(`pipeline/blip_mimi.py`).
"""
from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from pipeline.artifacts import BASE_LFM_DIR, TTS_CACHE_DIR


@dataclass(frozen=True)
class PrescreenResult:
    false_trigger_rate: float | None  # None = unavailable (no non-blip audio to screen against)
    roundtrip_stable: bool
    reason: str | None  # why the variant is rejected; None = it passed
    signature: tuple[int, ...] = ()  # cb0 across the blip's frames (after the round trip)

    @property
    def passed(self) -> bool:
        return self.reason is None


def screen_codes(signature_codes: np.ndarray, prefixed_codes: Sequence[np.ndarray],
                 speech_codes: Sequence[np.ndarray], max_false_trigger_rate: float) -> PrescreenResult:
    """Decide from codes alone. All arrays are (1, 8, frames) = (batch, codebook, frame).

    signature_codes: codes of the blip's preview (what training prepends);
    prefixed_codes: codes of the preview followed by ordinary speech, one per utterance;
    speech_codes: codes of non-blip assistant audio, one array per utterance.
    """
    signature = np.asarray(signature_codes)[0, 0, :]  # codebook 0 across frames, not [0, :, 0]
    frames = len(signature)
    opens_with_signature = [np.array_equal(np.asarray(c)[0, 0, :frames], signature) for c in prefixed_codes]
    stable = bool(opens_with_signature) and all(opens_with_signature)
    hits = sum(np.array_equal(np.asarray(codes)[0, 0, :frames], signature) for codes in speech_codes)
    rate = hits / len(speech_codes) if len(speech_codes) else None
    reasons = []
    if opens_with_signature and not stable:
        reasons.append(f"preview followed by speech loses cb0 {signature.tolist()} in "
                       f"{opens_with_signature.count(False)}/{len(opens_with_signature)} acks")
    if rate is None:
        reasons.append("false-trigger rate unavailable: no non-blip assistant audio to screen against")
    elif rate > max_false_trigger_rate:
        reasons.append(f"false-trigger rate {rate:.3f} > {max_false_trigger_rate} "
                       f"({hits}/{len(speech_codes)} openings already start with cb0 {signature.tolist()})")
    return PrescreenResult(rate, stable, "; ".join(reasons) or None, tuple(int(c) for c in signature))


def apply_overrides(params: dict, overrides: Sequence[str]) -> dict:
    """params.yaml with `dvc exp run -S` overrides applied by DVC's own code (`dvc.utils.hydra`, Hydra's
    override grammar: `a.b=value`, `+a.new=value`), so the pre-screen sees exactly the params the experiment gets.
    A bad override raises ValueError naming it and Hydra's reason."""
    import tempfile

    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.hydra import apply_overrides as dvc_apply_overrides

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        for override in overrides:  # one at a time: the error names the override
            try:
                dvc_apply_overrides(path, [override])
            except InvalidArgumentError as err:
                why = "; ".join(line.strip() for line in str(err.__cause__ or err).splitlines() if line.strip())
                raise ValueError(f"override {override!r}: {why}") from None
        return yaml.safe_load(path.read_text()) or {}


@functools.lru_cache(maxsize=2)
def _mimi(model_dir: str):
    from pipeline.models import load_mimi

    return load_mimi(Path(model_dir))


def _variant_round_trip(workdir: Path, overrides: Sequence[str], mimi=None):
    """(BlipParams, Mimi round trip) of the variant's blip; invalid params fail before torch loads."""
    from pipeline.blip import BlipParams, synthesize_blip

    params = apply_overrides(yaml.safe_load((workdir / "params.yaml").read_text()) or {}, overrides)
    blip = BlipParams.from_params(params.get("blip", {}))

    from pipeline.blip_mimi import round_trip

    if mimi is None:
        mimi = _mimi(str(workdir / params.get("blip_codes", {}).get("model_dir", str(BASE_LFM_DIR))))
    return mimi, round_trip(mimi, synthesize_blip(blip), blip.sample_rate)


def variant_signature(workdir: str | os.PathLike, overrides: Sequence[str], mimi=None) -> tuple[int, ...]:
    """Codebook 0 across the frames of the variant's blip after the round trip (the default's: no overrides)."""
    _, trip = _variant_round_trip(Path(workdir), overrides, mimi)
    return tuple(int(c) for c in trip.codes[0, 0, :])


def prescreen_variant(workdir: str | os.PathLike, overrides: Sequence[str], speech: Sequence[np.ndarray] = (),
                      speech_rate: int = 24_000, max_false_trigger_rate: float = 0.0, mimi=None) -> PrescreenResult:
    """Screen one variant of `workdir`'s params.yaml against non-blip assistant audio `speech`.

    The Mimi folder is `blip_codes.model_dir` of the params (loaded once per process) unless `mimi` is given.
    """
    from coordinator.constants import MIMI_FRAME_SAMPLES, MIMI_SAMPLE_RATE
    from pipeline.audio import resample, to_float32, to_int16
    from pipeline.models import encode_codes

    mimi, trip = _variant_round_trip(Path(workdir), overrides, mimi)
    # Mimi is causal: the first F frames depend only on the first F frames of audio.
    opening = -(-trip.n_frames * MIMI_FRAME_SAMPLES * speech_rate // MIMI_SAMPLE_RATE)
    openings = [resample(np.asarray(wave)[:opening], speech_rate, MIMI_SAMPLE_RATE) for wave in speech]
    speech_codes = [encode_codes(mimi, wave, MIMI_SAMPLE_RATE) for wave in openings]
    preview = to_float32(trip.preview)
    prefixed_codes = [encode_codes(mimi, to_int16(np.concatenate([preview, wave])), MIMI_SAMPLE_RATE)
                      for wave in openings]
    return screen_codes(trip.codes, prefixed_codes, speech_codes, max_false_trigger_rate)


def load_reference_audio(workdir: str | os.PathLike, splits: Sequence[str] = ("train", "eval"),
                         limit: int = 300) -> list[np.ndarray]:
    """Non-blip assistant utterances at 24 kHz: the assistant clips of the `tts` stage's manifests
    (`data/tts/<split>.jsonl`, audio in `tts.cache_dir`). The blip is only added later, in
    `preprocess`, so every one of them is ordinary assistant audio. At most `limit` clips."""
    from pipeline.audio import SAMPLE_RATE, resample
    from pipeline.tts_cache import TTSCache, read_manifest

    workdir = Path(workdir)
    params = yaml.safe_load((workdir / "params.yaml").read_text()) or {}
    keys: list[str] = []
    for split in splits:
        for row in read_manifest(workdir / "data" / "tts" / f"{split}.jsonl").values():
            keys += [k for k in (row.get("assistant_key"), row.get("turn1_assistant_key")) if k]
    keys = list(dict.fromkeys(keys))[:limit]
    clips = TTSCache(workdir / params.get("tts", {}).get("cache_dir", str(TTS_CACHE_DIR))).get_many(keys)
    if len(clips) < len(keys):
        raise FileNotFoundError(f"{len(keys) - len(clips)} of {len(keys)} assistant clips missing from the TTS cache")
    return [resample(clips[k].audio(), clips[k].sample_rate, SAMPLE_RATE) for k in keys]
