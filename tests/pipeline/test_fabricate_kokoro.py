"""The fabricated Kokoro folder, loaded and run by kokoro's real KModel/KPipeline, offline.

One folder is fabricated per module (~5 s, ~300 MB in a tmp dir); synthesis
uses very short texts at a high speed.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.fabricate_kokoro import (
    KOKORO_COMPONENTS,
    KOKORO_VOCAB,
    KOKORO_WEIGHTS_NAME,
    VOICE_SHAPE,
    fabricate_kokoro_folder,
    tiny_kokoro_config,
)
from pipeline.io import read_json, sha256_file
from pipeline.hub_layout import ModelFolderError, check_kokoro_folder
from pipeline.kokoro_model import load_kokoro
from pipeline.tts.engines import KokoroEngine, TTSError
from pipeline.tts.g2p import G2PError
from pipeline.tts_cache import TTSCache, request_for

VOICES = ["am_adam", "af_heart", "af_bella", "bm_george"]
SEED = 7
FAST = 8.0  # random duration heads: keep the audio short


@pytest.fixture(scope="module", autouse=True)
def no_hub():
    """Nothing may be fetched: every Hub download kokoro could attempt fails the test."""
    import kokoro.model
    import kokoro.pipeline

    def refuse(*args, **kwargs):
        raise AssertionError(f"Hub download attempted: {args} {kwargs}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr(kokoro.model, "hf_hub_download", refuse)
        patch.setattr(kokoro.pipeline, "hf_hub_download", refuse)
        yield


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("kokoro")
    fabricate_kokoro_folder(path, seed=SEED, voices=VOICES)
    return path


@pytest.fixture(scope="module")
def engine(folder) -> KokoroEngine:
    return KokoroEngine(folder)  # load_kokoro(folder) with every voice of the folder


@pytest.fixture(scope="module")
def loaded(engine):
    return engine.loaded


def test_layout_matches_the_hub_repo(folder):
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert files == ["config.json", KOKORO_WEIGHTS_NAME, *sorted(f"voices/{v}.pt" for v in VOICES)]
    config = read_json(folder / "config.json")
    assert config["vocab"] == KOKORO_VOCAB and config["n_token"] == 178
    assert config["plbert"]["max_position_embeddings"] == 512  # KPipeline chunks at 510 phonemes
    assert set(config) == set(tiny_kokoro_config())
    checkpoint = torch.load(folder / KOKORO_WEIGHTS_NAME, map_location="cpu", weights_only=True)
    assert sorted(checkpoint) == sorted(KOKORO_COMPONENTS)
    for voice in VOICES:
        pack = torch.load(folder / "voices" / f"{voice}.pt", weights_only=True)
        assert pack.shape == VOICE_SHAPE and pack.dtype == torch.float32


def test_same_seed_gives_byte_identical_files(folder, tmp_path):
    again = tmp_path / "again"
    fabricate_kokoro_folder(again, seed=SEED, voices=list(reversed(VOICES)))
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        assert sha256_file(path) == sha256_file(again / path.relative_to(folder)), path.name


def test_loads_through_kokoro_and_speaks_24khz(loaded):
    assert set(loaded.voices) == set(VOICES)
    assert set(loaded.pipelines) == {"a", "b"}  # bm_george speaks British English
    results = list(loaded.pipeline("Hi there.", voice=str(loaded.voices["am_adam"]), speed=FAST))
    assert results and results[0].phonemes  # offline G2P produced phonemes
    audio = torch.cat([r.audio for r in results]).numpy()
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 0.05 * 24_000 < audio.size < 5 * 24_000
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0


def test_offline_g2p_keeps_punctuation_and_reads_numbers(loaded):
    phonemes, _ = loaded.pipeline.g2p('Sure, it costs $5. "Thanks!"')
    assert phonemes.startswith("ʃˈʊɹ,")
    assert "dˈɑləɹz" in phonemes and "“" in phonemes and "”" in phonemes
    assert set(phonemes) <= set(KOKORO_VOCAB)


def test_missing_files_are_named(folder, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(folder, partial, ignore=shutil.ignore_patterns(KOKORO_WEIGHTS_NAME, "af_heart.pt"))
    with pytest.raises(ModelFolderError, match=rf"missing {KOKORO_WEIGHTS_NAME}, voices/af_heart.pt"):
        check_kokoro_folder(partial, ["am_adam", "af_heart"])
    with pytest.raises(ModelFolderError, match="not found"):
        load_kokoro(tmp_path / "nowhere")
    with pytest.raises(ModelFolderError, match="voices/bf_emma.pt"):
        load_kokoro(folder, voices=["bf_emma"])


def test_g2p_choice_is_checked_before_loading(folder):
    import spacy.util

    if not spacy.util.is_package("en_core_web_sm"):
        with pytest.raises(G2PError, match=r"python -m spacy download en_core_web_sm"):
            load_kokoro(folder, g2p="spacy")
    with pytest.raises(G2PError, match="unknown g2p 'gruut'"):
        load_kokoro(folder, g2p="gruut")


def test_weights_not_covering_the_model_fail_loudly(folder, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken, ignore=shutil.ignore_patterns("*.pth"))
    checkpoint = torch.load(folder / KOKORO_WEIGHTS_NAME, map_location="cpu", weights_only=True)
    dropped = sorted(checkpoint["predictor"])[0]
    del checkpoint["predictor"][dropped]  # kokoro itself would load this with strict=False, silently
    torch.save(checkpoint, broken / KOKORO_WEIGHTS_NAME)
    with pytest.raises(ModelFolderError, match="predictor: 1 weights missing"):
        load_kokoro(broken, voices=["am_adam"])


def test_engine_is_reproducible_and_cacheable(engine, tmp_path):
    assert engine.engine_id == "kokoro" and len(engine.model_hash) == 64
    first = engine.synthesize("Okay.", "am_adam", FAST)
    assert np.array_equal(first, engine.synthesize("Okay.", "am_adam", FAST))  # vocoder noise is seeded
    assert engine.voice_hash("am_adam") != engine.voice_hash("af_heart")
    requests = [request_for(engine, "Okay.", "am_adam", FAST), request_for(engine, "Hi.", "bm_george", FAST)]
    cache = TTSCache(tmp_path / "cache")
    report = cache.fill(requests, lambda r: engine.synthesize(r.text, r.voice, r.speed), engine.sample_rate)
    assert report.synthesized == 2
    clip = TTSCache(tmp_path / "cache").get(requests[0].key)
    assert clip.sample_rate == 24_000 and np.abs(clip.audio() - first).max() < 1e-4
    with pytest.raises(TTSError, match="unknown Kokoro voice 'af_nova'"):
        engine.synthesize("Hi.", "af_nova", FAST)


def test_offline_pipeline_has_kokoros_own_state(loaded):
    """OfflineKPipeline sets the attributes KPipeline.__init__ sets (guards a kokoro upgrade)."""
    from kokoro import KPipeline

    reference = KPipeline(lang_code="e", repo_id="hexgrad/Kokoro-82M", model=False)  # espeak G2P: offline
    assert set(vars(loaded.pipeline)) == set(vars(reference))
    assert isinstance(loaded.pipeline, KPipeline) and loaded.pipeline.lang_code == "a"
