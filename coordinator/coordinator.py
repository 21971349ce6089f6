"""Tap the model's token stream and dispatch the tool exactly once per turn.

Why: the v4.1 model opens every tool acknowledgement with the blip. Seeing its
codebook-0 codes in the first two audio frames (160 ms of audio) means the
tool can start while the ack is still being spoken ("early" dispatch). When the
blip is missed (5% of tool acks on the card: trajectory misses), the turn falls
back to dispatching when the ack ends ("ack_end" dispatch), which is what v4
did for every turn. Never both, never twice.

Usage (async)::

    coord = Coordinator(BlipSignature.load(npy, sig_json), None, dispatch_tool)
    async for tok in coord.atap(stream):          # stream: async or plain iterable
        play_or_print(tok)
    await coord.last_turn.wait_dispatch()

Usage (sync, inside a plain ``for`` loop over ``model.generate_interleaved``)::

    with Coordinator(signature, None, dispatch_tool) as coord:
        for tok in coord.tap(model.generate_interleaved(**chat, max_new_tokens=512)):
            ...                                    # unchanged loop body
        coord.last_turn.result(timeout=30)

In the sync form the dispatch coroutine runs on a private event-loop thread
(or on ``loop=`` if you pass a running loop owned by another thread), because
the generation loop blocks the calling thread.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any, AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Literal

from .detector import Decision, StreamingBlipDetector
from .matchers import Matcher, matcher_from_signature
from .constants import END_OF_AUDIO_CODE, IM_END_TOKEN
from .signature import BlipSignature
from .timeline import EventKind, Timeline
from .tokens import ItemKind, classify, to_codes

Fallback = Literal["ack_end"] | None


class Trigger(str, Enum):
    EARLY = "early"  # the blip matched: dispatch while the ack is being spoken
    ACK_END = "ack_end"  # the blip was missed: dispatch when the ack ended


@dataclass(frozen=True)
class DispatchContext:
    """What the dispatch callable is told: why now, and what the stream said so far.

    ``text_token_ids`` are the text tokens seen before the dispatch (decode
    them with your tokenizer if the tool arguments come from the text channel).
    """

    trigger: Trigger
    decision: Decision
    frame_index: int | None
    item_index: int
    text_token_ids: tuple[int, ...]
    t_s: float


DispatchFn = Callable[[DispatchContext], Awaitable[Any]]


class Turn:
    """State of one tapped turn: detector, timeline, and the dispatch handle.

    Why a separate object: each ``tap``/``atap`` call is its own turn, so a
    generator left un-closed by its consumer cannot corrupt the next turn.
    """

    def __init__(self, coordinator: "Coordinator") -> None:
        self._c = coordinator
        self.detector = StreamingBlipDetector(coordinator.signature, coordinator.matcher)
        self.timeline = Timeline(clock=coordinator.clock)
        self.text_token_ids: list[int] = []
        self.dispatched: Trigger | None = None
        self.dispatch_handle: asyncio.Task[Any] | concurrent.futures.Future[Any] | None = None
        self.ack_ended = False
        self.finished = False
        self._n_items = 0
        self._n_audio = 0

    @property
    def decision(self) -> Decision:
        return self.detector.decision

    @property
    def audio_frames_seen(self) -> int:
        return self._n_audio

    # ------------------------------------------------------------ state machine
    def observe(self, item: Any) -> DispatchContext | None:
        """Process one stream item; return a context if a dispatch must fire now."""
        idx = self._n_items
        self._n_items = idx + 1
        codes = to_codes(item)
        kind = classify(codes, self._c.n_codebooks, idx)
        if kind is ItemKind.TEXT:
            token = codes.item(0)
            self.text_token_ids.append(token)
            if token == self._c.end_of_turn_token:
                return self._ack_end(idx, "end_of_turn")
            return None
        fi = self._n_audio
        self._n_audio = fi + 1
        before = self.detector.decision
        decision = self.detector.feed(codes)
        fire = None
        if decision is not before:
            if decision.is_match:
                self.timeline.add(EventKind.BLIP_DETECTED, fi, idx)
                if self.dispatched is None:
                    fire = self._fire(Trigger.EARLY, fi, idx)
            else:
                self.timeline.add(EventKind.BLIP_MISSED, fi, idx, decision.reason.value if decision.reason else None)
        if codes.item(0) == END_OF_AUDIO_CODE:
            fire = self._ack_end(idx, "end_of_audio", frame_index=fi) or fire
        return fire

    def finish(self) -> DispatchContext | None:
        """The stream is exhausted: the ack certainly ended."""
        fire = self._ack_end(self._n_items, "stream_exhausted")
        self.timeline.add(EventKind.TURN_END, self._n_audio, self._n_items)
        self.finished = True
        return fire

    def abandon(self) -> None:
        if not self.finished:
            self.timeline.add(EventKind.TURN_ABANDONED, self._n_audio, self._n_items)
            self.finished = True

    def _ack_end(self, idx: int, detail: str, frame_index: int | None = None) -> DispatchContext | None:
        if self.ack_ended:
            return None
        self.ack_ended = True
        fi = self._n_audio if frame_index is None else frame_index
        before = self.detector.decision
        decision = self.detector.end_of_turn()
        if decision is not before:
            self.timeline.add(EventKind.BLIP_MISSED, fi, idx, decision.reason.value if decision.reason else None)
        self.timeline.add(EventKind.ACK_END, fi, idx, detail)
        if self.dispatched is None and self._c.fallback == "ack_end" and not decision.is_match:
            return self._fire(Trigger.ACK_END, fi, idx)
        return None

    def _fire(self, trigger: Trigger, fi: int, idx: int) -> DispatchContext:
        self.dispatched = trigger
        event = self.timeline.add(EventKind.DISPATCHED, fi, idx, trigger.value)
        return DispatchContext(
            trigger=trigger,
            decision=self.detector.decision,
            frame_index=fi,
            item_index=idx,
            text_token_ids=tuple(self.text_token_ids),
            t_s=event.t_s,
        )

    async def run_dispatch(self, ctx: DispatchContext) -> Any:
        """Run the user's dispatch, recording completion or failure on the timeline."""
        try:
            result = self._c.dispatch(ctx)
            if not inspect.isawaitable(result):
                raise TypeError(
                    f"dispatch must be an async callable (returned {type(result).__name__}, not an awaitable)"
                )
            value = await result
        except BaseException as err:
            self.timeline.add(EventKind.DISPATCH_FAILED, ctx.frame_index, ctx.item_index, repr(err))
            raise
        self.timeline.add(EventKind.DISPATCH_DONE, ctx.frame_index, ctx.item_index)
        return value

    # ---------------------------------------------------------------- results
    async def wait_dispatch(self) -> Any:
        """Await the dispatch's result (None if this turn did not dispatch)."""
        handle = self.dispatch_handle
        if handle is None:
            return None
        if isinstance(handle, concurrent.futures.Future):
            return await asyncio.wrap_future(handle)
        return await handle

    def result(self, timeout: float | None = None) -> Any:
        """Block for the dispatch's result (sync API; None if this turn did not dispatch)."""
        handle = self.dispatch_handle
        if handle is None:
            return None
        if isinstance(handle, concurrent.futures.Future):
            return handle.result(timeout)
        if not handle.done():
            raise RuntimeError("dispatch runs on an asyncio loop: use 'await turn.wait_dispatch()'")
        return handle.result()


