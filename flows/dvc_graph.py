"""The DVC side of the flows: the stage graph, running one stage, experiments.

`dvc.yaml` is the only DAG (DESIGN.md, principle 1). Everything here asks DVC:
the graph comes from `Repo.index.graph`, a stage runs as
`dvc repro --single-item <stage>`, and "unchanged" is DVC's own
`Stage.changed()` — the call `repro --single-item` makes — asked just before
the stage would run, after its upstream stages have finished. Nothing is
decided up front (`dvc status` only sees the first changed stage).
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import yaml

# What a stage ended as. `restored` = DVC checked its outputs out of the run-cache.
RAN, SKIPPED, RESTORED, FAILED, NOT_RUN = "ran", "skipped", "restored", "failed", "not_run"

# DVC's own log lines for each outcome (dvc/stage/run.py, dvc/stage/__init__.py, dvc/stage/cache.py).
_OUTCOME_LINES = (
    (re.compile(r"^Stage '(?P<stage>.+)' is cached - skipping run"), RESTORED),
    (re.compile(r"^Running stage '(?P<stage>.+)':"), RAN),
    (re.compile(r"^Stage '(?P<stage>.+)' didn't change, skipping"), SKIPPED),
    # `repro --pull`: unchanged but its outputs were missing here, pulled from the DVC remote
    (re.compile(r"^Pulling data for stage: '(?P<stage>.+)'$"), RESTORED),
)


@dataclass(frozen=True)
class StageSpec:
    """One stage of dvc.yaml as the flows need it."""

    name: str
    upstream: tuple[str, ...] = ()
    pool: str = "cpu"  # `meta: {pool: gpu}` in dvc.yaml pins a stage to the GPU work pool
    queue: str | None = None  # `meta: {queue: train}` picks the pool's work queue
    gpus: int = 1  # `meta: {gpus: 2}`: slots taken from the `gpu` concurrency limit


class DvcFailed(RuntimeError):
    """A `dvc` command failed; the message carries its last output lines."""

    def __init__(self, what: str, returncode: int, tail: Iterable[str]):
        tail = list(tail)
        self.what, self.returncode = what, returncode
        # one line for tables: DVC's own "ERROR: ..." line if it printed one
        self.summary = next((line for line in reversed(tail) if line.startswith("ERROR")), f"{what} failed")
        # the stage's own last word (`stage_main` prints `<stage>: <why>`), else DVC's ERROR line
        self.cause = next((line.strip() for line in reversed(tail)
                           if line.strip() and not line.startswith(("ERROR", "Traceback", "  "))), self.summary)
        lines = "\n".join(tail)
        super().__init__(f"{what} failed (dvc exit code {returncode}):\n{lines}")


def one_line(err: Exception) -> str:
    """An error in one line, for a table cell."""
    return err.summary if isinstance(err, DvcFailed) else (str(err).strip().splitlines() or [repr(err)])[0]


@dataclass
class StageResult:
    stage: str
    status: str
    seconds: float = 0.0
    pool: str = "local"  # where it ran: "local" (this process) or the work pool's name
    queue: str | None = None
    error: str | None = None  # first line of why it failed or was not run
    started_at: str | None = None  # ISO 8601 (UTC); None for a stage that was not run
    finished_at: str | None = None

    def row(self) -> dict:
        return {"stage": self.stage, "status": self.status, "seconds": round(self.seconds, 2),
                "pool": self.pool, "queue": self.queue, "error": self.error,
                "started_at": self.started_at, "finished_at": self.finished_at}


def _repo(workdir: str | os.PathLike, **options):
    from dvc.repo import Repo

    return Repo(os.fspath(workdir), _wait_for_lock=True, **options)  # see WAIT_FOR_LOCK


def load_stages(workdir: str | os.PathLike, targets: Iterable[str] | None = None) -> list[StageSpec]:
    """The stages of `workdir`'s dvc.yaml in execution order (upstream first, ties by name).

    With `targets`, only those stages and everything upstream of them.
    """
    with _INDEX_LOCK:
        repo, _ = _INDEX.get(workdir)
        root = repo.root_dir
        graph = repo.index.graph  # edges point from a stage to the stage it depends on
        order = nx.DiGraph()
        order.add_nodes_from(_address(stage, root) for stage in graph.nodes)
        order.add_edges_from((_address(dep, root), _address(stage, root)) for stage, dep in graph.edges)
        metas = {_address(stage, root): stage.meta or {} for stage in graph.nodes}
    if targets:
        unknown = sorted(set(targets) - set(order))
        if unknown:
            raise ValueError(f"{Path(workdir) / 'dvc.yaml'}: unknown stage(s) {unknown}; known: {sorted(order)}")
        keep = set(targets).union(*(nx.ancestors(order, t) for t in targets))
        order = order.subgraph(keep)
    return [_spec(workdir, name, tuple(sorted(order.predecessors(name))), metas[name])
            for name in nx.lexicographical_topological_sort(order)]


def _spec(workdir, name: str, upstream: tuple[str, ...], meta: dict) -> StageSpec:
    pool, queue, gpus = meta.get("pool", "cpu"), meta.get("queue"), meta.get("gpus", 1)
    where = f"{Path(workdir) / 'dvc.yaml'}: stage '{name}'"
    if pool not in ("cpu", "gpu"):
        raise ValueError(f"{where}: meta.pool must be 'cpu' or 'gpu', got {pool!r}")
    if queue is not None and not isinstance(queue, str):
        raise ValueError(f"{where}: meta.queue must be a work queue name, got {queue!r}")
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
        raise ValueError(f"{where}: meta.gpus must be an integer >= 1, got {gpus!r}")
    return StageSpec(name, upstream, pool, queue, gpus)


def _address(stage, root: str) -> str:
    """`dvc repro` target of a stage, relative to the repo root (DVC's own `addressing` is relative to the cwd)."""
    path = os.path.relpath(stage.path, root)
    if not getattr(stage, "name", None):  # a .dvc file
        return path
    return stage.name if path == "dvc.yaml" else f"{path}:{stage.name}"


def downstream(stages: list[StageSpec], name: str) -> set[str]:
    """Names of every stage that (transitively) depends on `name`."""
    children: dict[str, list[str]] = {}
    for spec in stages:
        for up in spec.upstream:
            children.setdefault(up, []).append(spec.name)
    found, todo = set(), [name]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


class _StageIndex:
    """The workspace's stages parsed once (ruamel parsing of dvc.yaml + dvc.lock costs about 0.1 s a
    time), reparsed when a stage file or lock file changes on disk — i.e. after any stage ran."""

    repo = key = stages = None

    def get(self, workdir: str | os.PathLike) -> tuple:
        """(the DVC Repo, {stage address: Stage}), current with the files on disk."""
        root = os.path.realpath(workdir)
        if self.repo is None or self.repo.root_dir != root or self._stat(self.key[1]) != self.key[2]:
            self.close()
            from dvc.repo import Repo

            self.repo = Repo(root, _wait_for_lock=True)  # = `dvc --wait-for-lock`: see WAIT_FOR_LOCK
            # A parallel `dvc repro` rewrites dvc.lock in place, under the repo lock: read it under the lock too, or
            # a half-written file fails DVC's schema ("required key not provided @ data['schema']").
            with self.repo.lock:
                self.stages = {_address(stage, root): stage for stage in self.repo.index.stages}
                files = sorted({f for stage in self.stages.values() for f in _stage_files(stage)})
                self.key = (root, files, self._stat(files))
        return self.repo, self.stages

    @staticmethod
    def _stat(files: list[str]) -> list:
        return [(st.st_mtime_ns, st.st_size, st.st_ino) if (st := _stat_or_none(f)) else None for f in files]

    def close(self) -> None:
        if self.repo is not None:
            self.repo.close()
        self.repo = self.key = self.stages = None


def _stat_or_none(path: str):
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def _stage_files(stage) -> list[str]:
    files = [stage.path]
    if os.path.basename(stage.path) == "dvc.yaml":
        files.append(os.path.join(os.path.dirname(stage.path), "dvc.lock"))
    return files


_INDEX = _StageIndex()
_INDEX_LOCK = threading.Lock()  # one DVC Repo object, not thread-safe


def stage_changed(workdir: str | os.PathLike, name: str) -> bool:
    """DVC's own decision for `dvc repro --single-item <name>`: would it do anything?

    In-process (about 10 ms once dvc.yaml is parsed) instead of a `dvc` CLI start (0.4-0.8 s).
    Call it right before the stage would run: its answer depends on the upstream stages' outputs.
    """
    with _INDEX_LOCK:
        repo, stages = _INDEX.get(workdir)
        with repo.lock:
            return stages[name].changed()


def dvc_env() -> dict[str, str]:
    """Environment for `dvc` and stage commands: this venv first on PATH, unbuffered Python output."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def line_logger(logger) -> Callable[[str], None]:
    """Send DVC's output lines to `logger`, at warning/error level where DVC says so."""
    def log(line: str) -> None:
        level = logging.ERROR if line.startswith("ERROR") else logging.WARNING if line.startswith("WARNING") else logging.INFO
        logger.log(level, line)
    return log


# The one mechanism for running DVC concurrently (parallel stages, sweep experiments): every DVC
# command waits for the repo lock instead of failing with "Unable to acquire lock". The lock is a
# flock, released when its holder exits, so a crashed holder cannot make a waiter hang.
WAIT_FOR_LOCK = ("--wait-for-lock",)

# `python -m dvc`, except that DVC's per-path rwlock (.dvc/tmp/rwlock: which pid writes which out) counts a
# zombie as dead. DVC already frees the paths of a pid that no longer exists, but `kill -9` of a flow leaves
# its killed `dvc repro` a zombie until init reaps it (1-2 s on this machine; never under a container's
# PID 1 that does not reap), and meanwhile a rerun fails with "'out' is busy, it is being blocked by (PID n)"
# - the repo lock is waited for (WAIT_FOR_LOCK), the rwlock never is. A zombie holds no file and writes nothing.
DVC_MAIN = r"""
import sys
import psutil
import dvc.rwlock
from dvc.cli import main

class ZombieIsDead:
    def __getattr__(self, name):
        return getattr(psutil, name)

    @staticmethod
    def pid_exists(pid):
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
        except psutil.Error:
            return True

if getattr(dvc.rwlock, "psutil", None) is psutil:  # tests/flows/test_dvc_graph.py sees when DVC changes this
    dvc.rwlock.psutil = ZombieIsDead()
sys.argv[0] = "dvc"  # what the rwlock records as the holder's command
sys.exit(main(sys.argv[1:]))
"""


def dvc(args: list[str], workdir: str | os.PathLike, on_line: Callable[[str], None] = print,
        tail_lines: int = 40) -> tuple[int, list[str]]:
    """Run `dvc --wait-for-lock <args>` (DVC_MAIN) in `workdir`, handing each output line (stdout and stderr) to
    `on_line`.

    Returns the exit code and the last `tail_lines` lines.
    """
    proc = subprocess.Popen(  # a session of its own: DVC and the stage it runs are stopped (and reaped) as one group
        [sys.executable, "-c", DVC_MAIN, *WAIT_FOR_LOCK, *args], cwd=workdir, env=dvc_env(), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1, errors="replace", start_new_session=True,
    )
    lines: list[str] = []
    try:
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            on_line(line)
            lines.append(line)
            del lines[:-tail_lines]
    except BaseException:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)  # the stage too, not only DVC
        proc.wait()
        raise
    return proc.wait(), lines


