"""GPU stages and sweep experiments on hosts that share only git and a DVC remote (no workspace path).

Git carries code, params and dvc.lock; the DVC remote carries data (and the run-cache); Prefect carries
the request. Nothing else is transferred, nothing else is scheduled.

Parent (retrain / sweep, in its workspace)      Worker (`gpu-stage` / `gpu-experiment`, in its own clone)
1. `dvc push` what the worker needs;             3. check the snapshot out, `dvc pull` the inputs;
   snapshot the workspace as a commit          4. `dvc repro --single-item --pull <stage>` (a result
   (HEAD + uncommitted changes, dvc.lock           in the remote's run-cache is restored, not rerun),
   included; HEAD, branch and index untouched)     `dvc push --run-cache`; push a result commit (its
   and `git push` it to refs/toolaware/...;        dvc.lock, the stage's `cache: false` outputs);
2. dispatch the flow run with the snapshot;       experiments: `dvc exp run --temp`, `dvc exp push`.
5. once the run completed (never before): take the stage's dvc.lock entry from the result commit and
   `dvc pull` its outputs, hashing every file (a truncated object is rejected, the entry put back);
   or `dvc exp pull` the experiment.

See docs/orchestration.md, "Hosts that share only git and a DVC remote".
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from flows.dvc_graph import (DvcFailed, exp_pull, exp_push, load_stages, lock_entry, lock_entry_of, pull, push,
                             remove_experiment, repo_lock, run_experiment, run_stage, set_lock_entry,
                             uncached_outputs)

GIT_REMOTE = "origin"  # the git remote every host reaches
SNAPSHOTS = "refs/toolaware/snapshots"  # workspace states the parent handed out, by commit
RESULTS = "refs/toolaware/results"  # one result commit per remote stage run, by flow run id
CLONES_ENV = "TOOLAWARE_CLONES"  # where a worker keeps its clones (default ~/.cache/toolaware/clones)
OWN_CLONE_TAG = "own-clone"  # a `gpu-stage` deployment with this tag runs in the workers' own clones
CRASH_RETRIES = 1  # a crashed flow run (its process died) is rescheduled this often for the next free worker


class RemoteError(RuntimeError):
    """A git step of the remote path failed; the message is one line."""


@dataclass(frozen=True)
class Snapshot:
    """A workspace state a worker can reproduce: a commit on `origin` (ref `SNAPSHOTS/<commit>`)."""

    origin: str  # git URL of the remote, as the workers reach it
    commit: str
    subdir: str = ""  # the DVC root inside the git repository ("" = its top level)

    @property
    def ref(self) -> str:
        return f"{SNAPSHOTS}/{self.commit}"

    def param(self) -> dict:
        """As a flow-run parameter."""
        return asdict(self)


def git(args: list[str], cwd: str | os.PathLike, env: dict | None = None) -> str:
    """Run git; its stdout, or RemoteError with git's last message line."""
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise RemoteError(f"git {args[0]} ({cwd}): {why}")
    return proc.stdout.strip()


def _identity(cwd) -> list[str]:
    """`-c user.*` options where git has no identity configured (commits here are the machine's)."""
    configured = subprocess.run(["git", "config", "user.email"], cwd=cwd, capture_output=True).returncode == 0
    return [] if configured else ["-c", "user.name=toolaware", "-c", "user.email=toolaware@localhost"]


