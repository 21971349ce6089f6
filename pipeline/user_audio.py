"""The user's spoken request of each dataset row: a TTS manifest (``data/tts/{split}.jsonl``) + the TTS cache.

A row whose audio is missing (or that the tts stage skipped) is not generated:
the evaluation stages list it with its reason and count it, and fail before
generating anything when missing audio, prompts past their bound
(``pipeline.inference.bound_prompts``) and bad dataset lines exceed
``max_skipped_fraction`` of the rows (``check_skipped``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.params import StageError
from pipeline.records import DatasetRow

UserAudio = tuple[np.ndarray, int]  # (mono waveform, sample rate)


class MissingAudio(LookupError):
    """A row's user audio is not available; the message says why (manifest line, cache key)."""


class TooManySkipped(StageError):
    """More rows lack user audio, or are past a prompt bound, or are bad lines, than ``max_skipped_fraction`` allows."""


class ManifestAudio:
    """User audio of dataset rows from a TTS manifest and the TTS cache.

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
        if entry.get("skipped"):  # the tts stage left the row unvoiced (a clip past tts.max_clip_seconds)
            raise MissingAudio(f"{self.manifest_path}: row '{row.id}' skipped by tts ({entry['skipped']})")
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

    def audio_for_rows(self, rows: list[DatasetRow]) -> dict[str, UserAudio | str]:
        """Every row's audio by id, or a string: why it is missing."""
        found: dict[str, UserAudio | str] = {}
        for row in rows:
            try:
                found[row.id] = self.audio_for(row)
            except MissingAudio as err:
                found[row.id] = str(err)
        return found


def check_skipped(audio: dict[str, UserAudio | str], n_bad: int, n_rows: int, max_fraction: float) -> None:
    """Raise ``TooManySkipped`` when rows without audio plus bad lines exceed ``max_fraction`` of all rows."""
    missing = [f"{row_id}: {why}" for row_id, why in audio.items() if isinstance(why, str)]
    total = n_rows + n_bad
    if total and (len(missing) + n_bad) / total > max_fraction:
        shown = "; ".join(missing[:3]) + (f"; (+{len(missing) - 3} more)" if len(missing) > 3 else "")
        raise TooManySkipped(
            f"{len(missing)} rows without user audio (or past a prompt bound) and {n_bad} bad lines out of {total} "
            f"exceed max_skipped_fraction={max_fraction}" + (f" ({shown})" if shown else "")
        )
