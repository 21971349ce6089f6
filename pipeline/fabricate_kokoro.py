"""A random-init Kokoro folder with the layout of the Hub repo hexgrad/Kokoro-82M.

Offline runs cannot download Kokoro, so the smoke profile and the tests write a
folder that kokoro's *real* ``KModel``/``KPipeline`` accept:

- ``config.json``: the Hub config's keys and values, Kokoro's real phoneme
  vocabulary, and only ALBERT (``plbert``) shrunk -- everything else is
  hard-coded into kokoro's modules (decoder channels, style_dim 128), so the
  model still has ~80 M parameters;
- ``kokoro-v1_0.pth``: ``torch.save`` of ``{bert, bert_encoder, predictor,
  text_encoder, decoder}`` state dicts, keys prefixed ``module.`` as in the Hub
  file (kokoro strips the prefix), loadable with ``torch.load(weights_only=True)``;
- ``voices/<name>.pt``: float32 style tensors of shape (510, 1, 256).

The model is built by ``KModel`` itself from the config (so the keys are always
the ones kokoro expects); the same seed gives byte-identical files.
"""
from __future__ import annotations

import copy
import hashlib
import io
import math
from pathlib import Path

import torch

from pipeline.fabricate import FabricatedFolder
from pipeline.hub_layout import (KOKORO_COMPONENTS, KOKORO_CONFIG_NAME, KOKORO_REPO_ID, KOKORO_WEIGHTS_NAME,
                                 STATE_DICT_PREFIX, voice_path)
from pipeline.io import write_bytes, write_json

VOICE_SHAPE = (510, 1, 256)  # one 256-d style vector per phoneme count 1..510

# Kokoro's phoneme -> token id table (config.json "vocab" of hexgrad/Kokoro-82M; 114 symbols, n_token 178).
KOKORO_VOCAB: dict[str, int] = {
    ";": 1, ":": 2, ",": 3, ".": 4, "!": 5, "?": 6, "—": 9, "…": 10, '"': 11, "(": 12, ")": 13,
    "“": 14, "”": 15, " ": 16, "\u0303": 17, "ʣ": 18, "ʥ": 19, "ʦ": 20, "ʨ": 21, "ᵝ": 22, "\uab67": 23,
    "A": 24, "I": 25, "O": 31, "Q": 33, "S": 35, "T": 36, "W": 39, "Y": 41, "ᵊ": 42,
    "a": 43, "b": 44, "c": 45, "d": 46, "e": 47, "f": 48, "h": 50, "i": 51, "j": 52, "k": 53, "l": 54,
    "m": 55, "n": 56, "o": 57, "p": 58, "q": 59, "r": 60, "s": 61, "t": 62, "u": 63, "v": 64, "w": 65,
    "x": 66, "y": 67, "z": 68, "ɑ": 69, "ɐ": 70, "ɒ": 71, "æ": 72, "β": 75, "ɔ": 76, "ɕ": 77, "ç": 78,
    "ɖ": 80, "ð": 81, "ʤ": 82, "ə": 83, "ɚ": 85, "ɛ": 86, "ɜ": 87, "ɟ": 90, "ɡ": 92, "ɥ": 99, "ɨ": 101,
    "ɪ": 102, "ʝ": 103, "ɯ": 110, "ɰ": 111, "ŋ": 112, "ɳ": 113, "ɲ": 114, "ɴ": 115, "ø": 116, "ɸ": 118,
    "θ": 119, "œ": 120, "ɹ": 123, "ɾ": 125, "ɻ": 126, "ʁ": 128, "ɽ": 129, "ʂ": 130, "ʃ": 131, "ʈ": 132,
    "ʧ": 133, "ʊ": 135, "ʋ": 136, "ʌ": 138, "ɣ": 139, "ɤ": 140, "χ": 142, "ʎ": 143, "ʒ": 147, "ʔ": 148,
    "ˈ": 156, "ˌ": 157, "ː": 158, "ʰ": 162, "ʲ": 164, "↓": 169, "→": 171, "↗": 172, "↘": 173, "ᵻ": 177,
}