def commit_tree(top: str | os.PathLike, base: str, paths: list[str] | None, message: str) -> str:
    """A commit of `base` plus the working tree's `paths` (None: everything git sees), made in a
    temporary index: HEAD, the branch and the user's index stay as they are. `base` itself if nothing differs."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, GIT_INDEX_FILE=os.path.join(tmp, "index"))
        git(["read-tree", base], top, env)
        git(["add", "-A"] if paths is None else ["add", "--", *paths], top, env)
        tree = git(["write-tree"], top, env)
    if tree == git(["rev-parse", f"{base}^{{tree}}"], top):
        return base
    return git([*_identity(top), "commit-tree", tree, "-p", base, "-m", message], top)


# ---------------------------------------------------------------- parent side

_PUBLISHED: dict[tuple, Snapshot] = {}  # (workspace, commit, targets) already pushed by this process
_PUBLISH_LOCK = threading.Lock()


def publish_workspace(workdir: str | os.PathLike, targets: list[str] | None,
                      on_line: Callable[[str], None] = print) -> Snapshot:
    """Make the workspace's state reachable from any host: `dvc push <targets>` (None: every output
    in dvc.lock; []: nothing), then the snapshot commit to origin."""
    workdir = os.fspath(workdir)
    top = git(["rev-parse", "--show-toplevel"], workdir)
    try:
        origin = git(["remote", "get-url", GIT_REMOTE], top)
    except RemoteError:
        raise RemoteError(f"{top}: no git remote '{GIT_REMOTE}' (the remote path needs one every host reaches: "
                          f"git remote add {GIT_REMOTE} <url>)") from None
    with _PUBLISH_LOCK:  # the stages / experiments of one run mostly share a snapshot: publish it once
        with repo_lock(workdir):  # dvc.lock is not half-written while git reads it
            head = git(["rev-parse", "HEAD"], top)
            commit = commit_tree(top, head, None, "toolaware: workspace snapshot for a remote run")
        key = (top, commit, None if targets is None else tuple(targets))
        if key in _PUBLISHED:
            return _PUBLISHED[key]
        if targets is None or targets:
            on_line(f"dvc push {' '.join(targets or [])}: {push(workdir, targets)} file(s) pushed")
        git(["push", "-q", GIT_REMOTE, f"{commit}:{SNAPSHOTS}/{commit}"], top)
        subdir = git(["rev-parse", "--show-prefix"], workdir).rstrip("/")
        _PUBLISHED[key] = snapshot = Snapshot(origin, commit, subdir)
        return snapshot


def result_ref(flow_run_id) -> str:
    return f"{RESULTS}/{flow_run_id}"


def _fetch(top: str | os.PathLike, ref: str) -> str:
    """Fetch `ref` from origin into the same local ref (reachable, no FETCH_HEAD race); its commit."""
    git(["fetch", "-q", "--no-write-fetch-head", GIT_REMOTE, f"+{ref}:{ref}"], top)
    return git(["rev-parse", ref], top)


def record_stage(workdir: str | os.PathLike, name: str, ref: str, on_line: Callable[[str], None] = print) -> str:
    """Take a remote run's result into the workspace: its dvc.lock entry, its outputs (`dvc pull`), its
    `cache: false` outputs (from the result commit). Returns the run's status.

    The pull hashes every downloaded file; if it fails (an output missing on the remote, or truncated by an
    upload killed mid-file), the previous entry is put back and DvcFailed raised: a half-pushed output is
    never recorded as the stage's result."""
    workdir = os.fspath(workdir)
    top = git(["rev-parse", "--show-toplevel"], workdir)
    prefix = git(["rev-parse", "--show-prefix"], workdir)
    commit = _fetch(top, ref)
    status = git(["log", "-1", "--format=%(trailers:key=Status,valueonly)", commit], top).strip()
    entry = lock_entry_of(git(["show", f"{commit}:{prefix}dvc.lock"], top), name)
    if entry is None:
        raise RemoteError(f"result {ref} ({commit[:7]}) has no dvc.lock entry for stage '{name}'")
    previous = lock_entry(workdir, name)
    set_lock_entry(workdir, name, entry)
    try:
        stats = pull(workdir, [name], verify=True)
    except DvcFailed as err:
        set_lock_entry(workdir, name, previous)
        host = git(["log", "-1", "--format=%(trailers:key=Host,valueonly)", commit], top).strip()
        why = err.summary.removeprefix("ERROR: ")
        raise DvcFailed(f"stage '{name}'", 1, [f"ERROR: stage '{name}' ran on {host}, but its outputs are "
                                               f"missing or corrupt on the DVC remote; not recorded ({why})"]) from err
    on_line(f"dvc pull {name}: {stats.get('stats', {}).get('fetched', 0)} file(s) fetched")
    if uncached := uncached_outputs(workdir, name):  # git carried them (those it may track)
        in_result = git(["ls-tree", "-r", "--name-only", commit, "--", *uncached], workdir).splitlines()
        if in_result:  # paths relative to workdir, as ls-tree prints them
            git(["restore", f"--source={commit}", "--worktree", "--", *in_result], workdir)
    return status


