"""Set up the GPU work pool and start its workers (against the server in PREFECT_API_URL).

    python -m flows.pool setup                         # pool gpu-2x4090, queues train/gpu0/gpu1, gcl gpu=2
    python -m flows.pool deploy                        # gpu-stage deployment from this checkout
    python -m flows.pool deploy --own-clone            # gpu-stage/remote + gpu-experiment/remote: workers
                                                       #   share only git + a DVC remote (flows/remote.py)
    python -m flows.pool worker --queue train --gpus 0,1
    python -m flows.pool worker --queue gpu0 --gpus 0
    python -m flows.pool worker --queue gpu1 --gpus 1
    python -m flows.pool alerts --webhook-url-env NIGHTLY_WEBHOOK_URL   # nightly alerts (flows/nightly.py)

Every command is idempotent. `prefect --no-prompt deploy --all` (prefect.yaml)
creates the same gpu-stage deployment plus `retrain` and `sweep`.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from flows.embedded import check_configured_prefect_api, prefect_cli
from flows.gpu_stage import GPU_LIMIT

POOL = "gpu-2x4090"
CPU_POOL = "toolaware-cpu"  # runs the retrain and sweep parents (prefect.yaml)
REPO = Path(__file__).resolve().parents[1]
# queue -> (concurrency limit, what it is for)
QUEUES = {
    "train": (1, "two-GPU training (accelerate launch over both GPUs)"),
    "gpu0": (1, "single-GPU stages (evals) on GPU 0"),
    "gpu1": (1, "single-GPU stages (evals) on GPU 1"),
}


def _ensure_pool(client, name: str) -> None:
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    try:
        client.create_work_pool(WorkPoolCreate(name=name, type="process", base_job_template=template))
        print(f"created process work pool {name}")
    except ObjectAlreadyExists:
        print(f"work pool {name} exists")


def setup(pool: str = POOL, gpus: int = 2, queues: dict = QUEUES, cpu_pool: str | None = CPU_POOL) -> None:
    """Create (or update) the pool, its queues with their limits, and the `gpu` concurrency limit."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        for name in filter(None, [pool, cpu_pool]):
            _ensure_pool(client, name)
        for queue, (limit, purpose) in queues.items():
            try:
                existing = client.read_work_queue_by_name(queue, work_pool_name=pool)
                client.update_work_queue(existing.id, concurrency_limit=limit, description=purpose)
            except ObjectNotFound:
                client.create_work_queue(queue, work_pool_name=pool, concurrency_limit=limit, description=purpose)
            print(f"queue {pool}/{queue}: limit {limit} ({purpose})")
        try:
            client.read_global_concurrency_limit_by_name(GPU_LIMIT)
            client.update_global_concurrency_limit(GPU_LIMIT, GlobalConcurrencyLimitUpdate(limit=gpus))
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=GPU_LIMIT, limit=gpus))
        print(f"global concurrency limit {GPU_LIMIT}: {gpus} slots (one per GPU)")
    crash_silent_runs()


# A host that loses power reports nothing: its GPU flow runs would stay Running. Their heartbeats
# (every HEARTBEAT_SECONDS, sent by the flow-run process; `flows.pool worker` turns them on) stop,
# and this automation marks such a run Crashed; the parent then reschedules it (flows/remote.py run_child).
HEARTBEAT_SECONDS = 30  # Prefect's minimum
SILENT_RUN_AUTOMATION = "toolaware: crash GPU flow runs whose heartbeats stopped"


def crash_silent_runs(silence_seconds: int = 3 * HEARTBEAT_SECONDS) -> None:
    """Create (or replace) the automation that marks a gpu-stage / gpu-experiment run without a heartbeat
    for `silence_seconds` as Crashed (Prefect's documented zombie-run detection)."""
    from datetime import timedelta

    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.exceptions import ObjectNotFound

    with contextlib.suppress(ObjectNotFound, ValueError):
        Automation.read(name=SILENT_RUN_AUTOMATION).delete()
    Automation(
        name=SILENT_RUN_AUTOMATION,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": ["gpu-stage", "gpu-experiment"]},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=silence_seconds),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"no heartbeat for {silence_seconds} s: its host is gone")],
    ).create()
    print(f"automation '{SILENT_RUN_AUTOMATION}': a GPU flow run silent for {silence_seconds} s is marked Crashed")


