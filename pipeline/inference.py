"""The one inference path: a dataset row + user audio -> the model's reply, through liquid-audio.

Every evaluation stage and the coordinator demo generate through here, so the
model sees exactly the chat layout it was trained on (``pipeline.prompts``,
``pipeline.chat_samples``):

    <|startoftext|>
    <|im_start|>system\\n{system_prompt(row.tools)}<|im_end|>\\n
    <|im_start|>user\\n{user audio, add_audio(wave[1, N], sr)}<|im_end|>\\n
    <|im_start|>assistant\\n  -> generate_interleaved(**chat)

tool_result_speak rows replay the two-turn flow in the *same* ``ChatState``:
turn 1 is generated as above; its generated tokens are appended
(``chat.append``), the turn is ended, the facts system prompt
(``facts_system_prompt``: set_context) is added as a system turn, and turn 2 is
generated after ``<|im_start|>assistant``.

Generation is greedy unless temperatures are given (``GenerationConfig``);
sampled generation is seeded per reply. ``Reply`` keeps the text, the text
token ids, the audio codes as an (8, T) int64 array (end-of-audio frame
excluded, flagged by ``end_of_audio``) and the stream layout, from which the
exact ``generate_interleaved`` item stream can be replayed (``Reply.items``)
-- which is how ``eval_blip`` re-runs the coordinator's detector without
regenerating.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from coordinator.constants import END_OF_AUDIO_CODE, IM_END_TOKEN, N_CODEBOOKS, TEXT_END_TOKEN
from pipeline.models import LoadedLFM
from pipeline.prompts import facts_system_prompt, system_prompt
from pipeline.records import DatasetRow

UserAudio = tuple[np.ndarray, int]  # (mono waveform, sample rate)
StreamWrapper = Callable[[Iterator[Any]], Iterable[Any]]


@dataclass(frozen=True)
class GenerationConfig:
    """``generate_interleaved`` settings; None temperatures = greedy (the default)."""

    max_new_tokens: int = 512
    text_temperature: float | None = None
    text_top_k: int | None = None
    audio_temperature: float | None = None
    audio_top_k: int | None = None
    seed: int = 0

    @classmethod
    def from_params(cls, params: dict[str, Any], section: str) -> "GenerationConfig":
        from pipeline.io import ParamsError

        values: dict[str, Any] = {}
        for name in ("max_new_tokens", "text_temperature", "text_top_k", "audio_temperature", "audio_top_k", "seed"):
            if name not in params:
                continue
            value = params[name]
            if name in ("max_new_tokens", "text_top_k", "audio_top_k", "seed"):
                ok = value is None and name.endswith("top_k") or isinstance(value, int) and not isinstance(value, bool)
            else:
                ok = value is None or isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok:
                raise ParamsError(f"params.yaml: '{section}.{name}' has a wrong type: {value!r}")
            values[name] = value
        config = cls(**values)
        if config.max_new_tokens < 1:
            raise ParamsError(f"params.yaml: '{section}.max_new_tokens' must be >= 1, got {config.max_new_tokens}")
        return config

    @property
    def greedy(self) -> bool:
        return self.text_temperature is None and self.audio_temperature is None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class InferenceRunConfig:
    """The params every stage that generates over a row file shares: model, rows, user audio, generation.

    One parser, so ``eval_classes`` and ``eval_narration`` read these keys the
    same way and every error names ``<section>.<key>``; each stage's config adds
    only its own keys next to it.
    """

    model_dir: Path
    rows_path: Path
    manifest_path: Path
    tts_cache_dir: Path
    generation: GenerationConfig
    device: str = "auto"
    dtype: str = "bfloat16"
    max_rows: int | None = None
    max_skipped_fraction: float = 0.0

    @classmethod
    def from_params(cls, params: dict[str, Any], section: str) -> "InferenceRunConfig":
        from pipeline.io import ParamsError, require

        max_rows = params.get("max_rows")
        if max_rows is not None and (not isinstance(max_rows, int) or isinstance(max_rows, bool) or max_rows < 1):
            raise ParamsError(f"params.yaml: '{section}.max_rows' must be a positive int or null, got {max_rows!r}")
        fraction = require(params, "max_skipped_fraction", section, (int, float))
        dtype = str(params.get("dtype", "bfloat16"))
        resolve_dtype(dtype)  # fail on a bad dtype at parse time, not after the rows are read
        return cls(
            model_dir=Path(require(params, "model_dir", section, str)),
            rows_path=Path(require(params, "rows", section, str)),
            manifest_path=Path(require(params, "tts_manifest", section, str)),
            tts_cache_dir=Path(require(params, "tts_cache_dir", section, str)),
            generation=GenerationConfig.from_params(params, section),
            device=str(params.get("device", "auto")),
            dtype=dtype,
            max_rows=max_rows,
            max_skipped_fraction=float(fraction),
        )


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
            "seconds": round(self.seconds, 4),
        }
        if include_audio:
            out["audio_codes"] = self.audio_codes.tolist()
        if self.turn1 is not None:
            out["turn1"] = self.turn1.to_json(include_audio)
        return out

    @classmethod
    def from_json(cls, obj: dict, where: str = "reply") -> "Reply":
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
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{where}: not a valid reply record ({err})") from None


class ReplyCollector:
    """Accumulates ``generate_interleaved`` items into a ``Reply`` and into ``ChatState.append`` tensors."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.text_tokens: list[int] = []
        self.frames: list[np.ndarray] = []  # every audio frame, the 2048 frame included
        self.layout: list[list[Any]] = []
        self.frames_before_text_end: int | None = None
        self.end_of_audio = False
        self.n_items = 0

    def add(self, item: Any) -> None:
        codes = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
        codes = codes.reshape(-1).astype(np.int64)
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
            self.frames.append(codes.copy())
        else:
            raise ValueError(f"generate_interleaved item {self.n_items - 1}: unexpected shape {tuple(codes.shape)}")
        if self.layout and self.layout[-1][0] == kind:
            self.layout[-1][1] += 1
        else:
            self.layout.append([kind, 1])

    def decode_text(self) -> str:
        ids = [t for t in self.text_tokens if t != TEXT_END_TOKEN]
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip() if ids else ""

    def reply(self, finish_reason: str, seconds: float) -> Reply:
        audio = [f for f in self.frames if int(f[0]) != END_OF_AUDIO_CODE]
        codes = np.stack(audio, axis=1) if audio else np.zeros((N_CODEBOOKS, 0), dtype=np.int64)
        return Reply(
            text=self.decode_text(),
            text_tokens=list(self.text_tokens),
            audio_codes=codes.astype(np.int64),
            audio_frames_before_text_end=self.frames_before_text_end,
            end_of_audio=self.end_of_audio,
            finish_reason=finish_reason,
            layout=[list(run) for run in self.layout],
            seconds=seconds,
        )

    def append_to(self, chat) -> None:
        """Append the generated turn to ``chat`` exactly as generated (liquid-audio's demo does the same)."""
        from liquid_audio import LFMModality

        device = chat.device
        text = torch.tensor([self.text_tokens], dtype=torch.long, device=device).reshape(1, -1)
        audio = (torch.from_numpy(np.stack(self.frames, axis=1)) if self.frames
                 else torch.zeros((N_CODEBOOKS, 0), dtype=torch.long)).to(device=device, dtype=torch.long)
        flags = [int(LFMModality.TEXT) if kind == "t" else int(LFMModality.AUDIO_OUT)
                 for kind, count in self.layout for _ in range(count)]
        modality = torch.tensor([flags], dtype=torch.long, device=device).reshape(1, -1)
        chat.append(text=text, audio_out=audio, modality_flag=modality)


