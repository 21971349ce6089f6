"""Preprocessing throughput: ours from scratch, ours after a blip change, liquid-audio's stock path.

Builds a scratch workspace (tiny fabricated LFM folder, a generated dataset of
``--train`` rows, espeak TTS), then times, on the same rows in one run:

1. our preprocess from an empty Mimi-code cache;
2. liquid-audio's stock ``preprocess_dataset`` with its own mapper;
3. our preprocess after a blip-parameter change (warm code cache: only
   tool_match acks re-encode);
4. the TTS stage rerun after the blip change (expected: every clip a cache hit).

    .venv/bin/python bench/bench_preprocess.py --train 120
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def write_params(root: Path, train: int, blip_overrides: dict) -> None:
    from pipeline.workspace import profile_params

    params = profile_params(REPO, "smoke")
    params["base_models"]["reference_config"] = str(REPO / params["base_models"]["reference_config"])
    params["dataset"].update(train_size=train, eval_size=max(8, train // 8))
    params["blip"].update(blip_overrides)
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def timed(label: str, fn, results: dict):
    start = time.perf_counter()
    value = fn()
    results[label] = time.perf_counter() - start
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=120, help="train rows to generate")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "preprocess.json")
    args = parser.parse_args()

    from liquid_audio.data.mapper import LFM2AudioChatMapper
    from liquid_audio.data.preprocess import preprocess_dataset

    from pipeline.audio import SAMPLE_RATE, read_wav, resample, to_float32
    from pipeline.chat_samples import row_messages
    from pipeline.fabricate import fabricate_lfm_folder
    from pipeline.params import load_section as load_params
    from pipeline.models import load_processor
    from pipeline.params import load_stage_params
    from pipeline.records import read_rows
    from pipeline.tts_cache import read_manifest
    from tasks import blip, blip_codes, dataset, preprocess, tts

    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        os.chdir(root)
        write_params(root, args.train, {})
        fabricate_lfm_folder(Path("models/base/lfm2.5-audio"),
                             json.loads((REPO / "configs/lfm25-audio-1.5b.reconstructed.json").read_text()))
        assert blip.main() == 0 and blip_codes.main() == 0 and dataset.main([]) == 0
        tts_params = tts.TTSParams.from_params(load_params("tts"))
        first_tts = tts.run_tts(tts_params, tts.build_engine(tts_params), progress=False)

        params = load_stage_params(preprocess.PreprocessParams)
        scratch_metrics = timed("ours_from_scratch", lambda: preprocess.run(params), seconds)

        # The stock path on the very same chats (train + eval), its own mapper, no cache;
        # building the chats (reading TTS audio) is timed too, as it is inside ours.
        def stock() -> None:
            processor = load_processor(params.model_dir)
            preview = to_float32(resample(*read_wav(preprocess.BLIP_PREVIEW_WAV), SAMPLE_RATE))
            chats = []
            for split in preprocess.SPLITS:
                manifest = read_manifest(preprocess.TTS_DIR / f"{split}.jsonl")
                for row in read_rows(preprocess.DATASET_DIR / f"{split}.jsonl").rows:
                    audio = preprocess.row_audio(row, manifest[row.id], params.tts_cache_dir)
                    chats.append(row_messages(row, audio, preview if row.row_class == "tool_match" else None))
            preprocess_dataset(chats, root / "stock", LFM2AudioChatMapper(processor), params.max_context_length)

        timed("stock_preprocess_dataset", stock, seconds)

        # A blip change: longer, other tones. Only blip, blip_codes and preprocess need to rerun.
        write_params(root, args.train, {"tones_hz": [1000, 1500], "duration_ms": 240})
        assert blip.main() == 0 and blip_codes.main() == 0
        after_metrics = timed("ours_after_blip_change", lambda: preprocess.run(params), seconds)
        rerun_tts = tts.run_tts(tts_params, tts.build_engine(tts_params), progress=False)

    rows = sum(s["rows"] for s in scratch_metrics["splits"].values())
    tool_match = sum(s["tool_match_rows"] for s in after_metrics["splits"].values())
    result = {
        "rows": rows,
        "tool_match_rows": tool_match,
        "seconds": seconds,
        "rows_per_s": {label: rows / s for label, s in seconds.items()},
        "speedup_after_blip_change_vs_scratch": seconds["ours_from_scratch"] / seconds["ours_after_blip_change"],
        "ours_scratch_vs_stock": seconds["stock_preprocess_dataset"] / seconds["ours_from_scratch"],
        "codes_cache_from_scratch": scratch_metrics["codes_cache"],
        "codes_cache_after_blip_change": after_metrics["codes_cache"],
        "blip_prefix_match_rate": after_metrics["blip_prefix_match_rate"],
        "tts_first_run": {"synthesised": first_tts.syntheses, "hit_rate": first_tts.hit_rate},
        "tts_rerun_after_blip_change": {"synthesised": rerun_tts.syntheses, "hit_rate": rerun_tts.hit_rate},
    }
    print(f"{'path':32} {'seconds':>8} {'rows/s':>8}")
    for label, s in seconds.items():
        print(f"{label:32} {s:8.2f} {rows / s:8.1f}")
    print(f"after a blip change: {after_metrics['codes_cache']['misses']} re-encoded of "
          f"{after_metrics['codes_cache']['hits'] + after_metrics['codes_cache']['misses']} assistant clips "
          f"({tool_match} tool_match rows); TTS rerun synthesised {rerun_tts.syntheses}, hit rate {rerun_tts.hit_rate}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