def setup_alerts(url_env: str, block_name: str | None = None, allow_private_urls: bool = False) -> str:
    """Save the webhook notification block the `nightly` flow sends its alerts through; returns its name.

    The URL is read from the environment variable `url_env` and stored in the Prefect server's database
    (the user's settings): never in the repo, never printed. Posts JSON {"subject", "text"}, as Slack's and
    most chat webhooks accept. `allow_private_urls`: a receiver on 127.0.0.1 or the LAN."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    from flows.nightly import alert_block_name

    url = os.environ.get(url_env)
    if not url:
        raise SystemExit(f"flows.pool alerts: ${url_env} is not set (it holds the webhook URL)")
    name = block_name or alert_block_name()
    CustomWebhookNotificationBlock(
        name="toolaware-nightly", url=url, method="POST", json_data={"subject": "{{subject}}", "text": "{{body}}"},
        allow_private_urls=allow_private_urls,
    ).save(name, overwrite=True)
    print(f"notification block custom-webhook/{name}: nightly alerts go to the URL in ${url_env}")
    return name


def deploy(pool: str = POOL, source: Path = REPO, own_clone: bool = False) -> str:
    """Deploy the gpu-stage flow from the checkout `source` onto `pool`; return its name.

    `own_clone`: `gpu-stage/remote` (tagged `own-clone`: the parent passes a git + DVC snapshot, the
    worker runs in its own clone) and `gpu-experiment/remote` (sweep experiments, queue `train`);
    otherwise `gpu-stage/gpu-stage` (the worker runs in the parent's workspace path)."""
    from flows.remote import OWN_CLONE_TAG

    name, tags = ("remote", [OWN_CLONE_TAG]) if own_clone else ("gpu-stage", [])
    _deploy("flows/gpu_stage.py:gpu_stage", name, pool, source, tags, None,
            "One GPU stage of dvc.yaml (dvc repro --single-item) on the GPU pool")
    if own_clone:
        _deploy("flows/gpu_stage.py:gpu_experiment", "remote", pool, source, tags, "train",
                "One sweep experiment (dvc exp run --temp, dvc exp push) in a worker's own clone")
    return f"gpu-stage/{name}"


def _deploy(entrypoint: str, name: str, pool: str, source: Path, tags: list[str], queue: str | None,
            description: str) -> None:
    from prefect import Flow

    flow = Flow.from_source(source=str(source), entrypoint=entrypoint)
    flow.deploy(name=name, work_pool_name=pool, work_queue_name=queue, tags=tags, build=False, push=False,
                print_next_steps=False, description=description)
    print(f"deployed {flow.name}/{name} from {source} on {pool}" + (f", queue {queue}" if queue else ""))


def worker_command(pool: str, queue: str | None, gpus: str | None, poll_seconds: int = 2,
                   limit: int | None = None) -> tuple[list[str], dict]:
    """The `prefect worker start` command line and environment for one worker.

    Its own-clone runs (flows/remote.py) use clones under $TOOLAWARE_CLONES, by default one folder per
    queue, so two workers of one host do not wait for each other's clone."""
    from flows.remote import CLONES_ENV

    env = dict(os.environ, PREFECT_WORKER_QUERY_SECONDS=str(poll_seconds))
    env.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", str(HEARTBEAT_SECONDS))  # see crash_silent_runs
    env.setdefault(CLONES_ENV, str(Path.home() / ".cache" / "toolaware" / "clones" / (queue or "all-queues")))
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpus
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process"]
    if queue:
        command += ["--work-queue", queue]
    if limit:
        command += ["--limit", str(limit)]
    return command, env


@prefect_cli("pool")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.pool", description=__doc__.split("\n")[0])
    parser.add_argument("--pool", default=os.environ.get("TOOLAWARE_GPU_POOL", POOL))
    commands = parser.add_subparsers(dest="command", required=True)
    cmd_setup = commands.add_parser("setup", help="create the pool, its queues and the gpu concurrency limit")
    cmd_setup.add_argument("--gpus", type=int, default=2, help="GPUs in the pool, all hosts together")
    cmd_deploy = commands.add_parser("deploy", help="deploy gpu-stage from this checkout onto the pool")
    cmd_deploy.add_argument("--own-clone", action="store_true",
                            help="workers share only git + a DVC remote: gpu-stage/remote, gpu-experiment/remote")
    cmd_worker = commands.add_parser("worker", help="start a worker (runs in the foreground)")
    cmd_worker.add_argument("--queue", help="work queue (train, gpu0, gpu1); default: all of the pool's")
    cmd_worker.add_argument("--gpus", help="CUDA_VISIBLE_DEVICES for the flows it runs, e.g. 0,1")
    cmd_worker.add_argument("--limit", type=int, help="flow runs at once (default: no limit)")
    cmd_alerts = commands.add_parser("alerts", help="save the webhook block nightly alerts are sent through")
    cmd_alerts.add_argument("--webhook-url-env", required=True, metavar="VAR",
                            help="environment variable holding the webhook URL (never passed on the command line)")
    cmd_alerts.add_argument("--block", help="block name (default: $TOOLAWARE_ALERT_BLOCK or toolaware-nightly-alert)")
    cmd_alerts.add_argument("--allow-private-urls", action="store_true", help="the receiver is on a private network")
    args = parser.parse_args(argv)
    check_configured_prefect_api()  # every command talks to that server: one that never answers is one line
    if args.command == "setup":
        setup(args.pool, args.gpus)
    elif args.command == "deploy":
        deploy(args.pool, own_clone=args.own_clone)
    elif args.command == "alerts":
        setup_alerts(args.webhook_url_env, args.block, args.allow_private_urls)
    else:
        command, env = worker_command(args.pool, args.queue, args.gpus, limit=args.limit)
        os.execvpe(command[0], command, env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