def experiment_ref(baseline: str, name: str) -> str:
    """DVC's git ref of experiment `name` on commit `baseline`."""
    return f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}"


def pull_experiment(workdir: str | os.PathLike, ref: str, on_line: Callable[[str], None] = print) -> str:
    """`dvc exp pull` one experiment (its commit and its DVC outputs); return its commit."""
    exp_pull(workdir, GIT_REMOTE, ref)
    on_line(f"dvc exp pull {GIT_REMOTE} {ref}: done")
    return git(["rev-parse", ref], workdir)


def is_own_clone(deployment: str) -> bool:
    """Does `deployment` run its stages in the workers' own clones (tag OWN_CLONE_TAG)?"""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return OWN_CLONE_TAG in (client.read_deployment_by_name(deployment).tags or [])


def run_child(deployment: str, parameters: dict, queue: str | None, log, poll_seconds: float = 2.0,
              crash_retries: int = CRASH_RETRIES):
    """Start a flow run of `deployment` and wait for its final state (returned, as a FlowRun).

    A run that crashed (its process died: a killed worker, a lost host once Prefect marks it crashed) is
    put back into the queue as AwaitingRetry — the same run, for the next free worker — up to `crash_retries` times.
    """
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.states import AwaitingRetry

    child = run_deployment(deployment, parameters=parameters, work_queue_name=queue, timeout=0)
    retried = 0
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(child.id)
            if run.state.is_final():
                if not run.state.is_crashed() or retried >= crash_retries:
                    return run
                retried += 1
                log.warning("flow run '%s' crashed (%s); rescheduled for the next free worker (retry %d of %d)",
                            run.name, run.state.message, retried, crash_retries)
                client.set_flow_run_state(run.id, AwaitingRetry(), force=True)
            time.sleep(poll_seconds)


def child_failure(deployment: str, run) -> list[str]:
    """A failed child run as DvcFailed tail lines: the worker's own `ERROR:` line becomes the one-line summary."""
    return [f"{deployment} run '{run.name}' {run.state.type.value.lower()}:", *(run.state.message or "").splitlines()]


# ---------------------------------------------------------------- worker side

def clone_root() -> Path:
    return Path(os.environ.get(CLONES_ENV) or Path.home() / ".cache" / "toolaware" / "clones")


@contextlib.contextmanager
def checked_out(snapshot: Snapshot) -> Iterator[Path]:
    """This worker's clone of origin with the snapshot checked out; yields its DVC root.

    The clone is held exclusively (a flock, released if the process dies): one run at a time per clone.
    Git-ignored files (DVC's cache, outputs, persist checkpoints) stay between runs."""
    url = snapshot.origin
    clone = clone_root() / f"{Path(url.rstrip('/')).stem}-{hashlib.sha1(url.encode()).hexdigest()[:8]}"
    clone.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{clone}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (clone / ".git").is_dir():
            with tempfile.TemporaryDirectory(dir=clone.parent) as tmp:  # a killed clone leaves no half repo
                git(["clone", "-q", "--no-checkout", url, "repo"], tmp)
                os.rename(Path(tmp) / "repo", clone)
            git(["config", "user.name", f"toolaware worker on {socket.gethostname()}"], clone)
            git(["config", "user.email", "toolaware-worker@localhost"], clone)
        _fetch(clone, snapshot.ref)
        git(["checkout", "-q", "--force", "--detach", snapshot.commit], clone)
        git(["clean", "-q", "--force", "-d"], clone)  # untracked leftovers of an earlier run (ignored files stay)
        yield clone / snapshot.subdir


