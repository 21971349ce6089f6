"""Spec: the Reply record loads without torch, and a collected stream replays exactly as it was generated."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from coordinator.constants import END_OF_AUDIO_CODE, IM_END_TOKEN, TEXT_END_TOKEN
from tests.support.scripted import Opening, audio_frames, card_like_blip_codes, interleave
from coordinator.signature import BlipSignature
from pipeline.reply import Reply, ReplyCollector

REPO = Path(__file__).resolve().parents[2]

PROBE = r"""
import sys
for blocked in ("torch", "torchaudio", "liquid_audio", "transformers"):
    sys.modules[blocked] = None  # any import of these now raises ImportError
import pipeline.reply
import tasks.eval_blip
print("ok")
"""


def test_reply_and_the_eval_blip_stage_import_without_torch():
    """eval_blip is a CPU stage scoring stored replies: it must not pull torch in."""
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "ok"


def scripted_stream() -> list[np.ndarray]:
    """Text and audio interleaved as liquid-audio yields them: <|text_end|>, the end-of-audio frame, no <|im_end|>."""
    signature = BlipSignature.from_codes(card_like_blip_codes())
    frames = audio_frames(signature, Opening.BLIP_CB0, 14, np.random.default_rng(0))
    return interleave([300 + i for i in range(8)], frames, im_end=False)


def test_a_collected_stream_replays_item_for_item(tiny_lfm):
    stream = scripted_stream()
    collector = ReplyCollector(tiny_lfm.processor.text)
    for item in stream:
        collector.add(item)
    reply = collector.reply("im_end", seconds=0.5)
    assert reply.end_of_audio and reply.n_audio_frames == 14
    assert stream[-1][0] == END_OF_AUDIO_CODE and reply.layout == [["t", 6], ["a", 12], ["t", 3], ["a", 3]]
    assert reply.text_tokens == [int(i[0]) for i in stream if i.size == 1] and TEXT_END_TOKEN in reply.text_tokens
    back = Reply.from_json(json.loads(json.dumps(reply.to_json())))
    replayed = list(back.items())
    assert len(replayed) == len(stream) + 1 and replayed[-1].tolist() == [IM_END_TOKEN]
    assert all(np.array_equal(a, b) for a, b in zip(replayed, stream))


def test_a_record_with_the_wrong_codebook_count_is_refused_naming_where():
    record = {"text": "", "text_tokens": [], "audio_codes": np.zeros((4, 3), dtype=int).tolist(),
              "end_of_audio": False, "finish_reason": "im_end", "layout": []}
    with pytest.raises(ValueError, match=r"eval_classes.jsonl:7: not a valid reply record \(audio_codes must be \(8, T\)"):
        Reply.from_json(record, "eval_classes.jsonl:7")
