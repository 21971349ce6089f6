"""The full-size rehearsal: every stage at production shapes on a few rows, measured, and a plan for v4.1.

    python -m pipeline.rehearsal              # = make run PROFILE=rehearsal (runs/rehearsal/, ~20+ min, ~14 GB RAM)

Every run elsewhere uses tiny models; the production recipe (a 1.47 B-parameter
LFM, the stock Mimi, Kokoro-82M, ctx 512, bf16, ~9 GB checkpoints) would first
run end to end on a user's GPU box at night. This driver runs it here first,
with random-init full-size folders (``base_models.fabricate_size: full``,
``profiles/rehearsal.yaml``):

1. syncs the ``rehearsal`` workspace, empties its persistent caches (TTS clips,
   Mimi codes, checkpoints: so every rate is measured, not a cache hit), and
   runs each DVC stage in order with ``dvc repro --force --single-item``, each
   under ``os.wait4`` for its wall time and peak RSS (the stage and dvc);
2. runs ``train`` once outside DVC and SIGKILLs it as soon as its first
   checkpoint is complete (timing the checkpoint write), then ``dvc repro``
   resumes it from that checkpoint;
3. writes ``reports/rehearsal.json`` (per stage wall / peak RSS / bytes written,
   checkpoint and final-folder bytes, Mimi and TTS audio-seconds per second,
   trained tokens/s, decoded items/s) and ``reports/rehearsal.md`` (the same as
   tables) with a **plan**: how long each stage of ``PROFILE=v4.1`` (the repo's
   ``params.yaml``) would take on this machine, the GPU training time from
   ``bench/results/train_gpu_*.json`` where present, and the disk a night needs;
   the same tables go on the rehearsal workspace's model card (its last section,
   committed to DVC as the report stage's output).

The rehearsal is outside DVC's graph on purpose: its numbers describe this
machine, not the model, so no stage depends on them (the model card stays a
function of its declared deps). Random weights: it measures cost, never quality.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.artifacts import (BASE_KOKORO_DIR, BASE_LFM_DIR, CHECKPOINTS_DIR, CODES_CACHE_DIR, FINAL_MODEL_DIR,
                                MODEL_CARD_MD, PREPROCESSED_DIR, REHEARSAL_JSON, REHEARSAL_LOG_DIR, REHEARSAL_MD,
                                REHEARSAL_PARTIAL_JSON, TRAIN_LIVE_DIR, TTS_CACHE_DIR, dataset_jsonl, details_json,
                                timings_json)
from pipeline.io import write_json, write_text

PROFILE = "rehearsal"
REPORT_JSON = REHEARSAL_JSON
REPORT_MD = REHEARSAL_MD
PARTIAL_JSON = REHEARSAL_PARTIAL_JSON  # the stages measured so far, rewritten after each
LOG_DIR = REHEARSAL_LOG_DIR
# Emptied before the run so every rate is measured (the rehearsal workspace's own caches, never the user's).
FRESH_PATHS = (TTS_CACHE_DIR, CODES_CACHE_DIR, CHECKPOINTS_DIR, TRAIN_LIVE_DIR)
CHECKPOINT_DIR = CHECKPOINTS_DIR
FINAL_DIR = FINAL_MODEL_DIR
GPU_BENCH_GLOB = "train_gpu_*.json"
CARD_SECTION = "## Full-size rehearsal"  # the model card's section the driver writes (render_markdown's title)
GIB = 1024**3


# --- measuring one command -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    wall_s: float
    peak_rss_gib: float  # the largest resident set of the process and its waited-for descendants
    returncode: int


def measure(command: list[str], cwd: Path, env: dict[str, str], log: Path, watch=None) -> Measured:
    """Run ``command``, return its wall time, peak RSS (``os.wait4``) and exit status.

    ``watch(proc)`` is polled every 0.1 s while it runs (the train kill uses it).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log, "w") as handle:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT)
        while watch is not None:
            waited, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if waited:
                break
            watch(proc)
            time.sleep(0.1)
        else:
            waited, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    return Measured(wall_s=round(time.monotonic() - started, 2), peak_rss_gib=round(usage.ru_maxrss * 1024 / GIB, 3),
                    returncode=proc.returncode)


