"""A batched greedy decoder for liquid-audio's interleaved schedule: many chats through the model at once.

Stock ``generate_interleaved`` decodes one chat at a time. This decoder keeps
up to ``batch_size`` chats in flight and reproduces, per chat, exactly the
stock loop (same state machine, same greedy choices):

- **prefill per row**: each chat's prompt goes through the stock backbone call
  (``model.lfm(inputs_embeds, use_cache=True)``, batch 1), so the first token
  and the cache are exactly stock's; the per-row caches are then stacked.
  Left padding is avoided on purpose: the short-conv layers would carry pad
  states into the real tokens.
- **batched decode steps**: one backbone step for every row in flight, over the
  backbone's own modules (``decode_step``): the conv layers update a stacked
  (B, hidden, L_cache) state; the attention layers write each row's key/value
  at that row's own position of a stacked, right-padded cache and mask what lies
  past it, with each row's own rotary position -- so no row sees another's pad.
- **per-row modality**: rows in text mode take the text head's argmax; rows in
  audio mode go through the depthformer together (8 codebook steps, batched).
- **per-row stop**: a row leaves on ``<|im_end|>`` or after ``max_new_tokens``
  steps, and the next waiting chat is prefilled into its place (continuous
  batching), so one long reply does not hold a whole batch.

The interleave schedule is a parameter (``pipeline.interleave.Schedule``):
``first_text`` text tokens, then ``n_audio`` audio frames and ``n_text`` text
tokens alternating; the default is the model's own (first chunk =
``interleaved_n_text``), which is stock ``generate_interleaved``. Callers pass
the schedule the model folder records (``LoadedLFM.schedule``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch.nn import functional as F

from coordinator.constants import END_OF_AUDIO_CODE, IM_END_TOKEN, TEXT_END_TOKEN
from pipeline.interleave import AUDIO, TEXT, Schedule
from pipeline.work_units import DecoderWork

#: ``until`` of ``decode_chats``: called with each item a chat's decode yields; True = that chat has decoded enough.
Until = Callable[[torch.Tensor], bool]


@dataclass
class RowDecode:
    """One chat's decode: its items as stock yields them (CPU tensors), why it stopped, and its wall time."""

    items: list[torch.Tensor] = field(default_factory=list)
    finish_reason: str = ""  # "im_end" | "max_new_tokens" | "stopped" (the caller's ``until`` said enough)
    seconds: float = 0.0
    # work units (pipeline.work_units.DecoderWork), counted as the steps are taken
    text_tokens: int = 0  # text-head choices, <|im_end|> included
    audio_frames: int = 0  # audio frames, the end-of-audio frame included
    depthformer_steps: int = 0  # one per codebook of each audio frame
    prefill_tokens: int = 0

    @property
    def work(self) -> DecoderWork:
        return DecoderWork(self.text_tokens, self.audio_frames, self.depthformer_steps, self.prefill_tokens)


@dataclass
class _Row:
    """The stock loop's per-row state: modality, what is left of the chunk, text done, steps taken."""

    index: int
    out: RowDecode
    started: float
    until: Until | None = None
    modality: str = TEXT
    left: int = 0
    text_done: bool = False
    steps: int = 0


@dataclass
class DecodeCache:
    """The backbone cache of the rows in flight, stacked on dim 0.

    ``conv[i]``: (B, hidden, L_cache) for conv layer i; ``keys[i]``/``values[i]``:
    (B, kv_heads, capacity, head_dim) for attention layer i, row b valid up to
    ``lengths[b]`` (exclusive); ``lengths`` is also each row's next position.
    """

    conv: dict[int, torch.Tensor]
    keys: dict[int, torch.Tensor]
    values: dict[int, torch.Tensor]
    lengths: torch.Tensor

    @classmethod
    def from_prefill(cls, cache, n_layers: int, attention: set[int], capacity: int) -> "DecodeCache":
        """One row's stock ``DynamicCache`` (after prefill) as a batch-1 ``DecodeCache`` with room to grow."""
        conv, keys, values = {}, {}, {}
        length = 0
        for i in range(n_layers):
            layer = cache.layers[i]
            if i in attention:
                k, v = layer.keys, layer.values
                length = k.shape[2]
                keys[i] = k.new_zeros((1, k.shape[1], capacity, k.shape[3]))
                values[i] = v.new_zeros((1, v.shape[1], capacity, v.shape[3]))
                keys[i][:, :, :length] = k
                values[i][:, :, :length] = v
            else:
                conv[i] = layer.conv_states[0].clone()
        device = next(iter((keys or conv).values())).device
        return cls(conv, keys, values, torch.tensor([length], dtype=torch.long, device=device))

    def take(self, rows: torch.Tensor) -> "DecodeCache":
        """The cache of ``rows`` only (in that order)."""
        return DecodeCache({i: t[rows] for i, t in self.conv.items()}, {i: t[rows] for i, t in self.keys.items()},
                           {i: t[rows] for i, t in self.values.items()}, self.lengths[rows])

    def join(self, other: "DecodeCache") -> "DecodeCache":
        """This batch with ``other``'s rows appended."""
        return DecodeCache({i: torch.cat([t, other.conv[i]]) for i, t in self.conv.items()},
                           {i: torch.cat([t, other.keys[i]]) for i, t in self.keys.items()},
                           {i: torch.cat([t, other.values[i]]) for i, t in self.values.items()},
                           torch.cat([self.lengths, other.lengths]))


