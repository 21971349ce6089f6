"""Generation: a dataset row + the user's speech -> the model's ``Reply``, through liquid-audio.

``generate_reply`` is the one-row entry point (stock ``generate_interleaved``);
``generate_replies`` does many rows, through the batched greedy decoder
(``pipeline.batch_decode``) when ``batch_size`` > 1 -- the same replies, token for token. The model sees exactly the chat layout it was trained on
(``pipeline.prompts``, ``pipeline.chat_samples``):

    <|startoftext|>
    <|im_start|>system\\n{system_prompt(row.tools)}<|im_end|>\\n
    <|im_start|>user\\n{user audio, add_audio(wave[1, N], sr)}<|im_end|>\\n
    <|im_start|>assistant\\n  -> generate_interleaved(**chat)

tool_result_speak rows replay the two-turn flow in the *same* ``ChatState``:
turn 1 is generated as above; its generated tokens are appended
(``chat.append``), the turn is ended, the facts system prompt
(``facts_system_prompt``: set_context) is added as a system turn, and turn 2 is
generated after ``<|im_start|>assistant``.

Generation is greedy unless temperatures are given (``GenerationParams``);
sampled generation is seeded per reply. The interleave is the one the model
folder records it was trained with (``LoadedLFM.schedule``): the model's own
goes through stock ``generate_interleaved``, another first text chunk through
the greedy decoder (stock cannot follow it).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from coordinator.constants import N_CODEBOOKS
from pipeline.batch_decode import decode_chats, prompt_positions
from pipeline.interleave import RECORD_NAME, Schedule, ScheduleError
from pipeline.models import LoadedLFM
from pipeline.params import StageParams, field
from pipeline.prompts import facts_system_prompt, system_prompt
from pipeline.records import DatasetRow
from pipeline.reply import Reply, ReplyCollector
from pipeline.user_audio import UserAudio
from pipeline.work_units import DecoderWork

StreamWrapper = Callable[[Iterator[Any]], Iterable[Any]]


@dataclass(frozen=True, kw_only=True)
class GenerationParams(StageParams):
    """``generate_interleaved`` settings, as keys of a stage's params group; None temperatures = greedy."""

    max_new_tokens: int = field(512, lo=1)
    text_temperature: float | None = field(None, lo=0)
    text_top_k: int | None = field(None, lo=1)
    audio_temperature: float | None = field(None, lo=0)
    audio_top_k: int | None = field(None, lo=1)
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.text_temperature is None and self.audio_temperature is None

    @property
    def generation(self) -> "GenerationParams":
        """These keys alone (a stage's params group holds more), as generation and the metrics see them."""
        return GenerationParams(**{f.name: getattr(self, f.name) for f in dataclasses.fields(GenerationParams)})

    def to_json(self) -> dict:
        return dataclasses.asdict(self.generation)


# --------------------------------------------------------------------------- the chat

def new_chat(lfm: LoadedLFM, system_text: str):
    """A ``ChatState`` holding the system turn."""
    from liquid_audio import ChatState

    chat = ChatState(lfm.processor)
    chat.new_turn("system")
    chat.add_text(system_text)
    chat.end_turn()
    return chat


def add_user_audio(chat, audio: UserAudio) -> None:
    """A user turn made of the waveform (mono, any rate: liquid-audio resamples to 16 kHz)."""
    wave, sample_rate = audio
    wave = np.asarray(wave)
    if wave.dtype == np.int16:
        wave = wave.astype(np.float32) / 32768.0
    if wave.ndim != 1 or wave.size == 0:
        raise ValueError(f"user audio must be a non-empty mono 1-D waveform, got shape {wave.shape}")
    chat.new_turn("user")
    chat.add_audio(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)).reshape(1, -1), int(sample_rate))
    chat.end_turn()


def request_chat(lfm: LoadedLFM, row: DatasetRow, user_audio: UserAudio):
    """The chat up to the model's first turn: the row's system prompt, then the spoken request."""
    chat = new_chat(lfm, system_prompt(row.tools))
    add_user_audio(chat, user_audio)
    return chat


def append_turn(chat, collector: ReplyCollector) -> None:
    """Append a generated turn to ``chat`` exactly as generated (liquid-audio's demo does the same)."""
    from liquid_audio import LFMModality

    device = chat.device
    text = torch.tensor([collector.text_tokens], dtype=torch.long, device=device).reshape(1, -1)
    audio = (torch.from_numpy(np.stack(collector.frames, axis=1)) if collector.frames
             else torch.zeros((N_CODEBOOKS, 0), dtype=torch.long)).to(device=device, dtype=torch.long)
    flags = [int(LFMModality.TEXT) if kind == "t" else int(LFMModality.AUDIO_OUT)
             for kind, count in collector.layout for _ in range(count)]
    modality = torch.tensor([flags], dtype=torch.long, device=device).reshape(1, -1)
    chat.append(text=text, audio_out=audio, modality_flag=modality)