def tree_bytes(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def complete_checkpoints(directory: Path) -> list[Path]:
    """Committed checkpoint folders, oldest first: a ``step-NNNNNNN`` folder exists only once its manifest is written
    (``pipeline.training.checkpoints``; checked by name here so the driver never imports torch: ``os.wait4``'s peak
    RSS of a child includes the parent's memory at the fork)."""
    if not Path(directory).is_dir():
        return []
    return sorted(p for p in Path(directory).glob("step-[0-9]*") if (p / "trainer_state.json").is_file())


def stage_outputs(dvc_yaml: dict, stage: str) -> list[str]:
    """Every path a stage writes (outs, metrics, plots) as dvc.yaml declares them."""
    spec = dvc_yaml["stages"][stage]
    paths = []
    for kind in ("outs", "metrics", "plots"):
        for entry in spec.get(kind, []):
            paths.append(next(iter(entry)) if isinstance(entry, dict) else entry)
    return paths


def stage_order(dvc_yaml: dict) -> list[str]:
    return list(dvc_yaml["stages"])  # dvc.yaml lists the stages in dependency order


# --- the plan --------------------------------------------------------------------------------------------


def _production_counts(production: dict) -> dict[str, int]:
    data = production["dataset"]
    heldout = 4 * int(data["heldout_per_class"])
    return {"train_rows": int(data["train_size"]), "eval_rows": int(data["eval_size"]), "heldout_rows": heldout,
            "novel_facts_rows": int(data["novel_facts"]),
            "all_rows": int(data["train_size"]) + int(data["eval_size"]) + heldout + int(data["novel_facts"])}


def _saves(train: dict) -> int:
    steps, interval = int(train["max_steps"]), int(train["save_interval"])
    return steps // interval + (1 if steps % interval else 0)


def gpu_train_rate(bench_dir: Path) -> dict | None:
    """The fastest measured full-size train step of ``bench/results/train_gpu_*.json`` (tokens/s, which card)."""
    best = None
    for path in sorted(Path(bench_dir).glob(GPU_BENCH_GLOB)):
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for result in document.get("results", []):
            rate = result.get("tokens_per_s")
            if rate and (best is None or rate > best["tokens_per_s"]):
                best = {"tokens_per_s": float(rate), "device": result.get("device"), "variant": result.get("variant"),
                        "batch_size": result.get("batch_size"), "context_length": document.get("context_length"),
                        "source": f"bench/results/{path.name}"}
    return best


def make_plan(measured: dict, production: dict, gpu: dict | None) -> dict:
    """How long each v4.1 stage would take on this machine, and the disk a night needs, from measured rates.

    ``measured``: the rehearsal's ``rates``, ``rows``, ``stages`` and ``bytes`` (see ``run``). Stages whose cost
    does not depend on the data size (blip, blip_codes, report) are taken as measured; the others scale by rows,
    audio seconds, tokens or decoded tokens.
    """
    counts = _production_counts(production)
    rates, rows, stages, sizes = measured["rates"], measured["rows"], measured["stages"], measured["bytes"]
    train = production["train"]
    hours: dict[str, Any] = {}
    wall = {name: stage["wall_s"] for name, stage in stages.items()}

    hours["base_models"] = None  # a Hub download: network-bound, not measurable offline
    for fixed in ("blip", "blip_codes", "report"):
        hours[fixed] = wall.get(fixed, 0) / 3600
    hours["dataset"] = wall.get("dataset", 0) * counts["all_rows"] / max(1, rows["all_rows"]) / 3600

    tts_audio = rates["tts_audio_seconds_per_row"] * counts["all_rows"]
    hours["tts"] = tts_audio / rates["tts_audio_s_per_s"] / 3600

    mimi_audio = rates["mimi_audio_seconds_per_row"] * (counts["train_rows"] + counts["eval_rows"])
    other = max(0.0, wall.get("preprocess", 0) - rates["mimi_encode_seconds"])
    hours["preprocess"] = (mimi_audio / rates["mimi_audio_s_per_s"]
                           + other * (counts["train_rows"] + counts["eval_rows"]) / max(1, rows["train_rows"] + rows["eval_rows"])) / 3600

    global_batch = int(train["batch_size"]) * int(train["num_processes"])
    train_tokens = int(train["max_steps"]) * global_batch * rates["train_tokens_per_row"]
    saves = _saves(train)
    checkpoint_hours = saves * rates["checkpoint_write_s"] / 3600
    hours["train"] = train_tokens / rates["train_tokens_per_s"] / 3600 + checkpoint_hours

    decode_rate = rates["decode_tokens_per_s_stock"]
    classes_tokens = counts["heldout_rows"] * int(production["eval_classes"]["max_new_tokens"])
    narration_tokens = counts["novel_facts_rows"] * int(production["eval_narration"]["max_new_tokens"])
    hours["eval_classes"] = classes_tokens / decode_rate / 3600
    hours["eval_narration"] = narration_tokens / decode_rate / 3600
    hours["eval_blip"] = wall.get("eval_blip", 0) * counts["heldout_rows"] / max(1, rows["heldout_rows"]) / 3600
    # The screening tier (a sweep's, not a nightly's): the held-out rows' openings, a fixed few frames a row.
    hours["eval_screen"] = wall.get("eval_screen", 0) * counts["heldout_rows"] / max(1, rows["heldout_rows"]) / 3600

    gpu_plan = None
    if gpu is not None:
        gpu_plan = {"card": gpu["device"], "source": gpu["source"], "tokens_per_s": gpu["tokens_per_s"],
                    "train_hours_one_card": train_tokens / gpu["tokens_per_s"] / 3600,
                    "train_hours_ideal_num_processes": train_tokens / gpu["tokens_per_s"] / int(train["num_processes"]) / 3600,
                    "note": "one card's bench rate (padded rows of context_length); the num_processes figure assumes "
                            "perfect scaling. Checkpoint writes not included. Decoding has no GPU measurement yet."}

    keep = int(train["keep_checkpoints"])
    per_row = {name: sizes[name] / max(1, rows[key]) for name, key in
               (("tts_cache", "all_rows"), ("codes_cache", "train_eval_rows"), ("preprocessed", "train_eval_rows"))}
    disk = {
        "base_models": sizes["base_models"],
        "checkpoints": (keep + 1) * sizes["checkpoint"],
        "final_model": sizes["final_model"],
        "tts_cache": int(per_row["tts_cache"] * counts["all_rows"]),
        "codes_cache": int(per_row["codes_cache"] * (counts["train_rows"] + counts["eval_rows"])),
        "preprocessed": int(per_row["preprocessed"] * (counts["train_rows"] + counts["eval_rows"])),
    }
    disk["total"] = sum(disk.values())
    # DVC caches every cached out once more (link type copy; none with reflink/hardlink): base, final, data.
    disk["dvc_cache_copies"] = disk["base_models"] + disk["final_model"] + disk["tts_cache"] + disk["codes_cache"] \
        + disk["preprocessed"]
    disk["total_with_dvc_cache"] = disk["total"] + disk["dvc_cache_copies"]

    known = [h for h in hours.values() if h is not None]
    return {
        "production": {**counts, "max_steps": int(train["max_steps"]), "global_batch": global_batch,
                       "keep_checkpoints": keep, "checkpoint_saves": saves, "train_tokens": int(train_tokens)},
        "cpu_hours": dict(hours),
        "cpu_hours_total": sum(known),
        "gpu_train": gpu_plan,
        "disk_bytes": disk,
    }


# --- the run ---------------------------------------------------------------------------------------------


def _env(repo: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = ""  # the workspace's own code (dvc runs the stages in the workspace)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env


def _details(ws: Path, stage: str) -> dict:
    """The stage's details document with its timings file (wall clock, memory, rates) merged in."""
    merged = {}
    for path in (ws / details_json(stage), ws / timings_json(stage)):
        if path.exists():
            merged.update(json.loads(path.read_text()))
    return merged


def _rows(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip()) if path.exists() else 0


def _decode_rate(ws: Path, stage: str, max_new_tokens: int) -> dict:
    """Decoded items/s and tokens/s from the stage's per-row reply times (upper bound: max_new_tokens a row)."""
    replies = [json.loads(line) for line in (ws / "reports" / "eval" / f"{stage}.jsonl").read_text().splitlines()
               if line.strip()]
    seconds = [r.get("seconds") or (r.get("reply") or {}).get("seconds") for r in replies]
    seconds = [s for s in seconds if s]
    details = _details(ws, stage)
    total = details.get("wall_seconds") or sum(seconds)
    return {"rows": len(replies), "wall_seconds": total, "items_per_s": len(replies) / total if total else None,
            "tokens_per_s": len(replies) * max_new_tokens / total if total else None}


def available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024 / GIB
    return float("inf")


def wait_for_memory(min_gib: float, timeout_s: float = 1800) -> None:
    """On a shared machine: wait (up to ``timeout_s``) until ``min_gib`` GiB are available before training."""
    deadline = time.monotonic() + timeout_s
    while min_gib and available_gib() < min_gib and time.monotonic() < deadline:
        print(f"rehearsal: {available_gib():.1f} GiB available, waiting for {min_gib:.0f} before train", flush=True)
        time.sleep(30)


def apply_overrides(params_file: Path, overrides: list[str]) -> dict[str, Any]:
    """``group.key=value`` (YAML value) set in the workspace's params.yaml after the sync: for a machine that
    cannot afford a part of the rehearsal (the report records them)."""
    params = yaml.safe_load(params_file.read_text())
    applied: dict[str, Any] = {}
    for item in overrides:
        dotted, _, raw = item.partition("=")
        group, _, key = dotted.partition(".")
        if not raw or group not in params or key not in params[group]:
            raise SystemExit(f"rehearsal: --set {item!r}: expected group.key=value with a key params.yaml has")
        params[group][key] = applied[dotted] = yaml.safe_load(raw)
    if applied:
        write_text(params_file, yaml.safe_dump(params, sort_keys=False))
    return applied


def kokoro_rate(ws: Path, voice: str, n_clips: int = 3) -> dict:
    """Kokoro's audio-seconds per second on the first assistant texts of the train split, through the real engine
    (used when the tts stage ran another engine)."""
    from pipeline.tts.engines import KokoroEngine

    engine = KokoroEngine(ws / BASE_KOKORO_DIR, voices=[voice])
    texts = [json.loads(line)["assistant"] for line in (ws / dataset_jsonl("train")).read_text().splitlines()
             if line.strip()][:n_clips]
    started = time.perf_counter()
    audio_seconds = sum(len(engine.synthesize(text, voice, 1.0)) / engine.sample_rate for text in texts)
    seconds = time.perf_counter() - started
    return {"clips": len(texts), "audio_seconds": audio_seconds, "seconds": seconds,
            "audio_seconds_per_second": audio_seconds / seconds}


def run(repo: Path, min_available_gib: float = 0, overrides: list[str] = (), reuse: bool = False) -> dict:
    from pipeline.workspace import sync

    repo = repo.resolve()
    ws = sync(repo, PROFILE).root
    applied = apply_overrides(ws / "params.yaml", list(overrides))
    env = _env(repo)
    dvc_yaml = yaml.safe_load((ws / "dvc.yaml").read_text())
    params = yaml.safe_load((ws / "params.yaml").read_text())
    production = yaml.safe_load((repo / "params.yaml").read_text())
    for fresh in FRESH_PATHS:
        shutil.rmtree(ws / fresh, ignore_errors=True)
    # --reuse: a stage whose deps and params are unchanged is not rerun (its row says so): a rerun after a failure.
    dvc = [sys.executable, "-m", "dvc", "repro", "--single-item", *([] if reuse else ["--force"])]
    load_before = os.getloadavg()
    stages: dict[str, dict] = {}
    train_run: dict[str, Any] = {}

    def record(name: str, measured: Measured, outputs: list[str]) -> None:
        stages[name] = {**asdict(measured), "bytes_written": sum(tree_bytes(ws / p) for p in outputs)}
        write_json(ws / PARTIAL_JSON, {"overrides": applied, "stages": stages, "train": train_run})  # a slow machine
        print(f"rehearsal: {name}: {measured.wall_s:.0f} s, peak RSS {measured.peak_rss_gib:.2f} GiB, "
              f"{stages[name]['bytes_written'] / 1e9:.3f} GB, exit {measured.returncode}", flush=True)
        if measured.returncode != 0:
            raise SystemExit(f"rehearsal: stage {name} failed (exit {measured.returncode}); log: "
                             f"{ws / LOG_DIR / (name + '.log')}")

    for name in stage_order(dvc_yaml):
        if name == "train":
            wait_for_memory(min_available_gib)
            # 1. The train process killed as soon as its first checkpoint is complete; the write timed.
            marks: dict[str, float] = {}
            first = ws / CHECKPOINT_DIR / ".tmp-step-0000001"  # checkpoints.temp_folder, without importing torch

            def kill_after_first_checkpoint(proc: subprocess.Popen) -> None:
                now = time.monotonic()
                if "tmp_seen" not in marks and first.exists():
                    marks["tmp_seen"] = now
                if complete_checkpoints(ws / CHECKPOINT_DIR):
                    marks.setdefault("committed", now)
                    proc.send_signal(signal.SIGKILL)

            killed = measure([sys.executable, "-m", "tasks.train"], ws, env, ws / LOG_DIR / "train-killed.log",
                             watch=kill_after_first_checkpoint)
            if killed.returncode != -signal.SIGKILL or "committed" not in marks:
                raise SystemExit(f"rehearsal: train was not killed after its first checkpoint (exit {killed.returncode});"
                                 f" log: {ws / LOG_DIR / 'train-killed.log'}")
            checkpoint = complete_checkpoints(ws / CHECKPOINT_DIR)[-1]
            train_run = {"killed": asdict(killed), "killed_at_step": int(checkpoint.name.removeprefix("step-")),
                         "checkpoint_write_s": round(marks["committed"] - marks.get("tmp_seen", marks["committed"]), 2)}
            print(f"rehearsal: train killed after checkpoint {checkpoint.name} "
                  f"(written in {train_run['checkpoint_write_s']:.0f} s), resuming", flush=True)
        measured = measure([*dvc, name], ws, env, ws / LOG_DIR / f"{name}.log")
        record(name, measured, stage_outputs(dvc_yaml, name))

    # --- what was measured ---
    tts, pre, train = _details(ws, "tts"), _details(ws, "preprocess"), _details(ws, "train")
    if params["tts"]["engine"] == "kokoro":
        tts_rate = {"engine": "kokoro", "audio_seconds_per_second": tts["audio_seconds_per_second"], "via": "tts stage"}
    else:
        tts_rate = {"engine": "kokoro", **kokoro_rate(ws, params["tts"]["assistant_voice"]),
                    "via": f"the driver (the tts stage ran {params['tts']['engine']})"}
    checkpoints = complete_checkpoints(ws / CHECKPOINT_DIR)
    rows = {"train_rows": _rows(ws / dataset_jsonl("train")), "eval_rows": _rows(ws / dataset_jsonl("eval")),
            "heldout_rows": _rows(ws / dataset_jsonl("heldout")),
            "novel_facts_rows": _rows(ws / dataset_jsonl("novel_facts"))}
    rows["all_rows"] = sum(rows.values())
    rows["train_eval_rows"] = rows["train_rows"] + rows["eval_rows"]
    sizes = {"base_models": tree_bytes(ws / BASE_LFM_DIR.parent), "checkpoint": tree_bytes(checkpoints[-1]),
             "final_model": tree_bytes(ws / FINAL_DIR), "final_weights": tree_bytes(ws / FINAL_DIR / "model.safetensors"),
             "tts_cache": tree_bytes(ws / TTS_CACHE_DIR), "codes_cache": tree_bytes(ws / CODES_CACHE_DIR),
             "preprocessed": tree_bytes(ws / PREPROCESSED_DIR)}
    mimi = pre["mimi_throughput"]
    classes = _decode_rate(ws, "eval_classes", int(params["eval_classes"]["max_new_tokens"]))
    narration = _decode_rate(ws, "eval_narration", int(params["eval_narration"]["max_new_tokens"]))
    stock, batched = (classes, narration) if params["eval_classes"]["batch_size"] == 1 else (narration, classes)
    rates = {
        "mimi_audio_s_per_s": mimi["audio_seconds_per_second"],
        "mimi_encode_seconds": mimi["seconds"],
        "mimi_audio_seconds_per_row": mimi["audio_seconds"] / max(1, rows["train_eval_rows"]),
        "tts_audio_s_per_s": tts_rate["audio_seconds_per_second"],
        "tts_audio_seconds_per_row": tts["audio_seconds"] / max(1, rows["all_rows"]),
        "train_tokens_per_s": train["tokens_per_s"],
        "train_tokens_per_row": train["real_tokens"] / max(1, train["steps"] * train["global_batch_size"]),
        "checkpoint_write_s": train_run["checkpoint_write_s"],
        "checkpoint_write_gb_per_s": sizes["checkpoint"] / 1e9 / max(0.01, train_run["checkpoint_write_s"]),
        "decode_items_per_s_stock": stock["items_per_s"],
        "decode_tokens_per_s_stock": stock["tokens_per_s"],
        "decode_items_per_s_batched": batched["items_per_s"],
        "decode_tokens_per_s_batched": batched["tokens_per_s"],
    }
    train_run.update({"resumed_from_step": train["resumed_from_step"], "steps": train["steps"],
                      "peak_memory_gib": train["peak_memory_gib"], "real_tokens": train["real_tokens"],
                      "final_train_loss": train["final_train_loss"]})
    measured = {"rates": rates, "rows": rows, "stages": stages, "bytes": sizes}
    report = {
        "profile": PROFILE,
        "overrides": applied,
        "reused": reuse,
        "tts_rate": tts_rate,
        "host": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                 "torch": _version("torch"), "device": "cpu", "load_average_before": [round(x, 2) for x in load_before],
                 "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        "total_wall_s": round(sum(s["wall_s"] for s in stages.values()) + train_run["killed"]["wall_s"], 1),
        "peak_rss_gib": max([s["peak_rss_gib"] for s in stages.values()] + [train_run["killed"]["peak_rss_gib"]]),
        **measured,
        "train": train_run,
        "decode": {"stock": stock, "batched": batched},
        "plan": make_plan(measured, production, gpu_train_rate(repo / "bench" / "results")),
    }
    write_json(ws / REPORT_JSON, report)
    tables = render_markdown(report)
    write_text(ws / REPORT_MD, tables)
    # The table on the rehearsal's model card too, recorded as report's output (`dvc status` stays clean); a rerun
    # of report alone drops it again (the card is a function of report's deps, the rehearsal is outside the graph).
    card = ws / MODEL_CARD_MD
    write_text(card, with_rehearsal_section(card.read_text(), tables))
    subprocess.run([sys.executable, "-m", "dvc", "commit", "--force", "--quiet", "report"], cwd=ws, env=env, check=True)
    print(f"rehearsal: {ws / REPORT_JSON}, {ws / REPORT_MD}, the table on {ws / MODEL_CARD_MD}", flush=True)
    return report


def with_rehearsal_section(card: str, tables: str) -> str:
    """``card`` with ``tables`` (render_markdown) as its last section, one heading level down; an earlier
    rehearsal's section is replaced, not repeated."""
    kept = card.split(f"\n{CARD_SECTION}", 1)[0].rstrip("\n")
    demoted = "\n".join("#" + line if line.startswith("#") else line for line in tables.splitlines())
    return f"{kept}\n\n{CARD_SECTION}{demoted.removeprefix('## Full-size rehearsal')}\n"


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _fmt(value, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def render_markdown(report: dict) -> str:
    """The rehearsal's tables: measured per-stage costs, rates, and the v4.1 plan."""
    lines = ["# Full-size rehearsal (random weights: cost, not quality)", "",
             f"Host: {report['host']['cpus']} CPUs, {report['host']['device']}, torch {report['host']['torch']}; load "
             f"average before {report['host']['load_average_before']}, after {report['host']['load_average_after']}. "
             f"Total {report['total_wall_s'] / 60:.1f} min, peak RSS {report['peak_rss_gib']:.2f} GiB.", "",
             "| stage | wall s | peak RSS GiB | bytes written |", "|---|---:|---:|---:|"]
    killed = report["train"]["killed"]
    for name, stage in report["stages"].items():
        if name == "train":
            lines.append(f"| train (killed after step {report['train']['killed_at_step']}) | {killed['wall_s']:.0f} | "
                         f"{killed['peak_rss_gib']:.2f} | |")
            name = f"train (resumed from step {report['train']['resumed_from_step']})"
        lines.append(f"| {name} | {stage['wall_s']:.0f} | {stage['peak_rss_gib']:.2f} | {stage['bytes_written']:,} |")
    sizes, rates = report["bytes"], report["rates"]
    lines += ["", f"One checkpoint: {sizes['checkpoint']:,} bytes (written in {rates['checkpoint_write_s']:.0f} s); "
                  f"final model folder: {sizes['final_model']:,} bytes ({sizes['final_weights']:,} of weights).", "",
              "| rate | value |", "|---|---:|",
              f"| Mimi encode, audio s per s | {_fmt(rates['mimi_audio_s_per_s'])} |",
              f"| TTS (Kokoro), audio s per s | {_fmt(rates['tts_audio_s_per_s'])} |",
              f"| trained tokens per s | {_fmt(rates['train_tokens_per_s'])} |",
              f"| decoded items per s, stock | {_fmt(rates['decode_items_per_s_stock'], '.4f')} |",
              f"| decoded items per s, batched | {_fmt(rates['decode_items_per_s_batched'], '.4f')} |"]
    plan = report["plan"]
    lines += ["", f"## Plan: PROFILE=v4.1 on this machine ({plan['production']['all_rows']} rows, "
                  f"{plan['production']['max_steps']} steps x {plan['production']['global_batch']} rows, "
                  f"{plan['production']['train_tokens']:,} train tokens)", "", "| stage | hours (CPU) |", "|---|---:|"]
    for name, hours in plan["cpu_hours"].items():
        lines.append(f"| {name} | {'n/a (download)' if hours is None else f'{hours:.2f}'} |")
    lines.append(f"| total | {plan['cpu_hours_total']:.1f} |")
    if plan["gpu_train"]:
        gpu = plan["gpu_train"]
        lines += ["", f"GPU training ({gpu['card']}, {gpu['source']}: {gpu['tokens_per_s']:.0f} tokens/s): "
                      f"{gpu['train_hours_one_card']:.2f} h on one card, {gpu['train_hours_ideal_num_processes']:.2f} h "
                      f"on num_processes cards at perfect scaling. {gpu['note']}"]
    disk = plan["disk_bytes"]
    lines += ["", "| disk for one night | bytes |", "|---|---:|"]
    lines += [f"| {name} | {value:,} |" for name, value in disk.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", type=Path, default=Path("."))
    parser.add_argument("--min-available-gib", type=float, default=0,
                        help="wait before train until this much memory is available (a shared machine)")
    parser.add_argument("--set", action="append", default=[], metavar="GROUP.KEY=VALUE",
                        help="override a workspace param after the sync (recorded in the report)")
    parser.add_argument("--reuse", action="store_true", help="do not rerun stages DVC finds up to date")
    args = parser.parse_args(argv)
    run(args.repo, args.min_available_gib, args.set, args.reuse)
    return 0


if __name__ == "__main__":
    sys.exit(main())