def run_stage(workdir: str | os.PathLike, name: str, force: bool = False,
              on_line: Callable[[str], None] = print, pull: bool = False) -> str:
    """`dvc repro --single-item [--force] [--pull] <name>`: return RAN, SKIPPED or RESTORED, or raise DvcFailed.

    `pull`: restore from the DVC remote's run-cache (and pull unchanged outputs) instead of rerunning.
    """
    outcome = None

    def watch(line: str) -> None:
        nonlocal outcome
        on_line(line)
        for pattern, status in _OUTCOME_LINES:
            match = pattern.match(_printed(line))
            if match and match["stage"] == name:  # the last one counts: `--pull` may fail over to a run
                outcome = status

    before = lock_entry(workdir, name)
    args = ["repro", "--single-item", *(["--force"] if force else []), *(["--pull"] if pull else []), name]
    returncode, tail = dvc(args, workdir, watch)
    if returncode != 0:
        raise DvcFailed(f"stage '{name}'", returncode, tail)
    if outcome is None:  # DVC changed its wording: fall back to comparing the dvc.lock entry
        outcome = RAN if force or lock_entry(workdir, name) != before else SKIPPED
        on_line(f"(no DVC outcome line for '{name}'; dvc.lock comparison says {outcome})")
    return outcome


def lock_entry(workdir: str | os.PathLike, name: str) -> dict | None:
    """Stage `name`'s entry in `workdir`'s dvc.lock, or None."""
    lock = Path(workdir) / "dvc.lock"
    if not lock.exists():
        return None
    return lock_entry_of(lock.read_text(), name)


