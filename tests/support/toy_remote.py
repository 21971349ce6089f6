"""A real remote for the toy pipeline (tests, measurements): Debian's openssh-server on 127.0.0.1 serving
a DVC SSH remote (`dvc-ssh`), and a bare git repository as `origin`.

The server gets its own host key, authorized key and port in a temp folder; nothing outside that
folder is read or changed. Every party (parent, workers) reaches the remote with the client key:
the parent through its workspace's `.dvc/config.local`, a worker through its DVC global config
(`DVC_GLOBAL_CONFIG_DIR`) — as separate hosts would.
"""
from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"
DVC_REMOTE = "artifacts"


def sshd_available() -> bool:
    return Path(SSHD).is_file() and shutil.which("ssh-keygen") is not None


def free_port() -> int:
    """A TCP port of 127.0.0.1 nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class SshServer:
    """A running sshd on 127.0.0.1 that accepts `key` (its state lives under `root`)."""

    root: Path
    port: int
    process: subprocess.Popen

    @property
    def key(self) -> Path:
        return self.root / "client_key"

    def new_remote(self, folder: str | os.PathLike) -> Remote:
        """An empty DVC store (reached over this server) and bare git origin under `folder`."""
        folder = Path(folder)
        (folder / "dvc-store").mkdir(parents=True)
        subprocess.run(["git", "init", "-q", "--bare", "--initial-branch=main", str(folder / "origin.git")], check=True)
        return Remote(f"ssh://{getpass.getuser()}@127.0.0.1:{self.port}{folder / 'dvc-store'}",
                      folder / "dvc-store", folder / "origin.git", self.key)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass(frozen=True)
class Remote:
    """What hosts share: a DVC remote (`url`, the SSH store at `store`) and a git `origin`."""

    url: str
    store: Path
    origin: Path
    key: Path

    def key_config(self) -> str:
        """DVC config text (any level) giving the remote's client key."""
        return f"['remote \"{DVC_REMOTE}\"']\n    keyfile = {self.key}\n"


def start_sshd(root: str | os.PathLike, timeout: float = 10.0) -> SshServer:
    """Start sshd on a free port of 127.0.0.1 (own host key, only `client_key` authorized)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / key)], check=True)
    shutil.copy(root / "client_key.pub", root / "authorized_keys")
    port = free_port()
    (root / "sshd_config").write_text("\n".join([
        f"ListenAddress 127.0.0.1:{port}", f"HostKey {root / 'host_key'}",
        f"AuthorizedKeysFile {root / 'authorized_keys'}", f"PidFile {root / 'sshd.pid'}",
        "StrictModes no", "UsePAM no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password", "Subsystem sftp internal-sftp",
        "MaxStartups 100:30:200", "MaxSessions 100", "LogLevel ERROR", ""]))
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation directory
    with open(root / "sshd.log", "w") as log:
        process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(root / "sshd_config")], stdout=log, stderr=log)
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return SshServer(root, port, process)
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"sshd did not start: {(root / 'sshd.log').read_text()[-500:]}") from None
            time.sleep(0.05)


def connect_workspace(workdir: str | os.PathLike, remote: Remote) -> None:
    """Make the toy repo `workdir` use `remote`: git `origin` = the bare repo; DVC default remote
    `artifacts` = the SSH store, committed; the client key in `.dvc/config.local` (git-ignored:
    credentials stay on the host)."""
    workdir = Path(workdir)
    (workdir / ".dvc/config").write_text(
        f"[core]\n    remote = {DVC_REMOTE}\n['remote \"{DVC_REMOTE}\"']\n    url = {remote.url}\n")
    (workdir / ".dvc/config.local").write_text(remote.key_config())
    for args in (["remote", "add", "origin", str(remote.origin)], ["add", ".dvc/config"],
                 ["commit", "-q", "-m", "DVC remote on the SSH store"], ["push", "-q", "origin", "HEAD:refs/heads/main"]):
        subprocess.run(["git", *args], cwd=workdir, check=True, capture_output=True, text=True)


def worker_dvc_config(folder: str | os.PathLike, remote: Remote) -> Path:
    """A DVC global config folder for one worker (its `DVC_GLOBAL_CONFIG_DIR`) holding the client key."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config").write_text(remote.key_config())
    return folder