# --------------------------------------------------------------------------- generating

def generate_stream(lfm: LoadedLFM, chat, params: GenerationParams) -> Iterator[torch.Tensor]:
    """Open the assistant turn (``<|im_start|>assistant``) now, then stream ``generate_interleaved`` items (on the CPU).

    A model trained with another first text chunk (``lfm.schedule``) is decoded
    by our greedy decoder instead, which stock cannot do: the turn is decoded
    whole, then its items are streamed.
    """
    chat.new_turn("assistant")
    return turn_items(lfm, chat, params)


def turn_items(lfm: LoadedLFM, chat, params: GenerationParams) -> Iterator[torch.Tensor]:
    """``generate_stream`` of a chat whose assistant turn is already open. Lazy on the stock path: a
    consumer that stops iterating stops the decoding there (the screen, ``pipeline.screen``, does)."""
    schedule = lfm.schedule
    stock = schedule == Schedule.of_model(lfm.model)
    if not stock and not params.greedy:
        raise ScheduleError(f"{lfm.path} was trained with first_text={schedule.first_text} ({RECORD_NAME}), which only "
                            "the greedy decoder follows: set text_temperature and audio_temperature to null")

    def decoded() -> Iterator[torch.Tensor]:
        yield from decode_chats(lfm, [chat], params.max_new_tokens, 1, schedule)[0].items

    def items() -> Iterator[torch.Tensor]:
        if not params.greedy:
            torch.manual_seed(params.seed)
        with torch.inference_mode():
            for item in lfm.model.generate_interleaved(
                **chat,
                max_new_tokens=params.max_new_tokens,
                text_temperature=params.text_temperature,
                text_top_k=params.text_top_k,
                audio_temperature=params.audio_temperature,
                audio_top_k=params.audio_top_k,
            ):
                yield item.detach().to("cpu").clone()

    return items() if stock else decoded()


def generate_turn(
    lfm: LoadedLFM, chat, params: GenerationParams, wrap: StreamWrapper | None = None
) -> tuple[Reply, ReplyCollector]:
    """Generate one assistant turn in ``chat``; ``wrap`` may tap the stream (e.g. ``Coordinator.tap``)."""
    collector = ReplyCollector(lfm.processor.text)
    start = time.perf_counter()
    stream: Iterable[Any] = generate_stream(lfm, chat, params)
    prefill = prompt_positions(chat)  # the open turn, as prefilled
    if wrap is not None:
        stream = wrap(stream)  # type: ignore[arg-type]
    for item in stream:
        collector.add(item)
    finish = "max_new_tokens" if collector.n_items >= params.max_new_tokens else "im_end"
    reply = collector.reply(finish, time.perf_counter() - start)
    reply.work = stream_work(lfm, collector, finish == "im_end", prefill)
    return reply, collector


def stream_work(lfm: LoadedLFM, collector: ReplyCollector, ended: bool, prefill_tokens: int) -> DecoderWork:
    """The stock decoder's work, counted from what it yielded: each text token and audio frame is one step
    (the closing ``<|im_end|>``, which it does not yield, one more), each audio frame a depthformer step per codebook."""
    frames = len(collector.frames)
    return DecoderWork(text_tokens=len(collector.text_tokens) + int(ended), audio_frames=frames,
                       depthformer_steps=frames * lfm.model.codebooks, prefill_tokens=prefill_tokens)


def generate_reply(
    lfm: LoadedLFM,
    row: DatasetRow,
    user_audio: UserAudio,
    params: GenerationParams,
    wrap: StreamWrapper | None = None,
) -> Reply:
    """The model's reply to ``row`` (turn 2 for tool_result_speak, with turn 1 in ``Reply.turn1``).

    ``user_audio`` is the spoken request (``row.user``; for tool_result_speak
    ``row.turn1.user``, the same text). ``wrap`` taps the final turn's stream.
    """
    chat = request_chat(lfm, row, user_audio)
    if row.row_class != "tool_result_speak":
        reply, _ = generate_turn(lfm, chat, params, wrap)
        return reply
    if row.facts is None:
        raise ValueError(f"row {row.id}: a tool_result_speak row needs facts")
    turn1, collector = generate_turn(lfm, chat, params)
    append_turn(chat, collector)
    chat.end_turn()
    chat.new_turn("system")
    chat.add_text(facts_system_prompt(row.tools, row.facts))
    chat.end_turn()
    reply, _ = generate_turn(lfm, chat, params, wrap)
    reply.turn1 = turn1
    return reply


