"""Stage `eval_screen`: the blip's numbers of the final model from the opening frames of its replies.

The screening tier of a sweep (``flows/sweep.py`` ranks variants on it and
confirms only the best with the full evaluation). It decodes the rows
``eval_classes`` decodes (that group's row file, ``max_rows``, user audio and
generation keys) but only the classes ``eval_blip`` scores, each reply only
until it holds the blip's frames (+ ``eval_screen.extra_frames``), batched
(``eval_screen.batch_size``); ``pipeline.screen`` says why the numbers equal
the full evaluation's. Outputs:

- ``reports/metrics/eval_screen.details.json``: ``eval_blip``'s details over the
  openings (its headline keys: ``cb0_match_rate``, ``detector_true_positive_rate``,
  ``false_positive_rate``, ``decision_latency_ms``), ``decoder_work``,
  ``frames_needed``, every row's decision and the rows skipped (no user audio, or
  past ``eval_classes``'s prompt bounds: ``skipped``, ``n_skipped``). It is a cached out, not a DVC
  metric: ``dvc metrics show`` stays a screen wide and has ``eval_blip``'s
  columns already; the sweep reads this document.
- ``reports/metrics/eval_screen.timings.json``: the decoding's wall time (a DVC
  metric, uncached: the details stay byte for byte the same on a rerun).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from coordinator.signature import BlipSignature, SignatureError
from pipeline.artifacts import BLIP_CODES_NPY, BLIP_SIGNATURE_JSON, EVAL_SCREEN_DETAILS_JSON, timings_json
from pipeline.blip_emission import EvalBlipParams
from pipeline.inference import bound_prompts, load_model
from pipeline.io import write_json
from pipeline.params import load_section, load_stage_params, stage_main
from pipeline.records import read_rows, select_rows
from pipeline.screen import EvalScreenParams, ScreenedRunParams, screen_replies, screened_run
from pipeline.user_audio import ManifestAudio, check_skipped

SECTION = "eval_screen"
CODES_NPY = BLIP_CODES_NPY
SIGNATURE_JSON = BLIP_SIGNATURE_JSON
DETAILS_PATH = EVAL_SCREEN_DETAILS_JSON
TIMINGS_PATH = timings_json(SECTION)


def run(screen: EvalScreenParams, run_params: ScreenedRunParams, blip: EvalBlipParams,
        details_path: Path = DETAILS_PATH, timings_path: Path = TIMINGS_PATH, codes_npy: Path = CODES_NPY, signature_json: Path = SIGNATURE_JSON,
        lfm=None, audio_source: ManifestAudio | None = None) -> dict[str, Any]:
    if screen.batch_size > 1 and not run_params.greedy:
        raise screen.bad("batch_size", f"is {screen.batch_size}, but eval_classes samples (temperatures set) and the "
                                       "batched decoder is greedy only: set it to 1")
    signature = BlipSignature.load(codes_npy, signature_json)
    read = read_rows(run_params.rows)
    rows = select_rows(read.rows, run_params.max_rows)
    source = audio_source or ManifestAudio(run_params.tts_manifest, run_params.tts_cache_dir)
    audio = source.audio_for_rows(rows)
    check_skipped(audio, len(read.bad), len(rows), run_params.max_skipped_fraction)
    if lfm is None:
        lfm = load_model(run_params.model_dir, run_params.device, run_params.dtype)
    audio = bound_prompts(lfm, rows, audio, run_params)  # eval_classes's bounds: the same rows skipped
    check_skipped(audio, len(read.bad), len(rows), run_params.max_skipped_fraction)
    requests = [(row, audio[row.id]) for row in rows if not isinstance(audio[row.id], str)]
    started = time.perf_counter()
    result = screen_replies(lfm, signature, requests, run_params.generation, screen.batch_size,
                            blip.negative_classes, screen.extra_frames)
    metrics = dict(result.report.metrics)
    metrics.update({
        "decoder_work": result.work.to_json(),
        "frames_needed": result.frames_needed,
        "negative_classes": list(blip.negative_classes),
        "batch_size": screen.batch_size,
        "n_rows": read.lines_read,
        "n_skipped": sum(isinstance(audio[row.id], str) for row in rows),
        "skipped": [{"id": row.id, "reason": audio[row.id]} for row in rows if isinstance(audio[row.id], str)],
        "rows": [row.to_json() for row in result.report.rows],
    })
    write_json(details_path, metrics)
    write_json(timings_path, {"wall_seconds": round(time.perf_counter() - started, 2)})
    return metrics


def work() -> int:
    screen = load_stage_params(EvalScreenParams)
    metrics = run(screen, screened_run(load_section("eval_classes")), load_stage_params(EvalBlipParams))

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1%}"

    print(f"{SECTION}: cb0 {pct(metrics['cb0_match_rate'])}, detector TPR {pct(metrics['detector_true_positive_rate'])}"
          f", FPR {pct(metrics['false_positive_rate'])} over {metrics['n_tool_match']} tool_match + "
          f"{metrics['n_negative']} negatives, {metrics['decoder_work']['decoder_items']} decoder items "
          f"(openings of {metrics['frames_needed']} audio frames)")
    return 0


def main() -> int:
    return stage_main(SECTION, work, expected=(SignatureError,))


if __name__ == "__main__":
    sys.exit(main())