# --------------------------------------------------------------------------- the backbone step

def _attention_step(attn, hidden: torch.Tensor, cos, sin, keys, values, positions) -> torch.Tensor:
    """Lfm2Attention for one new token per row, each at its own position of the stacked cache."""
    from transformers.models.lfm2.modeling_lfm2 import apply_rotary_pos_emb

    batch = hidden.shape[0]
    shape = (batch, 1, -1, attn.head_dim)
    query = attn.q_layernorm(attn.q_proj(hidden).view(shape)).transpose(1, 2)
    key = attn.k_layernorm(attn.k_proj(hidden).view(shape)).transpose(1, 2)
    value = attn.v_proj(hidden).view(shape).transpose(1, 2)
    query, key = apply_rotary_pos_emb(query, key, cos, sin)
    rows = torch.arange(batch, device=hidden.device)
    keys[rows, :, positions] = key[:, :, 0]
    values[rows, :, positions] = value[:, :, 0]
    span = int(positions.max()) + 1
    visible = torch.arange(span, device=hidden.device)[None, :] <= positions[:, None]
    out = F.scaled_dot_product_attention(query, keys[:, :, :span], values[:, :, :span],
                                         attn_mask=visible[:, None, None, :], scale=attn.scaling,
                                         enable_gqa=attn.num_key_value_groups > 1)
    return attn.out_proj(out.transpose(1, 2).reshape(batch, 1, -1))


