"""Coordinator demo: turns through the real model and the coordinator, audio streamed to WAVs, what the blip saves.

    make demo PROFILE=learn                      # = python -m tasks.demo --workdir runs/learn
    python -m tasks.demo --workdir runs/smoke --max-new-tokens 48

For each turn the model's ``generate_interleaved`` stream (``pipeline.generation``)
is tapped by ``coordinator.coordinator.Coordinator``: the moment the blip is detected in the
first audio frames the tool is dispatched ("early"), while the ack is still
being spoken; when the blip is missed the coordinator falls back to dispatching
at the end of the ack ("ack_end"), where the dispatcher reads the text channel
and calls the tool only if the reply is an acknowledgement (what v4 did for
every turn). Audio frames are decoded by Mimi as they arrive (streaming decode,
frame by frame) and appended in chunks to ``reports/demo/<turn>.wav``. The console
shows when the blip was detected and when the ack ended; the timeline plot
``reports/plots/demo_timeline.png`` puts, per turn, the dispatch, the ack's end and
when the tool's result is ready (``tool_latency_s`` after dispatch) with the blip and
without it, in audio time and wall time; ``reports/demo/summary.json`` counts the
dispatches and gives the mean saving. A model folder trained with a capped text
preamble (``interleave.json``) is decoded by our greedy decoder, which stock cannot
replace: each turn's stream is then replayed once decoded, as with ``batch_size`` > 1.

Which rows, and why, is the workspace's ``demo`` params group: production demos held-out
rows; the learn profile the rows its tiny model was fitted on (``demo.rows``, as its
eval_classes); the smoke profile's caption says its random-init model emits no blip.
Paths are relative to ``--workdir`` (default: the current directory); flags override params.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
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

TOOL_CLASS = "tool_match"
NEGATIVE_CLASSES = ("tool_miss", "non_tool")  # turns that must not dispatch a tool
DEMO_CLASSES = (TOOL_CLASS, *NEGATIVE_CLASSES)
Clock = typing.Literal["audio", "wall"]
CLOCKS: tuple[Clock, ...] = ("audio", "wall")
SUMMARY_NAME = "summary.json"  # in ``out_dir``


@dataclass(frozen=True, kw_only=True)
class DemoParams(GenerationParams):
    """The optional ``demo`` group of ``params.yaml``; every key is also a flag (``--max-new-tokens 48``)."""

    SECTION = "demo"
    model_dir: Path = FINAL_MODEL_DIR
    rows: Path = dataset_jsonl("heldout")
    caption: str = "held-out rows, never trained on: what a user of this model would see"  # which rows, and why
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
        """Audio time of the dispatch: the end of the frame that completed the blip, or the ack's end."""
        return None if self.dispatch_frame is None else (self.dispatch_frame + (self.dispatch == "early")) * MIMI_FRAME_SECONDS

    @property
    def ack_end_audio_s(self) -> float | None:
        """Audio time at which the ack ended (the ack-end event's frame index counts the frames before it)."""
        return None if self.ack_end_frame is None else self.ack_end_frame * MIMI_FRAME_SECONDS

    @property
    def tool_dispatched(self) -> bool:
        """Whether the dispatcher acted: the blip fired, or the ack-end fallback found an acknowledgement."""
        return isinstance(self.tool_result, dict) and bool(self.tool_result.get("dispatched"))

    def saving_s(self, clock: Clock) -> float | None:
        """How much sooner the tool's result is ready thanks to the blip, on ``clock``.

        Early: the ack's end minus the dispatch (without the blip the tool would start at the ack's end;
        its latency is the same either way). A fallback dispatch saves nothing: 0. Undispatched: None.
        """
        if not self.tool_dispatched:
            return None
        if self.dispatch != "early":
            return 0.0
        dispatch, ack_end = self.moment(clock, "dispatch"), self.moment(clock, "ack_end")
        return None if dispatch is None or ack_end is None else ack_end - dispatch

    def moment(self, clock: Clock, what: str) -> float | None:
        """``dispatch`` or ``ack_end`` in audio seconds (playback) or wall seconds (since generation started)."""
        if clock == "audio":
            return self.dispatch_audio_s if what == "dispatch" else self.ack_end_audio_s
        return self.dispatch_wall_s if what == "dispatch" else self.ack_end_wall_s

    def result_ready(self, clock: Clock, latency_s: float) -> tuple[float | None, float | None]:
        """(with the blip, without it): when the tool's result is ready, ``latency_s`` after its dispatch.

        Without the blip the tool starts at the ack's end (the v4 behaviour); with it, at the dispatch
        that actually happened (the ack's end too, when the blip was missed).
        """
        if not self.tool_dispatched:
            return None, None
        dispatch, ack_end = self.moment(clock, "dispatch"), self.moment(clock, "ack_end")
        return (None if dispatch is None else dispatch + latency_s,
                None if ack_end is None else ack_end + latency_s)


