"""Three nights on a copy of a workspace: what the nightly flow adds to the retrain it follows.

    .venv/bin/python bench/bench_nightly.py --workspace runs/learn --night2 preprocess.blip_on=[]

Copies WORKSPACE (its git history, DVC cache config and all) to a temp folder, then runs
night 1 as it is, night 2 after setting the `--night2` params (KEY=YAML), night 3 with nothing changed,
each through `flows.nightly` with an ephemeral Prefect server. Prints and writes
bench/results/nightly_<profile>.json: each night's decision, failed rules, registry version and seconds per
step (retrain, gate, push, record, promote, publish, alert); the overhead is everything but retrain.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def set_params(root: Path, assignments: list[str]) -> None:
    path = root / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for assignment in assignments:
        key, value = assignment.split("=", 1)
        group, name = key.split(".", 1)
        params[group][name] = yaml.safe_load(value)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def main(argv: list[str] | None = None) -> int:
    from flows.embedded import embedded_prefect
    from flows.nightly import nightly

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--night2", nargs="*", default=[], metavar="KEY=YAML")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    source = args.workspace.resolve()
    profile = source.name
    copy = Path(tempfile.mkdtemp(prefix=f"nights-{profile}-")) / profile
    shutil.copytree(source, copy, symlinks=True, ignore=shutil.ignore_patterns(".prefect"))
    nights = []
    with embedded_prefect(copy):
        for number, change in ((1, []), (2, args.night2), (3, [])):
            set_params(copy, change)
            started = time.perf_counter()
            result = nightly(workdir=str(copy))
            seconds = {k: round(v, 3) for k, v in result["seconds"].items()}
            nights.append({"night": number, "change": change, "decision": result["decision"],
                           "failed_rules": result["failed_rules"], "version": result["version"],
                           "seconds": seconds, "overhead_s": round(sum(v for k, v in seconds.items() if k != "retrain"), 3),
                           "flow_wall_s": round(time.perf_counter() - started, 2)})
            print(json.dumps(nights[-1]))
    gto = subprocess.run([str(Path(sys.executable).parent / "gto"), "show"], cwd=copy, capture_output=True, text=True).stdout
    log = subprocess.run(["git", "log", "--format=%h %s", "-n", "3", "nightly"], cwd=copy, capture_output=True,
                         text=True).stdout
    print(gto, log, sep="\n")
    out = args.out or REPO / "bench" / "results" / f"nightly_{profile}.json"
    out.write_text(json.dumps({"workspace": str(source), "copy": str(copy), "nights": nights,
                               "gto_show": gto, "git_log_nightly": log.splitlines()}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