def lock_entry_of(lock_text: str, name: str) -> dict | None:
    """The `dvc.lock` entry of stage `name` in the text of a dvc.lock file, or None."""
    return (yaml.safe_load(lock_text) or {}).get("stages", {}).get(name)


@contextlib.contextmanager
def repo_lock(workdir: str | os.PathLike):
    """Hold DVC's repo lock (waiting for it, like every DVC call here): dvc.lock is not being written meanwhile."""
    with _repo(workdir) as repo, repo.lock:
        yield


def set_lock_entry(workdir: str | os.PathLike, name: str, entry: dict | None) -> None:
    """Record `entry` as stage `name`'s dvc.lock entry (None removes it), as DVC's own lockfile writer does."""
    from dvc.utils.serialize import modify_yaml

    with repo_lock(workdir), modify_yaml(Path(workdir) / "dvc.lock") as data:
        data.setdefault("schema", "2.0")
        stages = data.setdefault("stages", {})
        if entry is None:
            stages.pop(name, None)
        else:
            stages[name] = entry


def uncached_outputs(workdir: str | os.PathLike, name: str) -> list[str]:
    """Paths (relative to the DVC root) of stage `name`'s `cache: false` outputs: DVC's remote never carries them."""
    with _INDEX_LOCK:
        repo, stages = _INDEX.get(workdir)
        return [out.def_path for out in stages[name].outs if not out.use_cache]


