"""`nightly`: one night of unattended retraining that decides — retrain, gate, record, promote, alert.

    python -m flows.nightly --workdir runs/learn          # one night (ephemeral Prefect server)
    prefect --no-prompt deploy --all                      # the `nightly` deployment (prefect.yaml), 02:00 UTC

A night (docs/orchestration.md, "Nightly retraining"):

1. checks its input before anything runs: the workspace is a git repository, the `promote`
   group of params.yaml parses, and a champion (GTO's `prod` version of `tool-aware-lfm`)
   has its metrics recorded; otherwise one line, exit 1, nothing recorded or promoted;
2. runs the `retrain` flow as a subflow (DVC decides what reruns);
3. gates tonight's model (`pipeline/gate.py`): `unchanged` when dvc.lock is the one the last
   night already decided on, else `promoted` / `held_back` by the `promote` floors and the
   drops allowed against the champion (on the same held-out rows only);
4. with a DVC remote configured, pushes the outputs (a failed push fails the night: nothing recorded);
5. records the night as a commit on the `nightly` branch (a temporary index: the user's branch,
   index and working tree are untouched), with `reports/nightly/decision.json` in it, so
   `git log nightly`, `dvc exp show -A` and `dvc metrics diff` compare nights;
6. on `promoted`: `gto register tool-aware-lfm <night commit>` + `gto assign --stage prod`, and
   the upload folder assembled by `tasks.publish` (a Hub upload only with --hub-repo-id; the token
   comes from the environment, never from params or logs);
7. a held-back, failed or crashed night is sent through the Prefect notification block named by
   $TOOLAWARE_ALERT_BLOCK (default `toolaware-nightly-alert`; `python -m flows.pool alerts`).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, get_run_logger

from flows.embedded import embedded_prefect, prefect_cli
from pipeline.gate import (DECISION_PATH, PROMOTED, UNCHANGED, Champion, Decision, GateError, PromoteParams,
                           champion_from_record, judge, read_eval_set, read_night_metrics, unchanged)
from pipeline.io import write_json
from pipeline.params import StageError, load_stage_params

ARTIFACT = "tool-aware-lfm"  # GTO artifact (dvc.yaml `artifacts:`)
PROD = "prod"
BRANCH = "nightly"
ALERT_BLOCK_ENV = "TOOLAWARE_ALERT_BLOCK"
DEFAULT_ALERT_BLOCK = "toolaware-nightly-alert"
RELEASE_DIR = Path("release")
REPO = Path(__file__).resolve().parents[1]  # upload folders, one per promoted version (git-ignored)


class NightlyError(StageError):
    """A night cannot start or complete; one line."""


# --------------------------------------------------------------------------- git

def git(root: Path, *args: str, env: dict | None = None, check: bool = True) -> str:
    result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                            env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise NightlyError(f"git {' '.join(args[:2])}: {' '.join(result.stderr.split()) or 'failed'}")
    return result.stdout.strip() if result.returncode == 0 else ""


def check_git_repo(root: Path) -> None:
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True)
    if top.returncode != 0 or Path(top.stdout.strip()).resolve() != root.resolve():
        raise NightlyError(f"{root}: not the root of a git repository (a night is recorded as a git commit)")
    if not git(root, "rev-parse", "--verify", "-q", "HEAD", check=False):
        raise NightlyError(f"{root}: the git repository has no commit yet")


def show_file(root: Path, ref: str, path: Path) -> str | None:
    """A file's text at ``ref``, or None where it does not exist."""
    result = subprocess.run(["git", "show", f"{ref}:{path.as_posix()}"], cwd=root, capture_output=True, text=True)
    return result.stdout if result.returncode == 0 else None


@dataclass(frozen=True)
class LastNight:
    commit: str
    dvc_lock: str | None
    decision: str | None


def last_night(root: Path) -> LastNight | None:
    commit = git(root, "rev-parse", "--verify", "-q", f"refs/heads/{BRANCH}", check=False)
    if not commit:
        return None
    record = show_file(root, commit, DECISION_PATH)
    try:
        decision = json.loads(record).get("decision") if record else None
    except ValueError:
        decision = None
    return LastNight(commit, show_file(root, commit, Path("dvc.lock")), decision)


