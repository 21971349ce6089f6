"""Benchmark: streaming blip detector vs the v4.1 card's recipe, on the same streams.

What it measures, per method, on a few thousand seeded scripted turns:
- CPU cost per audio frame (µs), median and p95 over (stream, repetition)
  samples, for the decision phase (the first 2 frames, where the card's recipe
  stacks and compares) and for the whole stream (what a serving loop pays per
  frame for the entire ack);
- the audio frame at which each method decides (0 = after 80 ms of audio,
  1 = after 160 ms, "never" = no verdict: the card's recipe when audio or text
  ends before 2 frames), and its accuracy against the scripted ground truth.

Run from the repo root:  .venv/bin/python bench/bench_detector.py [--streams 4000 --reps 20]
Writes bench/results/detector.json. CPU only; numpy only (plus pipeline.io to write).
"""
from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from coordinator.constants import END_OF_AUDIO_CODE  # noqa: E402
from coordinator.coordinator import Coordinator  # noqa: E402
from coordinator.detector import DecisionReason, StreamingBlipDetector  # noqa: E402
from coordinator.matchers import AnyOfCodebooks, CodebookMatch, FullMatch  # noqa: E402
from tests.support.reference import CardRecipeLoop  # noqa: E402
from tests.support.scripted import Opening, audio_frames, card_like_blip_codes  # noqa: E402
from coordinator.signature import BlipSignature  # noqa: E402

RESULTS = REPO / "bench" / "results" / "detector.json"

# Scenario mix: (name, opening, share, is_tool_ack). Tool acks mostly keep cb0 and
# cb3 while the deeper codebooks drift (card: cb0 98%, cb3 94%, cb5 0%).
MIX = [
    ("tool_ack_cb0_cb3", Opening.BLIP_CB0, 0.45, True),
    ("tool_ack_cb0_only", Opening.CB0_ONLY, 0.03, True),
    ("tool_ack_bit_exact", Opening.BLIP_EXACT, 0.02, True),
    ("non_tool_opening", Opening.MISS_FRAME0, 0.35, False),
    ("miss_at_last_frame", Opening.MISS_LAST, 0.05, False),
    ("cb3_only", Opening.CB3_ONLY, 0.04, False),
    ("audio_ends_at_frame0", None, 0.02, False),
    ("audio_ends_at_frame1", None, 0.02, False),
    ("text_only", None, 0.02, False),
]


@dataclass
class Stream:
    scenario: str
    is_blip: bool  # ground truth for the cb0 detector
    frames: list[np.ndarray]  # audio frames as the loop sees them, end-of-audio frame included


def build_streams(sig: BlipSignature, n: int, n_audio: int, seed: int) -> list[Stream]:
    rng = np.random.default_rng(seed)
    names = [m[0] for m in MIX]
    shares = np.array([m[2] for m in MIX])
    picks = rng.choice(len(MIX), size=n, p=shares / shares.sum())
    eoa = np.full(sig.n_codebooks, END_OF_AUDIO_CODE, dtype=np.int64)
    streams = []
    for p in picks:
        name, opening, _, truth = MIX[p]
        if opening is not None:
            body = audio_frames(sig, opening, n_audio, rng)
            frames = [row.copy() for row in body] + [eoa.copy()]
            truth = opening.is_blip
        elif name == "audio_ends_at_frame0":
            frames = [eoa.copy()]
        elif name == "audio_ends_at_frame1":
            frames = [audio_frames(sig, Opening.BLIP_CB0, 1, rng)[0].copy(), eoa.copy()]
        else:  # text_only
            frames = []
        streams.append(Stream(names[p], bool(truth), frames))
    return streams


# ---------------------------------------------------------------- runners
# A method is (timed, verdict): ``timed`` is exactly what a serving loop runs per
# turn (reset, then one feed per audio frame); ``verdict`` replays a stream and
# returns (decided_match | None, decision_frame | None, audio frames heard when it
# decided | None), outside the timing.

Runner = Callable[[list[np.ndarray]], object]


