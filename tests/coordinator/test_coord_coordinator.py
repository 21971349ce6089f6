"""Spec: the Coordinator dispatches exactly once per turn, as early as the blip allows.

- blip matched  -> "early" dispatch, started before the rest of the ack is pulled;
- blip missed   -> "ack_end" dispatch when the audio ends, <|im_end|> arrives or
                   the stream runs out (fallback="ack_end", the default);
- fallback=None -> no dispatch on a miss;
- never both, never twice, even if the blip's codes reappear later.
"""
from __future__ import annotations

import asyncio
import json
import threading

import numpy as np
import pytest

from coordinator.coordinator import Coordinator, Trigger
from coordinator.detector import DecisionReason
from coordinator.matchers import CodebookMatch
from tests.support.scripted import Opening, audio_frames, card_like_blip_codes, interleave, scripted_turn
from coordinator.signature import BlipSignature
from coordinator.timeline import EventKind

SIG = BlipSignature.from_codes(card_like_blip_codes())
EOA = np.full(8, 2048, dtype=np.int64)


def turn_items(opening: Opening, seed: int = 0, **kw) -> list[np.ndarray]:
    return scripted_turn(SIG, opening, np.random.default_rng(seed), **kw).items


def audio_positions(items) -> list[int]:
    return [i for i, x in enumerate(items) if x.size == 8]


class Recorder:
    """An async dispatch that notes how far the stream had been consumed when it started."""

    def __init__(self, consumed: list[int] | None = None) -> None:
        self.consumed = consumed if consumed is not None else []
        self.calls: list = []

    async def __call__(self, ctx):
        self.calls.append((ctx, len(self.consumed)))
        await asyncio.sleep(0)
        return f"tool ran ({ctx.trigger.value})"


async def scripted_stream(items, consumed: list[int]):
    """An async generate_interleaved stand-in that yields to the loop between tokens."""
    for i, item in enumerate(items):
        consumed.append(i)
        yield item
        await asyncio.sleep(0)


def run_turn(items, *, fallback="ack_end", matcher=None):
    consumed: list[int] = []
    dispatch = Recorder(consumed)
    coord = Coordinator(SIG, matcher, dispatch, fallback=fallback)

    async def main():
        out = [item async for item in coord.atap(scripted_stream(items, consumed))]
        result = await coord.last_turn.wait_dispatch()
        return out, result

    out, result = asyncio.run(main())
    assert len(out) == len(items) and all(a is b for a, b in zip(out, items))  # passes items through
    return coord.last_turn, dispatch, result


def test_blip_dispatches_early_before_the_rest_of_the_ack_is_consumed():
    items = turn_items(Opening.BLIP_CB0)
    blip_end = audio_positions(items)[SIG.n_frames - 1]  # stream position of the 2nd audio frame
    turn, dispatch, result = run_turn(items)

    assert len(dispatch.calls) == 1
    ctx, consumed_at_start = dispatch.calls[0]
    assert ctx.trigger is Trigger.EARLY and ctx.frame_index == 1 and ctx.item_index == blip_end
    assert consumed_at_start == blip_end + 1 < len(items)  # nothing after the blip pulled yet
    assert ctx.text_token_ids == tuple(int(x[0]) for x in items[:blip_end] if x.size == 1)
    assert result == "tool ran (early)"
    assert turn.timeline.kinds() == [
        "blip_detected", "dispatched:early", "dispatch_done", "ack_end:end_of_audio", "turn_end"]
    detected = turn.timeline.first(EventKind.BLIP_DETECTED)
    assert (detected.frame_index, detected.item_index) == (1, blip_end)


def test_miss_falls_back_to_dispatch_at_the_end_of_audio():
    items = turn_items(Opening.MISS_FRAME0)
    eoa = audio_positions(items)[-1]
    turn, dispatch, result = run_turn(items)

    assert turn.decision.reason is DecisionReason.MISMATCH and turn.decision.frame_index == 0
    [(ctx, consumed_at_start)] = dispatch.calls
    assert ctx.trigger is Trigger.ACK_END and ctx.item_index == eoa
    assert consumed_at_start == eoa + 1  # fired on the end-of-audio frame, before <|im_end|>
    assert result == "tool ran (ack_end)"
    assert turn.timeline.kinds() == [
        "blip_missed:mismatch", "ack_end:end_of_audio", "dispatched:ack_end", "dispatch_done", "turn_end"]


