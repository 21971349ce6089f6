"""Coordinator demo: held-out turns through the real model and the coordinator, audio streamed to WAVs.

    python -m tasks.demo                   # 3 tool_match + 3 non_tool held-out turns
    python -m tasks.demo --max-new-tokens 48 --model-dir models/final

For each turn the model's ``generate_interleaved`` stream (``pipeline.generation``)
is tapped by ``coordinator.coordinator.Coordinator``: the moment the blip is detected in the
first audio frames the tool is dispatched ("early"), while the ack is still
being spoken; when the blip is missed the coordinator falls back to dispatching
at the end of the ack ("ack_end"), where the dispatcher reads the text channel
and calls the tool only if the reply is an acknowledgement (what v4 did for
every turn). Audio frames are decoded by Mimi as they arrive (streaming decode,
frame by frame) and appended in chunks to ``reports/demo/<turn>.wav``. The console
shows when the blip was detected and when the ack ended; the timeline plot
``reports/plots/demo_timeline.png`` puts dispatch against audio time. A model
folder trained with a capped text preamble (``interleave.json``) is decoded by
our greedy decoder, which stock cannot replace: each turn's stream is then
replayed once decoded, as with ``batch_size`` > 1.

With a random-init (smoke) model the blip is almost never emitted: every tool
turn then goes through the ack-end fallback, and the demo says so.
Settings come from the optional ``demo`` group of ``params.yaml`` (``DemoParams``); flags override.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from coordinator.constants import END_OF_AUDIO_CODE, MIMI_FRAME_SAMPLES, MIMI_FRAME_SECONDS, MIMI_SAMPLE_RATE, TEXT_END_TOKEN
from coordinator.coordinator import Coordinator, DispatchContext, Trigger
from coordinator.signature import BlipSignature, SignatureError
from coordinator.timeline import EventKind
from pipeline.artifacts import BLIP_CODES_NPY, BLIP_SIGNATURE_JSON, DEMO_DIR, DEMO_TIMELINE_PNG, FINAL_MODEL_DIR, TTS_CACHE_DIR, dataset_jsonl, tts_manifest
from pipeline.generation import GenerationParams, generate_replies, stream_reply
from pipeline.inference import Dtype, check_batch_size, load_model
from pipeline.params import PARAMS_FILE, StageError, field, parse_params, read_params_file, stage_main
from pipeline.records import read_rows
from pipeline.reply import decode_text
from pipeline.user_audio import ManifestAudio, MissingAudio


@dataclass(frozen=True, kw_only=True)
class DemoParams(GenerationParams):
    """The optional ``demo`` group of ``params.yaml``; every key is also a flag (``--max-new-tokens 48``)."""

    SECTION = "demo"
    model_dir: Path = FINAL_MODEL_DIR
    rows: Path = dataset_jsonl("heldout")
    tts_manifest: Path = tts_manifest("heldout")
    tts_cache_dir: Path = TTS_CACHE_DIR
    codes_npy: Path = BLIP_CODES_NPY
    signature_json: Path = BLIP_SIGNATURE_JSON
    out_dir: Path = DEMO_DIR
    plot: Path = DEMO_TIMELINE_PNG
    n_per_class: int = field(3, lo=1)
    chunk_frames: int = field(4, lo=1)
    tool_latency_s: float = field(0.3, lo=0)
    device: str = "auto"
    dtype: Dtype = "bfloat16"
    batch_size: int = field(1, lo=1)  # 1: each turn streamed live; >1: decoded together, then replayed

    def check(self) -> None:
        check_batch_size(self)


@dataclass
class DemoTurn:
    row_id: str
    row_class: str
    user: str
    text: str = ""
    wav_path: str = ""
    n_frames: int = 0
    audio_s: float = 0.0
    wall_s: float = 0.0
    detected_frame: int | None = None
    detected_wall_s: float | None = None
    ack_end_frame: int | None = None
    ack_end_wall_s: float | None = None
    ack_end_detail: str | None = None
    dispatch: str | None = None  # "early" | "ack_end" | None
    dispatch_frame: int | None = None
    dispatch_wall_s: float | None = None
    tool_result: Any = None
    events: list[dict] = dataclasses.field(default_factory=list)

    @property
    def dispatch_audio_s(self) -> float | None:
        return None if self.dispatch_frame is None else (self.dispatch_frame + (self.dispatch == "early")) * MIMI_FRAME_SECONDS

    @property
    def saved_s(self) -> float | None:
        """Audio time between the early dispatch and the end of the ack (what the blip buys)."""
        if self.dispatch != "early" or self.dispatch_audio_s is None:
            return None
        return self.audio_s - self.dispatch_audio_s


class WavStream:
    """Appends PCM chunks to a WAV that appears atomically when closed."""

    def __init__(self, path: Path, sample_rate: int = MIMI_SAMPLE_RATE) -> None:
        import soundfile

        from pipeline.io import atomic_path

        self.path = Path(path)
        self._ctx = atomic_path(self.path)
        tmp = self._ctx.__enter__()
        self._file = soundfile.SoundFile(tmp, "w", samplerate=sample_rate, channels=1, subtype="PCM_16", format="WAV")
        self.samples = 0

    def write(self, pcm: np.ndarray) -> None:
        pcm = np.clip(np.asarray(pcm, dtype=np.float32).reshape(-1), -1.0, 1.0)
        self._file.write(pcm)
        self.samples += pcm.size

    def close(self) -> None:
        self._file.close()
        self._ctx.__exit__(None, None, None)


class StreamingDecoder:
    """Mimi decode of each audio frame as it arrives (Mimi's streaming state kept), written in chunks.

    Frames are decoded one at a time, as liquid-audio's own demo does: on CUDA,
    Mimi's streaming decoder replays a CUDA graph that only accepts the shape
    it was captured with, so a trailing partial chunk of several frames would
    fail. The PCM is appended to the WAV every ``chunk_frames`` frames.
    """

    def __init__(self, mimi, sink: WavStream, chunk_frames: int) -> None:
        self.mimi = mimi
        self.sink = sink
        self.chunk = max(1, int(chunk_frames))
        self.pcm: list[np.ndarray] = []
        self._ctx = None
        self._device = None
        if mimi is not None:
            self._device = next(mimi.parameters()).device
            self._ctx = mimi.streaming(1)
            self._ctx.__enter__()

    def add(self, frame: np.ndarray) -> None:
        codes = np.asarray(frame, dtype=np.int64).reshape(1, -1, 1)  # (1, 8, 1)
        # Code 2048 (end of audio) is only legal in codebook 0, where generation stops; a model
        # can still sample it in a deeper codebook, which Mimi cannot decode: play silence then.
        if self.mimi is None or (codes >= END_OF_AUDIO_CODE).any():
            self.pcm.append(np.zeros(MIMI_FRAME_SAMPLES, dtype=np.float32))
        else:
            import torch

            with torch.no_grad():
                wave = self.mimi.decode(torch.as_tensor(codes, dtype=torch.long, device=self._device))
            self.pcm.append(wave.reshape(-1).float().cpu().numpy())
        if len(self.pcm) >= self.chunk:
            self.flush()

    def flush(self) -> None:
        if self.pcm:
            self.sink.write(np.concatenate(self.pcm))
            self.pcm = []

    def close(self) -> None:
        self.flush()
        if self._ctx is not None:
            self._ctx.__exit__(None, None, None)
        self.sink.close()


def make_dispatch(row, decode_text: Callable[[list[int]], str], latency_s: float):
    """The tool dispatcher: early -> call the tool; ack_end -> call it only if the text is an ack."""
    from pipeline.judge import cue_text, find_ack, find_refusal

    tool = row.tool_call.name if row.tool_call is not None else None

    async def dispatch(ctx: DispatchContext) -> dict:
        if ctx.trigger is Trigger.ACK_END:
            text = cue_text(decode_text(list(ctx.text_token_ids)))
            if not find_ack(text) or find_refusal(text):
                return {"called": False, "why": "ack-end fallback: the reply is not a tool acknowledgement"}
        if tool is None:
            return {"called": False, "why": "no tool requested in this turn"}
        await asyncio.sleep(latency_s)  # the tool's own latency
        return {"called": True, "tool": tool, "arguments": row.tool_call.arguments, "result": f"<{tool} result>"}

    return dispatch


def stream_turn(
    row,
    stream: Iterable[Any],
    signature: BlipSignature,
    mimi,
    wav_path: Path,
    decode_text: Callable[[list[int]], str],
    chunk_frames: int = 4,
    tool_latency_s: float = 0.3,
    say: Callable[[str], None] = print,
) -> DemoTurn:
    """Run one turn's item stream through the coordinator, decoding its audio to ``wav_path`` as it arrives."""
    turn = DemoTurn(row.id, row.row_class, row.user, wav_path=str(wav_path))
    decoder = StreamingDecoder(mimi, WavStream(wav_path), chunk_frames)
    text_ids: list[int] = []
    start = time.perf_counter()
    shown = 0
    with Coordinator(signature, None, make_dispatch(row, decode_text, tool_latency_s), fallback="ack_end") as coord:
        try:
            for item in coord.tap(stream):
                codes = np.asarray(item.detach().cpu().numpy() if hasattr(item, "detach") else item).reshape(-1)
                if codes.size == 1:
                    text_ids.append(int(codes[0]))
                elif int(codes[0]) != END_OF_AUDIO_CODE:
                    decoder.add(codes)
                    turn.n_frames += 1
                shown = _report_events(coord.last_turn.timeline.events, shown, turn, say)
        finally:
            decoder.close()
        _report_events(coord.last_turn.timeline.events, shown, turn, say)
        try:
            turn.tool_result = coord.last_turn.result(timeout=30)
        except Exception as err:  # noqa: BLE001 - the demo reports a failed tool instead of crashing
            turn.tool_result = {"called": False, "why": f"dispatch failed: {err!r}"}
        turn.events = coord.last_turn.timeline.to_records()
    turn.wall_s = time.perf_counter() - start
    turn.audio_s = turn.n_frames * MIMI_FRAME_SECONDS
    turn.text = decode_text([t for t in text_ids if t != TEXT_END_TOKEN])
    return turn


def _report_events(events: list, shown: int, turn: DemoTurn, say: Callable[[str], None]) -> int:
    for event in list(events)[shown:]:
        frame = event.frame_index
        audio_t = f"{(frame + 1) * MIMI_FRAME_SECONDS:.2f}s" if frame is not None else "?"
        if event.kind is EventKind.BLIP_DETECTED:
            turn.detected_frame, turn.detected_wall_s = frame, event.t_s
            say(f"  [{turn.row_id}] BLIP DETECTED at audio frame {frame} (audio {audio_t}, wall {event.t_s:.2f}s)")
        elif event.kind is EventKind.BLIP_MISSED:
            say(f"  [{turn.row_id}] blip missed at frame {frame} ({event.detail})")
        elif event.kind is EventKind.ACK_END:
            turn.ack_end_frame, turn.ack_end_wall_s, turn.ack_end_detail = frame, event.t_s, event.detail
            say(f"  [{turn.row_id}] ack ended after {frame} audio frames (audio {(frame or 0) * MIMI_FRAME_SECONDS:.2f}s, "
                f"wall {event.t_s:.2f}s, {event.detail})")
        elif event.kind is EventKind.DISPATCHED:
            turn.dispatch, turn.dispatch_frame, turn.dispatch_wall_s = event.detail, frame, event.t_s
            say(f"  [{turn.row_id}] DISPATCH ({event.detail}) at frame {frame}, wall {event.t_s:.2f}s")
    return len(events)


def plot_timeline(turns: list[DemoTurn], path: Path, note: str = "") -> None:
    """Per turn: the ack's audio span, blip detection, dispatch (early / ack-end) on audio and wall-clock time."""
    import matplotlib.pyplot as plt

    from pipeline.io import atomic_path

    fig = timeline_figure(turns, note)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def timeline_figure(turns: list[DemoTurn], note: str = ""):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Constrained layout keeps the title (above) and the legend (below, outside the axes) off the bars.
    fig, axes = plt.subplots(1, 2, figsize=(12, 2.2 + 0.6 * max(1, len(turns))), sharey=True, layout="constrained")
    colors = {"early": "tab:green", "ack_end": "tab:orange"}
    labels = [f"{t.row_class}: {t.user[:28]}" for t in turns]
    for y, t in enumerate(turns):
        axes[0].barh(y, t.audio_s, color="lightsteelblue", height=0.5)
        axes[1].barh(y, t.wall_s, color="lightgray", height=0.5)
        if t.detected_frame is not None:
            axes[0].plot((t.detected_frame + 1) * MIMI_FRAME_SECONDS, y, "k|", markersize=16)
            axes[1].plot(t.detected_wall_s, y, "k|", markersize=16)
        if t.dispatch:
            called = isinstance(t.tool_result, dict) and t.tool_result.get("called")
            marker = "o" if called else "x"
            axes[0].plot(t.dispatch_audio_s, y, marker, color=colors[t.dispatch], markersize=9)
            axes[1].plot(t.dispatch_wall_s, y, marker, color=colors[t.dispatch], markersize=9)
    axes[0].set_yticks(range(len(turns)), labels, fontsize=8)
    axes[0].invert_yaxis()
    axes[0].set_xlabel("audio time of the reply (s)")
    axes[1].set_xlabel("wall-clock time since generation started (s)")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="k", marker="|", linestyle="", markersize=12, label="blip detected"),
               Line2D([], [], color="tab:green", marker="o", linestyle="", label="early dispatch (tool called)"),
               Line2D([], [], color="tab:orange", marker="o", linestyle="", label="ack-end fallback (tool called)"),
               Line2D([], [], color="tab:orange", marker="x", linestyle="", label="ack-end fallback (not an ack: no call)")]
    fig.legend(handles=handles, fontsize=8, loc="outside lower center", ncol=len(handles), frameon=False)
    import textwrap

    wrapped = "\n".join(textwrap.wrap(note, 140)) if note else ""
    fig.suptitle("Coordinator demo: dispatch vs audio" + (f"\n{wrapped}" if wrapped else ""), fontsize=10)
    return fig