def ours(det: StreamingBlipDetector) -> tuple[Runner, Runner]:
    def timed(frames: list[np.ndarray]) -> None:
        det.reset()
        feed = det.feed
        for f in frames:
            feed(f)

    def verdict(frames: list[np.ndarray]) -> tuple[bool | None, int | None, int | None]:
        timed(frames)
        d = det.end_of_turn()  # text-only / exhausted turn: decides NO_MATCH; no-op when decided
        heard = d.frame_index if d.reason is DecisionReason.END_OF_TURN else d.frame_index + 1
        return d.is_match, d.frame_index, heard

    return timed, verdict


def card(loop: CardRecipeLoop) -> tuple[Runner, Runner]:
    def timed(frames: list[np.ndarray]) -> None:
        loop.reset()
        feed = loop.feed
        for f in frames:
            feed(f)

    def verdict(frames: list[np.ndarray]) -> tuple[bool | None, int | None, int | None]:
        loop.reset()
        result = None
        for f in frames:
            v = loop.feed(f)
            if v is not None:
                result = v
        return result, (1 if result is not None else None), (2 if result is not None else None)

    return timed, verdict


def time_per_frame(feed_all: Callable[[list[np.ndarray]], object], streams: list[Stream], reps: int,
                   first: int | None) -> np.ndarray:
    """ns per frame for every (stream, rep): reset + feed frames[:first] (all if None)."""
    samples = []
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for s in streams:
            frames = s.frames if first is None else s.frames[:first]
            if not frames:
                continue
            k = len(frames)
            for _ in range(reps):
                t0 = clock()
                feed_all(frames)
                samples.append((clock() - t0) / k)
    finally:
        gc.enable()
    return np.asarray(samples)


def coordinator_observe_ns(sig: BlipSignature, streams: list[Stream], reps: int) -> np.ndarray:
    """End-to-end per audio item: item conversion + detector + event bookkeeping (no dispatch run)."""
    async def never(ctx):  # pragma: no cover - observe() only returns the context
        return None

    coord = Coordinator(sig, CodebookMatch(codebooks=(0,)), never)
    samples = []
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for s in streams:
            if not s.frames:
                continue
            for _ in range(reps):
                turn = coord.new_turn()
                observe = turn.observe
                t0 = clock()
                for f in s.frames:
                    observe(f)
                samples.append((clock() - t0) / len(s.frames))
    finally:
        gc.enable()
    return np.asarray(samples)


def summary_us(ns: np.ndarray) -> dict[str, float]:
    return {
        "median_us": round(float(np.median(ns)) / 1000, 4),
        "p95_us": round(float(np.percentile(ns, 95)) / 1000, 4),
        "n_samples": int(ns.size),
    }


