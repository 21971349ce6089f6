"""Shared fixtures: offline Hub, and one tiny fabricated LFM2.5-Audio folder per session."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # no test may reach the Hub
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

REPO = Path(__file__).resolve().parents[1]
REFERENCE_CONFIG = REPO / "configs" / "lfm25-audio-1.5b.reconstructed.json"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tiny_lfm_dir(tmp_path_factory) -> Path:
    """A random-init LFM2.5-Audio folder with the Hub layout (seed 0), built once per session."""
    from pipeline.fabricate import fabricate_lfm_folder

    folder = tmp_path_factory.mktemp("models") / "lfm2.5-audio"
    fabricate_lfm_folder(folder, json.loads(REFERENCE_CONFIG.read_text()), seed=0)
    return folder


@pytest.fixture(scope="session")
def tiny_lfm(tiny_lfm_dir):
    """The tiny model loaded through pipeline.models (real liquid-audio code path)."""
    from pipeline.models import load_lfm

    return load_lfm(tiny_lfm_dir)


@pytest.fixture(scope="session")
def tiny_mimi(tiny_lfm):
    return tiny_lfm.processor.mimi


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(name, size)``: a real small filesystem (tmpfs, e.g. size "1m") under tmp_path, or None where it
    cannot be mounted (not root); every one is unmounted after the test. Disk-full tests run on these."""
    import subprocess

    mounted: list[Path] = []

    def mount(name: str, size: str) -> Path | None:
        path = tmp_path / name
        path.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode != 0:
            return None
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "--lazy", str(path)], check=False)
