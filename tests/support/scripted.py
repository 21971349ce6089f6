"""Scripted ``generate_interleaved``-like streams, for tests, the bench and demos.

Why here and not in tests: the bench and a plotting demo need the same
streams, and they must stay numpy-only like the rest of the runtime.

A stream is a list of 1-D int64 arrays: shape (1,) = text token, shape
(n_codebooks,) = audio frame, in LFM2.5-Audio's order (6 text tokens, then 12
audio frames, alternating; ``<|text_end|>`` when the text runs out; an
end-of-audio frame of 2048s; ``<|im_end|>`` last).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from coordinator.constants import END_OF_AUDIO_CODE, IM_END_TOKEN, N_CODEBOOKS, TEXT_END_TOKEN
from coordinator.signature import BlipSignature

#: The codes the v4.1 card prints: cb0 across frames, and all codebooks at frame 0.
CARD_BLIP_CB0 = (430, 127)
CARD_BLIP_FRAME0 = (430, 13, 1903, 1548)


def card_like_blip_codes(n_frames: int = 2, n_codebooks: int = N_CODEBOOKS, seed: int = 0) -> np.ndarray:
    """A (1, n_codebooks, n_frames) int64 blip consistent with the card's printed codes."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, END_OF_AUDIO_CODE, size=(1, n_codebooks, n_frames), dtype=np.int64)
    codes[0, 0, : min(2, n_frames)] = CARD_BLIP_CB0[: min(2, n_frames)]
    k = min(len(CARD_BLIP_FRAME0), n_codebooks)
    codes[0, :k, 0] = CARD_BLIP_FRAME0[:k]
    return codes


class Opening(str, Enum):
    """How the first audio frames of a scripted turn relate to the blip."""

    BLIP_EXACT = "blip_exact"  # every codebook bit-exact (never seen in practice: card 0/40)
    BLIP_CB0 = "blip_cb0"  # cb0 and cb3 right, deeper codebooks drift (the typical tool ack)
    CB0_ONLY = "cb0_only"  # cb0 right, every other codebook (cb3 included) drifts
    CB3_ONLY = "cb3_only"  # cb0 wrong at every frame, cb3 right
    MISS_FRAME0 = "miss_frame0"  # cb0 and cb3 wrong from frame 0 (a non-tool opening, card: 1049)
    MISS_LAST = "miss_last"  # cb0 and cb3 right until the last blip frame, then wrong
    RANDOM = "random"  # no relation to the blip (cb0/cb3 at frame 0 guaranteed different)

    @property
    def is_blip(self) -> bool:
        """Ground truth under the cb0 matcher."""
        return self in (Opening.BLIP_EXACT, Opening.BLIP_CB0, Opening.CB0_ONLY)


def _different(rng: np.random.Generator, avoid: int) -> int:
    value = int(rng.integers(0, END_OF_AUDIO_CODE - 1))
    return value if value < avoid else value + 1  # uniform over [0, 2047] \ {avoid}


def audio_frames(signature: BlipSignature, opening: Opening, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, n_codebooks) audio codes whose first frames follow ``opening``; n >= signature.n_frames."""
    f, c = signature.n_frames, signature.n_codebooks
    frames = rng.integers(0, END_OF_AUDIO_CODE, size=(max(n, f), c), dtype=np.int64)
    deep = [k for k in range(c) if k not in (0, 3)]
    for i in range(f):
        blip_i = signature.all_codebooks_at_frame(i)
        if opening is Opening.BLIP_EXACT:
            frames[i] = blip_i
            continue
        for k in deep:  # drift: make sure deep codebooks really differ
            frames[i, k] = _different(rng, int(blip_i[k]))
        cb0_ok = opening in (Opening.BLIP_CB0, Opening.CB0_ONLY) or (opening is Opening.MISS_LAST and i < f - 1)
        cb3_ok = opening in (Opening.BLIP_CB0, Opening.CB3_ONLY) or (opening is Opening.MISS_LAST and i < f - 1)
        frames[i, 0] = blip_i[0] if cb0_ok else _different(rng, int(blip_i[0]))
        if c > 3:
            frames[i, 3] = blip_i[3] if cb3_ok else _different(rng, int(blip_i[3]))
    return frames[:n]


def interleave(
    text_ids: list[int],
    frames: np.ndarray,
    *,
    text_chunk: int = 6,
    audio_chunk: int = 12,
    end_of_audio: bool = True,
    im_end: bool = True,
) -> list[np.ndarray]:
    """Items in ``generate_interleaved`` order: text chunk, audio chunk, ... then the end markers."""
    items: list[np.ndarray] = []
    t = a = 0
    text_done = False
    n_cb = frames.shape[1] if frames.ndim == 2 else 8
    while t < len(text_ids) or a < len(frames) or not text_done:
        if not text_done:
            for tok in text_ids[t : t + text_chunk]:
                items.append(np.array([tok], dtype=np.int64))
            t += text_chunk
            if t >= len(text_ids):
                items.append(np.array([TEXT_END_TOKEN], dtype=np.int64))
                text_done = True
        for row in frames[a : a + audio_chunk]:
            items.append(np.array(row, dtype=np.int64))
        a += audio_chunk
        if text_done and a >= len(frames):
            break
    if end_of_audio and len(frames):
        items.append(np.full(n_cb, END_OF_AUDIO_CODE, dtype=np.int64))
    if im_end:
        items.append(np.array([IM_END_TOKEN], dtype=np.int64))
    return items


@dataclass(frozen=True)
class ScriptedTurn:
    """One scripted turn and its ground truth."""

    opening: Opening
    items: list[np.ndarray]
    frames: np.ndarray  # the audio frames alone, (n, n_codebooks), end marker excluded


def scripted_turn(
    signature: BlipSignature,
    opening: Opening,
    rng: np.random.Generator,
    *,
    n_text: int = 8,
    n_audio: int = 24,
) -> ScriptedTurn:
    """A full turn: ``n_text`` text tokens interleaved with ``n_audio`` frames, then end markers."""
    text = [int(x) for x in rng.integers(256, 512, size=n_text)]
    frames = audio_frames(signature, opening, n_audio, rng)
    return ScriptedTurn(opening, interleave(text, frames), frames)