def decisions(run: Callable, streams: list[Stream], frame_ms: float) -> dict:
    frames_hist: Counter = Counter()
    by_scenario: dict[str, Counter] = {}
    correct = 0
    verdicts = []
    audio_ms = []
    for s in streams:
        verdict, frame, heard = run(s.frames)
        key = "never" if verdict is None else str(frame)
        frames_hist[key] += 1
        by_scenario.setdefault(s.scenario, Counter())[key] += 1
        correct += (verdict is True) == s.is_blip
        verdicts.append(verdict)
        if verdict is not None:
            audio_ms.append(heard * frame_ms)
    return {
        "decision_frame": dict(sorted(frames_hist.items())),
        "decision_frame_by_scenario": {k: dict(sorted(v.items())) for k, v in sorted(by_scenario.items())},
        "accuracy_vs_truth_cb0": round(correct / len(streams), 4),
        "mean_audio_ms_heard_at_decision": round(float(np.mean(audio_ms)), 2) if audio_ms else None,
        "_verdicts": verdicts,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=4000)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--frames", type=int, default=24, help="audio frames per stream before end of audio")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    sig = BlipSignature.from_codes(card_like_blip_codes(seed=args.seed))
    streams = build_streams(sig, args.streams, args.frames, args.seed)
    methods = {
        "ours_cb0": ours(StreamingBlipDetector(sig, CodebookMatch(codebooks=(0,)))),
        "ours_cb0_or_cb3": ours(StreamingBlipDetector(sig, AnyOfCodebooks(codebooks=(0, 3)))),
        "ours_full_8cb": ours(StreamingBlipDetector(sig, FullMatch())),
        "card_recipe": card(CardRecipeLoop(sig.cb0_across_frames)),
    }

    # Loop overhead (a runner that does nothing per frame) is reported, not subtracted.
    def empty(frames: list[np.ndarray]) -> None:
        for _ in frames:
            pass

    methods["empty_loop_overhead"] = (empty, None)  # type: ignore[assignment]

    report: dict = {
        "config": {"streams": args.streams, "reps": args.reps, "audio_frames_per_stream": args.frames,
                   "seed": args.seed, "blip_cb0": sig.cb0_across_frames.tolist(),
                   "scenario_counts": dict(sorted(Counter(s.scenario for s in streams).items()))},
        "machine": {"python": platform.python_version(), "numpy": np.__version__,
                    "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "load_avg_1m_at_start": round(os.getloadavg()[0], 2)},
        "methods": {},
    }
    for name, (timed, verdict) in methods.items():
        entry = {
            "us_per_frame_decision_phase": summary_us(time_per_frame(timed, streams, args.reps, first=2)),
            "us_per_frame_whole_stream": summary_us(time_per_frame(timed, streams, args.reps, first=None)),
        }
        if verdict is not None:
            entry.update(decisions(verdict, streams, 1000.0 / sig.frame_rate_hz))
        report["methods"][name] = entry
    report["methods"]["coordinator_observe_cb0"] = {
        "us_per_frame_whole_stream": summary_us(coordinator_observe_ns(sig, streams, max(1, args.reps // 4))),
    }

    ours_v = report["methods"]["ours_cb0"].pop("_verdicts")
    card_v = report["methods"]["card_recipe"].pop("_verdicts")
    for entry in report["methods"].values():
        entry.pop("_verdicts", None)
    both = [(o, c) for o, c in zip(ours_v, card_v) if c is not None]
    report["agreement_ours_cb0_vs_card"] = {
        "streams_where_card_decides": len(both),
        "same_verdict": sum(o == c for o, c in both),
        "card_never_decides": sum(c is None for c in card_v),
    }

    print(f"bench_detector: {args.streams} streams x {args.reps} reps, {args.frames} audio frames each, "
          f"blip cb0 {sig.cb0_across_frames.tolist()}, python {platform.python_version()}")
    header = (f"{'method':24s} {'µs/frame 1st 2 (med/p95)':>25s} {'µs/frame stream (med/p95)':>26s}  "
              f"{'decision frame (count)':24s} {'audio ms':>8s} {'cb0 acc':>7s}")
    print(header)
    print("-" * len(header))
    for name, e in report["methods"].items():
        dp = e.get("us_per_frame_decision_phase")
        ws = e["us_per_frame_whole_stream"]
        dp_s = f"{dp['median_us']:.3f} / {dp['p95_us']:.3f}" if dp else "-"
        ws_s = f"{ws['median_us']:.3f} / {ws['p95_us']:.3f}"
        hist = " ".join(f"{k}:{v}" for k, v in e.get("decision_frame", {}).items()) or "-"
        acc = f"{e['accuracy_vs_truth_cb0']:.4f}" if "accuracy_vs_truth_cb0" in e else "-"
        ms = f"{e['mean_audio_ms_heard_at_decision']:.1f}" if e.get("mean_audio_ms_heard_at_decision") is not None else "-"
        print(f"{name:24s} {dp_s:>25s} {ws_s:>26s}  {hist:24s} {ms:>8s} {acc:>7s}")
    agree = report["agreement_ours_cb0_vs_card"]
    print(f"ours_cb0 vs card: same verdict on {agree['same_verdict']}/{agree['streams_where_card_decides']} "
          f"streams where the card decides; card never decides on {agree['card_never_decides']}")

    from pipeline.io import write_json  # atomic write (conventions); imported late: the bench core is numpy only

    write_json(args.out, report)
    print(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
