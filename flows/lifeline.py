"""The flow's children die with it: a sidecar kills this process's descendants when this process dies.

`kill -9` of `python -m flows.retrain` used to leave the ephemeral Prefect server
(uvicorn) and the running `dvc repro` + stage processes going; the next run then met
their locks. The sidecar (one small process) asks the kernel for a signal when its
parent dies (``PR_SET_PDEATHSIG``, as train's workers do: ``pipeline.training.run_control``),
notes the parent's descendants and their process groups every ``POLL_S``, and on the
parent's death kills them: each process group other than the parent's own (a `dvc`
call runs in a session of its own: `flows.dvc_graph.dvc`), then each noted process
(its identity checked by start time, so a reused pid is never hit). Linux only.
"""
from __future__ import annotations

import os
import subprocess
import sys

POLL_S = 0.5

SIDECAR = r"""
import ctypes, os, signal, sys, time
import psutil

parent = int(sys.argv[1])
poll = float(sys.argv[2])
own_group = os.getpgid(parent)
known = {}  # pid -> (create_time, pgid)

def reap(*_):
    groups = {pgid for _, pgid in known.values() if pgid not in (own_group, os.getpgid(0))}
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass
    for pid, (created, _) in known.items():
        try:
            proc = psutil.Process(pid)
            if proc.create_time() == created:
                proc.kill()
        except psutil.Error:
            pass
    os._exit(0)

signal.signal(signal.SIGTERM, reap)
ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
if os.getppid() != parent:
    os._exit(0)  # the parent died before the call: it had no children we could know
me = os.getpid()
while True:
    try:
        for child in psutil.Process(parent).children(recursive=True):
            if child.pid != me and child.pid not in known:
                try:
                    known[child.pid] = (child.create_time(), os.getpgid(child.pid))
                except (psutil.Error, OSError):
                    pass
    except psutil.Error:
        reap()
    time.sleep(poll)
"""


def start_lifeline(poll_s: float = POLL_S) -> subprocess.Popen | None:
    """Start the sidecar for this process (None where unsupported); ``stop_lifeline`` it on a normal exit."""
    if not sys.platform.startswith("linux"):
        return None
    return subprocess.Popen([sys.executable, "-c", SIDECAR, str(os.getpid()), str(poll_s)],
                            stdin=subprocess.DEVNULL)


def stop_lifeline(sidecar: subprocess.Popen | None) -> None:
    """A normal exit: the sidecar goes without touching anything (SIGKILL, not its SIGTERM)."""
    if sidecar is not None and sidecar.poll() is None:
        sidecar.kill()
        sidecar.wait()
