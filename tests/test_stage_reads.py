"""Every file and params key a stage reads is declared in its dvc.yaml entry, and every declared key is read.

The import deps are generated (``python -m devtools.stage_deps --write``); files and params are not, so a stage
that starts reading a file or a key without declaring it makes ``dvc repro`` skip it when that input changes
(a stale model card). Here each stage of the smoke pipeline runs as DVC runs it (``python -m tasks.<stage>``
in a workspace holding the working tree and the smoke params, one torch thread), under an audit of what it
opens and which params keys it is handed (``tests/support/read_audit.py``), and the record is checked against
dvc.yaml: a workspace file that is neither a declared dep nor the stage's own out fails, a key outside the
stage's ``params:`` fails, a declared key nothing reads fails.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.workspace import profile_params, source_files
from tests.support import read_audit
from tests.support.read_audit import StageDecl, stage_decl, violations

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "tests" / "support" / "read_audit.py"
DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text())
PROFILE_DEPENDENT = {"learn": ("report",)}  # stages run again under another profile, their reads added up


def stage_order(dvc_yaml: dict) -> list[str]:
    """dvc.yaml's stages, each after the stages whose outs it depends on."""
    decls = {name: stage_decl(dvc_yaml, name) for name in dvc_yaml["stages"]}
    producer = {out: name for name, d in decls.items() for out in d.outs}
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        for dep in decls[name].deps:
            for out, up in producer.items():
                if up != name and (dep == out or dep.startswith(out + "/") or out.startswith(dep + "/")):
                    visit(up)
        order.append(name)

    for name in decls:
        visit(name)
    return order


def make_workspace(root: Path) -> Path:
    """The working tree's files and the smoke profile's params.yaml, as ``make run`` lays out runs/smoke/."""
    for rel in source_files(REPO):
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    (root / "params.yaml").write_text(yaml.safe_dump(profile_params(REPO, "smoke"), sort_keys=False))
    return root


def audit(root: Path, stage: str) -> dict:
    """Run ``tasks.<stage>`` in ``root`` under the audit; the record of what it read."""
    log = root / ".audit" / f"{stage}.json"
    log.parent.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, str(RUNNER), stage, str(log)], cwd=root, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, f"stage {stage} failed:\n{done.stdout[-1500:]}\n{done.stderr[-1500:]}"
    return json.loads(log.read_text())


@pytest.fixture(scope="module")
def smoke_reads(tmp_path_factory) -> dict[str, dict]:
    """Each smoke stage, run once in order under the audit: stage -> what it read."""
    root = make_workspace(tmp_path_factory.mktemp("smoke-audit"))
    reads = {stage: audit(root, stage) for stage in stage_order(DVC_YAML)}
    # What a stage reads may depend on the profile: the report's learn header reads `eval_classes.rows`.
    for profile, stages in PROFILE_DEPENDENT.items():
        (root / "params.yaml").write_text(yaml.safe_dump(profile_params(REPO, profile), sort_keys=False))
        for stage in stages:
            more = audit(root, stage)
            reads[stage] = {"files": sorted({*reads[stage]["files"], *more["files"]}),
                            "params": sorted({*reads[stage]["params"], *more["params"]}),
                            "params_outside_loader": reads[stage]["params_outside_loader"]
                            or more["params_outside_loader"]}
    return reads


@pytest.mark.parametrize("stage", list(DVC_YAML["stages"]))
def test_a_stage_reads_only_what_dvc_yaml_declares_and_every_declared_key(smoke_reads, stage):
    found = violations(smoke_reads[stage], stage_decl(DVC_YAML, stage))
    assert not found, f"{stage} (dvc.yaml vs what it read):\n  " + "\n  ".join(found)