def _absolute_targets(workdir: str | os.PathLike, targets: Iterable[str]) -> list[str]:
    """Stage addresses / output paths as in-process DVC needs them (it resolves targets against the cwd)."""
    root = os.path.realpath(workdir)
    out = []
    for target in targets:
        if ":" in target or os.path.exists(os.path.join(root, target)):
            out.append(os.path.join(root, target))
        else:  # a stage of the root dvc.yaml
            out.append(f"{os.path.join(root, 'dvc.yaml')}:{target}")
    return out


def push(workdir: str | os.PathLike, targets: Iterable[str] | None = None, run_cache: bool = False) -> int:
    """`dvc push [--run-cache] [targets]` in-process (no 0.4-3 s CLI start; waits for the repo lock like
    every DVC call here). Returns the number of files pushed; raises DvcFailed with DVC's error in one line."""
    what = " ".join(["dvc push", *(["--run-cache"] if run_cache else []), *(targets or [])])
    with _repo(workdir) as repo, _dvc_errors(what, repo):
        return repo.push(targets=_absolute_targets(workdir, targets) if targets else None, run_cache=run_cache)


def pull(workdir: str | os.PathLike, targets: Iterable[str] | None = None, allow_missing: bool = False,
         verify: bool = False) -> dict:
    """`dvc pull [--allow-missing] [targets]` in-process (see push). Returns DVC's pull stats.

    `verify`: hash every downloaded file (the default remote's `verify = true`, whatever its config says),
    so a truncated or corrupt object on the remote fails the pull instead of landing in the workspace."""
    what = " ".join(["dvc pull", *(["--allow-missing"] if allow_missing else []), *(targets or [])])
    with _repo(workdir, **({"remote_config": {"verify": True}} if verify else {})) as repo, _dvc_errors(what, repo):
        return repo.pull(targets=_absolute_targets(workdir, targets) if targets else None,
                         allow_missing=allow_missing)


def exp_push(workdir: str | os.PathLike, git_remote: str, ref: str) -> None:
    """`dvc exp push --force <git_remote> <ref>` in-process: the experiment's commit to git, its outputs to
    the default DVC remote."""
    with _repo(workdir) as repo, _dvc_errors(f"dvc exp push {git_remote} {ref}", repo):
        repo.experiments.push(git_remote, [ref], force=True, push_cache=True)


def exp_pull(workdir: str | os.PathLike, git_remote: str, ref: str) -> None:
    """`dvc exp pull --force <git_remote> <ref>` in-process: the experiment's commit and its outputs."""
    with _repo(workdir) as repo, _dvc_errors(f"dvc exp pull {git_remote} {ref}", repo):
        repo.experiments.pull(git_remote, [ref], force=True, pull_cache=True)