@dataclass(frozen=True)
class DemoSummary:
    """What ``reports/demo/summary.json`` holds: the dispatch counts and what the blip saved."""

    rows: str
    caption: str
    tool_latency_s: float
    tool_turns: int  # tool_match turns
    early_dispatch: int  # tool turns dispatched on the blip
    fallback_dispatch: int  # tool turns whose tool the ack-end fallback called
    undispatched_tool_turns: int  # tool turns whose tool was never called (blip missed, reply not an ack)
    negative_turns: int  # non_tool and tool_miss turns
    false_dispatch: int  # negative turns the dispatcher acted on (blip fired, or the fallback saw an ack)
    mean_saving_audio_s: float | None  # mean over dispatched tool turns (fallback turns save 0)
    mean_saving_wall_s: float | None
    turns: tuple[dict, ...]

    def to_json(self) -> dict:
        return dataclasses.asdict(self) | {"turns": list(self.turns)}

    def line(self) -> str:
        text = (f"{self.early_dispatch}/{self.tool_turns} tool turns dispatched early on the blip, "
                f"{self.fallback_dispatch} by the ack-end fallback, {self.undispatched_tool_turns} not at all; "
                f"{self.false_dispatch}/{self.negative_turns} non-tool turns dispatched")
        if self.tool_turns and not self.early_dispatch:
            text += "; no blip on any tool turn, so nothing is saved"
        if self.early_dispatch and self.mean_saving_audio_s is not None:
            text += (f"; the tool's result is ready {self.mean_saving_audio_s:.2f}s of audio "
                     f"({self.mean_saving_wall_s:.2f}s wall) sooner on average")
        return text


