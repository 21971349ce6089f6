"""Settings for running a flow from the command line (`python -m flows.retrain`, `python -m flows.sweep`).

Without PREFECT_API_URL, Prefect starts a temporary server for the process
("ephemeral mode"); its database then lives in `<workdir>/.prefect/` so the run
history of a workspace stays with it. With PREFECT_API_URL set (a standing
`prefect server start`), nothing is changed and the run shows up in that UI.

Ephemeral runs also switch off flow-run heartbeats: they let a standing server mark
a vanished run as crashed, but an ephemeral server vanishes with the run, and in
Prefect 3.9 a sync flow waits up to 1 s for the heartbeat thread at its end.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def embedded_prefect(workdir: str | os.PathLike) -> Iterator[None]:
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_HOME,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    if PREFECT_API_URL.value():
        yield
        return
    updates = {}
    if "PREFECT_HOME" not in os.environ:
        updates[PREFECT_HOME] = str(Path(workdir).resolve() / ".prefect")
    if "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" not in os.environ:
        updates[PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS] = 90  # cold start is 15-17 s on 2 cores
    if "PREFECT_SERVER_ANALYTICS_ENABLED" not in os.environ:
        updates[PREFECT_SERVER_ANALYTICS_ENABLED] = False  # offline: telemetry only logs errors
    if "PREFECT_FLOWS_HEARTBEAT_FREQUENCY" not in os.environ:
        updates[PREFECT_FLOWS_HEARTBEAT_FREQUENCY] = None
    with temporary_settings(updates=updates):
        yield