def pick_rows(rows: list, n_per_class: int, has_audio: Callable[[Any], bool]) -> list:
    picked = []
    for cls in ("tool_match", "non_tool"):
        picked += [r for r in rows if r.row_class == cls and has_audio(r)][:n_per_class]
    return picked


def run_demo(
    rows: list,
    signature: BlipSignature,
    streams: Callable[[Any], Iterable[Any]],
    mimi,
    decode_text: Callable[[list[int]], str],
    out_dir: Path,
    plot_path: Path,
    chunk_frames: int = 4,
    tool_latency_s: float = 0.3,
    note: str = "",
    say: Callable[[str], None] = print,
) -> list[DemoTurn]:
    """Stream every row's turn (``streams(row)`` gives its items) through the coordinator; plot the timeline."""
    turns = []
    for row in rows:
        say(f"[{row.id}] {row.row_class}: {row.user!r}")
        turn = stream_turn(row, streams(row), signature, mimi, Path(out_dir) / f"{row.id}.wav", decode_text,
                           chunk_frames, tool_latency_s, say)
        result = turn.tool_result or {}
        say(f"  [{row.id}] reply {turn.text[:70]!r}; {turn.audio_s:.2f}s of audio -> {turn.wav_path}; "
            f"tool: {'called ' + str(result.get('tool')) if result.get('called') else result.get('why', 'not dispatched')}")
        turns.append(turn)
    tool_turns = [t for t in turns if t.row_class == "tool_match"]
    early = [t for t in tool_turns if t.dispatch == "early"]
    fallback = [t for t in tool_turns if t.dispatch == "ack_end"]
    called = sum(bool(isinstance(t.tool_result, dict) and t.tool_result.get("called")) for t in fallback)
    summary = (f"{len(early)}/{len(tool_turns)} tool turns dispatched early on the blip, {len(fallback)} by the ack-end "
               f"fallback ({called} of them called the tool; the others' text was not an ack)")
    if tool_turns and not early:
        summary += " (no blip detected: expected with a random-init smoke model, which never learned to emit it)"
    saved = [t.saved_s for t in early if t.saved_s is not None]
    if saved:
        summary += f"; early dispatch came {np.mean(saved):.2f}s of audio before the ack ended, on average"
    false_early = [t for t in turns if t.row_class != "tool_match" and t.dispatch == "early"]
    if false_early:
        summary += f"; {len(false_early)} non-tool turn(s) dispatched early (false positive)"
    say(summary)
    plot_timeline(turns, Path(plot_path), note or summary)
    return turns