def record_night(root: Path, message: str) -> str:
    """Commit the workspace as it is (tracked + untracked, not ignored) on `nightly`; returns the commit.

    Through a temporary index and `git commit-tree`: the user's branch, index and working tree are
    not touched. Parents: the last night, and the user's HEAD when the night line does not contain it yet.
    """
    head = git(root, "rev-parse", "HEAD")
    previous = git(root, "rev-parse", "--verify", "-q", f"refs/heads/{BRANCH}", check=False)
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        if not git(root, "config", "user.name", check=False):
            env.update(GIT_AUTHOR_NAME="nightly flow", GIT_COMMITTER_NAME="nightly flow")
        if not git(root, "config", "user.email", check=False):
            env.update(GIT_AUTHOR_EMAIL="nightly@localhost", GIT_COMMITTER_EMAIL="nightly@localhost")
        git(root, "read-tree", head, env=env)
        git(root, "add", "-A", env=env)
        tree = git(root, "write-tree", env=env)
        parents = [previous] if previous else []
        if not previous or subprocess.run(["git", "merge-base", "--is-ancestor", head, previous],
                                          cwd=root).returncode != 0:
            parents.append(head)
        commit = git(root, "commit-tree", tree, *(arg for p in parents for arg in ("-p", p)), "-m", message, env=env)
    git(root, "update-ref", f"refs/heads/{BRANCH}", commit, previous or "")
    return commit


# --------------------------------------------------------------------------- registry (GTO)

def read_champion(root: Path) -> Champion | None:
    """GTO's `prod` version of the model and the metrics its night recorded; None before the first promotion."""
    from gto import api
    from gto.exceptions import ArtifactNotFound

    try:
        stages = api.find_versions_in_stage(str(root), ARTIFACT, PROD)
    except ArtifactNotFound:  # nothing registered yet
        return None
    if not stages:
        return None
    vstage = stages[0]
    record = show_file(root, vstage.commit_hexsha, DECISION_PATH)
    return champion_from_record(vstage.version, vstage.commit_hexsha, record, str(DECISION_PATH))


def promote(root: Path, commit: str) -> str:
    """Register a version of the model at ``commit`` and assign it `prod`; returns the version."""
    from gto import api

    registration = api.register(str(root), ARTIFACT, commit, message=f"nightly: promoted night {commit[:10]}")
    api.assign(str(root), ARTIFACT, PROD, version=registration.version,
               message=f"nightly: {registration.version} passed the promotion gate")
    return registration.version


# --------------------------------------------------------------------------- DVC remote

