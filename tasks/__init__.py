"""DVC stages: one module per stage, run as `python -m tasks.<stage>`."""
