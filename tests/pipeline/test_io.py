"""Atomic outputs: a folder output is swapped in whole, and a failure leaves the old one in place."""
from __future__ import annotations

import os

import pytest

from pipeline.io import atomic_dir


def _folder(path, text):
    path.mkdir(parents=True, exist_ok=True)
    (path / "weights.bin").write_text(text)


def test_a_new_folder_replaces_the_old_one_whole(tmp_path):
    _folder(tmp_path / "final", "old")
    with atomic_dir(tmp_path / "final") as tmp:
        _folder(tmp, "new")
    assert (tmp_path / "final/weights.bin").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]  # no temp or aside folder left


def test_an_error_while_writing_leaves_the_old_folder(tmp_path):
    _folder(tmp_path / "final", "old")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "final") as tmp:
            _folder(tmp, "half")
            raise RuntimeError("killed mid-export")
    assert (tmp_path / "final/weights.bin").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]


def test_a_failed_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    _folder(tmp_path / "final", "old")
    real_replace, calls = os.replace, []

    def flaky_replace(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the new folder's rename
            raise OSError("disk went away")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky_replace)
    with pytest.raises(OSError):
        with atomic_dir(tmp_path / "final") as tmp:
            _folder(tmp, "new")
    assert (tmp_path / "final/weights.bin").read_text() == "old"
