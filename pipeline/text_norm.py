"""One text layer for judging replies (pipeline/judge.py) and scoring narrations (pipeline/narration.py).

Both compare what a model said with what it should have said, so both must read "Café", "cafe", "it’s" and
"it's", "seventy-two" and "72" the same way. The folding and the word tables live here, once; number words come
from ``num2words`` (the spelling TTS front ends use), not a hand-kept list.
"""
from __future__ import annotations

import unicodedata

from num2words import num2words

# Typographic variants folded to the ASCII character a reader sees in them.
APOSTROPHES = "’‘`ʼ′"
MINUS_SIGNS = "−"


def fold(text: str) -> str:
    """Lowercase, accents dropped (é -> e), every apostrophe as ``'``, the minus sign as ``-``."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    for apostrophe in APOSTROPHES:
        text = text.replace(apostrophe, "'")
    for minus in MINUS_SIGNS:
        text = text.replace(minus, "-")
    return text


# Number words, as num2words spells them (English).
ONES = {num2words(n): n for n in range(20)}  # zero .. nineteen
TENS = {num2words(n): n for n in range(20, 100, 10)}  # twenty .. ninety
ORDINALS = {num2words(n, to="ordinal"): n for n in (*range(1, 21), 30)}  # first .. twentieth, thirtieth

# Unit words -> one canonical unit token (what a stated value is compared in).
UNITS = {
    "degrees": "degrees", "degree": "degrees", "deg": "degrees", "celsius": "degrees", "centigrade": "degrees",
    "fahrenheit": "degrees",
    "kph": "kph", "kmh": "kph", "kmph": "kph", "mph": "mph",
    "km": "km", "kms": "km", "kilometers": "km", "kilometer": "km", "kilometres": "km", "kilometre": "km",
    "miles": "miles", "mile": "miles",
    "kg": "kg", "kgs": "kg", "kilograms": "kg", "kilogram": "kg", "kilos": "kg", "kilo": "kg",
    "minutes": "minutes", "minute": "minutes", "mins": "minutes", "min": "minutes",
    "percent": "percent", "pct": "percent",
    "dollars": "dollars", "dollar": "dollars", "bucks": "dollars", "usd": "dollars",
    "pounds": "pounds", "pound": "pounds", "quid": "pounds", "gbp": "pounds",
    "euros": "euros", "euro": "euros", "eur": "euros",
    "am": "am", "pm": "pm",
}
