"""Work units a machine cannot skew: what a decode did, counted in the decoder, not timed.

Wall time says how fast a machine was; these counts say how much work a stage
asked of it, so a sweep's cost compares across GPUs, CPUs and busy hosts. Each
stage reports its own (docs/orchestration.md, "Work units"):

- decoding (``eval_classes``, ``eval_narration``, ``eval_screen``): ``DecoderWork``,
  counted per turn in the decoder (``pipeline.batch_decode``) and on the stock
  ``generate_interleaved`` path (``pipeline.generation``);
- ``train``: trained tokens, real and padded (``real_tokens``, ``padded_tokens``);
- ``blip_codes`` and ``preprocess``: Mimi audio-seconds encoded (cache hits cost 0);
- ``tts``: audio-seconds synthesised (cache hits cost 0).

Torch-free, so the CPU stages and the sweep read and add these up without torch.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class DecoderWork:
    """The forward passes one or more decodes took.

    ``text_tokens``: backbone steps whose text head chose a token (the closing
    ``<|im_end|>`` included); ``audio_frames``: backbone steps that produced an
    audio frame (the end-of-audio frame included); ``depthformer_steps``: one per
    codebook of each audio frame; ``prefill_tokens``: prompt positions prefilled.
    ``decoder_items`` = text tokens + audio frames + depthformer steps, the
    decoding forward passes (prefill is counted apart: a screen and a full
    evaluation of the same rows prefill the same prompts).
    """

    text_tokens: int = 0
    audio_frames: int = 0
    depthformer_steps: int = 0
    prefill_tokens: int = 0

    @property
    def decoder_items(self) -> int:
        return self.text_tokens + self.audio_frames + self.depthformer_steps

    def __add__(self, other: "DecoderWork") -> "DecoderWork":
        return DecoderWork(self.text_tokens + other.text_tokens, self.audio_frames + other.audio_frames,
                           self.depthformer_steps + other.depthformer_steps, self.prefill_tokens + other.prefill_tokens)

    def to_json(self) -> dict[str, int]:
        return {**asdict(self), "decoder_items": self.decoder_items}

    @classmethod
    def from_json(cls, obj: dict[str, Any] | None) -> "DecoderWork | None":
        if not obj:
            return None
        return cls(int(obj["text_tokens"]), int(obj["audio_frames"]), int(obj["depthformer_steps"]),
                   int(obj.get("prefill_tokens", 0)))


def total(works) -> DecoderWork:
    """The sum of ``works`` (None entries, replies never decoded, count 0)."""
    out = DecoderWork()
    for work in works:
        if work is not None:
            out = out + work
    return out
