"""Dataset rows → liquid-audio chats → training samples, with Mimi codes cached per waveform.

The chat layout comes from ``pipeline.prompts.build_chat_turns`` (the same one
evaluation replays). liquid-audio's ``LFM2AudioChatMapper`` turns a chat into a
training sample; the only thing changed here is where assistant-audio codes
come from: a content-addressed cache keyed by the waveform itself, so after a
blip change only the rows whose audio changed (the blipped acks) re-encode; and
the interleave of each assistant reply follows a ``pipeline.interleave.Schedule``
(``preprocess.first_text_chunk`` changes its first text chunk; the model's own
schedule gives exactly the stock mapper's samples).

Which assistant turns get the blip is a list of turn kinds (``preprocess.blip_on``):
``tool_match`` (the ack of a tool_match row: the v4.1 card), ``turn1_ack`` (the
turn-1 ack inside a tool_result_speak row, which v4.1 trains without the blip);
``[]`` is v4 (no blip anywhere).
"""
from __future__ import annotations

import hashlib
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from liquid_audio.data.mapper import LFM2AudioChatMapper
from liquid_audio.data.types import AudioSegment, ChatMessage, InterleavedSegment, TextSegment
from liquid_audio.utils import LFMModality

from pipeline.audio import SAMPLE_RATE, encode_wav
from pipeline.interleave import AUDIO, TEXT, Schedule
from pipeline.io import short_checksum, write_bytes
from pipeline.params import StageError
from pipeline.prompts import build_chat_turns
from pipeline.records import DatasetRow


#: Assistant turns that can carry the blip, by kind (the values of ``preprocess.blip_on``).
BLIP_TURNS = ("tool_match", "turn1_ack")
#: The card's recipe: only tool_match acks open with the blip.
DEFAULT_BLIP_ON = ("tool_match",)
END_OF_AUDIO = 2048  # the mapper closes every assistant turn's codes with one frame of 2048s
MODALITY_FLAGS = {TEXT: int(LFMModality.TEXT), AUDIO: int(LFMModality.AUDIO_OUT)}


class MissingTurnAudio(StageError, ValueError):
    """A row lacks the synthesised audio one of its turns needs."""


def assistant_turn_kinds(row: DatasetRow) -> tuple[str, ...]:
    """The kind of each assistant turn of ``row``'s chat, in order.

    A tool_result_speak row has its turn-1 ack (``turn1_ack``) then the narration;
    every other row has one reply, named by its class.
    """
    if row.row_class == "tool_result_speak":
        return ("turn1_ack", "narration")
    return (row.row_class,)


def blipped_turns(row: DatasetRow, blip_on: tuple[str, ...] | list[str]) -> list[tuple[int, str]]:
    """(assistant-turn index, kind) of the turns of ``row`` whose audio opens with the blip."""
    return [(i, kind) for i, kind in enumerate(assistant_turn_kinds(row)) if kind in blip_on]


def assistant_audio_turns(audio_out: np.ndarray) -> list[np.ndarray]:
    """A sample's ``audio_out`` (8, T) cut into one (8, t) block per assistant turn, end frames dropped."""
    ends = np.flatnonzero(np.asarray(audio_out)[0] == END_OF_AUDIO)
    starts = np.concatenate([[0], ends[:-1] + 1]) if ends.size else np.array([], dtype=np.int64)
    return [audio_out[:, int(a):int(b)] for a, b in zip(starts, ends)]


@dataclass(frozen=True)
class RowAudio:
    """A row's synthesised speech (float32 mono at 24 kHz); turn-1 audio only for tool_result_speak."""

    user: np.ndarray
    assistant: np.ndarray
    turn1_user: np.ndarray | None = None
    turn1_assistant: np.ndarray | None = None


def row_messages(
    row: DatasetRow,
    audio: RowAudio,
    blip_prefix: np.ndarray | None = None,
    blip_on: tuple[str, ...] | list[str] = DEFAULT_BLIP_ON,
) -> list[ChatMessage]:
    """The chat liquid-audio trains on for ``row``.

    ``blip_prefix`` (the blip preview, float32 at 24 kHz) is placed at sample 0
    of the audio of each assistant turn whose kind is in ``blip_on``
    (``blipped_turns``); without it no turn is blipped.
    """
    turns = build_chat_turns(row)
    two_turn = row.row_class == "tool_result_speak"
    user_waves = [audio.turn1_user] if two_turn else [audio.user]
    assistant_waves = [audio.turn1_assistant, audio.assistant] if two_turn else [audio.assistant]
    if any(wave is None for wave in (*user_waves, *assistant_waves)):
        raise MissingTurnAudio(f"row {row.id}: tool_result_speak rows need turn-1 user and assistant audio")
    blipped = {i for i, _ in blipped_turns(row, blip_on)} if blip_prefix is not None else set()

    messages: list[ChatMessage] = []
    assistant_index = 0
    for turn in turns:
        if turn.role == "system":
            messages.append(ChatMessage(role="system", content=[TextSegment(text=turn.text)]))
        elif turn.role == "user":
            wav = encode_wav(user_waves.pop(0), SAMPLE_RATE)
            messages.append(ChatMessage(role="user", content=[AudioSegment(audio=wav)]))
        else:
            wave = assistant_waves.pop(0)
            if assistant_index in blipped:
                wave = np.concatenate([blip_prefix, wave])
            assistant_index += 1
            segment = InterleavedSegment(text=turn.text, audio=encode_wav(wave, SAMPLE_RATE))
            messages.append(ChatMessage(role="assistant", content=[segment]))
    return messages