def push_outputs(root: Path) -> str | None:
    """`dvc push` when a default remote is configured; returns its name (None: no remote). NightlyError on failure."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        remote = repo.config["core"].get("remote")
        if not remote:
            return None
        try:
            repo.push(remote=remote)
        except (DvcException, OSError) as err:
            raise NightlyError(f"dvc push to remote '{remote}' failed ({' '.join(str(err).split())}): "
                               "the night is not recorded") from None
    return remote


# --------------------------------------------------------------------------- alerts

def alert_block_name() -> str:
    return os.environ.get(ALERT_BLOCK_ENV) or DEFAULT_ALERT_BLOCK


def send_alert(subject: str, body: str, block_name: str | None = None) -> bool:
    """Notify through the saved Prefect notification block (any type); False when none is set up."""
    from prefect.blocks.core import Block

    name = block_name or alert_block_name()
    logger = _logger()
    try:
        block = Block.load(name if "/" in name else f"custom-webhook/{name}")
    except (ValueError, KeyError) as err:
        logger.warning("no alert sent: notification block '%s' not found (%s); set one up with "
                       "`python -m flows.pool alerts`", name, err)
        return False
    block.notify(body=body, subject=subject)
    return True


def _logger():
    import logging

    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - outside a run (a hook after the run ended)
        return logging.getLogger("flows.nightly")


def alert_on_failure(flow, flow_run, state) -> None:
    """Flow hook: a failed or crashed night is sent too (its message names what went wrong)."""
    message = state.message or state.name
    try:
        send_alert(f"nightly {state.name.lower()}: {flow_run.name}", f"Night {flow_run.name} {state.name}: {message}",
                   flow_run.parameters.get("alert_block"))
    except Exception as err:  # noqa: BLE001 - an alert that cannot be sent must not hide the failure
        _logger().error("alert for '%s' not sent: %s", flow_run.name, err)


# --------------------------------------------------------------------------- the night

def preflight(root: Path) -> tuple[PromoteParams, Champion | None]:
    """Everything a night needs before it runs anything; NightlyError / ParamsError / GateError: one line."""
    if not root.is_dir():
        raise NightlyError(f"{root}: no such workspace")
    check_git_repo(root)
    params = load_stage_params(PromoteParams, root / "params.yaml")
    return params, read_champion(root)


def decide(root: Path, params: PromoteParams, champion: Champion | None, last: LastNight | None) -> Decision:
    metrics, eval_set = read_night_metrics(root), read_eval_set(root)
    lock = root / "dvc.lock"
    if last is not None and last.dvc_lock is not None and lock.is_file() and lock.read_text() == last.dvc_lock:
        return unchanged(metrics, eval_set, last.commit[:10], champion)
    return judge(params, metrics, eval_set, champion)


def publish(root: Path, *args: str) -> str:
    """`python -m tasks.publish ARGS` in the workspace (flows do not import stage modules); its one-line report.

    The workspace's own code comes first on the path (`-m` puts the cwd first); this checkout's after it."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-m", "tasks.publish", *args], cwd=root, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": path})
    if result.returncode != 0:
        raise NightlyError(" ".join(result.stderr.split()) or f"tasks.publish exited {result.returncode}")
    return result.stdout.strip()


def assemble_release(root: Path, version: str) -> Path:
    """The upload folder (model files + card as README.md) of ``version``, assembled by tasks.publish.

    Its `dvc status` check is skipped: the retrain subflow has just brought every stage up to date (it
    fails the night otherwise), so the card describes models/final as it is."""
    folder = RELEASE_DIR / f"{ARTIFACT}-{version}"
    publish(root, "--out", str(folder), "--allow-smoke", "--skip-dvc-check")
    return root / folder


def upload_release(root: Path, repo_id: str, message: str) -> str:
    """Opt-in Hub upload (a smoke card is refused); the token comes from HF_TOKEN or `hf auth login`."""
    return publish(root, "--repo-id", repo_id, "--private", "--message", message, "--skip-dvc-check")


