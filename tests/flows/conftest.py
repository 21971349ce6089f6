"""Flow tests: one Prefect test server per session, real git + DVC repos in temp dirs."""
from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.toy import make_toy_repo


@pytest.fixture(scope="session")
def toy_template(tmp_path_factory) -> Path:
    """The toy pipeline (tests/support/toy.py), committed; built once, copied per test."""
    return make_toy_repo(tmp_path_factory.mktemp("toy-template"))


@pytest.fixture
def toy(toy_template, tmp_path) -> Path:
    """A fresh copy of the toy repo, with its own DVC cache."""
    return Path(shutil.copytree(toy_template, tmp_path / "toy", symlinks=True))


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory) -> str:
    """A Prefect test server for the session; PREFECT_HOME (result storage) in a temp dir."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with temporary_settings({PREFECT_HOME: str(tmp_path_factory.mktemp("prefect-home"))}):
        with prefect_test_harness(server_startup_timeout=90):
            yield PREFECT_API_URL.value()


@pytest.fixture
def silent_prefect_api(monkeypatch) -> Iterator[str]:
    """PREFECT_API_URL naming a real socket on 127.0.0.1 that accepts connections and never answers (a hung
    server); the health check's timeout (flows.embedded.API_HEALTH_TIMEOUT_S, 15 s) cut to 1 s, and Prefect's
    own request timeout to 2 s, so a command that skips the check fails in seconds instead of hanging."""
    from prefect.settings import PREFECT_API_REQUEST_TIMEOUT, PREFECT_API_URL, temporary_settings

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel completes each handshake; nothing ever reads or answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/api"
        monkeypatch.setenv("PREFECT_API_URL", url)
        monkeypatch.setattr("flows.embedded.API_HEALTH_TIMEOUT_S", 1.0)
        with temporary_settings({PREFECT_API_URL: url, PREFECT_API_REQUEST_TIMEOUT: 2.0}):
            yield url


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """Debian's openssh-server on 127.0.0.1 (own host key and authorized key in a temp dir): serves the
    DVC SSH remotes of the multihost tests. `make test` installs openssh-server."""
    from tests.support.toy_remote import sshd_available, start_sshd

    if not sshd_available():
        pytest.skip("openssh-server is not installed (make test installs it)")
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture
def remote_toy(toy, sshd, tmp_path):
    """The toy repo with a git origin (a bare repo) and a DVC SSH remote of its own: (workspace, Remote)."""
    from tests.support.toy_remote import connect_workspace

    remote = sshd.new_remote(tmp_path / "shared")
    connect_workspace(toy, remote)
    return toy, remote