class CodesCache:
    """Mimi codes on disk, one ``<key>-<checksum>.npy`` per distinct (Mimi checkpoint, waveform).

    ``key`` hashes what the codes are computed from; ``checksum`` is the first 16 hex
    digits of the sha256 of the file's own bytes, checked on every read. A damaged
    entry (bytes changed, header included) is named in one line through ``echo``,
    moved to ``.<cache name>.damaged/`` beside the cache's resolved folder (kept,
    never read) and counted as a miss, so its codes are computed again. Entries
    without a checksum (``<key>.npy``, written before it) are misses and are removed
    once their replacement is in.
    """

    def __init__(self, directory: Path, mimi_sha256: str, echo: Callable[[str], None] = print):
        self.directory = Path(directory)
        self.mimi_sha256 = mimi_sha256
        self.echo = echo
        self.hits = 0
        self.misses = 0
        self.damaged: list[dict[str, str]] = []  # {"entry", "reason", "moved_to"}

    def key(self, wav: torch.Tensor, sampling_rate: int) -> str:
        digest = hashlib.sha256(self.mimi_sha256.encode())
        digest.update(str(sampling_rate).encode())
        digest.update(wav.detach().to(torch.float32).cpu().numpy().tobytes())
        return digest.hexdigest()

    def bucket(self, key: str) -> Path:
        return self.directory / key[:2]

    def path(self, key: str, checksum: str) -> Path:
        return self.bucket(key) / f"{key}-{checksum}.npy"

    @property
    def damaged_dir(self) -> Path:
        resolved = self.directory.resolve()
        return resolved.parent / f".{resolved.name}.damaged"

    def get(self, key: str) -> torch.Tensor | None:
        for path in sorted(self.bucket(key).glob(f"{key}-*.npy")):
            codes = self._read(path)
            if codes is not None:
                self.hits += 1
                return codes
        self.misses += 1
        return None

    def _read(self, path: Path) -> torch.Tensor | None:
        """The codes in ``path`` if its bytes hash to the checksum in its name; else it is moved aside, said so."""
        data = path.read_bytes()
        expected = path.stem.rsplit("-", 1)[-1]
        actual = short_checksum(data)
        reason = None
        if actual != expected:
            reason = f"its bytes hash to {actual}, its name says {expected}"
        else:
            try:
                return torch.from_numpy(np.load(io.BytesIO(data), allow_pickle=False))
            except (ValueError, OSError, EOFError) as err:  # hashed fine, yet not an array: written wrong
                reason = f"not a NumPy array ({err})"
        moved_to = self.damaged_dir / path.name
        moved_to.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, moved_to)
        self.damaged.append({"entry": str(path), "reason": reason, "moved_to": str(moved_to)})
        self.echo(f"{path}: damaged Mimi codes cache entry ({reason}); moved to {moved_to}, its codes are computed again")
        return None

    def put(self, key: str, codes: torch.Tensor) -> None:
        buffer = io.BytesIO()
        np.save(buffer, codes.numpy())
        data = buffer.getvalue()
        write_bytes(self.path(key, short_checksum(data)), data)
        legacy = self.bucket(key) / f"{key}.npy"
        if legacy.exists():
            legacy.unlink()


class CachedCodesMapper(LFM2AudioChatMapper):
    """liquid-audio's mapper, reading assistant-audio codes from a ``CodesCache`` first, interleaving by ``schedule``.

    The stock mapper lays out every interleaved reply as n_text text / n_audio
    audio positions alternating; here the layout is ``schedule``'s, which may
    open with a different first text chunk. Only the modality flags of the reply
    move: its tokens, codes and supervision are the stock mapper's.
    """

    def __init__(self, processor, cache: CodesCache, schedule: Schedule):
        super().__init__(processor, interleaved_text_tokens=schedule.n_text, interleaved_audio_tokens=schedule.n_audio)
        self.cache = cache
        self.schedule = schedule
        self.encoded_audio_seconds = 0.0  # cache misses only: what went through Mimi
        self.encode_seconds = 0.0

    def _encode_audio_out(self, *, wav: torch.Tensor, sampling_rate: int) -> torch.Tensor:
        key = self.cache.key(wav, sampling_rate)
        codes = self.cache.get(key)
        if codes is None:
            started = time.perf_counter()
            codes = super()._encode_audio_out(wav=wav, sampling_rate=sampling_rate)
            self.encode_seconds += time.perf_counter() - started
            self.encoded_audio_seconds += int(wav.shape[-1]) / sampling_rate
            self.cache.put(key, codes)
        return codes

    def throughput(self, device: str) -> dict:
        """Mimi's encoding rate over this mapper's cache misses (audio seconds per second; None if none)."""
        rate = self.encoded_audio_seconds / self.encode_seconds if self.encode_seconds > 0 else None
        return {"device": device, "audio_seconds": round(self.encoded_audio_seconds, 3),
                "seconds": round(self.encode_seconds, 3), "audio_seconds_per_second": rate}

    def _append_interleaved_out(self, *, text_parts: list[torch.Tensor], audio_out_parts: list[torch.Tensor],
                                modality_seq: list[int], **rest) -> None:
        start = len(modality_seq)
        super()._append_interleaved_out(text_parts=text_parts, audio_out_parts=audio_out_parts,
                                        modality_seq=modality_seq, **rest)
        layout = self.schedule.layout(int(text_parts[-1].shape[0]), int(audio_out_parts[-1].shape[1]))
        if len(layout) != len(modality_seq) - start:  # the stock mapper changed shape: refuse to guess
            raise RuntimeError(f"interleaved reply of {len(modality_seq) - start} positions, schedule laid out {len(layout)}")
        modality_seq[start:] = [MODALITY_FLAGS[kind] for kind in layout]