@contextlib.contextmanager
def _dvc_errors(what: str, repo):
    """Any error of an in-process DVC call as DvcFailed, one line naming the call and the DVC remote."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 - DVC, ssh, network: all reported as one DVC failure
        name = repo.config.get("core", {}).get("remote")
        url = repo.config.get("remote", {}).get(name, {}).get("url") if name else None
        where = f" (DVC remote '{name}': {url})" if url else " (no default DVC remote)"
        message = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(err)).split()) or type(err).__name__
        raise DvcFailed(what, 1, [f"ERROR: {what}{where}: {message}"]) from err


def experiment_rev(workdir: str | os.PathLike, name: str) -> str | None:
    """Commit of the experiment `name` on the current baseline (HEAD), or None."""
    with _repo(workdir) as repo:
        for exps in repo.experiments.ls().values():
            for exp_name, rev in exps:
                if exp_name == name:
                    return rev
    return None


def remove_experiment(workdir: str | os.PathLike, name: str) -> bool:
    """Drop the experiment `name` of the current baseline so a rerun can reuse the name."""
    if experiment_rev(workdir, name) is None:
        return False
    with _repo(workdir) as repo:
        repo.experiments.remove(exp_names=[name])
    return True


_TERMINAL_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _printed(line: str) -> str:
    """What a terminal would show of an output line: the text after its last carriage return, without control
    sequences (a progress bar DVC drew and then wrote over shares the line with what follows it)."""
    return _TERMINAL_CONTROL.sub("", line).rsplit("\r", 1)[-1]


def stage_outcomes(lines: Iterable[str]) -> dict[str, str]:
    """What each stage ended as (RAN, SKIPPED, RESTORED), from DVC's own lines of a repro or experiment."""
    outcomes: dict[str, str] = {}
    for line in lines:
        for pattern, outcome in _OUTCOME_LINES:
            if match := pattern.match(_printed(line)):
                outcomes[match["stage"]] = outcome
    return outcomes


@contextlib.contextmanager
def _one_experiment_at_a_time(workdir: str | os.PathLike) -> Iterator[None]:
    """`dvc exp run --temp` stashes its experiment, then runs every experiment stashed for the temp queue: two started
    together in one workspace ran each other's (one reported 'Ran experiment(s): boost-1, boost-7', the other found
    all cached and was counted as 0 decoder items). So one at a time per workspace (an flock: threads and processes
    alike); experiments in parallel run on workers, each in its own clone (flows/remote.py)."""
    import fcntl

    path = Path(workdir) / ".dvc" / "tmp" / "toolaware-exp-run.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def run_experiment(workdir: str | os.PathLike, name: str, overrides: Iterable[str],
                   on_line: Callable[[str], None] = print, targets: Iterable[str] = ()) -> str:
    """`dvc exp run --temp -n <name> -S <override>... [targets]` (the workspace stays untouched); return its commit.

    `targets`: only those stages and what they depend on (default: every stage).
    """
    args = ["exp", "run", "--temp", "-n", name]
    for override in overrides:
        args += ["-S", override]
    args += list(targets)
    with _one_experiment_at_a_time(workdir):
        returncode, tail = dvc(args, workdir, on_line)
    if returncode != 0:
        raise DvcFailed(f"experiment '{name}'", returncode, tail)
    rev = experiment_rev(workdir, name)
    if rev is None:
        raise RuntimeError(f"dvc exp run -n {name} succeeded but no experiment '{name}' exists on HEAD")
    return rev


def read_json_at(workdir: str | os.PathLike, path: str, rev: str) -> tuple[dict | None, str | None]:
    """(JSON object at `path` in commit `rev`, None) or (None, why unavailable); DVC-tracked or git-tracked."""
    import json

    import dvc.api

    try:
        data = json.loads(dvc.api.read(path, repo=os.fspath(workdir), rev=rev))
    except Exception as err:  # noqa: BLE001 - missing path, missing cache, bad JSON: all "unavailable"
        return None, f"{path}@{rev[:7]}: {type(err).__name__}: {err}"
    return (data, None) if isinstance(data, dict) else (None, f"{path}@{rev[:7]}: not a JSON object")