def decision_markdown(decision: Decision, night: str, commit: str, version: str | None,
                      seconds: dict[str, float]) -> str:
    lines = [f"# Night {night}: **{decision.decision}**", "", decision.reason, "",
             f"- recorded: `{BRANCH}` {commit[:10]}"]
    if version:
        lines.append(f"- registry: `{ARTIFACT}` {version} assigned `{PROD}`")
    elif decision.champion:
        lines.append(f"- registry: `{PROD}` stays {decision.champion.version}")
    if decision.rules:
        lines += ["", "| rule | metric | champion | challenger | threshold | passed |", "|---|---|---|---|---|---|"]
        for rule in decision.rules:
            lines.append(f"| {rule.rule} | {rule.metric} | {_cell(rule.champion)} | {_cell(rule.challenger)} | "
                         f"{rule.threshold:.4g} | {'yes' if rule.passed else '**no**'} |")
    lines += ["", "seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in seconds.items())]
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


@flow(name="nightly", log_prints=False, on_failure=[alert_on_failure], on_crashed=[alert_on_failure])
def nightly(workdir: str = ".", gpu_pool: str | None = None, hub_repo_id: str | None = None,
            alert_block: str | None = None, retrain_targets: list[str] | None = None):
    """Retrain, gate, record, promote, alert; the flow run's state is named after the decision."""
    from prefect.artifacts import create_markdown_artifact
    from prefect.states import Completed

    from flows.retrain import retrain

    logger = get_run_logger()
    root = Path(workdir).resolve()
    params, champion = preflight(root)
    last = last_night(root)
    night = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    seconds: dict[str, float] = {}

    started = time.perf_counter()
    state = retrain(workdir=str(root), targets=retrain_targets, gpu_pool=gpu_pool, return_state=True)
    seconds["retrain"] = time.perf_counter() - started
    if not state.is_completed():  # a failed stage, or params refused before any stage ran: nothing to gate
        raise NightlyError(f"retrain {state.name.lower()}: {state.message}")

    started = time.perf_counter()
    decision = decide(root, params, champion, last)
    write_json(root / DECISION_PATH, {**decision.to_json(), "night": night})
    seconds["gate"] = time.perf_counter() - started

    started = time.perf_counter()
    remote = push_outputs(root)
    seconds["push"] = time.perf_counter() - started

    started = time.perf_counter()
    commit = record_night(root, f"nightly {night}: {decision.decision}\n\n{decision.summary()}")
    seconds["record"] = time.perf_counter() - started
    logger.info("night recorded on '%s' as %s%s", BRANCH, commit[:10], f" (outputs pushed to '{remote}')" if remote else "")

    version = None
    if decision.decision == PROMOTED:
        started = time.perf_counter()
        version = promote(root, commit)
        seconds["promote"] = time.perf_counter() - started
        started = time.perf_counter()
        folder = assemble_release(root, version)
        logger.info("%s %s is in %s; upload folder %s", ARTIFACT, version, PROD, folder)
        if hub_repo_id:
            logger.info("uploaded to %s", upload_release(root, hub_repo_id, f"{ARTIFACT} {version} (nightly {night})"))
        seconds["publish"] = time.perf_counter() - started

    started = time.perf_counter()
    if decision.decision not in (PROMOTED, UNCHANGED):
        send_alert(f"nightly held back: {night}", decision.summary(), alert_block)
    seconds["alert"] = time.perf_counter() - started
    overhead = sum(v for k, v in seconds.items() if k != "retrain")
    logger.info("night %s: %s; overhead %.2f s (%s) after a %.1f s retrain", night, decision.decision, overhead,
                ", ".join(f"{k} {v:.2f}" for k, v in seconds.items() if k != "retrain"), seconds["retrain"])
    create_markdown_artifact(decision_markdown(decision, night, commit, version, seconds), key="nightly-decision",
                             description=f"nightly {night}: {decision.decision}")
    result = {"decision": decision.decision, "commit": commit, "version": version, "seconds": seconds,
              "failed_rules": [rule.rule for rule in decision.failed]}
    return Completed(name=decision.decision, data=result, message=decision.reason)


@prefect_cli("nightly")
def main(argv: list[str] | None = None) -> int:
    from pipeline.base_models import preflight_workspace

    parser = argparse.ArgumentParser(prog="python -m flows.nightly", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=".", help="DVC workspace and git repository (default: .)")
    parser.add_argument("--gpu-pool", help="work pool for GPU stages (default: $TOOLAWARE_GPU_POOL)")
    parser.add_argument("--hub-repo-id", help="also upload a promoted model here (token from HF_TOKEN)")
    parser.add_argument("--alert-block", help=f"notification block (default: ${ALERT_BLOCK_ENV} or {DEFAULT_ALERT_BLOCK})")
    args = parser.parse_args(argv)
    root = Path(args.workdir).resolve()
    try:  # before Prefect starts: bad input is one line, and nothing is recorded or promoted
        preflight_workspace(root)
        preflight(root)
    except (StageError, GateError) as err:
        print(f"nightly: {str(err).splitlines()[0]}", file=sys.stderr)
        return 1
    with embedded_prefect(root):
        try:
            result = nightly(workdir=str(root), gpu_pool=args.gpu_pool, hub_repo_id=args.hub_repo_id,
                             alert_block=args.alert_block)
        except Exception as err:  # noqa: BLE001 - Prefect has logged it (and the alert hook sent it)
            print(f"nightly failed: {' '.join(str(err).split())}", file=sys.stderr)
            return 1
    print(f"nightly: {result['decision']} (commit {result['commit'][:10]}"
          f"{', ' + ARTIFACT + ' ' + result['version'] + ' in ' + PROD if result['version'] else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
