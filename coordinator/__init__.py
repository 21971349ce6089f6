"""Coordinator runtime: watch the model's token stream for the tool-invocation blip.

numpy only: never imports torch, prefect or ``pipeline`` (DESIGN.md, principle 8),
so it can sit inside any serving process. See ``docs/coordinator.md``.

This package imports nothing on purpose: import what you use from its modules
(``from coordinator.signature import BlipSignature``), so a stage that needs only
``coordinator.constants`` does not depend on -- and rerun for -- the rest.
"""
