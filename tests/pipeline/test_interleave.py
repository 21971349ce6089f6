"""The interleave schedule (pipeline.interleave): its layout, and the record a split or model folder carries."""
from __future__ import annotations

import json
import shutil

import pytest

from pipeline.interleave import (RECORD_NAME, Schedule, ScheduleError, check_fits, own_schedule, read_record,
                                 trained_schedule, write_record)


def runs(layout: list[str]) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for kind in layout:
        if out and out[-1][0] == kind:
            out[-1] = (kind, out[-1][1] + 1)
        else:
            out.append((kind, 1))
    return out


def test_the_models_own_layout_alternates_6_text_and_12_audio():
    assert runs(Schedule(6, 6, 12).layout(15, 30)) == [("t", 6), ("a", 12), ("t", 6), ("a", 12), ("t", 3), ("a", 6)]


def test_a_first_text_chunk_changes_only_the_first_chunk():
    assert runs(Schedule(2, 6, 12).layout(15, 30)) == [("t", 2), ("a", 12), ("t", 6), ("a", 12), ("t", 6), ("a", 6),
                                                       ("t", 1)]


def test_text_or_audio_running_out_leaves_the_other_contiguous():
    assert runs(Schedule(2, 6, 12).layout(1, 30)) == [("t", 1), ("a", 30)]
    assert runs(Schedule(2, 6, 12).layout(20, 3)) == [("t", 2), ("a", 3), ("t", 18)]


def test_every_chunk_must_be_a_positive_integer():
    for bad in ((0, 6, 12), (2, 0, 12), (2, 6, 0), (2.5, 6, 12), (True, 6, 12)):
        with pytest.raises(ValueError, match="integer >= 1"):
            Schedule(*bad)


def test_a_record_round_trips(tmp_path):
    write_record(tmp_path, Schedule(2, 6, 12))
    assert json.loads((tmp_path / RECORD_NAME).read_text()) == {"first_text": 2, "n_text": 6, "n_audio": 12}
    assert read_record(tmp_path) == Schedule(2, 6, 12)
    assert read_record(tmp_path / "elsewhere") is None


@pytest.mark.parametrize("text", ['{"first_text": 2, "n_text": 6}', '{"first_text": 0, "n_text": 6, "n_audio": 12}',
                                  '{"first_text": 2, "n_text": 6, "n_audio": 12, "extra": 1}', "[2, 6, 12]", "{"])
def test_an_invalid_record_is_one_error_naming_the_file(tmp_path, text):
    (tmp_path / RECORD_NAME).write_text(text)
    with pytest.raises(ScheduleError, match=f"{tmp_path / RECORD_NAME}: not a valid interleave record"):
        read_record(tmp_path)


def test_a_folder_without_a_record_decodes_with_its_configs_interleave(tiny_lfm_dir):
    assert own_schedule(tiny_lfm_dir) == Schedule(6, 6, 12)
    assert trained_schedule(tiny_lfm_dir) == Schedule(6, 6, 12)


def test_a_folder_record_wins_and_must_fit_the_config(tiny_lfm_dir, tmp_path):
    folder = tmp_path / "trained"
    shutil.copytree(tiny_lfm_dir, folder)
    write_record(folder, Schedule(2, 6, 12))
    assert trained_schedule(folder) == Schedule(2, 6, 12)
    write_record(folder, Schedule(2, 4, 12))
    with pytest.raises(ScheduleError, match=r"records n_text=4, n_audio=12, but .*config.json has "
                                            r"interleaved_n_text=6, interleaved_n_audio=12"):
        trained_schedule(folder)
    with pytest.raises(ScheduleError, match="data/x records n_text=4"):
        check_fits(Schedule(2, 4, 12), "data/x", tiny_lfm_dir)
