"""Replies/s: the batched greedy decoder (pipeline.batch_decode) vs stock ``generate_interleaved`` one row at a time.

    python bench/bench_decoder.py                          # CPU, tiny fabricated model, float32
    python bench/bench_decoder.py --config full --device cuda --dtype bfloat16 --batch-sizes 1,16

Same rows, same run: stock decodes them one after another; ours decodes
them ``batch_size`` at a time. Replies are checked against stock token for
token (the agreement rate: rows whose items are identical). ``--config full``
random-inits the full-size model from configs/lfm25-audio-1.5b.reconstructed.json
(throughput only: never quality). JSON to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.batch_decode import decode_chats  # noqa: E402
from pipeline.catalog import RowMaker  # noqa: E402
from pipeline.generation import GenerationParams, generate_stream, request_chat  # noqa: E402
from pipeline.models import LoadedLFM, load_lfm, load_processor  # noqa: E402


def build(config: str, device: str, dtype: torch.dtype, folder: Path) -> LoadedLFM:
    from pipeline.fabricate import fabricate_lfm_folder

    reference = json.loads((REPO / "configs" / "lfm25-audio-1.5b.reconstructed.json").read_text())
    fabricate_lfm_folder(folder, reference, seed=0)  # tokenizer, small Mimi and a tiny model
    if config == "tiny":
        return load_lfm(folder, device=device, dtype=dtype)
    from liquid_audio.model.conformer.encoder import ConformerEncoderConfig
    from liquid_audio.model.lfm2_audio import DepthformerConfig, LFM2AudioConfig, LFM2AudioModel
    from transformers import Lfm2Config

    raw = json.loads(json.dumps(reference))
    conf = LFM2AudioConfig(lfm=Lfm2Config(**raw.pop("lfm")), encoder=ConformerEncoderConfig(**raw.pop("encoder")),
                           depthformer=DepthformerConfig(**raw.pop("depthformer")), **raw)
    torch.manual_seed(0)
    with torch.device(device):
        model = LFM2AudioModel(conf).to(dtype=dtype).eval()
    model.lfm.set_attn_implementation("sdpa")
    return LoadedLFM(model=model, processor=load_processor(folder, device=device), path=folder)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", default="8")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "decoder_cpu.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    with tempfile.TemporaryDirectory() as tmp:
        lfm = build(args.config, args.device, dtype, Path(tmp) / "model")
        maker = RowMaker(random.Random(0), "heldout")
        makers = [maker.tool_match, maker.non_tool, lambda i: maker.tool_miss(i, hard=True)]
        rows = [makers[n % 3](f"r{n}") for n in range(args.rows)]
        rng = np.random.default_rng(0)
        audio = [((0.05 * rng.standard_normal(int(rng.integers(8_000, 40_000)))).astype(np.float32), 24_000) for _ in rows]
        params = GenerationParams(max_new_tokens=args.max_new_tokens)

        def sync():
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()

        stock_items(lfm, rows[0], audio[0], params)  # warm-up
        sync()
        start = time.perf_counter()
        stock = [stock_items(lfm, r, a, params) for r, a in zip(rows, audio)]
        sync()
        stock_s = time.perf_counter() - start
        result = {"config": args.config, "device": args.device, "dtype": args.dtype, "rows": args.rows,
                  "max_new_tokens": args.max_new_tokens, "threads": args.threads, "machine": platform.processor() or platform.machine(),
                  "stock": {"seconds": round(stock_s, 3), "replies_per_s": round(args.rows / stock_s, 3)}, "ours": {}}
        print(f"stock, one row at a time: {stock_s:.2f}s, {args.rows / stock_s:.3f} replies/s")
        for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
            chats = []
            for r, a in zip(rows, audio):
                chat = request_chat(lfm, r, a)
                chat.new_turn("assistant")
                chats.append(chat)
            sync()
            start = time.perf_counter()
            ours = decode_chats(lfm, chats, args.max_new_tokens, batch_size)
            sync()
            ours_s = time.perf_counter() - start
            agree = sum([i.tolist() for i in d.items] == s for d, s in zip(ours, stock)) / len(rows)
            result["ours"][str(batch_size)] = {"seconds": round(ours_s, 3), "replies_per_s": round(args.rows / ours_s, 3),
                                               "speedup_vs_stock": round(stock_s / ours_s, 2), "agreement": agree}
            print(f"ours, batch {batch_size}: {ours_s:.2f}s, {args.rows / ours_s:.3f} replies/s, "
                  f"{stock_s / ours_s:.2f}x stock, agreement {agree:.0%}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def stock_items(lfm, row, audio, params):
    return [item.tolist() for item in generate_stream(lfm, request_chat(lfm, row, audio), params)]


if __name__ == "__main__":
    sys.exit(main())
