"""TTS engines behind one interface: text + voice + speed -> float32 mono at 24 kHz.

- ``KokoroEngine``: production. Kokoro-82M through kokoro's real KModel/KPipeline
  (``pipeline.models.load_kokoro``), voices from the local model folder.
- ``EspeakEngine``: Debian's ``espeak-ng`` binary (apt ``espeak-ng``): a real,
  light engine (~20 ms a sentence) for offline runs and CI.

Each engine names what its output depends on, for the content-addressed cache
(``pipeline.tts_cache``): ``engine_id``, ``model_hash`` (weights, G2P, versions)
and ``voice_hash(voice)`` (the voice file or espeak voice a name resolves to).
"""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from abc import ABC, abstractmethod
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from pipeline.audio import SAMPLE_RATE, decode_wav, resample
from pipeline.io import sha256_file
from pipeline.params import StageError


class TTSError(StageError, RuntimeError):
    """An engine could not synthesise a text (or could not start)."""


class TTSEngine(ABC):
    """Synthesises mono float32 audio at ``sample_rate`` (24 kHz)."""

    engine_id: str
    sample_rate: int = SAMPLE_RATE

    @property
    @abstractmethod
    def model_hash(self) -> str:
        """Identity of everything besides text, voice and speed that shapes the audio."""

    def voice_hash(self, voice: str) -> str:
        """Identity of what ``voice`` resolves to (a voice file's hash, an espeak voice)."""
        return voice

    @abstractmethod
    def synthesize(self, text: str, voice: str, speed: float) -> np.ndarray:
        """Float32 mono samples at ``sample_rate``; raises TTSError if nothing can be spoken."""


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()


def _require_text(text: str) -> str:
    text = text.strip()
    if not text:
        raise TTSError("empty text: nothing to synthesise")
    return text


class KokoroEngine(TTSEngine):
    """Kokoro-82M from a local folder (``models/base/kokoro``)."""

    engine_id = "kokoro"

    def __init__(self, folder: Path, voices: Sequence[str] | None = None, g2p: str = "offline", device: str = "cpu"):
        from pipeline.kokoro_model import load_kokoro

        self.folder = Path(folder)
        self.loaded = load_kokoro(self.folder, voices=voices, g2p=g2p, device=device)
        self._voice_hashes: dict[str, str] = {}

    @cached_property
    def model_hash(self) -> str:
        from pipeline.hub_layout import KOKORO_CONFIG_NAME, KOKORO_WEIGHTS_NAME

        return _digest(
            sha256_file(self.folder / KOKORO_CONFIG_NAME),
            sha256_file(self.folder / KOKORO_WEIGHTS_NAME),
            f"g2p={self.loaded.g2p}",
            f"kokoro={metadata.version('kokoro')}",
            f"misaki={metadata.version('misaki')}",
        )

    def _voice_file(self, voice: str) -> Path:
        try:
            return self.loaded.voices[voice]
        except KeyError:
            known = ", ".join(sorted(self.loaded.voices))
            raise TTSError(f"{self.folder}: unknown Kokoro voice {voice!r} (loaded: {known})") from None

    def voice_hash(self, voice: str) -> str:
        if voice not in self._voice_hashes:
            self._voice_hashes[voice] = sha256_file(self._voice_file(voice))
        return self._voice_hashes[voice]

    def synthesize(self, text: str, voice: str, speed: float) -> np.ndarray:
        import torch

        text = _require_text(text)
        voice_file = str(self._voice_file(voice))
        # The vocoder draws noise: seed it from the request so a synthesis is reproducible.
        seed = int(_digest(text, voice, repr(float(speed)))[:15], 16)
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(seed)
            chunks = [r.audio for r in self.loaded.pipeline_for(voice)(text, voice=voice_file, speed=speed) if r.audio is not None]
        if not chunks:
            raise TTSError(f"Kokoro produced no audio for {text!r} (no phonemes)")
        return torch.cat([c.reshape(-1) for c in chunks]).float().cpu().numpy()


ESPEAK_INSTALL_HINT = "install it with `apt-get install -y espeak-ng` (Debian/Ubuntu package espeak-ng)"
ESPEAK_DEFAULT_WPM = 175  # espeak-ng's own default rate: speed 1.0


class EspeakEngine(TTSEngine):
    """Debian's ``espeak-ng`` binary; voices like ``en-us``, ``en-gb``, ``en-us+f3``.

    ``voices`` maps the pipeline's voice names (e.g. Kokoro's ``am_adam``) to
    espeak voices, so params name the same speakers for either engine; a name
    not in the map is used as an espeak voice directly.
    """

    engine_id = "espeak-ng"

    def __init__(self, voices: Mapping[str, str] | None = None, binary: str = "espeak-ng"):
        resolved = shutil.which(binary)
        if resolved is None:
            raise TTSError(f"the espeak-ng binary '{binary}' is not on PATH: {ESPEAK_INSTALL_HINT}")
        self.binary = resolved
        self.voices = dict(voices or {})

    @cached_property
    def model_hash(self) -> str:
        """The version line, e.g. ``eSpeak NG text-to-speech: 1.51`` (data path dropped)."""
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True, check=True).stdout
        return re.split(r"\s+Data at:", out.strip())[0]

    def voice_hash(self, voice: str) -> str:
        return self.voices.get(voice, voice)

    def synthesize(self, text: str, voice: str, speed: float) -> np.ndarray:
        text = _require_text(text)
        if speed <= 0:
            raise TTSError(f"speed must be positive, got {speed}")
        espeak_voice = self.voice_hash(voice)
        wpm = max(80, round(ESPEAK_DEFAULT_WPM * speed))
        # Text on stdin: a text starting with '-' is never read as an option.
        command = [self.binary, "-v", espeak_voice, "-s", str(wpm), "--stdout"]
        done = subprocess.run(command, input=text.encode("utf-8"), capture_output=True)
        if done.returncode != 0 or not done.stdout:
            error = done.stderr.decode("utf-8", "replace").strip() or f"exit code {done.returncode}"
            raise TTSError(f"espeak-ng -v {espeak_voice} failed for {text!r}: {error}")
        samples, rate = decode_wav(done.stdout, source=f"espeak-ng -v {espeak_voice} output")
        if samples.size == 0:
            raise TTSError(f"espeak-ng produced no audio for {text!r}")
        return resample(samples, rate, self.sample_rate)
