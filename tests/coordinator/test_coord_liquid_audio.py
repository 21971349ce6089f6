"""Spec: the coordinator taps liquid-audio's real ``generate_interleaved`` (tiny random model).

The tiny model cannot have learned the blip, so the "blip" here is whatever its
greedy decoding emits as the first two audio frames: a second greedy run then
must dispatch early at audio frame 1, and a signature with another codebook 0
must miss and fall back at the end of the turn. Real torch tensors, real loop.
"""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from coordinator.coordinator import Coordinator, Trigger
from coordinator.detector import DecisionReason
from coordinator.signature import BlipSignature

pytestmark = pytest.mark.slow


def greedy_turn(tiny_lfm, max_new_tokens: int = 24):
    from liquid_audio import ChatState

    chat = ChatState(tiny_lfm.processor)
    chat.new_turn("system")
    chat.add_text("Respond with interleaved text and audio.")
    chat.end_turn()
    chat.new_turn("user")
    chat.add_text("what is the weather in Paris")
    chat.end_turn()
    chat.new_turn("assistant")
    return tiny_lfm.model.generate_interleaved(**chat, max_new_tokens=max_new_tokens)


def test_coordinator_on_liquid_audio_generate_interleaved(tiny_lfm):
    pytest.importorskip("liquid_audio")
    first = [tok for tok in greedy_turn(tiny_lfm)]
    audio = [t.cpu().numpy() for t in first if t.numel() > 1]
    assert len(audio) >= 2 and all(a.shape == (8,) for a in audio)
    codes = np.stack(audio[:2], axis=1)[None]  # (1, 8, 2) = (batch, codebook, frame)
    signature = BlipSignature.from_codes(codes)
    calls = []

    async def dispatch(ctx):
        calls.append(ctx)
        return ctx.trigger

    # Sync: the card's plain for loop over the real generator.
    with Coordinator(signature, None, dispatch) as coord:
        seen = [tok for tok in coord.tap(greedy_turn(tiny_lfm))]
        assert coord.last_turn.result(timeout=10) is Trigger.EARLY
    second_audio_at = [i for i, t in enumerate(seen) if t.numel() > 1][1]
    assert calls[0].frame_index == 1 and calls[0].item_index == second_audio_at
    assert [c.trigger for c in calls] == [Trigger.EARLY]

    # A blip whose codebook 0 the model does not emit: miss, fallback once at turn end.
    other = codes.copy()
    other[0, 0, :] = (other[0, 0, :] + 1) % 2048
    coord = Coordinator(BlipSignature.from_codes(other), None, dispatch)

    async def main():
        async for _ in coord.atap(greedy_turn(tiny_lfm)):
            pass
        return await coord.last_turn.wait_dispatch()

    assert asyncio.run(main()) is Trigger.ACK_END
    turn = coord.last_turn
    assert turn.decision.reason is DecisionReason.MISMATCH and turn.decision.frame_index == 0
    assert [c.trigger for c in calls] == [Trigger.EARLY, Trigger.ACK_END]
