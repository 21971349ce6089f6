"""Prefect flows over the DVC graph: `retrain`, `gpu-stage`, `sweep` (docs/orchestration.md)."""
