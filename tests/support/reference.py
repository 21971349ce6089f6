"""The card's recipe, kept verbatim for comparison only (tests and bench).

Why keep it: it is the published baseline. ``StreamingBlipDetector`` must agree
with it on every stream where the recipe reaches a verdict, decide no later,
and cost no more per frame (see ``bench/bench_detector.py``). Do not use it to
serve: it needs the caller to pick the right index of the blip array (the
card's own pitfall), waits for exactly 2 frames, and never decides when the
audio or the turn ends first.
"""
from __future__ import annotations

import numpy as np


def card_is_blip_emitted(first_2_audio_frames: np.ndarray, blip_cb0: np.ndarray) -> bool:
    """The card's recipe: ``first_2_audio_frames`` is (n_codebooks=8, n_frames=2) of Mimi tokens.

    Verbatim from the v4.1 card's "Coordinator integration recipe", with the
    module constant ``BLIP_CB0`` turned into the ``blip_cb0`` argument.
    """
    return np.array_equal(first_2_audio_frames[0], blip_cb0)


class CardRecipeLoop:
    """The card's serving loop body, one audio token at a time.

    Mirrors::

        audio_frames.append(tok.cpu().numpy().squeeze())
        if len(audio_frames) == 2 and is_blip_emitted(np.stack(audio_frames, axis=1)):
            dispatch(...)

    ``feed`` returns True/False on the 2nd frame (the only time the recipe
    decides) and None otherwise. Like the card, it keeps appending frames
    after the decision.
    """

    __slots__ = ("blip_cb0", "audio_frames")

    def __init__(self, blip_cb0: np.ndarray) -> None:
        self.blip_cb0 = blip_cb0
        self.audio_frames: list[np.ndarray] = []

    def reset(self) -> None:
        self.audio_frames = []

    def feed(self, frame: np.ndarray) -> bool | None:
        audio_frames = self.audio_frames
        audio_frames.append(frame.squeeze())
        if len(audio_frames) == 2:
            return card_is_blip_emitted(np.stack(audio_frames, axis=1), self.blip_cb0)
        return None
