"""The flow's children die with it, and a Prefect server that never answers is one line, not a hang."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

FLOW_STANDIN = textwrap.dedent("""
    import subprocess, sys, time
    from flows.lifeline import start_lifeline
    start_lifeline(poll_s=0.1)
    sleeper = [sys.executable, "-c", "import time; time.sleep(300)"]
    server = subprocess.Popen(sleeper)                          # like the ephemeral Prefect server
    stage = subprocess.Popen(sleeper, start_new_session=True)   # like `dvc repro` (own session) ...
    print(server.pid, stage.pid, flush=True)
    time.sleep(300)
""")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_kill_9_of_the_flow_process_kills_the_server_and_the_stages_it_started():
    flow = subprocess.Popen([sys.executable, "-c", FLOW_STANDIN], cwd=REPO, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    children = [int(pid) for pid in flow.stdout.readline().split()]
    time.sleep(1.0)  # the sidecar has seen them
    assert all(alive(pid) for pid in children)
    os.kill(flow.pid, signal.SIGKILL)
    flow.wait()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = [pid for pid in children if alive(pid)]
    for pid in survivors:  # clean up before failing
        os.kill(pid, signal.SIGKILL)
    assert survivors == [], "children outlived the flow process"


def test_a_prefect_server_that_accepts_but_never_answers_times_out_in_one_line():
    from flows.embedded import PrefectUnreachable, check_prefect_api

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/api"
        started = time.monotonic()
        with pytest.raises(PrefectUnreachable) as caught:
            check_prefect_api(url, timeout_s=1.0)
        assert time.monotonic() - started < 10
    assert str(caught.value) == (f"PREFECT_API_URL={url}: the server accepted the connection but did not answer "
                                 "within 1 s; restart it, or unset PREFECT_API_URL to run with a temporary server")


def test_the_retrain_cli_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    from flows.retrain import main

    (tmp_path / "params.yaml").write_text("{}\n")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{silent.getsockname()[1]}/api")
        monkeypatch.setattr("flows.embedded.API_HEALTH_TIMEOUT_S", 1.0)
        monkeypatch.setattr("flows.retrain.load_stages", lambda *_: [])
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: os.environ["PREFECT_API_URL"]}):
            assert main(["--workdir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("retrain: PREFECT_API_URL=") and "did not answer" in err[0]