def _conv_step(conv, hidden: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """Lfm2ShortConv for one new token per row; ``state`` (B, hidden, L_cache) is updated in place."""
    from transformers.models.lfm2.modeling_lfm2 import causal_conv1d_update

    gate_in, gate_out, x = conv.in_proj(hidden).transpose(-1, -2).chunk(3, dim=-2)
    mixed = causal_conv1d_update(gate_in * x, state, conv.conv.weight.squeeze(1), conv.conv.bias)
    return conv.out_proj((gate_out * mixed).transpose(-1, -2).contiguous())


def decode_step(lfm, inputs: torch.Tensor, cache: DecodeCache) -> torch.Tensor:
    """One backbone step: ``inputs`` (B, 1, hidden), one token per row -> last hidden states (B, hidden).

    The same modules and order as ``Lfm2Model.forward``; the cache grows by one position per row.
    """
    positions = cache.lengths
    cos, sin = lfm.rotary_emb(inputs, position_ids=positions[:, None])
    x = inputs
    for i, layer in enumerate(lfm.layers[: lfm.config.num_hidden_layers]):
        normed = layer.operator_norm(x)
        if layer.is_attention_layer:
            mixed = _attention_step(layer.self_attn, normed, cos, sin, cache.keys[i], cache.values[i], positions)
        else:
            mixed = _conv_step(layer.conv, normed, cache.conv[i])
        x = mixed + x
        x = x + layer.feed_forward(layer.ffn_norm(x))
    cache.lengths = positions + 1
    return lfm.embedding_norm(x)[:, -1]


# --------------------------------------------------------------------------- the heads

def text_tokens(model, hidden: torch.Tensor) -> torch.Tensor:
    """Greedy text token per row: (B, hidden) -> (B,)."""
    return F.linear(hidden, model.lfm.embed_tokens.weight).argmax(-1)


def audio_frames(model, hidden: torch.Tensor) -> torch.Tensor:
    """Greedy audio frame per row through the depthformer, all rows together: (B, hidden) -> (B, codebooks)."""
    batch = hidden.shape[0]
    depth_in = model.depth_linear(hidden).reshape(batch, model.codebooks, model.depthformer_dim)
    previous = torch.zeros_like(depth_in[:, 0])
    cache = None
    codes = []
    for i in range(model.codebooks):
        out, cache = model.depthformer.forward_cached((depth_in[:, i] + previous)[:, None, :], cache)
        code = model.depth_embeddings[i].get_logits(out[:, 0]).argmax(-1)
        codes.append(code)
        previous = model.depth_embeddings[i](code)
    return torch.stack(codes, dim=1)


# --------------------------------------------------------------------------- the loop

def prompt_positions(chat) -> int:
    """Positions of an open chat's prompt (what prefill runs over): its modality flags, one per position."""
    return int(chat["modality_flag"].shape[1])


def _advance(model, schedule: Schedule, rows: list[_Row], hidden: torch.Tensor) -> torch.Tensor:
    """Pick each row's next item from its hidden state (stock's state machine) -> next input embeddings (B, 1, D).

    A row that stops is marked with a finish reason; its input row is unused. Each
    step is counted on the row's ``RowDecode`` (text token, or audio frame and its
    depthformer steps).
    """
    inputs = hidden.new_zeros((len(rows), 1, hidden.shape[-1]))
    text_at = [n for n, r in enumerate(rows) if r.modality == TEXT]
    audio_at = [n for n, r in enumerate(rows) if r.modality == AUDIO]
    for r in rows:
        r.steps += 1
        r.left -= 1
    if text_at:
        tokens = text_tokens(model, hidden[text_at])
        embedded = model.lfm.embed_tokens(tokens)
        for k, n in enumerate(text_at):
            row, token = rows[n], int(tokens[k])
            row.out.text_tokens += 1
            if token == IM_END_TOKEN:
                row.out.finish_reason = "im_end"
                continue
            row.out.items.append(tokens[k : k + 1].cpu())
            if row.until is not None and row.until(row.out.items[-1]):
                row.out.finish_reason = "stopped"
            if token == TEXT_END_TOKEN:
                row.text_done = True
            if not row.left or row.text_done:
                row.modality, row.left = AUDIO, schedule.n_audio
            inputs[n, 0] = embedded[k]
    if audio_at:
        frames = audio_frames(model, hidden[audio_at])
        for k, n in enumerate(audio_at):
            row = rows[n]
            if not row.left and not row.text_done:
                row.modality, row.left = TEXT, schedule.n_text
            if int(frames[k, 0]) == END_OF_AUDIO_CODE:
                frames[k] = END_OF_AUDIO_CODE
                row.modality = TEXT
            row.out.items.append(frames[k].cpu())
            row.out.audio_frames += 1
            row.out.depthformer_steps += model.codebooks
            if row.until is not None and row.until(row.out.items[-1]):
                row.out.finish_reason = "stopped"
        embedded = model.audio_embedding(frames + model.codebook_offsets).sum(1)
        inputs[audio_at, 0] = embedded.to(inputs.dtype)
    return inputs


def decode_chats(lfm, chats: Sequence[Any], max_new_tokens: int, batch_size: int = 8,
                 schedule: Schedule | None = None, until: Sequence[Until] | None = None) -> list[RowDecode]:
    """Greedy interleaved decode of every chat (a liquid-audio ``ChatState`` whose assistant turn is open).

    Returns, per chat in order, the items stock ``generate_interleaved`` would
    yield (text tokens as shape [1], audio frames as shape [8], on the CPU) and
    the work it took. ``until[i]``, if given, sees each item of chat i as it is
    decoded; once it returns True the chat stops there (``finish_reason``
    "stopped") and frees its place: the screening tier (``pipeline.screen``)
    decodes only the opening of each reply this way.
    """
    if until is not None and len(until) != len(chats):
        raise ValueError(f"until has {len(until)} entries for {len(chats)} chats")
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError(f"batch_size and max_new_tokens must be >= 1, got {batch_size}, {max_new_tokens}")
    model = lfm.model
    schedule = schedule or Schedule.of_model(model)
    backbone = model.lfm
    n_layers = backbone.config.num_hidden_layers
    attention = {i for i, layer in enumerate(backbone.layers[:n_layers]) if layer.is_attention_layer}
    capacity = max(int(chat["modality_flag"].shape[1]) for chat in chats) + max_new_tokens if chats else 0
    results = [RowDecode() for _ in chats]
    waiting = list(range(len(chats)))[::-1]
    rows: list[_Row] = []
    cache: DecodeCache | None = None
    inputs: torch.Tensor | None = None

    def finish(row: _Row) -> bool:
        if not row.out.finish_reason and row.steps >= max_new_tokens:
            row.out.finish_reason = "max_new_tokens"
        if row.out.finish_reason:
            row.out.seconds = time.perf_counter() - row.started
            return True
        return False

    with torch.inference_mode():
        while waiting or rows:
            while waiting and len(rows) < batch_size:  # fill free places: prefill, then the first step alone
                index = waiting.pop()
                row = _Row(index, results[index], time.perf_counter(), None if until is None else until[index],
                           TEXT, schedule.first_text)
                row.out.prefill_tokens = prompt_positions(chats[index])
                prefill = backbone(inputs_embeds=model._prefill(**chats[index]), use_cache=True)
                first_input = _advance(model, schedule, [row], prefill.last_hidden_state[:, -1])
                if finish(row):
                    continue
                joined = DecodeCache.from_prefill(prefill.cache, n_layers, attention, capacity)
                cache = joined if cache is None else cache.join(joined)
                inputs = first_input if inputs is None else torch.cat([inputs, first_input])
                rows.append(row)
            if not rows:
                continue
            hidden = decode_step(backbone, inputs, cache)
            inputs = _advance(model, schedule, rows, hidden)
            done = [finish(r) for r in rows]
            if any(done):
                keep = torch.tensor([n for n, d in enumerate(done) if not d], dtype=torch.long, device=inputs.device)
                rows = [r for r, d in zip(rows, done) if not d]
                cache, inputs = (cache.take(keep), inputs[keep]) if rows else (None, None)
    return results
