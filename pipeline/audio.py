"""Waveform helpers shared by the stages: int16/float conversion, resampling, wav I/O.

Conventions: a waveform in memory is a 1-D float32 numpy array in [-1, 1]
(mono); on disk and in caches it is 16-bit PCM. Every file is written through
``pipeline.io`` so it is never half-written.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import soundfile

from pipeline.io import write_bytes

SAMPLE_RATE = 24_000  # Kokoro, Mimi and LFM2.5-Audio all work at 24 kHz
INT16_SCALE = 32768.0


def to_float32(wave: np.ndarray) -> np.ndarray:
    """Mono float32 in [-1, 1] from int16 PCM or any float array."""
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise ValueError(f"expected a mono 1-D waveform, got shape {wave.shape}")
    if wave.dtype == np.int16:
        return wave.astype(np.float32) / INT16_SCALE
    if not np.issubdtype(wave.dtype, np.floating):
        raise ValueError(f"expected int16 or float samples, got {wave.dtype}")
    return wave.astype(np.float32, copy=False)


def to_int16(wave: np.ndarray) -> np.ndarray:
    """16-bit PCM from float samples (clipped); int16 input is returned as is.

    Scaled by 32768, the inverse of ``to_float32`` and of soundfile's reader, so
    int16 → float → int16 is exact: the blip preview survives being mixed into
    an ack bit for bit, which the signature check relies on.
    """
    wave = np.asarray(wave)
    if wave.dtype == np.int16:
        return wave
    scaled = np.round(to_float32(wave).astype(np.float64) * INT16_SCALE)
    return np.clip(scaled, -INT16_SCALE, INT16_SCALE - 1).astype(np.int16)


def resample(wave: np.ndarray, orig_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling (torchaudio's sinc interpolation) of a mono waveform."""
    wave = to_float32(wave)
    if orig_rate == target_rate or wave.size == 0:
        return wave
    import torch
    import torchaudio.functional

    tensor = torch.from_numpy(np.ascontiguousarray(wave)).reshape(1, -1)
    return torchaudio.functional.resample(tensor, orig_rate, target_rate).reshape(-1).numpy()


def decode_wav(data: bytes, source: str = "<bytes>") -> tuple[np.ndarray, int]:
    """(float32 mono samples, sample rate) from the bytes of a wav file.

    Streamed wavs (``espeak-ng --stdout``) carry placeholder sizes in their
    header; libsndfile reads them up to the end of the data.
    """
    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as err:
        raise ValueError(f"{source}: not a readable wav file ({err})") from None
    if samples.shape[1] != 1:
        raise ValueError(f"{source}: expected mono audio, got {samples.shape[1]} channels")
    return samples[:, 0], int(rate)


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    return decode_wav(data, source=str(path))


def encode_wav(wave: np.ndarray, sample_rate: int) -> bytes:
    """Bytes of a 16-bit PCM mono wav file."""
    buffer = io.BytesIO()
    soundfile.write(buffer, to_int16(wave), sample_rate, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


def write_wav(path: str | os.PathLike, wave: np.ndarray, sample_rate: int) -> None:
    """Write a 16-bit PCM mono wav atomically."""
    write_bytes(path, encode_wav(wave, sample_rate))