SNEAKY_STAGE = '''
"""A stage that reads one file and one params key it does not declare."""
import sys
from pathlib import Path

from pipeline.params import read_params_file

def main() -> int:
    params = read_params_file()
    Path("data/blips").mkdir(parents=True, exist_ok=True)
    Path("data/blips/tool_invoke.wav").write_bytes(b"x" * int(params["blip"]["duration_ms"]))
    Path("configs/baselines.yaml").read_text()     # undeclared file
    return 0 if params["train"]["lr"] else 1       # undeclared key

if __name__ == "__main__":
    sys.exit(main())
'''


def test_the_audit_fails_on_an_undeclared_file_an_undeclared_key_and_an_unread_key(tmp_path):
    """The protection shown to work: a stage reading what its dvc.yaml entry leaves out is caught."""
    root = tmp_path
    for rel in ("tasks/__init__.py", "pipeline/__init__.py", "pipeline/params.py", "pipeline/io.py",
                "configs/baselines.yaml"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, root / rel)
    (root / "tasks" / "sneaky.py").write_text(SNEAKY_STAGE)
    (root / "params.yaml").write_text(yaml.safe_dump({"blip": {"duration_ms": 3}, "train": {"lr": 0.1},
                                                      "report": {"profile": "x"}}))
    record = audit(root, "sneaky")
    assert "configs/baselines.yaml" in record["files"] and "train.lr" in record["params"]

    code = ("tasks/__init__.py", "tasks/sneaky.py", "pipeline/__init__.py", "pipeline/params.py", "pipeline/io.py")
    honest = StageDecl(deps=(*code, "configs/baselines.yaml"), outs=("data/blips/tool_invoke.wav",),
                       params=("blip.duration_ms", "train.lr"))
    assert violations(record, honest) == []
    sneaky = StageDecl(deps=code, outs=("data/blips/tool_invoke.wav",),
                       params=("blip.duration_ms", "report.profile"))
    assert violations(record, sneaky) == [
        "configs/baselines.yaml: read but not a declared dep or out",
        "params.yaml: 'train.lr' read but not in the stage's params",
        "params.yaml: 'report.profile' declared but nothing reads it",
    ]


def test_an_absent_file_a_stage_tries_to_read_is_a_read(tmp_path):
    """The report read reports/sweep/leaderboard.csv when present: an open that fails still counts."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "__init__.py").write_text("")
    (tmp_path / "tasks" / "peek.py").write_text(
        "import os\ntry:\n    open('reports/sweep/leaderboard.csv')\nexcept FileNotFoundError:\n    pass\n"
        "fd = os.open('tasks', os.O_RDONLY)\nos.close(fd)\n")  # a folder opened (to fsync it) is not a read
    shutil.copytree(REPO / "pipeline", tmp_path / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    record = audit(tmp_path, "peek")
    assert [f for f in record["files"] if not f.endswith((".py", ".pyc"))] == ["reports/sweep/leaderboard.csv"]


def test_params_yaml_read_behind_the_loaders_back_is_caught(tmp_path):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "__init__.py").write_text("")
    (tmp_path / "tasks" / "raw.py").write_text("import yaml\nyaml.safe_load(open('params.yaml'))\n")
    (tmp_path / "params.yaml").write_text("a: {b: 1}\n")
    shutil.copytree(REPO / "pipeline", tmp_path / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    record = audit(tmp_path, "raw")
    assert violations(record, StageDecl(deps=("tasks", "pipeline"), outs=(), params=())) == [
        "params.yaml: read outside pipeline.params (its keys escape the params audit)"]


def test_the_tts_cache_counts_as_declared_only_through_a_declared_manifest():
    read = {"files": ["data/tts/cache/shard-0-0123456789abcdef.parquet"], "params": []}
    assert violations(read, StageDecl(deps=("data/tts/heldout.jsonl",), outs=(), params=())) == []
    assert violations(read, StageDecl(deps=("data/dataset/heldout.jsonl",), outs=(), params=())) == [
        "data/tts/cache/shard-0-0123456789abcdef.parquet: read but not a declared dep or out"]
    assert read_audit.THROUGH_A_MANIFEST  # one line per allowed cache
