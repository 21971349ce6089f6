"""CPU pre-screen of a sweep's blip variants, before any GPU time is spent on them.

The Mimi screening of one variant (false-trigger rate, round-trip stability) lives in
`pipeline/blip_screen.py`, beside the blip-codes logic; this module adds what concerns a sweep's variants:

3. Is the variant's signature new? A variant that changes ``blip.*`` params but
   round-trips to the default's signature, or to an earlier variant's (tones
   1000/1500 Hz gave the default's cb0 codes on the smoke Mimi), would train and
   be detected on the same codes: `flag_twins` rejects it, naming the twin.
   Variants that change only other groups (preprocess.*) share the default's
   signature by design and are never flagged.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from pipeline.blip_screen import (  # noqa: F401 - the screening moved to pipeline/; these names stay importable
    PrescreenResult, _mimi, apply_overrides, load_reference_audio, prescreen_variant, screen_codes, variant_signature)


DEFAULT_TWIN = "the default (params.yaml)"


def changes_blip(overrides: Sequence[str]) -> bool:
    """Whether a variant's overrides touch the blip itself (`blip.*`), i.e. may change its signature."""
    from dvc.utils.hydra import to_hydra_overrides  # DVC's parser of `-S` overrides
    from hydra.errors import OverrideParseException

    def group(override: str) -> str | None:
        try:
            return to_hydra_overrides([override])[0].key_or_group.split(".")[0]
        except OverrideParseException:  # an invalid variant: the pre-screen rejects it, naming the override
            return None

    return any(group(o) == "blip" for o in overrides)


def flag_twins(variants: Sequence[tuple[str, Sequence[str], PrescreenResult]],
               default_signature: tuple[int, ...] | None) -> dict[str, PrescreenResult]:
    """Reject each blip-changing variant that would train exactly as the default or an earlier variant.

    Two variants train alike when their signatures are equal and they change the same non-blip
    params (a double blip with oversampling is not a twin of the plain double blip).
    `variants` are (name, overrides, result) in sweep order; the first variant with a signature
    keeps it, later ones are its twins. Returns name -> result (the same object when unchanged).
    """
    owners: dict[tuple, str] = {}
    if default_signature:
        owners[(tuple(default_signature), ())] = DEFAULT_TWIN
    out: dict[str, PrescreenResult] = {}
    for name, overrides, result in variants:
        out[name] = result
        if not changes_blip(overrides) or not result.signature:
            continue
        other_params = tuple(sorted(o for o in overrides if not changes_blip([o])))
        twin = owners.setdefault((result.signature, other_params), name)
        if twin != name:
            why = (f"signature cb0 {list(result.signature)} equals {twin if twin == DEFAULT_TWIN else repr(twin)}'s"
                   f"{' with the same other overrides' if other_params else ''}: it would train on the same codes")
            out[name] = dataclasses.replace(result, reason="; ".join(filter(None, [result.reason, why])))
    return out