def summarize(turns: list[DemoTurn], rows: str, caption: str, tool_latency_s: float) -> DemoSummary:
    tool_turns = [t for t in turns if t.row_class == TOOL_CLASS]
    negatives = [t for t in turns if t.row_class in NEGATIVE_CLASSES]

    def mean(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return float(np.mean(known)) if known else None

    records = []
    for t in turns:
        record = {"id": t.row_id, "class": t.row_class, "dispatch": t.dispatch, "tool_dispatched": t.tool_dispatched,
                  "audio_s": t.audio_s, "wall_s": t.wall_s}
        for clock in CLOCKS:
            with_blip, without_blip = t.result_ready(clock, tool_latency_s)
            record[clock] = {"dispatch_s": t.moment(clock, "dispatch"), "ack_end_s": t.moment(clock, "ack_end"),
                             "result_ready_with_blip_s": with_blip, "result_ready_without_blip_s": without_blip,
                             "saving_s": t.saving_s(clock)}
        records.append(record)
    return DemoSummary(
        rows=rows, caption=caption, tool_latency_s=tool_latency_s,
        tool_turns=len(tool_turns),
        early_dispatch=sum(t.dispatch == "early" for t in tool_turns),
        fallback_dispatch=sum(t.dispatch == "ack_end" and t.tool_dispatched for t in tool_turns),
        undispatched_tool_turns=sum(not t.tool_dispatched for t in tool_turns),
        negative_turns=len(negatives),
        false_dispatch=sum(t.tool_dispatched for t in negatives),
        mean_saving_audio_s=mean([t.saving_s("audio") for t in tool_turns]),
        mean_saving_wall_s=mean([t.saving_s("wall") for t in tool_turns]),
        turns=tuple(records),
    )


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
                return {"dispatched": False, "called": False,
                        "why": "ack-end fallback: the reply is not a tool acknowledgement"}
        if tool is None:  # a serving loop would call whatever the reply names: a false dispatch
            return {"dispatched": True, "called": False, "why": "false dispatch: no tool requested in this turn"}
        await asyncio.sleep(latency_s)  # the tool's own latency
        return {"dispatched": True, "called": True, "tool": tool, "arguments": row.tool_call.arguments,
                "result": f"<{tool} result>"}

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


def plot_timeline(turns: list[DemoTurn], path: Path, note: str = "", tool_latency_s: float = 0.3) -> None:
    """Write ``timeline_figure`` to ``path`` (atomically)."""
    import matplotlib.pyplot as plt

    from pipeline.io import atomic_path

    fig = timeline_figure(turns, note, tool_latency_s)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


EARLY_COLOR, FALLBACK_COLOR, FALSE_COLOR, WITHOUT_COLOR = "tab:green", "tab:orange", "tab:red", "dimgray"


def timeline_figure(turns: list[DemoTurn], note: str = "", tool_latency_s: float = 0.3):
    """Per turn, in audio time (left) and wall time (right): the reply, the dispatch, the ack's end, and when
    the tool's result is ready with the blip (dispatched at detection) and without (dispatched at the ack's end);
    the green span between the two is what the blip saves."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    # Constrained layout keeps the title (above) and the legend (below, outside the axes) off the bars.
    fig, axes = plt.subplots(1, 2, figsize=(13, 2.9 + 0.55 * max(1, len(turns))), sharey=True, layout="constrained")
    spans = {"audio": lambda t: t.audio_s, "wall": lambda t: t.wall_s}
    for ax, clock in zip(axes, CLOCKS):
        for y, t in enumerate(turns):
            ax.barh(y, spans[clock](t), color="lightsteelblue" if clock == "audio" else "lightgray", height=0.5)
            ack_end = t.moment(clock, "ack_end")
            if ack_end is not None:
                ax.plot(ack_end, y, "k|", markersize=18, markeredgewidth=2)
            if not t.dispatch:
                continue
            with_blip, without_blip = t.result_ready(clock, tool_latency_s)
            negative = t.row_class != TOOL_CLASS
            if t.tool_dispatched and not negative:
                ax.plot(without_blip, y, "D", color=WITHOUT_COLOR, markersize=6, markerfacecolor="none")
                ax.plot(with_blip, y, "D", color=EARLY_COLOR if t.dispatch == "early" else FALLBACK_COLOR, markersize=6)
                saving = t.saving_s(clock)
                if t.dispatch == "early" and saving:
                    ax.plot([with_blip, without_blip], [y + 0.32] * 2, color=EARLY_COLOR, linewidth=3,
                            solid_capstyle="butt")
                    ax.annotate(f"{saving:.2f}s sooner", ((with_blip + without_blip) / 2, y + 0.32),
                                xytext=(0, -9), textcoords="offset points", ha="center", va="bottom",
                                fontsize=7, color="darkgreen")
            color = FALSE_COLOR if negative and t.tool_dispatched else (
                EARLY_COLOR if t.dispatch == "early" else FALLBACK_COLOR)
            ax.plot(t.moment(clock, "dispatch"), y, "o" if t.tool_dispatched else "x", color=color, markersize=9)
        ax.grid(axis="x", alpha=0.3)
    labels = [f"{t.row_class}: {t.user[:30]}" for t in turns]
    axes[0].set_yticks(range(len(turns)), labels, fontsize=8)
    axes[0].set_ylim(len(turns) - 0.4, -0.7)  # first turn on top, room for the saving span above each bar
    axes[0].set_xlabel("audio time of the reply, as played (s)")
    axes[1].set_xlabel("wall-clock time since generation started (s)")
    axes[0].set_title("audio time", fontsize=9)
    axes[1].set_title("wall time", fontsize=9)
    handles = [Patch(color="lightsteelblue", label="reply audio"),
               Patch(color="lightgray", label="generation (wall)"),
               Line2D([], [], color="k", marker="|", linestyle="", markersize=12, markeredgewidth=2, label="ack ends"),
               Line2D([], [], color=EARLY_COLOR, marker="o", linestyle="", label="dispatch on the blip (early)"),
               Line2D([], [], color=FALLBACK_COLOR, marker="o", linestyle="", label="dispatch at the ack's end (fallback)"),
               Line2D([], [], color=FALLBACK_COLOR, marker="x", linestyle="", label="fallback: not an ack, no call"),
               Line2D([], [], color=FALSE_COLOR, marker="o", linestyle="", label="false dispatch (non-tool turn)"),
               Line2D([], [], color=EARLY_COLOR, marker="D", linestyle="", label=f"result ready (+{tool_latency_s:g}s tool)"),
               Line2D([], [], color=WITHOUT_COLOR, marker="D", markerfacecolor="none", linestyle="",
                      label="result ready without the blip"),
               Line2D([], [], color=EARLY_COLOR, linewidth=3, label="what the blip saves")]
    fig.legend(handles=handles, fontsize=8, loc="outside lower center", ncol=5, frameon=False)
    wrapped = "\n".join(textwrap.fill(part, 190) for part in note.split("\n")) if note else ""
    fig.suptitle("Coordinator demo: what the blip buys" + (f"\n{wrapped}" if wrapped else ""), fontsize=10)
    return fig


def pick_rows(rows: list, n_per_class: int, has_audio: Callable[[Any], bool]) -> list:
    """The first ``n_per_class`` rows with user audio of each demo class (tool turns first)."""
    picked = []
    for cls in DEMO_CLASSES:
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
    rows_label: str = "",
    caption: str = "",
    say: Callable[[str], None] = print,
) -> list[DemoTurn]:
    """Stream every row's turn (``streams(row)`` gives its items) through the coordinator; write
    ``out_dir/summary.json`` and the timeline plot; the last line said is the summary."""
    from pipeline.io import write_json

    turns = []
    for row in rows:
        say(f"[{row.id}] {row.row_class}: {row.user!r}")
        turn = stream_turn(row, streams(row), signature, mimi, Path(out_dir) / f"{row.id}.wav", decode_text,
                           chunk_frames, tool_latency_s, say)
        result = turn.tool_result or {}
        say(f"  [{row.id}] reply {turn.text[:70]!r}; {turn.audio_s:.2f}s of audio -> {turn.wav_path}; "
            f"tool: {'called ' + str(result.get('tool')) if result.get('called') else result.get('why', 'not dispatched')}")
        turns.append(turn)
    summary = summarize(turns, rows_label, caption, tool_latency_s)
    write_json(Path(out_dir) / SUMMARY_NAME, summary.to_json())
    rows_line = f"Rows: {rows_label}" + (f" ({caption})" if caption else "") if rows_label or caption else ""
    plot_timeline(turns, Path(plot_path), "\n".join(filter(None, [summary.line(), rows_line])), tool_latency_s)
    if rows_line:
        say(rows_line)
    say(summary.line())
    return turns


def _flag_type(hint: Any) -> type:
    """What argparse converts a flag to: ``int``/``float`` as annotated (``X | None`` -> X), else the string."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint if hint in (int, float) else str


def demo_parser() -> argparse.ArgumentParser:
    """``--workdir`` plus one flag per ``DemoParams`` key (a flag overrides the workspace's params.yaml)."""
    parser = argparse.ArgumentParser(prog="python -m tasks.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=None,
                        help="the workspace (runs/<profile>, or the repo for v4.1); default: the current directory")
    hints = typing.get_type_hints(DemoParams)
    for f in dataclasses.fields(DemoParams):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=_flag_type(hints[f.name]), default=argparse.SUPPRESS,
                            help=f"default: params.yaml's {DemoParams.SECTION}.{f.name}, else {f.default}")
    return parser


