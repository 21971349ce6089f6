"""Settings for running a flow from the command line (`python -m flows.retrain`, `flows.sweep`, `flows.nightly`).

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
import functools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from pipeline.params import StageError


API_HEALTH_TIMEOUT_S = 15.0


class PrefectUnreachable(StageError):
    """PREFECT_API_URL names a server that does not answer; one line saying which and what to do."""


def check_prefect_api(url: str, timeout_s: float | None = None) -> None:
    """``GET <url>/health`` within ``timeout_s``: a server that accepts connections but never answers
    would otherwise hang the flow silently (Prefect's own request timeout is 60 s, retried)."""
    import httpx

    timeout_s = API_HEALTH_TIMEOUT_S if timeout_s is None else timeout_s
    try:
        response = httpx.get(f"{url.rstrip('/')}/health", timeout=timeout_s)
    except httpx.TimeoutException:
        raise PrefectUnreachable(f"PREFECT_API_URL={url}: the server accepted the connection but did not answer "
                                 f"within {timeout_s:.0f} s; restart it, or unset PREFECT_API_URL to run with a "
                                 "temporary server") from None
    except httpx.HTTPError as err:
        raise PrefectUnreachable(f"PREFECT_API_URL={url}: cannot reach the server ({type(err).__name__}: {err}); "
                                 "start it, or unset PREFECT_API_URL to run with a temporary server") from None
    if response.status_code != 200:
        raise PrefectUnreachable(f"PREFECT_API_URL={url}: /health answered HTTP {response.status_code}")


def check_configured_prefect_api() -> None:
    """``check_prefect_api`` of PREFECT_API_URL where one is set (commands that only talk to a standing server)."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        check_prefect_api(PREFECT_API_URL.value())


def prefect_cli(prog: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Decorate a command-line ``main``: PrefectUnreachable (from ``embedded_prefect`` or
    ``check_configured_prefect_api``) is one line ``<prog>: PREFECT_API_URL=...`` on stderr and exit code 1,
    never a traceback. The one place every flow CLI (retrain, sweep, nightly, pool) says it."""
    def decorate(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(*args, **kwargs) -> int:
            try:
                return main(*args, **kwargs)
            except PrefectUnreachable as err:
                print(f"{prog}: {err}", file=sys.stderr)
                return 1
        return run
    return decorate


@contextlib.contextmanager
def embedded_prefect(workdir: str | os.PathLike) -> Iterator[None]:
    """Prefect settings for a command-line flow run, and a lifeline (flows/lifeline.py): whatever this
    process started (the temporary server, `dvc repro`, the stages) is killed if it is killed."""
    from flows.lifeline import start_lifeline, stop_lifeline

    sidecar = start_lifeline()
    try:
        with _settings(workdir):
            yield
    finally:
        stop_lifeline(sidecar)


@contextlib.contextmanager
def _settings(workdir: str | os.PathLike) -> Iterator[None]:
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_HOME,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    if PREFECT_API_URL.value():
        check_prefect_api(PREFECT_API_URL.value())
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
