"""TTS engines: the espeak-ng engine (Debian binary) and the engine interface.

Kokoro's engine is exercised with the fabricated folder in test_fabricate_kokoro.py.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from pipeline.tts.engines import EspeakEngine, KokoroEngine, TTSEngine, TTSError

SENTENCE = "Sure, let me check the weather in Paris for you."


@pytest.fixture(scope="module")
def espeak() -> EspeakEngine:
    return EspeakEngine({"am_adam": "en-us", "af_heart": "en-us+f3", "bm_george": "en-gb"})


def test_espeak_speaks_24khz_float_audio(espeak):
    started = time.perf_counter()
    audio = espeak.synthesize(SENTENCE, "am_adam", 1.0)
    elapsed = time.perf_counter() - started
    assert espeak.sample_rate == 24_000
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 1.5 < audio.size / 24_000 < 6.0  # a sentence at espeak's 175 wpm
    assert 0.05 < np.abs(audio).max() <= 1.0
    assert elapsed < 5.0


def test_espeak_voices_speed_and_determinism(espeak):
    adam = espeak.synthesize(SENTENCE, "am_adam", 1.0)
    assert np.array_equal(adam, espeak.synthesize(SENTENCE, "am_adam", 1.0))
    heart = espeak.synthesize(SENTENCE, "af_heart", 1.0)
    assert not np.array_equal(adam[: heart.size], heart[: adam.size])
    assert espeak.synthesize(SENTENCE, "am_adam", 2.0).size < 0.7 * adam.size
    # unmapped names are espeak voices themselves
    assert espeak.voice_hash("en-gb") == "en-gb" and espeak.voice_hash("bm_george") == "en-gb"
    assert espeak.synthesize("Hello.", "en-gb", 1.0).size > 0


def test_espeak_model_hash_is_its_version(espeak):
    assert espeak.model_hash.startswith("eSpeak NG text-to-speech: ")
    assert "Data at" not in espeak.model_hash


def test_espeak_errors_are_clear(espeak):
    with pytest.raises(TTSError, match="empty text"):
        espeak.synthesize("   ", "am_adam", 1.0)
    with pytest.raises(TTSError, match="xx-nope"):
        espeak.synthesize("Hello.", "xx-nope", 1.0)
    with pytest.raises(TTSError, match="speed must be positive"):
        espeak.synthesize("Hello.", "am_adam", 0)
    # a text that looks like an option is spoken, not parsed
    assert espeak.synthesize("-v hello", "am_adam", 1.0).size > 0


def test_missing_espeak_binary_says_how_to_install():
    with pytest.raises(TTSError, match=r"apt-get install -y espeak-ng"):
        EspeakEngine(binary="espeak-ng-not-installed")


def test_engines_share_one_interface():
    assert issubclass(EspeakEngine, TTSEngine) and issubclass(KokoroEngine, TTSEngine)
    with pytest.raises(TypeError):
        TTSEngine()  # abstract
