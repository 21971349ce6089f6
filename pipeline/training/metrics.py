"""What training reports: per-interval train stats, peak memory, and the DVCLive series.

The trainer hands ``{name: value}`` at its global step to a metrics sink (any
callable); the stage's sink is ``LiveSink`` (DVCLive, imported only when one is
made, so the trainer runs on a machine without it: the GPU benchmark).
"""
from __future__ import annotations

import csv
import math
import resource
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

GIB = 1024**3
PERF_GROUP = "perf"  # the series of throughput and memory: readings of one invocation, plotted, not summarised

MetricsSink = Callable[[int, dict[str, float]], None]


def peak_memory() -> tuple[float, str]:
    """(GiB, kind): CUDA max allocated on GPU, else the process's peak resident set size."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / GIB, "cuda_max_allocated"
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    scale = 1 if sys.platform != "darwin" else 1 / 1024
    return rss_kib * 1024 * scale / GIB, "cpu_peak_rss"


@dataclass
class IntervalStats:
    """Train steps since the last ``train/*`` point (one log interval)."""

    loss_sum: float = 0.0
    steps: int = 0
    tokens: int = 0  # non-padding
    positions: int = 0  # padding included
    seconds: float = 0.0
    grad_norm: float = math.nan  # of the interval's last step

    def add(self, loss: float, tokens: int, seconds: float, grad_norm: float | None, positions: int = 0) -> None:
        self.loss_sum += loss
        self.steps += 1
        self.tokens += tokens
        self.positions += positions
        self.seconds += seconds
        self.grad_norm = float(grad_norm) if grad_norm is not None else math.nan

    def metrics(self, lr: float) -> dict[str, float]:
        return {
            "train/loss": self.loss_sum / self.steps,
            "train/lr": lr,
            "train/grad_norm": self.grad_norm,
            f"{PERF_GROUP}/tokens_per_s": self.tokens / self.seconds if self.seconds > 0 else math.nan,  # non-padding
            f"{PERF_GROUP}/padding_fraction": 1 - self.tokens / self.positions if self.positions else math.nan,
        }


def peak_metric_name(kind: str) -> str:
    """The series name says which peak it is: CUDA allocated or CPU resident."""
    return f"{PERF_GROUP}/peak_{'cuda_allocated' if kind == 'cuda_max_allocated' else 'rss'}_gib"


# --- DVCLive -----------------------------------------------------------------


def truncate_live_series(live_dir: Path, last_step: int) -> int:
    """Drop DVCLive history rows after ``last_step`` (logged after the checkpoint we resume from)."""
    from pipeline.io import write_text

    dropped = 0
    for tsv in (Path(live_dir) / "plots").rglob("*.tsv"):
        with open(tsv, newline="") as handle:
            rows = list(csv.reader(handle, delimiter="\t"))
        if not rows:
            continue
        header, body = rows[0], rows[1:]
        col = header.index("step") if "step" in header else None
        kept = [r for r in body if col is None or (r[col].isdigit() and int(r[col]) <= last_step)]
        dropped += len(body) - len(kept)
        if len(kept) != len(body):
            write_text(tsv, "".join("\t".join(r) + "\n" for r in [header, *kept]))
    return dropped


class LiveSink:
    """Feeds the trainer's metrics to DVCLive at the trainer's global step (main process only)."""

    def __init__(self, live_dir: Path, resume_step: int | None):
        from dvclive import Live

        if resume_step is not None:
            truncate_live_series(live_dir, resume_step)
        self.live = Live(dir=str(live_dir), resume=resume_step is not None, save_dvc_exp=False, dvcyaml=None, report=None)

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        self.live.step = step
        for name, value in metrics.items():
            if isinstance(value, float) and not math.isfinite(value):
                continue  # unavailable, not a point on the plot
            self.live.log_metric(name, value)
        self.live.sync()

    def close(self, summary: dict[str, Any]) -> None:
        """Log the final values and end; DVCLive's summary (``metrics.json``, an output of the stage) keeps the last
        value of every series but ``perf/*``: tokens/s and memory are readings of this invocation (they are in the
        plots and ``train.timings.json``), and without them a forced rerun writes the summary byte for byte."""
        from pipeline.io import read_json, write_json

        for name, value in summary.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.live.log_metric(f"final/{name.removeprefix('final_')}", value, plot=False)
        self.live.end()
        summary_file = Path(self.live.dir) / "metrics.json"
        if summary_file.exists():
            doc = read_json(summary_file)
            doc.pop(PERF_GROUP, None)
            write_json(summary_file, doc)
