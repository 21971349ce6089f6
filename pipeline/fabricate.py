"""Random-init model folders with the Hub repos' exact layout, for offline runs.

No weights can be downloaded here or in CI, so the smoke profile fabricates a
folder that the *real* loading code (``from_pretrained(Path)``) accepts: same
file names, same special-token ids, same config keys — only far smaller, and
seeded so the same seed gives byte-identical files.

``size="full"`` (the rehearsal profile) keeps the production shapes instead: the
reference config unchanged (1.47 B parameters), the stock Mimi (no
``mimi_config.json``) and a tokenizer of the config's vocabulary size whose BPE
merges are learned from the pipeline's own templates, so rows have a realistic
token count at ``context_length`` 512 (the byte-level tiny tokenizer makes ~4x
more tokens). Random weights: measure time, memory and bytes with it, never quality.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors.torch import save_file

from coordinator.constants import AUDIO_START_TOKEN, IM_END_TOKEN, TEXT_END_TOKEN
from pipeline.io import atomic_path, write_json
from pipeline.hub_layout import MIMI_CONFIG_NAME, MIMI_WEIGHTS_NAME
from pipeline.mimi_config import SMALL_MIMI, mimi_settings

# Special-token ids the liquid-audio code relies on (7, 128 and 130 are hard-coded in generation).
SPECIAL_TOKENS: dict[int, str] = {
    0: "<|pad|>",
    1: "<|startoftext|>",
    2: "<|endoftext|>",
    6: "<|im_start|>",
    IM_END_TOKEN: "<|im_end|>",
    AUDIO_START_TOKEN: "<|audio_start|>",
    TEXT_END_TOKEN: "<|text_end|>",
}
N_SPECIAL = 256  # ids 0-255 are special (unnamed ones reserved), 256-511 are the 256 bytes

TINY_LFM_OVERRIDES = {
    "encoder": {"n_layers": 1, "d_model": 32, "n_heads": 4, "subsampling_conv_channels": 32},
    "lfm": {
        "vocab_size": 512,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "layer_types": ["conv", "full_attention"],
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
    },
    "depthformer": {"layers": 1, "dim": 64, "tie": True},
}


FabricateSize = Literal["tiny", "full"]
FABRICATE_SIZES: tuple[str, ...] = ("tiny", "full")


@dataclass(frozen=True)
class FabricatedFolder:
    path: Path
    n_parameters: int
    files: tuple[str, ...]


def _tiny_lfm_config(reference_config: dict) -> dict:
    config = json.loads(json.dumps(reference_config))  # deep copy
    for section, values in TINY_LFM_OVERRIDES.items():
        config[section].update(values)
    return config


def _template_corpus() -> list[str]:
    """Every string constant of the dataset templates, tool catalog and prompts: what rows are made of."""
    from pipeline import catalog, prompts, templates

    texts: list[str] = []

    def walk(value) -> None:
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, (tuple, list, set, frozenset)):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(key)
                walk(item)
        elif hasattr(value, "__dataclass_fields__"):
            for name in value.__dataclass_fields__:
                walk(getattr(value, name))

    for module in (templates, catalog, prompts):
        for name, value in sorted(vars(module).items()):
            if name.isupper():
                walk(value)
    return texts


def _full_vocab_merges(vocab_size: int, names: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """BPE vocabulary of exactly ``vocab_size`` ids: the special ids, the 256 bytes, merges learned from the
    templates, then unreachable filler entries up to the config's vocabulary size."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    learner = Tokenizer(models.BPE())
    learner.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=names, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    learner.train_from_iterator(_template_corpus(), trainer=trainer)
    model = json.loads(learner.to_str())["model"]
    vocab: dict[str, int] = dict(model["vocab"])
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    next_id = max(vocab.values()) + 1
    for filler in range(next_id, vocab_size):
        vocab[f"<|unused_{filler}|>"] = filler
    return vocab, merges