def reproduce_in_clone(snapshot: Snapshot, stage: str, force: bool, ref: str,
                       on_line: Callable[[str], None] = print) -> dict:
    """Bring `stage` up to date at the snapshot in this worker's clone, push its outputs and its result
    commit (to `ref`). Returns {stage, status, host, clone, result}."""
    with checked_out(snapshot) as work:
        spec = next(s for s in load_stages(work, [stage]) if s.name == stage)
        if spec.upstream:
            pull(work, spec.upstream)
        status = run_stage(work, stage, force=force, on_line=on_line, pull=True)
        # outputs (and the run-cache entry) first, the result commit that names them last
        on_line(f"dvc push --run-cache {stage}: {push(work, [stage], run_cache=True)} file(s) pushed")
        top = git(["rev-parse", "--show-toplevel"], work)
        paths = ["dvc.lock", *_trackable(work, uncached_outputs(work, stage))]
        message = (f"toolaware: stage '{stage}' {status}\n\nStatus: {status}\n"
                   f"Host: {socket.gethostname()}\nClone: {work}\n")
        commit = commit_tree(top, snapshot.commit, [os.path.join(snapshot.subdir, p) for p in paths], message)
        git(["push", "-q", "--force", GIT_REMOTE, f"{commit}:{ref}"], top)
    return {"stage": stage, "status": status, "host": socket.gethostname(), "clone": str(work), "result": ref}


def _trackable(work: Path, paths: list[str]) -> list[str]:
    """The existing `paths` git may commit (git-ignored ones, e.g. persist checkpoints, stay on this host)."""
    present = [p for p in paths if (work / p).exists()]
    if not present:
        return []
    proc = subprocess.run(["git", "check-ignore", "--", *present], cwd=work, capture_output=True, text=True)
    ignored = set(proc.stdout.splitlines())
    return [p for p in present if p not in ignored]


def experiment_in_clone(snapshot: Snapshot, name: str, overrides: list[str],
                        on_line: Callable[[str], None] = print) -> dict:
    """`dvc exp run --temp -n <name>` at the snapshot in this worker's clone, then `dvc exp push` it."""
    with checked_out(snapshot) as work:
        pull(work, allow_missing=True)  # the outputs the experiment does not rerun
        remove_experiment(work, name)  # an earlier run of this name on this snapshot
        started = _now()
        rev = run_experiment(work, name, overrides, on_line=on_line)
        finished = _now()
        ref = experiment_ref(snapshot.commit, name)
        exp_push(work, GIT_REMOTE, ref)
        on_line(f"dvc exp push {GIT_REMOTE} {ref}: done")
    return {"name": name, "rev": rev, "ref": ref, "host": socket.gethostname(), "clone": str(work),
            "started_at": started, "finished_at": finished}  # when `dvc exp run` ran, ISO 8601 UTC


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def run_remote_experiment(workdir: str | os.PathLike, name: str, overrides: list[str], gpus: int,
                          deployment: str, log) -> str:
    """Parent side of one sweep experiment on a worker (`gpu-experiment` deployment): publish the
    workspace, wait for the run, `dvc exp pull` the experiment. Returns its commit."""
    from flows.dvc_graph import line_logger

    on_line = line_logger(log)
    snapshot = publish_workspace(workdir, None, on_line)
    parameters = {"name": name, "overrides": list(overrides), "source": snapshot.param(), "gpus": gpus}
    child = run_child(deployment, parameters, None, log)
    if not child.state.is_completed():
        raise DvcFailed(f"experiment '{name}'", 1, child_failure(deployment, child))
    return pull_experiment(workdir, experiment_ref(snapshot.commit, name), on_line)