# config.json of hexgrad/Kokoro-82M (v1.0), vocab aside.
HUB_CONFIG: dict = {
    "istftnet": {
        "upsample_kernel_sizes": [20, 12],
        "upsample_rates": [10, 6],
        "gen_istft_hop_size": 5,
        "gen_istft_n_fft": 20,
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        "resblock_kernel_sizes": [3, 7, 11],
        "upsample_initial_channel": 512,
    },
    "dim_in": 64,
    "dropout": 0.2,
    "hidden_dim": 512,
    "max_conv_dim": 512,
    "max_dur": 50,
    "multispeaker": True,
    "n_layer": 3,
    "n_mels": 80,
    "n_token": 178,
    "style_dim": 128,
    "text_encoder_kernel_size": 5,
    "plbert": {
        "hidden_size": 768,
        "num_attention_heads": 12,
        "intermediate_size": 2048,
        "max_position_embeddings": 512,
        "num_hidden_layers": 12,
        "dropout": 0.1,
    },
}

# ALBERT is the only part kokoro lets us shrink. 512 positions stay: KPipeline
# chunks at 510 phonemes and KModel asserts len + 2 <= max_position_embeddings.
TINY_PLBERT = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64, "num_hidden_layers": 1}

# Random duration heads predict ~25 frames (0.6 s) per phoneme; bias them to a
# speech-like ~4 frames (100 ms) so fabricated audio has a plausible length.
FRAMES_PER_PHONEME = 4.0


def tiny_kokoro_config() -> dict:
    config = copy.deepcopy(HUB_CONFIG)
    config["plbert"].update(TINY_PLBERT)
    config["vocab"] = dict(KOKORO_VOCAB)
    return config


def full_kokoro_config() -> dict:
    """The Hub config as is: the real 82 M architecture (ALBERT 12 x 768 included)."""
    config = copy.deepcopy(HUB_CONFIG)
    config["vocab"] = dict(KOKORO_VOCAB)
    return config


def _empty_checkpoint() -> io.BytesIO:
    """A .pth holding no state dicts: KModel builds its modules and loads nothing."""
    buffer = io.BytesIO()
    torch.save({}, buffer)
    buffer.seek(0)
    return buffer


def _random_kmodel(config: dict, seed: int) -> torch.nn.Module:
    from kokoro import KModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = KModel(repo_id=KOKORO_REPO_ID, config=config, model=_empty_checkpoint())
    proj = model.predictor.duration_proj.linear_layer
    with torch.no_grad():
        # duration = sum over max_dur sigmoids: a bias of logit(frames / max_dur) centres it.
        share = FRAMES_PER_PHONEME / config["max_dur"]
        proj.bias.fill_(math.log(share / (1.0 - share)))
        proj.weight.mul_(0.1)
    return model.eval()


def _checkpoint_bytes(model: torch.nn.Module) -> bytes:
    """torch.save into memory: a file target would put its (temp) name into the zip."""
    checkpoint = {
        component: {STATE_DICT_PREFIX + name: tensor.detach().clone() for name, tensor in getattr(model, component).state_dict().items()}
        for component in KOKORO_COMPONENTS
    }
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getvalue()


def _stable_seed(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") & ((1 << 63) - 1)


def random_voice(seed: int, name: str) -> torch.Tensor:
    """A (510, 1, 256) float32 style pack; std 0.15 like the real voices."""
    generator = torch.Generator().manual_seed(_stable_seed(seed, name))
    return (torch.randn(VOICE_SHAPE, generator=generator) * 0.15).to(torch.float32)


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    torch.save(tensor, buffer)
    return buffer.getvalue()


def fabricate_kokoro_folder(out_dir: Path, seed: int, voices: list[str], size: str = "tiny") -> FabricatedFolder:
    """Write a random-init Kokoro folder (config, weights, voices) into ``out_dir``
    (``tiny``: ALBERT shrunk, ~80 M parameters; ``full``: the Hub architecture, ~82 M)."""
    if not voices:
        raise ValueError("fabricate_kokoro_folder: at least one voice is needed")
    if size not in ("tiny", "full"):
        raise ValueError(f"fabricate_kokoro_folder: size must be tiny or full, got {size!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = tiny_kokoro_config() if size == "tiny" else full_kokoro_config()
    model = _random_kmodel(config, seed)
    write_json(out_dir / KOKORO_CONFIG_NAME, config)
    write_bytes(out_dir / KOKORO_WEIGHTS_NAME, _checkpoint_bytes(model))
    for voice in sorted(set(voices)):
        write_bytes(voice_path(out_dir, voice), _tensor_bytes(random_voice(seed, voice)))
    files = tuple(sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file()))
    return FabricatedFolder(out_dir, sum(p.numel() for p in model.parameters()), files)