class _LoopThread:
    """A private event loop on a daemon thread, for dispatches fired from sync code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="coordinator-dispatch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class Coordinator:
    """Watches a ``generate_interleaved``-style stream and fires ``dispatch`` once per turn.

    ``matcher=None`` uses the matcher the signature's ``detection`` block asks
    for. ``fallback="ack_end"`` (default) dispatches at ack end when the blip
    was missed; ``fallback=None`` only ever dispatches on a blip (use it to
    watch non-tool turns, or when something else handles misses).
    """

    def __init__(
        self,
        signature: BlipSignature,
        matcher: Matcher | None,
        dispatch: DispatchFn,
        *,
        fallback: Fallback = "ack_end",
        end_of_turn_token: int = IM_END_TOKEN,
        clock: Callable[[], float] = time.perf_counter,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not isinstance(signature, BlipSignature):
            raise TypeError(f"Coordinator needs a BlipSignature, got {type(signature).__name__}")
        if fallback not in ("ack_end", None):
            raise ValueError(f"fallback must be 'ack_end' or None, got {fallback!r}")
        if not callable(dispatch):
            raise TypeError("dispatch must be an async callable taking a DispatchContext")
        if signature.n_codebooks < 2:
            raise ValueError("audio frames need >= 2 codebooks to be told apart from text tokens")
        self.signature = signature
        self.matcher = matcher if matcher is not None else matcher_from_signature(signature)
        self.dispatch = dispatch
        self.fallback: Fallback = fallback
        self.end_of_turn_token = end_of_turn_token
        self.clock = clock
        self.n_codebooks = signature.n_codebooks
        self._user_loop = loop
        self._loop_thread: _LoopThread | None = None
        self._pending: set[concurrent.futures.Future[Any]] = set()
        self._lock = threading.Lock()
        self.last_turn: Turn | None = None

    # ---------------------------------------------------------------- async API
    async def atap(self, stream: AsyncIterable[Any] | Iterable[Any]) -> AsyncIterator[Any]:
        """Yield every item of ``stream`` unchanged; dispatch via ``asyncio.create_task``.

        After creating the task it yields control once (``asyncio.sleep(0)``),
        so the dispatch starts before the next stream item is pulled even when
        ``stream`` is a plain iterable.
        """
        turn = self.new_turn()
        try:
            if hasattr(stream, "__aiter__"):
                async for item in stream:  # type: ignore[union-attr]
                    ctx = turn.observe(item)
                    if ctx is not None:
                        await self._afire(turn, ctx)
                    yield item
            else:
                for item in stream:  # type: ignore[union-attr]
                    ctx = turn.observe(item)
                    if ctx is not None:
                        await self._afire(turn, ctx)
                    yield item
            ctx = turn.finish()
            if ctx is not None:
                await self._afire(turn, ctx)
        finally:
            turn.abandon()

    async def _afire(self, turn: Turn, ctx: DispatchContext) -> None:
        turn.dispatch_handle = asyncio.create_task(turn.run_dispatch(ctx), name=f"dispatch:{ctx.trigger.value}")
        await asyncio.sleep(0)

    # ----------------------------------------------------------------- sync API
    def tap(self, stream: Iterable[Any]) -> Iterator[Any]:
        """Yield every item of ``stream`` unchanged; dispatch on a background event loop."""
        turn = self.new_turn()
        try:
            for item in stream:
                ctx = turn.observe(item)
                if ctx is not None:
                    self._sfire(turn, ctx)
                yield item
            ctx = turn.finish()
            if ctx is not None:
                self._sfire(turn, ctx)
        finally:
            turn.abandon()

    def _sfire(self, turn: Turn, ctx: DispatchContext) -> None:
        loop = self._user_loop or self._background_loop()
        future = asyncio.run_coroutine_threadsafe(turn.run_dispatch(ctx), loop)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._forget)
        turn.dispatch_handle = future

    def _forget(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._pending.discard(future)

    def _background_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop_thread is None:
                self._loop_thread = _LoopThread()
            return self._loop_thread.loop

    def close(self, timeout: float | None = 30.0) -> None:
        """Wait for in-flight sync dispatches (up to ``timeout``), then stop the private loop."""
        with self._lock:
            pending = list(self._pending)
        if pending:
            concurrent.futures.wait(pending, timeout=timeout)
        with self._lock:
            thread, self._loop_thread = self._loop_thread, None
        if thread is not None:
            thread.close()

    def __enter__(self) -> "Coordinator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ helpers
    def new_turn(self) -> Turn:
        """Start a turn by hand (``observe``/``finish`` push API); ``tap``/``atap`` call this."""
        turn = Turn(self)
        self.last_turn = turn
        return turn

    @property
    def timeline(self) -> Timeline | None:
        """The last turn's timeline (shortcut for ``last_turn.timeline``)."""
        return self.last_turn.timeline if self.last_turn else None
