"""Every DVC command the flows start waits for the repo lock: contention is never a failure, a real failure still is."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import yaml

from flows.dvc_graph import DvcFailed, run_experiment, run_stage
from tests.support.toy import set_param

REPO = Path(__file__).resolve().parents[2]


def _hold_repo_lock(root, seconds: float) -> threading.Thread:
    """Take DVC's repo lock in this process for `seconds`, as another `dvc` command would."""
    from dvc.repo import Repo

    taken = threading.Event()

    def hold():
        repo = Repo(str(root))
        with repo.lock:
            taken.set()
            time.sleep(seconds)
        repo.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert taken.wait(30)
    return thread


def test_plain_dvc_fails_while_another_command_holds_the_lock(toy):
    """Why the flag matters: without it DVC gives up with 'Unable to acquire lock'."""
    holder = _hold_repo_lock(toy, 8)
    result = subprocess.run([sys.executable, "-m", "dvc", "repro", "--single-item", "prep"], cwd=toy,
                            capture_output=True, text=True, timeout=120)
    holder.join()
    assert result.returncode != 0 and "Unable to acquire lock" in result.stdout + result.stderr


def test_a_stage_waits_for_the_lock_and_then_runs(toy):
    holder = _hold_repo_lock(toy, 4)
    start = time.perf_counter()
    assert run_stage(toy, "prep", on_line=lambda line: None) == "ran"
    holder.join()
    assert time.perf_counter() - start >= 3.5  # it waited, then ran


def test_the_stage_index_reads_dvc_lock_only_while_no_dvc_command_writes_it(toy):
    """A parallel stage's `dvc repro` rewrites dvc.lock in place under the repo lock; the flow's in-process index
    waits for it instead of parsing the emptied file (before: "required key not provided @ data['schema']",
    a multihost run under load)."""
    from flows.dvc_graph import _StageIndex

    assert run_stage(toy, "prep", on_line=lambda line: None) == "ran"
    lock_file = toy / "dvc.lock"
    whole = lock_file.read_text()
    holder = _hold_repo_lock(toy, 3)  # a dvc command in the middle of writing dvc.lock:
    lock_file.write_text("")  # opened for writing (emptied) ...
    threading.Timer(1.5, lambda: lock_file.write_text(whole)).start()  # ... written before it lets go
    index = _StageIndex()
    try:
        _, stages = index.get(toy)
    finally:
        index.close()
    holder.join()
    assert "prep" in stages and stages["prep"].outs


def test_experiments_started_together_all_finish_and_a_real_failure_still_fails(toy):
    results: dict[str, object] = {}

    def run(name: str, overrides: list[str]) -> None:
        try:
            results[name] = run_experiment(toy, name, overrides, on_line=lambda line: None)
        except Exception as err:  # noqa: BLE001 - collected for the assertion
            results[name] = err

    threads = [threading.Thread(target=run, args=(f"v{i}", [f"train.boost={i}"])) for i in range(3)]
    threads.append(threading.Thread(target=run, args=("broken", ["feat.fail=true"])))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    outcome = {name: result if isinstance(result, str) else f"{type(result).__name__}: {str(result)[-600:]}"
               for name, result in results.items()}  # in full: a failure here once in a suite run was cut short
    assert all(isinstance(results.get(f"v{i}"), str) for i in range(3)), "\n".join(f"{k}: {v}" for k, v in outcome.items())
    assert isinstance(results["broken"], DvcFailed) and "failing on purpose" in str(results["broken"])


# The retrain flow's part that matters here (flows/retrain.py: a lifeline, then `run_stage`), without its
# Prefect server (15 s to start): it prints DVC's lines, so the test sees the stage start.
FLOW_STANDIN = textwrap.dedent("""
    import sys
    from flows.dvc_graph import run_stage
    from flows.lifeline import start_lifeline
    start_lifeline(poll_s=0.1)
    run_stage(sys.argv[1], "prep", on_line=lambda line: print(line, flush=True))
""")

# A PID 1 that never reaps, as in a container without an init: the killed flow's orphans (its `dvc repro`)
# are reparented here (PR_SET_CHILD_SUBREAPER) and stay zombies until this process ends. A reaping init
# leaves the same zombie for a moment (1-2 s on this machine); this makes that moment last the whole test.
NON_REAPING_INIT = textwrap.dedent("""
    import ctypes, subprocess, sys, time
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    flow = subprocess.Popen([sys.executable, "-c", *sys.argv[1:]])
    print(flow.pid, flush=True)
    time.sleep(300)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG / PR_SET_CHILD_SUBREAPER")
def test_a_rerun_right_after_kill_9_of_the_flow_runs_the_stage_and_its_outputs_are_right(toy):
    """`kill -9` of the flow mid-stage leaves DVC's per-path rwlock naming the killed `dvc repro`, which the
    lifeline killed but nobody has reaped yet. DVC never waits for that lock (--wait-for-lock is the repo lock's);
    plain DVC refuses ('is busy'); the flows' DVC (flows.dvc_graph.DVC_MAIN) takes it over and runs the stage."""
    set_param(toy, "prep", "sleep", 2)  # the stage is still running when the flow is killed
    init = subprocess.Popen([sys.executable, "-c", NON_REAPING_INIT, FLOW_STANDIN, str(toy)], cwd=toy,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        flow_pid = int(init.stdout.readline())
        for line in init.stdout:
            if line.startswith("> python stage.py prep"):
                break
        time.sleep(0.3)  # the lifeline has seen `dvc repro` and the stage
        os.kill(flow_pid, signal.SIGKILL)

        plain = subprocess.run([sys.executable, "-m", "dvc", "--wait-for-lock", "repro", "--single-item", "prep"],
                               cwd=toy, capture_output=True, text=True, timeout=60)
        assert plain.returncode != 0 and "out/prep.json' is busy" in plain.stdout + plain.stderr

        lines: list[str] = []
        assert run_stage(toy, "prep", on_line=lines.append) == "ran", lines
    finally:
        init.kill()  # its zombies go to the real init, which reaps them
        init.wait()
    output = toy / "out/prep.json"
    assert yaml.safe_load(output.read_text())["params"] == {"v": 1, "fail": False, "sleep": 2}
    recorded = yaml.safe_load((toy / "dvc.lock").read_text())["stages"]["prep"]["outs"]
    assert recorded == [{"path": "out/prep.json", "hash": "md5", "md5": hashlib.md5(output.read_bytes()).hexdigest(),
                         "size": output.stat().st_size}]


def test_stage_outcomes_reads_a_line_a_progress_bar_shared():
    """A progress bar DVC drew (and wrote over with a carriage return) stays at the start of the next line DVC prints;
    the outcome is still read from what the terminal shows."""
    from flows.dvc_graph import RAN, RESTORED, stage_outcomes

    lines = ["Checking out  40%|####      | 2/5 [00:01<00:01]\r\x1b[KRunning stage 'eval_screen':",
             "\rStage 'prep' is cached - skipping run, checking out outputs"]
    assert stage_outcomes(lines) == {"eval_screen": RAN, "prep": RESTORED}