def test_fallback_none_never_dispatches_on_a_miss_but_still_on_a_blip():
    turn, dispatch, result = run_turn(turn_items(Opening.MISS_LAST), fallback=None)
    assert dispatch.calls == [] and result is None and turn.dispatched is None
    assert "ack_end:end_of_audio" in turn.timeline.kinds()
    assert not any(k.startswith("dispatched") for k in turn.timeline.kinds())

    turn, dispatch, _ = run_turn(turn_items(Opening.BLIP_CB0), fallback=None)
    assert [c.trigger for c, _ in dispatch.calls] == [Trigger.EARLY]


def test_blip_reappearing_later_never_dispatches_twice():
    rng = np.random.default_rng(5)
    blip = audio_frames(SIG, Opening.BLIP_EXACT, 2, rng)
    frames = np.concatenate([blip, audio_frames(SIG, Opening.RANDOM, 10, rng), blip, blip])
    items = interleave([300, 301, 302], frames)
    items += [np.array([300])] + list(blip) + [EOA, np.array([7])]  # and again after the end
    turn, dispatch, _ = run_turn(items)
    assert [c.trigger for c, _ in dispatch.calls] == [Trigger.EARLY]
    assert turn.timeline.kinds().count("blip_detected") == 1

    # A miss at the start stays a miss, and falls back exactly once.
    frames = np.concatenate([audio_frames(SIG, Opening.MISS_FRAME0, 4, rng), blip, blip])
    turn, dispatch, _ = run_turn(interleave([300], frames))
    assert [c.trigger for c, _ in dispatch.calls] == [Trigger.ACK_END]
    assert "blip_detected" not in turn.timeline.kinds()


def test_text_only_turn_falls_back_at_im_end():
    items = [np.array([t]) for t in (300, 301, 130, 7)]
    turn, dispatch, _ = run_turn(items)
    [(ctx, consumed_at_start)] = dispatch.calls
    assert ctx.trigger is Trigger.ACK_END and consumed_at_start == 4 and ctx.frame_index == 0
    assert turn.decision.reason is DecisionReason.END_OF_TURN
    assert turn.timeline.kinds()[:3] == ["blip_missed:end_of_turn", "ack_end:end_of_turn", "dispatched:ack_end"]


def test_audio_ending_inside_the_blip_is_a_miss():
    rng = np.random.default_rng(2)
    first = audio_frames(SIG, Opening.BLIP_CB0, 1, rng)  # only frame 0 of the blip, then audio ends
    turn, dispatch, _ = run_turn(interleave([300], first))
    assert turn.decision.reason is DecisionReason.END_OF_AUDIO and turn.decision.frame_index == 1
    assert [c.trigger for c, _ in dispatch.calls] == [Trigger.ACK_END]


def test_exhausted_stream_without_end_markers_falls_back_once():
    rng = np.random.default_rng(3)
    items = interleave([300], audio_frames(SIG, Opening.RANDOM, 5, rng), end_of_audio=False, im_end=False)
    turn, dispatch, _ = run_turn(items)
    [(ctx, consumed_at_start)] = dispatch.calls
    assert ctx.trigger is Trigger.ACK_END and consumed_at_start == len(items)
    assert "ack_end:stream_exhausted" in turn.timeline.kinds()


def test_matcher_argument_overrides_the_signature_default():
    items = turn_items(Opening.CB3_ONLY)
    _, dispatch, _ = run_turn(items)  # signature default: cb0 only -> miss
    assert [c.trigger for c, _ in dispatch.calls] == [Trigger.ACK_END]
    from coordinator.matchers import AnyOfCodebooks

    _, dispatch, _ = run_turn(items, matcher=AnyOfCodebooks(codebooks=(0, 3)))
    assert [c.trigger for c, _ in dispatch.calls] == [Trigger.EARLY]


def test_atap_accepts_a_plain_iterable_and_still_starts_the_dispatch_before_the_next_item():
    items = turn_items(Opening.BLIP_CB0)
    consumed: list[int] = []
    dispatch = Recorder(consumed)
    coord = Coordinator(SIG, CodebookMatch(), dispatch)

    def plain():
        for i, item in enumerate(items):
            consumed.append(i)
            yield item

    async def main():
        async for _ in coord.atap(plain()):
            pass
        return await coord.last_turn.wait_dispatch()

    assert asyncio.run(main()) == "tool ran (early)"
    assert dispatch.calls[0][1] == audio_positions(items)[1] + 1


class FakeTensor:
    """Duck-typed torch.Tensor: numel/detach/cpu/numpy, no torch needed."""

    def __init__(self, values):
        self._a = np.asarray(values, dtype=np.int64)

    def numel(self):
        return self._a.size

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self._a