def demo_params(overrides: dict[str, Any]) -> DemoParams:
    """The ``demo`` group of ``params.yaml`` in the current directory (when there is one), overridden by flags."""
    raw = dict(read_params_file().get(DemoParams.SECTION) or {}) if PARAMS_FILE.exists() else {}
    raw.update(overrides)
    return parse_params(DemoParams, raw)


def required_inputs(params: DemoParams) -> list[Path]:
    """What the demo reads, in the order it reads it (a missing one is named first)."""
    return [params.codes_npy, params.signature_json, params.rows, params.tts_manifest, params.tts_cache_dir,
            params.model_dir]


def workspace_hint(cwd: Path, workdir: Path | None) -> str:
    """The command that makes (or demos) a workspace: for ``runs/<profile>`` that profile, else learn's."""
    if workdir is None:
        made = [p for p in ("learn", "smoke") if (cwd / "runs" / p / "models" / "final").is_dir()]
        if made:
            return f"the workspaces are under runs/: run `make demo PROFILE={made[0]}`"
        return "make a workspace with `make run PROFILE=learn`, then run `make demo PROFILE=learn`"
    resolved = (cwd / workdir).resolve()
    profile = resolved.name if resolved.parent.name == "runs" else "learn"
    return f"make it with `make run PROFILE={profile}`, then run `make demo PROFILE={profile}`"


