"""The interleave schedule: how an assistant turn alternates text tokens and audio frames.

liquid-audio interleaves a reply as ``interleaved_n_text`` text tokens, then
``interleaved_n_audio`` audio frames, alternating (6 / 12), both in its training
mapper and in ``generate_interleaved``. A ``Schedule`` may change the first text
chunk only (``preprocess.first_text_chunk``: the text tokens a turn emits before
its first audio frame); the rest stays the model's own.

Training and decoding must use the same schedule, so it travels with the data:
preprocessing writes ``interleave.json`` into each split folder it makes,
training copies the train split's record into the exported model folder, and
decoding reads it from there. A model folder without a record (a base model) is
decoded with the model's own interleave (``config.json``).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.params import StageError

RECORD_NAME = "interleave.json"
TEXT, AUDIO = "t", "a"


class ScheduleError(StageError, ValueError):
    """An interleave record is missing, unreadable, or disagrees with the model or data it goes with."""


@dataclass(frozen=True)
class Schedule:
    """The interleave: ``first_text`` text tokens, then ``n_audio`` frames / ``n_text`` tokens alternating."""

    first_text: int
    n_text: int
    n_audio: int

    def __post_init__(self) -> None:
        values = (self.first_text, self.n_text, self.n_audio)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values) or min(values) < 1:
            raise ValueError(f"every chunk of the interleave schedule must be an integer >= 1, got {self}")

    @classmethod
    def of_model(cls, model, first_text: int | None = None) -> "Schedule":
        """The model's own schedule (what stock ``generate_interleaved`` does), the first chunk optionally changed."""
        n_text, n_audio = int(model.conf.interleaved_n_text), int(model.conf.interleaved_n_audio)
        return cls(n_text if first_text is None else int(first_text), n_text, n_audio)

    def layout(self, n_text_tokens: int, n_audio_frames: int) -> list[str]:
        """The modality (``TEXT``/``AUDIO``) of each position of one interleaved reply of that many tokens and frames."""
        layout: list[str] = []
        text_left, audio_left, chunk = n_text_tokens, n_audio_frames, self.first_text
        while text_left > 0 or audio_left > 0:
            take = min(chunk, text_left)
            layout += [TEXT] * take
            text_left -= take
            take = min(self.n_audio, audio_left)
            layout += [AUDIO] * take
            audio_left -= take
            chunk = self.n_text
        return layout

    def to_json(self) -> dict:
        return asdict(self)


def own_schedule(folder: Path) -> Schedule:
    """The interleave of a model folder's ``config.json`` (no model loaded)."""
    path = Path(folder) / "config.json"
    try:
        config = json.loads(path.read_text())
        return Schedule(config["interleaved_n_text"], config["interleaved_n_text"], config["interleaved_n_audio"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ScheduleError(f"{path}: no usable interleaved_n_text / interleaved_n_audio ({err})") from None


def write_record(folder: Path, schedule: Schedule) -> Path:
    """``interleave.json`` in ``folder`` (a folder being written atomically by the caller)."""
    path = Path(folder) / RECORD_NAME
    path.write_text(json.dumps(schedule.to_json(), indent=2, sort_keys=True) + "\n")
    return path


def read_record(folder: Path) -> Schedule | None:
    """The schedule recorded in ``folder``, None without a record; ``ScheduleError`` for a bad one."""
    path = Path(folder) / RECORD_NAME
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        if not isinstance(raw, dict) or set(raw) != {"first_text", "n_text", "n_audio"}:
            raise ValueError(f"expected the keys first_text, n_text, n_audio, got {raw!r}")
        return Schedule(**raw)
    except (OSError, json.JSONDecodeError, ValueError) as err:
        raise ScheduleError(f"{path}: not a valid interleave record ({err})") from None


def check_fits(schedule: Schedule, where: str, folder: Path) -> None:
    """``schedule`` (recorded at ``where``) keeps the model folder's own text/audio chunking, or ``ScheduleError``."""
    own = own_schedule(folder)
    if (schedule.n_text, schedule.n_audio) != (own.n_text, own.n_audio):
        raise ScheduleError(f"{where} records n_text={schedule.n_text}, n_audio={schedule.n_audio}, but "
                            f"{Path(folder) / 'config.json'} has interleaved_n_text={own.n_text}, "
                            f"interleaved_n_audio={own.n_audio}")


def trained_schedule(folder: Path) -> Schedule:
    """The schedule to decode a model folder with: its record (checked against its config), else the model's own."""
    recorded = read_record(folder)
    if recorded is None:
        return own_schedule(folder)
    check_fits(recorded, str(Path(folder) / RECORD_NAME), folder)
    return recorded
