"""CPU benchmark: length-aware batches (``train.pad_to: longest``) vs the stock ones (``context_length``).

    python bench/bench_train_lengths.py               # 8 layers x 512 wide, bs 4, ctx 512, 96 rows (one epoch)
    python bench/bench_train_lengths.py --rows 16     # quicker

One invocation trains both modes with ``pipeline.training.trainer.Trainer`` on
the same rows for the same steps (one full epoch each, so both see every row
once), each in its own spawned process so each peak RSS is its own. The rows
are written in liquid-audio's preprocessed format and read back through
``LFM2DataLoader``: the stage's data path.

Row lengths follow the production generator: ``tasks.dataset.generate_splits``
with ``params.yaml``'s dataset group makes the rows; each row's length is
estimated as (system prompt + tool list + user + reply characters) / 4 text
tokens plus user and reply speech at 2.5 words/s x 12.5 frames/s (Mimi and the
mel embeddings). The notes measured ~211 of 512 with the real tokenizer; this
gives a mean of ~200. The row contents are synthetic (``bench_train_gpu.synthetic_row``).
Reported: non-pad tokens/s, padding fraction, peak RSS, loss, and the load average.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

MODES = ("context_length", "longest")


def production_lengths(n: int, context: int, seed: int = 0) -> list[int]:
    """Estimated token lengths of ``n`` rows from the production generator (see the module docstring)."""
    import yaml

    from pipeline.params import parse_params
    from tasks.dataset import DatasetParams, generate_splits

    raw = yaml.safe_load((REPO / "params.yaml").read_text())["dataset"]
    config = dataclasses.replace(parse_params(DatasetParams, raw), train_size=max(n, 100), eval_size=10, seed=seed)
    rows = generate_splits(config)["train"][:n]

    def speech(text: str) -> float:
        return len(text.split()) / 2.5 * 12.5

    def length(row) -> int:
        tools = json.dumps([dataclasses.asdict(t) for t in row.tools])
        text = (120 + len(tools) + len(row.user) + len(row.assistant)) / 4
        return max(48, min(context, round(text + speech(row.user) + speech(row.assistant))))

    return [length(r) for r in rows]


def mid_config(layers: int, width: int) -> dict:
    from bench_train_gpu import model_config

    config = model_config(tiny=True)
    config["lfm"].update(hidden_size=width, intermediate_size=width * 3, num_hidden_layers=layers, vocab_size=8192,
                         num_attention_heads=8, num_key_value_heads=4,
                         layer_types=["conv" if i % 3 != 2 else "full_attention" for i in range(layers)])
    config["depthformer"].update(layers=2, dim=256)
    config["encoder"].update(n_layers=2, d_model=128)
    return config


def write_rows(folder: Path, lengths: list[int], config: dict) -> None:
    """Unpadded synthetic rows of the given lengths, saved as liquid-audio's preprocessed dataset."""
    from bench_train_gpu import synthetic_row
    from datasets import Dataset

    columns: dict[str, list] = {k: [] for k in ("text", "audio_in", "audio_in_lens", "audio_out", "modality_flag",
                                                 "supervision_mask")}
    for i, n in enumerate(lengths):
        row = synthetic_row(n, 1.0, config["lfm"]["vocab_size"], config["codebooks"], seed=i)
        for name in columns:
            columns[name].append(getattr(row, name).tolist())
    Dataset.from_dict(columns).save_to_disk(str(folder))


def train_one(mode: str, args, folder: str, queue) -> None:
    import torch
    from accelerate import Accelerator
    from liquid_audio.data.dataloader import LFM2DataLoader

    from bench_train_gpu import build_model
    from pipeline.training.config import TrainParams
    from pipeline.training.trainer import Trainer

    torch.set_num_threads(args.threads)
    config = mid_config(args.layers, args.width)
    model = build_model(config, torch.device("cpu")).float()
    data = LFM2DataLoader(folder, context_length=args.ctx)
    steps = -(-len(data) // args.batch_size)
    params = TrainParams(max_steps=steps, batch_size=args.batch_size, context_length=args.ctx, lr=5e-5,
                         warmup_steps=1, val_interval=0, log_interval=1, save_interval=steps,
                         mixed_precision="no", dataloader_workers=0, pad_to=mode)
    trainer = Trainer(model, data, None, params, accelerator=Accelerator(mixed_precision="no", cpu=True),
                      echo=lambda line: None)
    result = trainer.train()
    per_step = [h["perf/tokens_per_s"] for h in result.history if "perf/tokens_per_s" in h]
    queue.put({"mode": mode, "steps": result.steps, "n_params": sum(p.numel() for p in model.parameters()),
               "non_pad_tokens_per_s": result.tokens_per_s, "real_tokens": result.real_tokens,
               "padding_fraction": result.padding_fraction, "train_seconds": result.train_seconds,
               "peak_rss_gib": result.peak_memory_gib, "final_train_loss": result.final_train_loss,
               "per_step_non_pad_tokens_per_s": per_step,
               "median_step_non_pad_tokens_per_s": sorted(per_step)[len(per_step) // 2]})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="JSON results (default: print only)")
    args = parser.parse_args(argv)

    lengths = production_lengths(args.rows, args.ctx)
    spawn = multiprocessing.get_context("spawn")
    results = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        write_rows(Path(tmp) / "rows", lengths, mid_config(args.layers, args.width))
        for mode in MODES:
            queue = spawn.Queue()
            child = spawn.Process(target=train_one, args=(mode, args, str(Path(tmp) / "rows"), queue))
            child.start()
            results.append(queue.get())
            child.join()
    load_after = os.getloadavg()
    stock, ours = results
    report = {
        "config": {**vars(args), "out": None, "row_length_mean": sum(lengths) / len(lengths),
                   "row_length_min": min(lengths), "row_length_max": max(lengths)},
        "results": results,
        "speedup_non_pad_tokens_per_s": ours["non_pad_tokens_per_s"] / stock["non_pad_tokens_per_s"],
        "speedup_median_step": ours["median_step_non_pad_tokens_per_s"] / stock["median_step_non_pad_tokens_per_s"],
        "peak_rss_ratio": ours["peak_rss_gib"] / stock["peak_rss_gib"],
        "loadavg_before": load_before, "loadavg_after": load_after, "cpu_count": os.cpu_count(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