def test_sync_tap_in_a_plain_for_loop_dispatches_concurrently():
    raw = turn_items(Opening.BLIP_CB0)
    items = [FakeTensor(x) for x in raw]  # what generate_interleaved yields, minus torch
    blip_end = audio_positions(raw)[1]
    started = threading.Event()
    consumed_when_started: list[int] = []
    consumed = 0

    async def dispatch(ctx):
        consumed_when_started.append(consumed)
        started.set()
        return "ok"

    with Coordinator(SIG, None, dispatch) as coord:
        for i, tok in enumerate(coord.tap(iter(items))):  # the card's loop shape
            consumed = i + 1
            if i == blip_end:
                assert coord.last_turn.dispatched is Trigger.EARLY
                # the tool runs on the dispatch thread while this loop is still generating
                assert started.wait(2.0)
        assert coord.last_turn.result(timeout=2.0) == "ok"
    assert consumed_when_started[0] <= blip_end + 1 < len(items)
    assert coord.last_turn.timeline.kinds().count("dispatched:early") == 1


def test_sync_tap_falls_back_and_each_tap_is_a_new_turn():
    calls = []

    async def dispatch(ctx):
        calls.append(ctx.trigger)

    with Coordinator(SIG, None, dispatch) as coord:
        for _ in coord.tap(turn_items(Opening.MISS_FRAME0)):
            pass
        coord.last_turn.result(timeout=2.0)
        first = coord.last_turn
        for _ in coord.tap(turn_items(Opening.BLIP_CB0, seed=1)):
            pass
        coord.last_turn.result(timeout=2.0)
    assert calls == [Trigger.ACK_END, Trigger.EARLY]
    assert first is not coord.last_turn and first.dispatched is Trigger.ACK_END


def test_items_may_be_ints_arrays_or_tensor_likes_and_bad_sizes_are_named():
    items = [301, np.array([302]), FakeTensor([303]), np.array([[430, 1, 2, 3, 4, 5, 6, 7]]),
             FakeTensor([127, 1, 2, 3, 4, 5, 6, 7]), 7]
    turn, dispatch, _ = run_turn_raw(items)
    assert [c.trigger for c, _ in dispatch.calls] == [Trigger.EARLY]
    assert turn.text_token_ids == [301, 302, 303, 7]
    with pytest.raises(ValueError, match="stream item 1: expected 1 code .* or 8 codes"):
        run_turn_raw([301, np.arange(3)])


def run_turn_raw(items):
    dispatch = Recorder()
    coord = Coordinator(SIG, None, dispatch)

    async def main():
        async for _ in coord.atap(items):
            pass
        await coord.last_turn.wait_dispatch()

    asyncio.run(main())
    return coord.last_turn, dispatch, None


def test_failing_dispatch_is_recorded_and_raised_to_whoever_awaits_it():
    async def dispatch(ctx):
        raise RuntimeError("tool backend down")

    coord = Coordinator(SIG, None, dispatch)

    async def main():
        async for _ in coord.atap(turn_items(Opening.BLIP_CB0)):
            pass
        with pytest.raises(RuntimeError, match="backend down"):
            await coord.last_turn.wait_dispatch()

    asyncio.run(main())
    assert "dispatch_failed:RuntimeError('tool backend down')" in coord.last_turn.timeline.kinds()


def test_sync_dispatch_function_is_refused_clearly():
    coord = Coordinator(SIG, None, lambda ctx: None)  # not async

    async def main():
        async for _ in coord.atap(turn_items(Opening.BLIP_CB0)):
            pass
        with pytest.raises(TypeError, match="async callable"):
            await coord.last_turn.wait_dispatch()

    asyncio.run(main())


def test_constructor_validates_policy_and_signature():
    async def dispatch(ctx):
        return None

    with pytest.raises(ValueError, match="fallback"):
        Coordinator(SIG, None, dispatch, fallback="eventually")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="BlipSignature"):
        Coordinator(card_like_blip_codes(), None, dispatch)  # type: ignore[arg-type]


def test_timeline_is_json_ready_and_monotonic():
    turn, _, _ = run_turn(turn_items(Opening.BLIP_CB0))
    records = turn.timeline.to_records()
    json.dumps(records)
    times = [r["t_s"] for r in records]
    assert times == sorted(times) and times[0] >= 0
    assert {r["kind"] for r in records} >= {"blip_detected", "dispatched", "ack_end"}


def test_abandoned_turn_is_recorded_and_does_not_dispatch_a_fallback():
    calls = []

    async def dispatch(ctx):
        calls.append(ctx.trigger)

    with Coordinator(SIG, None, dispatch) as coord:
        gen = coord.tap(turn_items(Opening.MISS_FRAME0))
        for i, _ in enumerate(gen):
            if i == 3:
                break
        gen.close()
    assert calls == [] and coord.last_turn.timeline.kinds()[-1] == "turn_abandoned"
