"""Shared building blocks of the pipeline stages (I/O, params, model loading).

Stages live in ``tasks/``; anything two stages need lives here, once.
"""
