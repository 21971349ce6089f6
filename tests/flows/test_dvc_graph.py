"""Every DVC command the flows start waits for the repo lock: contention is never a failure, a real failure still is."""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from flows.dvc_graph import DvcFailed, run_experiment, run_stage


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
    assert all(isinstance(results[f"v{i}"], str) for i in range(3)), results
    assert isinstance(results["broken"], DvcFailed) and "failing on purpose" in str(results["broken"])
