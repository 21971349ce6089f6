"""GPU benchmark: one training step of the full-size LFM2.5-Audio, our step vs liquid-audio's stock one.

    bash bench/run_gpu_bench.sh                      # on the GPU machine (installs .whl/*.whl first)
    python bench/bench_train_gpu.py                  # full size, bf16, bs 2, ctx 512, 3 warmup + 10 timed steps
    python bench/bench_train_gpu.py --tiny           # tiny config on CPU, 1 + 2 steps (the test runs this)

The model is random-init from ``configs/lfm25-audio-1.5b.reconstructed.json``
(1,470,291,072 parameters), built with liquid-audio's ``LFM2AudioModel(conf)``
directly on the device in bf16 — no weights file. Batches are synthetic rows
with the mapper's layout (text header, user audio as 128-bin mel frames,
assistant text interleaved 6:12 with 8-codebook audio codes ending in 2048,
modality flags, supervision mask), padded to the context like
``LFM2DataLoader``; ``--fill`` sets the non-padding share (1.0 = worst case).

Variants, each in its own process (clean peak memory, allocator settings
fixed at start), each with the model wrapped in DDP at world size 1 so the
per-GPU memory includes DDP's gradient buckets as under ``accelerate launch``:

- ``stock``: ``liquid_audio.trainer.Trainer.train_step`` (zero_grad, bf16
  autocast forward, backward, fused AdamW step, scheduler step) with the stock
  DDP settings (``find_unused_parameters=True``);
- ``ours``: ``pipeline.training.trainer.Trainer.train_step`` (the same plus
  gradient clipping at ``--max-grad-norm`` and the grad norm), same DDP settings;
- with ``--variants``, also ``ours-noclip`` (production's ``max_grad_norm: null``:
  the grad norm only on logged steps, so never in the bench), ``ours-bucketview``
  and ``stock-bucketview`` (DDP ``gradient_as_bucket_view=True``);

each once with ``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True`` (the
card's setting) and once with the default allocator. Reported: non-padding
tokens/s, step time, ``torch.cuda.max_memory_allocated`` and
``max_memory_reserved`` over all steps, and whether that fits a 24 GB RTX 4090
(peak reserved < 22.5 GiB, leaving room for the CUDA context and NCCL).
JSON goes to ``$OUT/train_gpu.json`` if ``$OUT`` is set, else
``bench/results/train_gpu.json`` (or ``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REFERENCE_CONFIG = REPO / "configs" / "lfm25-audio-1.5b.reconstructed.json"
FIT_4090_GIB = 22.5
EXPANDABLE = "expandable_segments:True"
GIB = 1024**3


# --- synthetic rows ----------------------------------------------------------


def synthetic_row(context: int, fill: float, vocab: int, codebooks: int, seed: int):
    """One padded row shaped like the mapper's output: header text, user audio (mel), assistant interleaved reply."""
    import torch
    import torch.nn.functional as F
    from liquid_audio.data.types import LFM2AudioRow
    from liquid_audio.utils import LFMModality

    g = torch.Generator().manual_seed(seed)
    TEXT, AUDIO_IN, AUDIO_OUT = int(LFMModality.TEXT), int(LFMModality.AUDIO_IN), int(LFMModality.AUDIO_OUT)
    length = max(48, min(context, round(context * fill)))
    n_header = round(length * 0.30)  # system prompt + tool list + turn headers (unsupervised)
    n_audio_in = round(length * 0.12)  # user speech: 8 mel frames per embedding
    n_reply = length - n_header - n_audio_in
    n_reply_text = max(1, n_reply // 3)
    n_reply_audio = n_reply - n_reply_text

    modality: list[int] = [TEXT] * (n_header // 2) + [AUDIO_IN] * n_audio_in + [TEXT] * (n_header - n_header // 2)
    supervised: list[bool] = [False] * n_header + [False] * n_audio_in
    text_left, audio_left = n_reply_text, n_reply_audio
    while text_left or audio_left:  # 6 text, 12 audio, as interleaved_n_text / interleaved_n_audio
        take = min(6, text_left)
        modality += [TEXT] * take
        text_left -= take
        take_a = min(12, audio_left)
        modality += [AUDIO_OUT] * take_a
        audio_left -= take_a
        supervised += [True] * (take + take_a)

    n_text = modality.count(TEXT)
    mel_frames = n_audio_in * 8
    text = torch.randint(256, vocab, (1, n_text), generator=g)
    audio_out = torch.randint(0, 2048, (codebooks, n_reply_audio), generator=g)
    audio_out[:, -1] = 2048  # end of audio
    pad = context - length
    return LFM2AudioRow(
        text=F.pad(text, (0, pad)),
        audio_in=torch.randn(128, mel_frames, generator=g),
        audio_in_lens=torch.tensor([mel_frames]),
        audio_out=audio_out,
        modality_flag=F.pad(torch.tensor([modality]), (0, pad), value=TEXT),
        supervision_mask=F.pad(torch.tensor([supervised]), (0, pad), value=False),
    )


# --- model -------------------------------------------------------------------


def model_config(tiny: bool) -> dict:
    config = json.loads(REFERENCE_CONFIG.read_text())
    if tiny:
        from pipeline.fabricate import TINY_LFM_OVERRIDES

        for section, values in TINY_LFM_OVERRIDES.items():
            config[section].update(values)
    return config


def build_model(config: dict, device):
    """Random-init LFM2AudioModel in bf16 on ``device``, attention set up as ``from_pretrained`` does."""
    import torch
    from liquid_audio.model.conformer.encoder import ConformerEncoderConfig
    from liquid_audio.model.lfm2_audio import DepthformerConfig, LFM2AudioConfig, LFM2AudioModel
    from liquid_audio.utils import module_exists
    from transformers import Lfm2Config

    raw = json.loads(json.dumps(config))
    conf = LFM2AudioConfig(
        lfm=Lfm2Config(**raw.pop("lfm")),
        encoder=ConformerEncoderConfig(**raw.pop("encoder")),
        depthformer=DepthformerConfig(**raw.pop("depthformer")),
        **raw,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = LFM2AudioModel(conf)
    model = model.to(device=device, dtype=torch.bfloat16)
    model.lfm.set_attn_implementation("flash_attention_2" if module_exists("flash_attn") else "sdpa")
    return model


# --- one variant (runs in a child process, or in-process for --tiny) ----------

# DDP settings of the variants: the stock Trainer's, and with gradient_as_bucket_view (measured, not adopted).
STOCK_DDP_KWARGS = {"find_unused_parameters": True}
BUCKET_VIEW_DDP_KWARGS = {"find_unused_parameters": True, "gradient_as_bucket_view": True}

# variant -> (whose train_step, whose DDP settings, clip?). The last three isolate where the two main ones differ.
VARIANTS = {
    "stock": ("stock", "stock", False),
    "ours": ("ours", "ours", True),
    "ours-noclip": ("ours", "ours", False),  # production's max_grad_norm: null (grad norm on logged steps only)
    "ours-bucketview": ("ours", "bucketview", True),  # + DDP gradient_as_bucket_view
    "stock-bucketview": ("stock", "bucketview", False),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_variant(variant: str, args) -> dict:
    import torch
    import torch.distributed as dist
    from accelerate import Accelerator
    from liquid_audio.data.dataloader import lfm2_collator
    from liquid_audio.trainer import Trainer as StockTrainer
    from torch.nn.parallel import DistributedDataParallel as DDP

    from pipeline.training.config import TrainParams
    from pipeline.training.data import real_tokens
    from pipeline.training.metrics import peak_memory
    from pipeline.training.trainer import DDP_KWARGS, Trainer

    cuda = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda" if cuda else "cpu")
    config = model_config(args.tiny)
    model = build_model(config, device)
    n_params = sum(p.numel() for p in model.parameters())  # tied weights once
    n_params_with_aliases = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    rows = [synthetic_row(args.ctx, args.fill, config["lfm"]["vocab_size"], config["codebooks"], seed=i)
            for i in range(args.batch_size * 4)]
    batches = [lfm2_collator(rows[i : i + args.batch_size]) for i in range(0, len(rows), args.batch_size)]

    step_kind, ddp_kind, clip = VARIANTS[variant]
    ddp_kwargs = {"ours": DDP_KWARGS, "stock": STOCK_DDP_KWARGS, "bucketview": BUCKET_VIEW_DDP_KWARGS}[ddp_kind]
    train_params = TrainParams(max_steps=1000, batch_size=args.batch_size, context_length=args.ctx, lr=5e-5,
                               warmup_steps=100, max_grad_norm=args.max_grad_norm if clip else None,
                               dataloader_workers=0)
    accelerator = Accelerator(mixed_precision="bf16", cpu=not cuda)
    trainer = Trainer(model, rows, None, train_params, accelerator=accelerator, echo=lambda line: None)
    if args.ddp:  # world size 1: DDP's buckets and hooks, as each process has them under accelerate launch
        if not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{free_port()}",
                                    rank=0, world_size=1)
        trainer.model = DDP(trainer.model, device_ids=[device.index or 0] if cuda else None, **ddp_kwargs)
    # The stock step is liquid-audio's own method, run on our trainer's model, optimizer, scheduler and accelerator.
    step = trainer.train_step if step_kind == "ours" else (lambda batch: StockTrainer.train_step(trainer, batch))
    trainer.model.train()

    def sync():
        if cuda:
            torch.cuda.synchronize()

    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    times, tokens, losses = [], [], []
    for i in range(args.warmup + args.steps):
        batch = batches[i % len(batches)]
        sync()
        started = time.perf_counter()
        out = step(batch)
        loss = float(out.loss.detach().float().item())
        sync()
        if i >= args.warmup:
            times.append(time.perf_counter() - started)
            tokens.append(real_tokens(batch))
            losses.append(loss)
    peak, kind = peak_memory()
    from liquid_audio.utils import module_exists

    result = {
        "variant": variant,
        "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "default") if cuda else "n/a (cpu)",
        "device": torch.cuda.get_device_name(device) if cuda else f"cpu ({platform.processor() or platform.machine()})",
        "n_params": n_params,
        "n_params_counting_tied_aliases": n_params_with_aliases,  # 1,470,291,072 for the full config (notes' count)
        "ddp_world_size_1": bool(args.ddp),
        "attn_implementation": "flash_attention_2" if module_exists("flash_attn") else "sdpa",
        "causal_conv1d_kernel": module_exists("causal_conv1d"),  # else transformers' slower reference conv
        "train_step": "pipeline.training.trainer.Trainer.train_step" if step_kind == "ours"
        else "liquid_audio.trainer.Trainer.train_step",
        "ddp_kwargs": ddp_kwargs if args.ddp else None,
        "max_grad_norm": train_params.max_grad_norm,
        "timed_steps": len(times),
        "step_s_mean": statistics.fmean(times),
        "step_s_median": statistics.median(times),
        "tokens_per_step": statistics.fmean(tokens),
        "padded_tokens_per_step": args.batch_size * args.ctx,
        "tokens_per_s": sum(tokens) / sum(times),
        "loss_first_timed": losses[0],
        "loss_last_timed": losses[-1],
        "peak_memory_kind": kind,
        "peak_allocated_gib": peak if cuda else None,
        "peak_reserved_gib": torch.cuda.max_memory_reserved() / GIB if cuda else None,
        "peak_rss_gib": None if cuda else peak,
    }
    if cuda:
        result["fits_4090"] = result["peak_reserved_gib"] < FIT_4090_GIB
    return result


# --- orchestration -----------------------------------------------------------


def child_command(variant: str, alloc: str, args, json_out: Path) -> tuple[list[str], dict]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", variant, "--child-json", str(json_out),
               "--variants", variant,
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size),
               "--ctx", str(args.ctx), "--fill", str(args.fill), "--max-grad-norm", str(args.max_grad_norm)]
    if args.tiny:
        command.append("--tiny")
    if args.cpu:
        command.append("--cpu")
    if not args.ddp:
        command.append("--no-ddp")
    env = dict(os.environ)
    env.pop("PYTORCH_CUDA_ALLOC_CONF", None)
    if alloc != "default":
        env["PYTORCH_CUDA_ALLOC_CONF"] = alloc
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return command, env


def run_all(args) -> list[dict]:
    allocs = [EXPANDABLE, "default"] if not args.expandable_only else [EXPANDABLE]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for alloc in allocs:
            for variant in args.variants:
                out = Path(tmp) / f"{variant}-{len(results)}.json"
                command, env = child_command(variant, alloc, args, out)
                print(f"bench: {variant} with PYTORCH_CUDA_ALLOC_CONF={alloc} ...", flush=True)
                started = time.monotonic()
                proc = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
                if proc.returncode != 0 or not out.exists():
                    tail = (proc.stdout + proc.stderr)[-3000:]
                    oom = "OutOfMemoryError" in tail or "CUDA out of memory" in tail
                    print(f"bench: {variant}/{alloc} failed (rc {proc.returncode}){' OOM' if oom else ''}:\n{tail}", flush=True)
                    results.append({"variant": variant, "alloc_conf": alloc, "error": "oom" if oom else f"rc {proc.returncode}",
                                    "log_tail": tail[-1500:]})
                    continue
                result = json.loads(out.read_text())
                result["wall_s"] = round(time.monotonic() - started, 1)
                results.append(result)
    return results


def table(results: list[dict]) -> str:
    head = f"{'variant':16} {'allocator':26} {'tokens/s':>10} {'step s':>8} {'peak alloc GiB':>15} {'peak reserved GiB':>18} {'fits 4090':>10}"
    lines = [head, "-" * len(head)]
    for r in results:
        if "error" in r:
            lines.append(f"{r['variant']:16} {r['alloc_conf']:26} {'failed: ' + r['error']:>10}")
            continue

        def gib(v):
            return "n/a" if v is None else f"{v:.2f}"

        mem_alloc = gib(r["peak_allocated_gib"]) if r["peak_allocated_gib"] is not None else f"rss {gib(r['peak_rss_gib'])}"
        fits = {True: "yes", False: "NO"}.get(r.get("fits_4090"), "n/a")
        lines.append(f"{r['variant']:16} {r['alloc_conf']:26} {r['tokens_per_s']:>10.1f} {r['step_s_median']:>8.3f} "
                     f"{mem_alloc:>15} {gib(r['peak_reserved_gib']):>18} {fits:>10}")
    return "\n".join(lines)


def verdict(results: list[dict]) -> dict:
    ours = [r for r in results if r.get("variant") == "ours" and "error" not in r and r.get("peak_reserved_gib") is not None]
    if not ours:
        return {"answer": "unavailable (no CUDA result for our step)", "threshold_gib": FIT_4090_GIB}
    best = min(ours, key=lambda r: r["peak_reserved_gib"])
    fits = best["peak_reserved_gib"] < FIT_4090_GIB
    return {
        "threshold_gib": FIT_4090_GIB,
        "fits": fits,
        "best_alloc_conf": best["alloc_conf"],
        "peak_reserved_gib": best["peak_reserved_gib"],
        "peak_allocated_gib": best["peak_allocated_gib"],
        "answer": (f"{'yes' if fits else 'no'}: our bs {best.get('batch_size', '')} step peaks at "
                   f"{best['peak_reserved_gib']:.2f} GiB reserved / {best['peak_allocated_gib']:.2f} GiB allocated "
                   f"({best['alloc_conf']}, DDP world 1 incl. gradient buckets) vs {FIT_4090_GIB} GiB usable on a 24 GB 4090"),
    }


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny config, 1 warmup + 2 timed steps, in-process (CPU test)")
    parser.add_argument("--cpu", action="store_true", help="force CPU even where CUDA is available")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per variant (default 10; 2 with --tiny)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3; 1 with --tiny)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--fill", type=float, default=1.0, help="non-padding share of each row (1.0 = worst case)")
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--no-ddp", dest="ddp", action="store_false", help="do not wrap in DDP (world size 1)")
    parser.add_argument("--expandable-only", action="store_true", help="skip the default-allocator runs")
    parser.add_argument("--in-process", action="store_true", help="run the variants in this process (default with --tiny)")
    parser.add_argument("--isolate", action="store_true", help="one child process per variant (default without --tiny)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--variants", default="stock,ours",
                        help=f"comma-separated, from {', '.join(VARIANTS)} (default stock,ours)")
    parser.add_argument("--child", choices=tuple(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--child-json", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 2 if args.tiny else 10
    if args.warmup is None:
        args.warmup = 1 if args.tiny else 3
    if args.tiny and not args.isolate:
        args.in_process = True
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown or not args.variants:
        parser.error(f"--variants: unknown {unknown} (known: {', '.join(VARIANTS)})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    if args.child:
        result = run_variant(args.child, args)
        args.child_json.write_text(json.dumps(result))
        return 0

    if args.in_process:
        results = []
        for variant in args.variants:
            started = time.monotonic()
            result = run_variant(variant, args)
            result["wall_s"] = round(time.monotonic() - started, 1)
            results.append(result)
    else:
        results = run_all(args)

    import torch

    document = {
        "benchmark": "train_step_full_size" if not args.tiny else "train_step_tiny",
        "config": str(REFERENCE_CONFIG.relative_to(REPO)) + (" + pipeline.fabricate.TINY_LFM_OVERRIDES" if args.tiny else ""),
        "batch_size": args.batch_size,
        "context_length": args.ctx,
        "fill": args.fill,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "precision": "bf16 weights + bf16 autocast (the stock Trainer's 'full bf16')",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "results": results,
    }
    for r in results:
        r.setdefault("batch_size", args.batch_size)
    document["fits_24gb_4090"] = verdict(results)
    out = args.out or (Path(os.environ["OUT"]) / "train_gpu.json" if os.environ.get("OUT") else REPO / "bench" / "results" / "train_gpu.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    os.replace(tmp, out)
    n_params = next((r["n_params"] for r in results if "n_params" in r), None)
    print(f"\nLFM2.5-Audio train step, {n_params:,} params, bs {args.batch_size} x ctx {args.ctx}, fill {args.fill}, "
          f"{args.warmup} warmup + {args.steps} timed steps" if n_params else "\nno variant ran")
    print(table(results))
    print(f"\nfits a 24 GB 4090? {document['fits_24gb_4090']['answer']}")
    print(f"JSON: {out}")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