# --------------------------------------------------------------------------- chat building

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


def generate_stream(lfm: LoadedLFM, chat, config: GenerationConfig) -> Iterator[torch.Tensor]:
    """Open the assistant turn (``<|im_start|>assistant``) now, then stream ``generate_interleaved`` items (on the CPU)."""
    chat.new_turn("assistant")

    def items() -> Iterator[torch.Tensor]:
        if not config.greedy:
            torch.manual_seed(config.seed)
        with torch.inference_mode():
            for item in lfm.model.generate_interleaved(
                **chat,
                max_new_tokens=config.max_new_tokens,
                text_temperature=config.text_temperature,
                text_top_k=config.text_top_k,
                audio_temperature=config.audio_temperature,
                audio_top_k=config.audio_top_k,
            ):
                yield item.detach().to("cpu").clone()

    return items()


def generate_reply(
    lfm: LoadedLFM, chat, config: GenerationConfig, wrap: StreamWrapper | None = None
) -> tuple[Reply, ReplyCollector]:
    """Generate one assistant turn; ``wrap`` may tap the stream (e.g. ``Coordinator.tap``)."""
    collector = ReplyCollector(lfm.processor.text)
    start = time.perf_counter()
    stream: Iterable[Any] = generate_stream(lfm, chat, config)
    if wrap is not None:
        stream = wrap(stream)  # type: ignore[arg-type]
    for item in stream:
        collector.add(item)
    finish = "max_new_tokens" if collector.n_items >= config.max_new_tokens else "im_end"
    return collector.reply(finish, time.perf_counter() - start), collector


