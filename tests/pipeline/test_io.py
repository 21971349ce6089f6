"""Atomic outputs: a folder output is swapped in whole, and a failure leaves the old one in place."""
from __future__ import annotations

import os
import re

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


# --- disk and file-system faults, on real small file systems ---------------------------------------

@pytest.fixture
def small_fs(tmpfs):
    """A real 1 MiB tmpfs (needs root: `mount -t tmpfs`)."""
    mount = tmpfs("small", "1m")
    if mount is None:
        pytest.skip("cannot mount a tmpfs here: run as root")
    return mount


def test_a_full_disk_is_one_line_naming_the_path_and_the_old_file_stays(small_fs):
    from pipeline.io import DiskError, write_bytes

    target = small_fs / "out" / "clip.bin"
    write_bytes(target, b"old")
    with pytest.raises(DiskError) as caught:
        write_bytes(target, b"x" * (2 << 20))  # 2 MiB onto 1 MiB
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{target}: no space left on {target.parent}")
    assert "MiB free" in message
    assert target.read_bytes() == b"old" and sorted(p.name for p in target.parent.iterdir()) == ["clip.bin"]


def test_a_full_disk_under_torch_save_is_named_too(small_fs):
    """torch reports ENOSPC as `RuntimeError: ... unexpected pos`: still one line naming the path."""
    import torch

    from pipeline.io import DiskError, atomic_path

    target = small_fs / "optimizer.pt"
    with pytest.raises(DiskError, match=rf"^{re.escape(str(target))}: no space left"):
        with atomic_path(target) as tmp:
            torch.save({"w": torch.zeros(1 << 19)}, tmp)  # 2 MiB
    assert list(small_fs.iterdir()) == []


def test_a_read_only_volume_is_one_line_and_nothing_is_touched(small_fs):
    import subprocess

    from pipeline.io import DiskError, write_text

    target = small_fs / "metrics.json"
    write_text(target, "old\n")
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    with pytest.raises(DiskError, match=rf"^{re.escape(str(target))}: cannot write \(read-only file system"):
        write_text(target, "new\n")
    assert target.read_text() == "old\n"


def test_a_symlink_into_another_file_system_is_written_through_from_a_temp_file_beside_its_target(small_fs, tmp_path):
    """`data/tts/cache` a symlink onto another file system: a staging folder beside the link was EXDEV."""
    from pipeline.io import DiskError, atomic_dir, atomic_path, write_text
    from pipeline.tts_cache import staging_dir

    (small_fs / "cache").mkdir()
    link = tmp_path / "cache"
    link.symlink_to(small_fs / "cache")
    write_text(link / "a.json", "new\n")
    assert (small_fs / "cache" / "a.json").read_text() == "new\n" and link.is_symlink()
    assert staging_dir(link) == small_fs / ".cache.staging"  # beside the target, on its file system
    with atomic_path(link / "b.parquet", tmp_dir=staging_dir(link)) as tmp:
        tmp.write_bytes(b"shard")
    assert (small_fs / "cache" / "b.parquet").read_bytes() == b"shard"
    # Staged on the wrong file system (what the link's own folder gave): one line, nothing left behind.
    with pytest.raises(DiskError, match=r"c\.parquet: cannot rename a temp file across file systems"):
        with atomic_path(link / "c.parquet", tmp_dir=tmp_path / ".cache.staging") as tmp:
            tmp.write_bytes(b"shard")
    assert list((tmp_path / ".cache.staging").iterdir()) == [] and not (small_fs / "cache" / "c.parquet").exists()
    (small_fs / "final").mkdir()
    folder_link = tmp_path / "final"
    folder_link.symlink_to(small_fs / "final")
    with atomic_dir(folder_link) as tmp:
        (tmp / "model.safetensors").write_bytes(b"w")
    assert folder_link.is_symlink() and (small_fs / "final" / "model.safetensors").read_bytes() == b"w"


def test_write_metrics_keeps_wall_clock_readings_out_of_the_cached_details(tmp_path):
    import json

    from pipeline.io import write_metrics

    write_metrics(tmp_path / "train.json", {"loss": 0.5}, {"loss": 0.5, "steps": 4, "tokens_per_s": 99.0,
                                                          "train_seconds": 3.2, "peak_memory_gib": 1.0})
    assert json.loads((tmp_path / "train.details.json").read_text()) == {"loss": 0.5, "steps": 4}
    assert json.loads((tmp_path / "train.timings.json").read_text()) == {
        "peak_memory_gib": 1.0, "tokens_per_s": 99.0, "train_seconds": 3.2}
    write_metrics(tmp_path / "dataset.json", {"rows": 3}, {"rows": 3})
    assert not (tmp_path / "dataset.timings.json").exists()


def test_a_checkpoint_that_does_not_fit_leaves_no_temp_folder_and_names_itself(small_fs):
    """train on a full disk: one line naming the checkpoint, its temp folder gone, older checkpoints untouched."""
    import torch

    from pipeline.io import DiskError
    from pipeline.training.checkpoints import removed_on_failure, start_checkpoint

    (small_fs / "step-0000001").mkdir()
    (small_fs / "step-0000001" / "model.safetensors").write_bytes(b"older")
    tmp = start_checkpoint(small_fs, 2)
    with pytest.raises(DiskError, match=rf"^{re.escape(str(small_fs / 'step-0000002'))}: no space left"):
        with removed_on_failure(tmp):
            torch.save({"w": torch.zeros(1 << 19)}, tmp / "optimizer.pt")
    assert sorted(p.name for p in small_fs.iterdir()) == ["step-0000001"]
    assert (small_fs / "step-0000001" / "model.safetensors").read_bytes() == b"older"
