"""The nightly flow on the toy DVC pipeline: real git, DVC, GTO, a Prefect test server and an HTTP receiver.

Night 1 promotes (GTO `prod`), night 2 with a worse blip TPR is held back (alert names the rule, prod stays),
night 3 with nothing changed is `unchanged`; every night is a commit on `nightly`, and the user's branch,
index and uncommitted edits are never touched. Bad input is one line, exit 1, nothing recorded or promoted.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from tests.support.toy import set_param

# The toy's eval stage also writes the blip numbers from train's `tpr` param, the dataset's held-out hashes and a
# narration report, as the real stages do.
EVAL_EXTRAS = '''
if params.get("metrics"):
    tpr = inputs[0]["params"].get("tpr", 0.9)
    (metrics / "eval_blip.details.json").write_text(json.dumps({"cb0_match_rate": tpr, "false_positive_rate": 0.0,
                                                      "detector_true_positive_rate": tpr, "decision_latency_ms": 160.0}))
    (metrics / "eval_blip.json").write_text(json.dumps({"cb0": tpr, "tpr": tpr, "fpr": 0.0, "latency_ms": 160.0}))
    (metrics / "dataset.details.json").write_text(json.dumps({"heldout_hash": "h1", "novel_facts_hash": "n1"}))
'''
PROMOTE = {"min_cb0_tpr": 0.8, "min_blip_tpr": 0.8, "max_fpr": 0.2, "max_blip_tpr_drop": 0.05,
           "max_accuracy_drop": 0.05, "max_class_accuracy_drop": 0.1, "max_cb0_tpr_drop": 0.5}
CARD = "---\nbase_model: LiquidAI/LFM2.5-Audio-1.5B\ntags: [smoke-run]\n---\n# toy card\n"


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def workspace(toy: Path) -> Path:
    """The toy with a promote group, a model folder and card, and a user's uncommitted work in progress."""
    (toy / "stage.py").write_text((toy / "stage.py").read_text() + EVAL_EXTRAS)
    params = yaml.safe_load((toy / "params.yaml").read_text())
    params["train"]["tpr"] = 0.95
    params["promote"] = PROMOTE
    (toy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (toy / "notes.txt").write_text("committed\n")
    git(toy, "add", "-A")
    git(toy, "commit", "-q", "-m", "toy with nightly set-up")
    (toy / "models/final").mkdir(parents=True)
    (toy / "models/final/config.json").write_text("{}")
    (toy / "reports").mkdir(exist_ok=True)
    (toy / "reports/model_card.md").write_text(CARD)
    (toy / "notes.txt").write_text("the user's edit, not committed\n")
    (toy / "staged.txt").write_text("staged by the user\n")
    git(toy, "add", "staged.txt")
    return toy


class Receiver(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Receiver.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def alerts(prefect_api, monkeypatch):
    """A webhook receiver on 127.0.0.1 and the notification block pointing at it (flows.pool alerts)."""
    from flows.pool import setup_alerts

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Receiver.received = []
    monkeypatch.setenv("TEST_NIGHTLY_WEBHOOK", f"http://127.0.0.1:{server.server_address[1]}/hook")
    monkeypatch.setenv("TOOLAWARE_ALERT_BLOCK", "test-nightly-alert")
    setup_alerts("TEST_NIGHTLY_WEBHOOK", allow_private_urls=True)
    yield Receiver.received
    server.shutdown()


def user_state(root: Path) -> tuple[str, str, str, str, str]:
    return (git(root, "rev-parse", "--abbrev-ref", "HEAD"), git(root, "rev-parse", "HEAD"),
            git(root, "diff", "--cached"), git(root, "diff"), (root / "notes.txt").read_text())


def prod(root: Path) -> str | None:
    from flows.nightly import read_champion

    champion = read_champion(root)  # GTO's prod version (None before the first promotion)
    return champion.version if champion else None


def test_three_nights_promote_hold_back_and_stay_unchanged(workspace, alerts):
    from flows.nightly import nightly

    before = user_state(workspace)
    state = nightly(workdir=str(workspace), return_state=True)
    assert state.name == "promoted" and state.is_completed()
    first = state.result()
    assert first["version"] == "v0.0.1" and prod(workspace) == "v0.0.1"
    assert (workspace / "release/tool-aware-lfm-v0.0.1/README.md").read_text() == CARD  # the upload folder
    assert user_state(workspace) == before  # branch, HEAD, index and uncommitted edits untouched
    recorded = json.loads(git(workspace, "show", "nightly:reports/nightly/decision.json"))
    assert recorded["decision"] == "promoted" and recorded["metrics"]["blip_tpr"] == 0.95
    assert git(workspace, "show", "nightly:notes.txt") == "the user's edit, not committed"  # what the night ran on
    assert alerts == []

    set_param(workspace, "train", "tpr", 0.85)  # above the 0.8 floor, 0.1 below the champion
    state = nightly(workdir=str(workspace), return_state=True)
    assert state.name == "held_back"
    assert state.result()["failed_rules"] == ["max_blip_tpr_drop"]  # cb0 may drop 0.5: only the blip TPR rule
    assert prod(workspace) == "v0.0.1"  # prod stays
    (alert,) = alerts
    assert alert["subject"].startswith("nightly held back")
    assert "max_blip_tpr_drop: blip_tpr champion 0.95, challenger 0.85, threshold 0.9" in alert["text"]

    state = nightly(workdir=str(workspace), return_state=True)
    assert state.name == "unchanged" and prod(workspace) == "v0.0.1" and len(alerts) == 1
    log = git(workspace, "log", "--format=%s", "nightly").splitlines()
    assert [line.split(": ")[-1] for line in log[:3]] == ["unchanged", "held_back", "promoted"]
    assert git(workspace, "rev-parse", "--abbrev-ref", "HEAD") == "main"

    from dvc.repo import Repo  # nights compare with DVC's own tools
    with Repo(str(workspace)) as repo:
        diff = repo.metrics.diff(a_rev="nightly~2", b_rev="nightly~1")
    assert diff["diff"]["reports/metrics/eval_blip.json"]["tpr"] == {"old": 0.95, "new": 0.85, "diff": pytest.approx(-0.1)}


def test_a_night_whose_push_fails_is_not_recorded_and_alerts(workspace, alerts):
    from flows.nightly import nightly

    (workspace / "blocker").write_text("a file where the remote's folder should be")
    subprocess.run([sys.executable, "-m", "dvc", "remote", "add", "-d", "broken", str(workspace / "blocker/remote")], cwd=workspace,
                   check=True, capture_output=True)
    state = nightly(workdir=str(workspace), return_state=True)
    assert state.is_failed() and "dvc push to remote 'broken' failed" in state.message
    assert not git(workspace, "branch", "--list", "nightly") and prod(workspace) is None
    (alert,) = alerts
    assert "dvc push to remote 'broken' failed" in alert["text"]


def run_main(root: Path, capsys) -> tuple[int, str]:
    from flows.nightly import main

    code = main(["--workdir", str(root)])
    return code, capsys.readouterr().err.strip()


def nothing_recorded(root: Path) -> bool:
    return not git(root, "branch", "--list", "nightly") and not (root / "reports/nightly/decision.json").exists()


def test_bad_input_is_one_line_and_nothing_is_recorded(workspace, tmp_path, capsys):
    not_a_repo = tmp_path / "plain"
    not_a_repo.mkdir()
    (not_a_repo / "params.yaml").write_text(yaml.safe_dump({"promote": PROMOTE}))
    code, err = run_main(not_a_repo, capsys)
    assert code == 1 and err == f"nightly: {not_a_repo}: not the root of a git repository (a night is recorded as a git commit)"

    params = yaml.safe_load((workspace / "params.yaml").read_text())
    (workspace / "params.yaml").write_text(yaml.safe_dump({**params, "promote": {**PROMOTE, "min_tpr": 0.9}}))
    code, err = run_main(workspace, capsys)
    assert code == 1 and err.startswith("nightly: params.yaml: 'promote.min_tpr' is not a known key") and "\n" not in err
    (workspace / "params.yaml").write_text(yaml.safe_dump({**params, "promote": {**PROMOTE, "max_fpr": 2}}))
    code, err = run_main(workspace, capsys)
    assert code == 1 and err == "nightly: params.yaml: 'promote.max_fpr' must be in [0, 1], got 2.0"
    assert nothing_recorded(workspace)

    (workspace / "params.yaml").write_text(yaml.safe_dump(params))
    from gto import api
    api.register(str(workspace), "tool-aware-lfm", "HEAD")  # a prod version whose night recorded no metrics
    api.assign(str(workspace), "tool-aware-lfm", "prod", version="v0.0.1")
    code, err = run_main(workspace, capsys)
    assert code == 1 and err.startswith("nightly: champion v0.0.1 (") and err.endswith(
        "reports/nightly/decision.json not found at its commit")
    assert nothing_recorded(workspace)
