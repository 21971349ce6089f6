"""One generated assistant turn as a record (``Reply``), and how a stream of items becomes one.

Torch-free on purpose (numpy and the coordinator's constants only): the CPU stages
that score stored replies (``eval_blip``) read them with this module and never
import torch.

A ``Reply`` keeps the text, the text token ids, the audio codes as an (8, T)
int64 array (end-of-audio frame excluded, flagged by ``end_of_audio``) and the
stream layout, from which the exact ``generate_interleaved`` item stream can be
replayed (``Reply.items``) -- which is how ``eval_blip`` re-runs the
coordinator's detector without regenerating.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from coordinator.constants import END_OF_AUDIO_CODE, IM_END_TOKEN, N_CODEBOOKS, TEXT_END_TOKEN
from coordinator.tokens import to_codes
from pipeline.work_units import DecoderWork, total


@dataclass
class Reply:
    """One generated assistant turn (``turn1``: the turn-1 ack of a two-turn row)."""

    text: str
    text_tokens: list[int]  # as generated, <|text_end|> included
    audio_codes: np.ndarray  # (8, T) int64, end-of-audio frame excluded
    audio_frames_before_text_end: int | None  # None: <|text_end|> never came
    end_of_audio: bool  # the end-of-audio frame (2048s) was generated
    finish_reason: str  # "im_end" | "max_new_tokens"
    layout: list[list[Any]]  # run-length stream order: [["t", 6], ["a", 12], ...] (the 2048 frame counts as "a")
    seconds: float = 0.0
    turn1: "Reply | None" = None
    work: DecoderWork | None = None  # this turn's decoding work (None: not counted, e.g. an old record)

    @property
    def total_work(self) -> DecoderWork:
        """The work of this turn and of ``turn1`` (a two-turn row decodes both)."""
        return total([self.work, self.turn1.total_work if self.turn1 is not None else None])

    @property
    def n_audio_frames(self) -> int:
        return int(self.audio_codes.shape[1])

    @property
    def turn_ended(self) -> bool:
        return self.finish_reason == "im_end"

    def items(self) -> Iterator[np.ndarray]:
        """The stream as ``generate_interleaved`` yielded it (numpy), then ``<|im_end|>`` if it ended."""
        text = iter(self.text_tokens)
        audio = iter(self.audio_codes.T)
        for kind, count in self.layout:
            for _ in range(count):
                if kind == "t":
                    yield np.array([next(text)], dtype=np.int64)
                else:
                    frame = next(audio, None)
                    yield (np.full(N_CODEBOOKS, END_OF_AUDIO_CODE, dtype=np.int64) if frame is None
                           else np.asarray(frame, dtype=np.int64))
        if self.turn_ended:
            yield np.array([IM_END_TOKEN], dtype=np.int64)

    def to_json(self, include_audio: bool = True) -> dict:
        out: dict[str, Any] = {
            "text": self.text,
            "text_tokens": list(self.text_tokens),
            "n_audio_frames": self.n_audio_frames,
            "audio_frames_before_text_end": self.audio_frames_before_text_end,
            "end_of_audio": self.end_of_audio,
            "finish_reason": self.finish_reason,
            "layout": self.layout,
        }  # no ``seconds``: records are cached outputs, a wall-clock reading would differ on every run
        if self.work is not None:
            out["work"] = self.work.to_json()
        if include_audio:
            out["audio_codes"] = self.audio_codes.tolist()
        if self.turn1 is not None:
            out["turn1"] = self.turn1.to_json(include_audio)
        return out

    @classmethod
    def from_json(cls, obj: dict, where: str = "reply") -> "Reply":
        """The record ``to_json`` wrote; ValueError naming ``where`` if it is not one."""
        try:
            codes = np.asarray(obj.get("audio_codes", []), dtype=np.int64)
            if codes.size == 0:
                codes = np.zeros((N_CODEBOOKS, 0), dtype=np.int64)
            if codes.ndim != 2 or codes.shape[0] != N_CODEBOOKS:
                raise ValueError(f"audio_codes must be ({N_CODEBOOKS}, T), got shape {codes.shape}")
            return cls(
                text=str(obj["text"]),
                text_tokens=[int(t) for t in obj["text_tokens"]],
                audio_codes=codes,
                audio_frames_before_text_end=obj.get("audio_frames_before_text_end"),
                end_of_audio=bool(obj["end_of_audio"]),
                finish_reason=str(obj["finish_reason"]),
                layout=[[str(k), int(n)] for k, n in obj.get("layout", [])],
                seconds=float(obj.get("seconds", 0.0)),
                turn1=cls.from_json(obj["turn1"], f"{where}.turn1") if obj.get("turn1") else None,
                work=DecoderWork.from_json(obj.get("work")),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{where}: not a valid reply record ({err})") from None


def decode_text(tokenizer, token_ids: list[int]) -> str:
    """The text channel as words: ``<|text_end|>`` and special tokens removed."""
    ids = [t for t in token_ids if t != TEXT_END_TOKEN]
    return tokenizer.decode(ids, skip_special_tokens=True).strip() if ids else ""


class ReplyCollector:
    """Accumulates ``generate_interleaved`` items (tensors or arrays) into a ``Reply``.

    It keeps every audio frame, the end-of-audio frame included, and the stream
    layout, so the turn can be appended to the chat exactly as generated
    (``pipeline.generation.append_turn``).
    """

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.text_tokens: list[int] = []
        self.frames: list[np.ndarray] = []  # every audio frame, the 2048 frame included
        self.layout: list[list[Any]] = []
        self.frames_before_text_end: int | None = None
        self.end_of_audio = False
        self.n_items = 0

    def add(self, item: Any) -> None:
        codes = to_codes(item).astype(np.int64)
        self.n_items += 1
        if codes.size == 1:
            kind = "t"
            token = int(codes[0])
            self.text_tokens.append(token)
            if token == TEXT_END_TOKEN and self.frames_before_text_end is None:
                self.frames_before_text_end = len(self.frames)
        elif codes.size == N_CODEBOOKS:
            kind = "a"
            if int(codes[0]) == END_OF_AUDIO_CODE:
                self.end_of_audio = True
            self.frames.append(codes)
        else:
            raise ValueError(f"generate_interleaved item {self.n_items - 1}: unexpected shape {tuple(codes.shape)}")
        if self.layout and self.layout[-1][0] == kind:
            self.layout[-1][1] += 1
        else:
            self.layout.append([kind, 1])

    def reply(self, finish_reason: str, seconds: float) -> Reply:
        audio = [f for f in self.frames if int(f[0]) != END_OF_AUDIO_CODE]
        codes = np.stack(audio, axis=1) if audio else np.zeros((N_CODEBOOKS, 0), dtype=np.int64)
        return Reply(
            text=decode_text(self.tokenizer, self.text_tokens),
            text_tokens=list(self.text_tokens),
            audio_codes=codes.astype(np.int64),
            audio_frames_before_text_end=self.frames_before_text_end,
            end_of_audio=self.end_of_audio,
            finish_reason=finish_reason,
            layout=[list(run) for run in self.layout],
            seconds=seconds,
        )
