"""Process control: launching under ``accelerate``, dying with the launcher, one run per checkpoint folder."""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator

from pipeline.artifacts import ACCELERATE_CONFIG
from pipeline.params import StageError


def launched_by_accelerate() -> bool:
    """True inside a process started by ``accelerate launch`` (or torchrun)."""
    return "LOCAL_RANK" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


def launch_command(num_processes: int, mixed_precision: str, config_file: Path = ACCELERATE_CONFIG) -> list[str]:
    """``accelerate launch`` re-running the stage module in ``num_processes`` processes."""
    return [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(config_file),
        "--num_processes", str(num_processes),
        "--mixed_precision", mixed_precision,
        "-m", "tasks.train",
    ]


def die_with_parent() -> bool:
    """Linux: get SIGKILL when the launcher dies (PR_SET_PDEATHSIG).

    ``accelerate launch`` / torchrun start the workers in their own process groups:
    a ``kill -9`` of the launcher (or of DVC's process group) leaves them running,
    still writing checkpoints, next to the rerun. Returns False where unsupported.
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import signal

    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(1, int(signal.SIGKILL), 0, 0, 0) != 0:  # PR_SET_PDEATHSIG = 1
        return False
    if os.getppid() != parent:  # the launcher died before the call
        os.kill(os.getpid(), signal.SIGKILL)
    return True


class TrainLockedError(StageError):
    """Another training run holds the checkpoint folder's lock."""


class RunLock:
    """An exclusive ``flock`` on ``<checkpoint_dir>/.lock`` for the whole run (main process).

    Two trainings writing the same checkpoints (a rerun next to a survivor of a
    crash) fail loudly instead. The kernel drops the lock when its holder dies.
    """

    def __init__(self, directory: Path):
        self.path = Path(directory) / ".lock"
        self.handle = None

    def acquire(self) -> None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise TrainLockedError(f"{self.path}: another training run holds the lock ({holder}); "
                                   "stop it before rerunning") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        handle.flush()
        self.handle = handle

    def release(self) -> None:
        """Empty the holder line, then drop the lock: the folder is a DVC output, and a finished run's pid in it
        would make two identical runs' checkpoints differ (a killed run's line stays, naming who held it)."""
        if self.handle is not None:
            self.handle.seek(0)
            self.handle.truncate()
            self.handle.close()  # closing drops the flock
            self.handle = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def run_lock(accelerator, directory: Path) -> Iterator[None]:
    """Hold ``RunLock`` (main process) for the block; every process fails alike if another run holds it."""
    from accelerate.utils import broadcast_object_list

    lock = RunLock(directory) if accelerator.is_main_process else None
    status = [""]
    if lock is not None:
        try:
            lock.acquire()
        except TrainLockedError as err:
            status[0] = str(err)
    if accelerator.num_processes > 1:
        broadcast_object_list(status)
    if status[0]:
        raise TrainLockedError(status[0])
    try:
        yield
    finally:
        if lock is not None:
            lock.release()