def _flag_type(hint: Any) -> type:
    """What argparse converts a flag to: ``int``/``float`` as annotated (``X | None`` -> X), else the string."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint if hint in (int, float) else str


def demo_params(argv: list[str] | None) -> DemoParams:
    """The ``demo`` group of ``params.yaml`` (when there is one), each key overridden by its flag."""
    raw = dict(read_params_file().get(DemoParams.SECTION) or {}) if PARAMS_FILE.exists() else {}
    parser = argparse.ArgumentParser(prog="python -m tasks.demo", description=__doc__.split("\n")[0])
    hints = typing.get_type_hints(DemoParams)
    for f in dataclasses.fields(DemoParams):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=_flag_type(hints[f.name]), default=argparse.SUPPRESS,
                            help=f"default {raw.get(f.name, f.default)}")
    raw.update(vars(parser.parse_args(argv)))
    return parse_params(DemoParams, raw)


def run_from_params(params: DemoParams) -> int:
    signature = BlipSignature.load(params.codes_npy, params.signature_json)
    rows = read_rows(params.rows).rows
    audio = ManifestAudio(params.tts_manifest, params.tts_cache_dir)
    lfm = load_model(params.model_dir, params.device, params.dtype)

    def has_audio(row) -> bool:
        try:
            audio.key_for(row)
            return True
        except MissingAudio:
            return False

    chosen = pick_rows(rows, params.n_per_class, has_audio)
    if not chosen:
        raise StageError("no tool_match or non_tool held-out row has user audio")
    generation = params.generation
    tokenizer = lfm.processor.text
    print(f"demo: {len(chosen)} turns, model {params.model_dir}, blip cb0 {signature.cb0_across_frames.tolist()}, "
          f"max_new_tokens {generation.max_new_tokens}")
    streams = lambda row: stream_reply(lfm, row, audio.audio_for(row), generation)  # noqa: E731 - live, row by row
    if params.batch_size > 1:  # decoded together (pipeline.batch_decode); the coordinator sees each stream replayed
        replies = generate_replies(lfm, [(row, audio.audio_for(row)) for row in chosen], generation, params.batch_size)
        by_id = {row.id: reply for row, reply in zip(chosen, replies)}
        streams = lambda row: by_id[row.id].items()  # noqa: E731
    run_demo(chosen, signature, streams, lfm.processor.mimi,
             lambda ids: decode_text(tokenizer, ids), params.out_dir, params.plot, params.chunk_frames,
             params.tool_latency_s)
    print(f"demo: WAVs in {params.out_dir}/, timeline {params.plot}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return stage_main("demo", lambda: run_from_params(demo_params(argv)), expected=(SignatureError,))


if __name__ == "__main__":
    sys.exit(main())
