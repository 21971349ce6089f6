"""What the retrain flow adds over plain DVC on a no-op rerun (nothing changed, every stage skipped).

    .venv/bin/python bench/bench_flow_overhead.py [--workdir runs/smoke] [--repeats 3]

Without --workdir it builds a toy pipeline shaped like dvc.yaml (11 stages, 4 GPU;
tests/support/toy.py) in a temp dir. Either way it runs `dvc repro` once first so the
measured runs are no-ops. Measured, each the median of --repeats runs:

- `dvc repro` (CLI) and `Repo.reproduce()` (in-process) — the baselines;
- the flow against a standing `prefect server start` (started here on a free port)
  and against an ephemeral server, each as `python -m flows.retrain` (a fresh
  process: interpreter, imports, and for ephemeral the temporary server start) and
  as a call in a warm process (the flow's own overhead), with the unchanged-stage
  check in-process (default) and through the `dvc repro --single-item` CLI.

Prints a table and writes bench/results/flow_overhead.json.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SCRATCH = Path(tempfile.mkdtemp(prefix="bench-flow-"))
os.environ.setdefault("PREFECT_HOME", str(SCRATCH / "prefect-home"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.pop("PREFECT_API_URL", None)

from flows.dvc_graph import dvc_env  # noqa: E402
from flows.publish import markdown_table  # noqa: E402
from pipeline.io import write_json  # noqa: E402

RESULTS = REPO / "bench" / "results" / "flow_overhead.json"


def seconds(fn, repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
            "runs_s": [round(t, 3) for t in times]}


def run(command: list[str], workdir: Path, env: dict | None = None) -> None:
    subprocess.run(command, cwd=workdir, env=env or dvc_env(), check=True, capture_output=True, text=True)


def retrain_cli(workdir: Path, api_url: str | None, cli_check: bool = False) -> None:
    env = dvc_env()
    env.pop("PREFECT_API_URL", None)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    command = [sys.executable, "-m", "flows.retrain", "--workdir", str(workdir)] + (["--cli-check"] if cli_check else [])
    subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True, text=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server() -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, PREFECT_HOME=str(SCRATCH / "server-home"))
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            return server, url
        except OSError:
            time.sleep(0.5)
    os.killpg(server.pid, signal.SIGTERM)
    raise RuntimeError("prefect server did not answer within 120 s")


def prepare_workdir(given: str | None) -> tuple[Path, str]:
    if given:
        workdir = Path(given).resolve()
        label = f"workspace {workdir}"
    else:
        from tests.support.toy import PIPELINE_SHAPE, make_toy_repo

        workdir = make_toy_repo(SCRATCH / "toy", PIPELINE_SHAPE)
        label = f"toy pipeline, {len(PIPELINE_SHAPE)} stages shaped like dvc.yaml (4 GPU)"
    run([sys.executable, "-m", "dvc", "repro"], workdir)  # everything after this is a no-op
    return workdir, label


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", help="an existing DVC workspace (default: a toy pipeline)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    workdir, label = prepare_workdir(args.workdir)
    r = args.repeats
    rows: list[dict] = []

    def measure(name: str, server: str, fn) -> None:
        print(f"... {name} ({server})", file=sys.stderr, flush=True)
        rows.append({"what": name, "server": server, **seconds(fn, r)})

    measure("dvc repro (CLI)", "-", lambda: run([sys.executable, "-m", "dvc", "repro"], workdir))

    from dvc.repo import Repo

    def reproduce_in_process():
        with contextlib.chdir(workdir), Repo(".") as repo:  # DVC resolves targets against the cwd
            repo.reproduce()

    reproduce_in_process()
    measure("Repo.reproduce() in-process", "-", reproduce_in_process)

    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from flows.retrain import retrain

    server, url = start_server()
    try:
        with temporary_settings({PREFECT_API_URL: url}):
            retrain(workdir=str(workdir))  # warm-up: imports, client, first flow registration
            measure("flow call, in-process check", "standing", lambda: retrain(workdir=str(workdir)))
            measure("flow call, dvc CLI check", "standing", lambda: retrain(workdir=str(workdir), inproc_check=False))
            with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):  # no 1 s heartbeat-thread join
                measure("flow call, in-process check, no heartbeat", "standing", lambda: retrain(workdir=str(workdir)))
        measure("python -m flows.retrain", "standing", lambda: retrain_cli(workdir, url))
        measure("python -m flows.retrain --cli-check", "standing", lambda: retrain_cli(workdir, url, cli_check=True))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)

    measure("python -m flows.retrain", "ephemeral", lambda: retrain_cli(workdir, None))
    from flows.embedded import embedded_prefect

    with embedded_prefect(SCRATCH):  # the CLI's settings
        start = time.perf_counter()
        retrain(workdir=str(workdir))  # this process starts its own temporary server here
        cold = time.perf_counter() - start
        measure("flow call, in-process check", "ephemeral (warm)", lambda: retrain(workdir=str(workdir)))
    rows.append({"what": "flow call, first in process (server start)", "server": "ephemeral", "median_s": round(cold, 3),
                 "min_s": round(cold, 3), "runs_s": [round(cold, 3)]})

    base = rows[0]["median_s"]
    for row in rows:
        row["vs_dvc_repro"] = f"{row['median_s'] / base:.2f}x"
    stages = json.loads((workdir / "reports/last_run.json").read_text())
    assert {s["status"] for s in stages} == {"skipped"}, "the measured reruns were not no-ops"
    result = {
        "pipeline": label, "stages": len(stages), "repeats": r, "python": platform.python_version(),
        "cpus": os.cpu_count(), "load_avg_1m_at_end": round(os.getloadavg()[0], 2), "rows": rows,
        "goal": "flow (standing server) <= 1.5x dvc repro",
    }
    write_json(args.out, result)
    print(f"\n{label}; median of {r} no-op runs; load average {result['load_avg_1m_at_end']} on {os.cpu_count()} CPUs\n")
    print(markdown_table(rows, ["what", "server", "median_s", "min_s", "vs_dvc_repro"]))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