def run_in_workspace(args: argparse.Namespace) -> int:
    """Read and write relative to ``--workdir``; no pipeline outputs there is one line naming the command to run."""
    overrides = {k: v for k, v in vars(args).items() if k != "workdir"}
    cwd = Path.cwd()
    where = "here" if args.workdir is None else str(args.workdir)
    root = cwd if args.workdir is None else cwd / args.workdir
    if not root.is_dir():
        raise StageError(f"--workdir {args.workdir}: no such directory: {workspace_hint(cwd, args.workdir)}")
    with contextlib.chdir(root):
        params = demo_params(overrides)
        missing = [p for p in required_inputs(params) if not p.exists()]
        if missing and len(missing) == len(required_inputs(params)):
            raise StageError(f"no pipeline outputs {'in ' + where if args.workdir else where} "
                             f"({missing[0]} not found): {workspace_hint(cwd, args.workdir)}")
        if missing:
            raise StageError(f"{missing[0] if args.workdir is None else args.workdir / missing[0]}: not found "
                             f"(the pipeline has not made it: {workspace_hint(cwd, args.workdir)})")
        return run_from_params(params)


def run_from_params(params: DemoParams) -> int:
    signature = BlipSignature.load(params.codes_npy, params.signature_json)
    rows = read_rows(params.rows).rows
    audio = ManifestAudio(params.tts_manifest, params.tts_cache_dir)

    def has_audio(row) -> bool:
        try:
            audio.key_for(row)
            return True
        except MissingAudio:
            return False

    chosen = pick_rows(rows, params.n_per_class, has_audio)
    if not chosen:
        raise StageError(f"{params.rows}: no {', '.join(DEMO_CLASSES)} row has user audio in {params.tts_manifest}")
    lfm = load_model(params.model_dir, params.device, params.dtype)
    generation = params.generation
    tokenizer = lfm.processor.text
    print(f"demo: {len(chosen)} turns from {params.rows} ({params.caption}), model {params.model_dir}, "
          f"blip cb0 {signature.cb0_across_frames.tolist()}, max_new_tokens {generation.max_new_tokens}")
    streams = lambda row: stream_reply(lfm, row, audio.audio_for(row), generation)  # noqa: E731 - live, row by row
    if params.batch_size > 1:  # decoded together (pipeline.batch_decode); the coordinator sees each stream replayed
        replies = generate_replies(lfm, [(row, audio.audio_for(row)) for row in chosen], generation, params.batch_size)
        by_id = {row.id: reply for row, reply in zip(chosen, replies)}
        streams = lambda row: by_id[row.id].items()  # noqa: E731
    run_demo(chosen, signature, streams, lfm.processor.mimi,
             lambda ids: decode_text(tokenizer, ids), params.out_dir, params.plot, params.chunk_frames,
             params.tool_latency_s, rows_label=str(params.rows), caption=params.caption)
    print(f"demo: WAVs and {SUMMARY_NAME} in {params.out_dir}/, timeline {params.plot}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = demo_parser().parse_args(argv)
    return stage_main("demo", lambda: run_in_workspace(args), expected=(SignatureError,))


if __name__ == "__main__":
    sys.exit(main())
