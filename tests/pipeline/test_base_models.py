"""The hub source is checked before any stage runs: an offline machine gets one line saying what to do."""
from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from pipeline.base_models import BaseModelsParams, HubUnavailable, preflight
from pipeline.params import ParamsError

REPO = Path(__file__).resolve().parents[2]
HUB = {"source": "hub", "lfm_repo": "LiquidAI/LFM2.5-Audio-1.5B", "kokoro_repo": "hexgrad/Kokoro-82M",
       "kokoro_voices": ["am_adam"], "fabricate_seed": 0, "reference_config": "configs/x.json"}


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env})


def _workspace(tmp_path: Path, base_models: dict) -> Path:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"base_models": base_models}))
    return tmp_path


def test_offline_without_the_folders_fails_before_any_stage_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailable, match="HF_HUB_OFFLINE=1 forbids downloading LiquidAI/LFM2.5-Audio-1.5B"):
        preflight(BaseModelsParams.from_params(HUB), tmp_path)
    result = _run(["-m", "flows.retrain", "--workdir", str(_workspace(tmp_path, HUB))], tmp_path, HF_HUB_OFFLINE="1")
    assert result.returncode == 1
    assert result.stderr.startswith("retrain: base models not in") and result.stderr.count("\n") == 1, result.stderr
    assert "smoke profile" in result.stderr and "Traceback" not in result.stderr


def test_fabricate_and_present_folders_need_no_hub(tmp_path, monkeypatch, tiny_lfm_dir):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    preflight(BaseModelsParams.from_params({**HUB, "source": "fabricate"}), tmp_path)
    import shutil

    from pipeline.fabricate_kokoro import fabricate_kokoro_folder

    shutil.copytree(tiny_lfm_dir, tmp_path / "models/base/lfm2.5-audio")
    fabricate_kokoro_folder(tmp_path / "models/base/kokoro", seed=0, voices=["am_adam"])
    preflight(BaseModelsParams.from_params(HUB), tmp_path)


def test_an_unreachable_hub_is_one_line_from_the_stage(tmp_path):
    result = _run(["-m", "tasks.base_models"], _workspace(tmp_path, HUB),
                  HF_HUB_OFFLINE="0", HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_ETAG_TIMEOUT="2")
    assert result.returncode == 1
    assert result.stderr.startswith("base_models: cannot reach the Hugging Face Hub for LiquidAI/LFM2.5-Audio-1.5B")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "models").exists()


class _GatedHub(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(401)
        self.send_header("X-Error-Code", "GatedRepo")
        self.send_header("X-Error-Message", "Access to model is restricted")
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error": "Access to model is restricted"}')

    def log_message(self, *args):
        pass


def test_a_gated_repo_says_to_log_in(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _GatedHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = _run(["-m", "tasks.base_models"], _workspace(tmp_path, HUB),
                      HF_HUB_OFFLINE="0", HF_ENDPOINT=f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
    assert result.returncode == 1
    assert result.stderr.startswith("base_models: LiquidAI/LFM2.5-Audio-1.5B is gated") and "HF_TOKEN" in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


@pytest.mark.parametrize("override, key", [({"source": "hbu"}, "source"), ({"kokoro_voices": ["af_heart"]}, "kokoro_voices"),
                                           ({"fabricate_seed": -1}, "fabricate_seed"), ({"lfm": "x"}, "lfm")])
def test_bad_base_models_params_name_their_key(override, key):
    with pytest.raises(ParamsError, match=f"'base_models.{key}'"):
        BaseModelsParams.from_params({**HUB, **override})