def respond(
    lfm: LoadedLFM,
    row: DatasetRow,
    user_audio: UserAudio,
    config: GenerationConfig,
    wrap: StreamWrapper | None = None,
) -> Reply:
    """The model's reply to ``row`` (turn 2 for tool_result_speak, with turn 1 in ``Reply.turn1``).

    ``user_audio`` is the spoken request (``row.user``; for tool_result_speak
    ``row.turn1.user``, the same text). ``wrap`` taps the final turn's stream.
    """
    chat = new_chat(lfm, system_prompt(row.tools))
    add_user_audio(chat, user_audio)
    if row.row_class != "tool_result_speak":
        reply, _ = generate_reply(lfm, chat, config, wrap)
        return reply
    if row.facts is None:
        raise ValueError(f"row {row.id}: a tool_result_speak row needs facts")
    turn1, collector = generate_reply(lfm, chat, config)
    collector.append_to(chat)
    chat.end_turn()
    chat.new_turn("system")
    chat.add_text(facts_system_prompt(row.tools, row.facts))
    chat.end_turn()
    reply, _ = generate_reply(lfm, chat, config, wrap)
    reply.turn1 = turn1
    return reply


# --------------------------------------------------------------------------- inputs of the evaluation stages

class MissingAudio(LookupError):
    """A row's user audio is not available; the message says why (manifest line, cache key)."""


class ManifestAudio:
    """User audio of dataset rows from a TTS manifest (``data/tts/{split}.jsonl``) and the TTS cache.

    ``audio_for(row)`` returns the spoken request: ``user_key`` (for
    tool_result_speak ``turn1_user_key``, the same text, falling back to
    ``user_key``). Raises :class:`MissingAudio` naming the manifest and key.
    """

    def __init__(self, manifest_path, cache_dir, loader: Callable[[Any, str], UserAudio] | None = None) -> None:
        from pipeline.tts_cache import read_manifest

        self.manifest_path = Path(manifest_path)
        self.cache_dir = Path(cache_dir)
        self._loader = loader
        self.keys: dict[str, dict[str, Any]] = read_manifest(self.manifest_path)

    def key_for(self, row: DatasetRow) -> str:
        entry = self.keys.get(row.id)
        if entry is None:
            raise MissingAudio(f"{self.manifest_path}: no entry for row '{row.id}'")
        key = entry.get("turn1_user_key") if row.row_class == "tool_result_speak" else None
        key = key or entry.get("user_key")
        if not key:
            raise MissingAudio(f"{self.manifest_path}: row '{row.id}' has no user_key")
        return str(key)

    def audio_for(self, row: DatasetRow) -> UserAudio:
        key = self.key_for(row)
        loader = self._loader
        if loader is None:
            from pipeline.tts_cache import load_audio as loader  # noqa: N813
        try:
            wave, rate = loader(self.cache_dir, key)
        except Exception as err:  # noqa: BLE001 - any cache failure makes this row's audio unavailable
            raise MissingAudio(f"{self.cache_dir}: audio {key[:12]}... of row '{row.id}' unavailable ({err})") from None
        wave = np.asarray(wave)
        if wave.ndim != 1 or wave.size == 0:
            raise MissingAudio(f"{self.cache_dir}: audio {key[:12]}... of row '{row.id}' is empty or not mono")
        return wave, int(rate)


def resolve_device(device: str) -> str:
    """``auto`` -> cuda when available, else cpu."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(name: str) -> torch.dtype:
    from pipeline.io import ParamsError

    dtypes = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}
    if name not in dtypes:
        raise ParamsError(f"params.yaml: dtype must be one of {', '.join(dtypes)}, got {name!r}")
    return dtypes[name]