def stream_reply(lfm: LoadedLFM, row: DatasetRow, user_audio: UserAudio, params: GenerationParams) -> Iterator[torch.Tensor]:
    """The raw item stream of a single-turn row's reply, for callers that consume it live (the demo)."""
    if row.row_class == "tool_result_speak":
        raise ValueError(f"row {row.id}: a tool_result_speak reply takes two turns; use generate_reply")
    return generate_stream(lfm, request_chat(lfm, row, user_audio), params)


# --------------------------------------------------------------------------- many rows

def _collect(lfm: LoadedLFM, items: Iterable[Any], max_new_tokens: int, seconds: float) -> tuple[Reply, ReplyCollector]:
    collector = ReplyCollector(lfm.processor.text)
    for item in items:
        collector.add(item)
    finish = "max_new_tokens" if collector.n_items >= max_new_tokens else "im_end"
    return collector.reply(finish, seconds), collector


def _reply_of(lfm: LoadedLFM, decoded, max_new_tokens: int) -> tuple[Reply, ReplyCollector]:
    reply, collector = _collect(lfm, decoded.items, max_new_tokens, decoded.seconds)
    reply.work = decoded.work  # counted in the decoder
    return reply, collector


def _open_turn(chat):
    chat.new_turn("assistant")
    return chat


def open_request_turn(lfm: LoadedLFM, row: DatasetRow, user_audio: UserAudio):
    """The chat of ``row`` with its first assistant turn open, ready for ``decode_chats``."""
    return _open_turn(request_chat(lfm, row, user_audio))


def open_facts_turn(chat, row: DatasetRow, collector: ReplyCollector) -> None:
    """After turn 1 of a tool_result_speak row: append it as generated, add the facts system turn, open turn 2."""
    append_turn(chat, collector)
    chat.end_turn()
    chat.new_turn("system")
    chat.add_text(facts_system_prompt(row.tools, row.facts))
    chat.end_turn()
    _open_turn(chat)


def prompt_tokens(lfm: LoadedLFM, row: DatasetRow, user_audio: UserAudio) -> int:
    """Positions the row's prompts prefill, known before any decoding: the request chat with its assistant
    turn open and, for tool_result_speak, the facts turn that opens turn 2 (turn 1's own reply, at most
    ``max_new_tokens``, is not counted here)."""
    chat = open_request_turn(lfm, row, user_audio)
    if row.row_class == "tool_result_speak" and row.facts is not None:
        open_facts_turn(chat, row, ReplyCollector(lfm.processor.text))  # turn 1 empty
    return prompt_positions(chat)


def generate_replies(
    lfm: LoadedLFM,
    requests: list[tuple[DatasetRow, UserAudio]],
    params: GenerationParams,
    batch_size: int = 1,
) -> list[Reply]:
    """``generate_reply`` for every (row, user audio), in order.

    ``batch_size`` 1 is exactly ``generate_reply`` row after row. Otherwise the
    turns are decoded ``batch_size`` at a time by the batched greedy decoder: all
    first turns, then the tool_result_speak rows' second turns. ``Reply.seconds``
    is then the turn's own time in the batch. Either way the interleave is the
    one the model folder records (``lfm.schedule``).
    """
    if batch_size == 1:
        return [generate_reply(lfm, row, audio, params) for row, audio in requests]
    if not params.greedy:
        raise ValueError("the batched decoder is greedy only: set the temperatures to null or batch_size to 1")
    for row, _ in requests:
        if row.row_class == "tool_result_speak" and row.facts is None:
            raise ValueError(f"row {row.id}: a tool_result_speak row needs facts")
    chats = [open_request_turn(lfm, row, audio) for row, audio in requests]
    first = decode_chats(lfm, chats, params.max_new_tokens, batch_size, lfm.schedule)
    replies: list[Reply] = []
    second_turns: list[int] = []
    for n, ((row, _), decoded) in enumerate(zip(requests, first)):
        reply, collector = _reply_of(lfm, decoded, params.max_new_tokens)
        replies.append(reply)
        if row.row_class == "tool_result_speak":
            open_facts_turn(chats[n], row, collector)
            second_turns.append(n)
    second = decode_chats(lfm, [chats[n] for n in second_turns], params.max_new_tokens, batch_size, lfm.schedule)
    for n, decoded in zip(second_turns, second):
        reply, _ = _reply_of(lfm, decoded, params.max_new_tokens)
        reply.turn1 = replies[n]
        replies[n] = reply
    return replies