def _build_tokenizer(out_dir: Path, vocab_size: int | None = None) -> None:
    """Ids 0-255 special (real ids). Tiny: byte-level BPE with no merges, 256-511 bytes.
    Full (``vocab_size`` given): merges learned from the templates, ``vocab_size`` ids in all."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    names = [SPECIAL_TOKENS.get(i, f"<|reserved_{i}|>") for i in range(N_SPECIAL)]
    if vocab_size is None:
        byte_alphabet = sorted(pre_tokenizers.ByteLevel.alphabet(), key=lambda ch: ord(ch))
        vocab = {name: i for i, name in enumerate(names)}
        vocab.update({ch: N_SPECIAL + i for i, ch in enumerate(byte_alphabet)})
        tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    else:
        vocab, merges = _full_vocab_merges(vocab_size, names)
        tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(names)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|startoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
    )
    fast.save_pretrained(out_dir)


def _save_state_dict(module: torch.nn.Module, target: Path) -> None:
    """safetensors refuses shared storage: keep one name per tied tensor (as HF does)."""
    seen: set[int] = set()
    tensors = {}
    for name, tensor in module.state_dict().items():
        key = tensor.data_ptr()
        if key in seen:
            continue
        seen.add(key)
        tensors[name] = tensor.detach().contiguous().clone()
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})


def _calibration_clips(seed: int, n_clips: int = 512, n_samples: int = 7680) -> torch.Tensor:
    """Short varied clips (harmonic 'voices', tone pairs, noise) to fit Mimi's codebooks on.

    Short clips keep the first frames of an utterance well represented, which is
    where the blip is detected.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / 24_000
    clips = []
    for _ in range(n_clips):
        kind = rng.integers(0, 3)
        if kind == 0:
            f0 = rng.uniform(80, 400)
            wave = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6)) / h for h in range(1, rng.integers(2, 9)))
        elif kind == 1:
            wave = sum(np.sin(2 * np.pi * rng.uniform(200, 4000) * t) for _ in range(rng.integers(1, 3)))
        else:
            wave = rng.normal(0, 1, n_samples)
        clips.append(wave / np.abs(wave).max() * rng.uniform(0.05, 0.8))
    return torch.from_numpy(np.stack(clips).astype(np.float32)).unsqueeze(1)


@torch.no_grad()
def _fabricate_mimi(out_dir: Path, seed: int, size: FabricateSize = "tiny") -> int:
    """Random Mimi (small, or the stock architecture for ``full``) whose codebooks are fitted by Mimi's own
    k-means initialisation.

    Random codebooks start at zero (every code would be 0); fitting them on
    calibration audio makes codes depend on the input, as with real weights.
    A full Mimi gets no ``mimi_config.json``: it loads as a Hub folder does.
    """
    from liquid_audio.moshi.models.loaders import get_mimi

    overrides = SMALL_MIMI if size == "tiny" else None
    torch.manual_seed(seed)
    with mimi_settings(overrides):
        mimi = get_mimi(None, device="cpu")
    # The stock Mimi encodes ~20x slower than the small one: a quarter of the clips (512 frames; k-means then
    # samples its 2048 initial centroids with replacement) still makes codes depend on the input.
    latents = mimi._encode_to_unquantized_latent(_calibration_clips(seed, n_clips=512 if size == "tiny" else 128))
    mimi.quantizer.train()
    for _ in range(mimi.quantizer.num_codebooks):  # each pass initialises one more (active) residual level
        mimi.quantizer(latents, mimi.frame_rate)
    mimi.quantizer.eval()
    if overrides is not None:
        write_json(out_dir / MIMI_CONFIG_NAME, overrides)
    _save_state_dict(mimi, out_dir / MIMI_WEIGHTS_NAME)
    return sum(p.numel() for p in mimi.parameters())


def fabricate_lfm_folder(out_dir: Path, reference_config: dict, seed: int = 0,
                         size: FabricateSize = "tiny") -> FabricatedFolder:
    """Write a random-init LFM2.5-Audio folder loadable by liquid-audio's ``from_pretrained(Path)``
    (``tiny``: 3.4 M parameters; ``full``: the reference config's production shapes)."""
    from liquid_audio.model.conformer.encoder import ConformerEncoderConfig
    from liquid_audio.model.lfm2_audio import DepthformerConfig, LFM2AudioConfig, LFM2AudioModel
    from transformers import Lfm2Config

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if size not in FABRICATE_SIZES:
        raise ValueError(f"fabricate size must be one of {FABRICATE_SIZES}, got {size!r}")
    config = _tiny_lfm_config(reference_config) if size == "tiny" else json.loads(json.dumps(reference_config))
    write_json(out_dir / "config.json", config)
    _build_tokenizer(out_dir, None if size == "tiny" else int(config["lfm"]["vocab_size"]))

    torch.manual_seed(seed)
    raw = json.loads(json.dumps(config))
    conf = LFM2AudioConfig(
        lfm=Lfm2Config(**raw.pop("lfm")),
        encoder=ConformerEncoderConfig(**raw.pop("encoder")),
        depthformer=DepthformerConfig(**raw.pop("depthformer")),
        **raw,
    )
    model = LFM2AudioModel(conf).to(torch.bfloat16)
    _save_state_dict(model, out_dir / "model.safetensors")
    n_params = sum(p.numel() for p in model.parameters())
    del model  # a full-size build holds ~3 GB: free it before Mimi's
    n_params += _fabricate_mimi(out_dir, seed, size)
    return FabricatedFolder(out_dir, n_params, tuple(sorted(p.name for p in out_dir.iterdir())))
