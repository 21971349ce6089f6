"""The flow's children die with it, and a Prefect server that never answers is one line, not a hang."""
from __future__ import annotations

import os
import signal
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


def test_a_prefect_server_that_accepts_but_never_answers_times_out_in_one_line(silent_prefect_api):
    from flows.embedded import PrefectUnreachable, check_prefect_api

    started = time.monotonic()
    with pytest.raises(PrefectUnreachable) as caught:
        check_prefect_api(silent_prefect_api, timeout_s=1.0)
    assert time.monotonic() - started < 10
    assert str(caught.value) == (f"PREFECT_API_URL={silent_prefect_api}: the server accepted the connection but did "
                                 "not answer within 1 s; restart it, or unset PREFECT_API_URL to run with a temporary "
                                 "server")


def _refuse_to_start_a_worker(*command):
    raise AssertionError(f"started {command[0]} against a server that never answers")


# Every command-line entry point that enters `embedded_prefect` or talks to PREFECT_API_URL: (prog, argv)
FLOW_CLIS = [
    ("retrain", ["--workdir", "{toy}"]),
    ("sweep", ["--workdir", "{toy}"]),
    ("nightly", ["--workdir", "{toy}"]),
    ("pool", ["setup"]),
    ("pool", ["deploy"]),
    ("pool", ["alerts", "--webhook-url-env", "NIGHTLY_WEBHOOK_URL"]),
    ("pool", ["worker", "--queue", "gpu0"]),
]


@pytest.mark.parametrize(("prog", "argv"), FLOW_CLIS, ids=[p if a[0].startswith("--") else f"{p} {a[0]}" for p, a in FLOW_CLIS])
def test_every_flow_cli_says_so_in_one_line(prog, argv, silent_prefect_api, toy, monkeypatch, capsys):
    """`python -m flows.<prog>` with PREFECT_API_URL on a server that never answers: one line, exit 1, in
    seconds; never a traceback, never a hang (and `pool worker` never starts its worker)."""
    import importlib

    with open(toy / "params.yaml", "a") as params:
        params.write("promote: {}\n")  # nightly's pre-flight reads its group before Prefect starts
    monkeypatch.setenv("NIGHTLY_WEBHOOK_URL", "http://127.0.0.1:9/hook")
    monkeypatch.setattr(os, "execvpe", _refuse_to_start_a_worker)
    main = importlib.import_module(f"flows.{prog}").main
    started = time.monotonic()
    code = main([arg.format(toy=toy) for arg in argv])
    err = capsys.readouterr().err.splitlines()
    assert (code, err) == (1, [f"{prog}: PREFECT_API_URL={silent_prefect_api}: the server accepted the connection "
                               "but did not answer within 1 s; restart it, or unset PREFECT_API_URL to run with a "
                               "temporary server"])
    assert time.monotonic() - started < 10
