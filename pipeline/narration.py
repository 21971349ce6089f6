"""Narration scoring: does a reply state the injected facts, or values seen in training instead?

Used by ``eval_narration`` (novel facts: faithful % and memorized %) and by the
judge of ``eval_classes`` (a tool_result_speak reply is a narration when it
states the facts). The rules are documented in ``docs/evaluation.md``; in short:

1. **Canonical tokens.** Text is lowercased, accents folded, possessive ``'s``
   dropped, apostrophes removed, number words turned into digits
   (``twenty-four`` -> ``24``, ``minus five`` -> ``-5``), and every number is
   glued to the unit that follows it, with unit spellings unified::

       "14°C" / "14 degrees" / "fourteen degrees Celsius"  -> 14|degrees
       "12 km/h" / "12 kilometers an hour" / "12 kph"      -> 12|kph
       "$37" / "37 dollars" / "37 bucks"                   -> 37|dollars
       "45%" / "45 percent" / "45 per cent"                -> 45|percent
       "7:45 PM" / "7:45 p.m."                             -> 7:45|pm
       "7 am" / "7 o'clock"                                -> 7:00|am / 7:00|

2. **Fact fields and values.** A facts block is split into fields (at ``,``
   ``;``, newlines and ``": "``; an object gives one field per leaf value).
   *Label words* -- the fixed words of the catalog's facts templates
   (``wind``, ``label``, ``route``, ``via``, ...) -- and stop words are not
   values; what is left of a field are its *value tokens*.

3. **Stated.** A field is stated when every value token occurs in the reply
   (order-free). A number with a unit is matched by the same number with the
   same unit, or by the bare number (``indoors 19`` states ``19 degrees``);
   the same number with another unit does not count.

4. **Faithful**: every field with value tokens is stated (coverage 1.0).
   **Memorized**: the reply contains, verbatim (contiguous canonical tokens), a
   fact value of a *training* row that is not part of this row's facts or
   request. Both are judged independently (a reply can be both).
"""
from __future__ import annotations

import re
import string
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

# --------------------------------------------------------------------------- canonical tokens

_UNITS = {
    "degrees": "degrees", "degree": "degrees", "deg": "degrees", "celsius": "degrees", "centigrade": "degrees",
    "kph": "kph", "kmh": "kph", "kmph": "kph",
    "km": "km", "kms": "km", "kilometers": "km", "kilometer": "km", "kilometres": "km", "kilometre": "km",
    "minutes": "minutes", "minute": "minutes", "mins": "minutes", "min": "minutes",
    "percent": "percent", "pct": "percent",
    "dollars": "dollars", "dollar": "dollars", "bucks": "dollars", "usd": "dollars",
    "am": "am", "pm": "pm",
}
UNIT_TOKENS = frozenset(_UNITS.values())

_ONES = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}

STOPWORDS = frozenset(
    "a an the and or of to in on at for with by from is are was be it its im my your you i me this that "
    "there as about around its s".split()
)

_RAW_TOKEN = re.compile(r"-?\d+(?:[.:]\d+)*|[a-z]+")
_NUM = re.compile(r"-?\d+(?:[.:]\d+)*$")


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = text.lower().replace("’", "'").replace("‘", "'").replace("`", "'").replace("−", "-").replace("–", " ")
    text = text.replace("a.m.", "am").replace("p.m.", "pm")
    text = re.sub(r"\$\s?(\d[\d,]*(?:\.\d+)?)", r" \1 dollars ", text)
    text = re.sub(r"(\d)\s?%", r"\1 percent ", text)
    text = re.sub(r"°\s?[cf]?\b", " degrees ", text)
    text = re.sub(r"\bkm\s?/\s?h\b", " kph ", text)
    text = re.sub(r"(\d),(\d{3})\b", r"\1\2", text)
    text = re.sub(r"'s\b", "", text)
    text = text.replace("'", "")
    text = re.sub(r"(?<=[a-z])-(?=[a-z])", " ", text)  # twenty-four, stop-and-go
    text = re.sub(r"(?<![\w])-(?!\d)", " ", text)
    return text


def _below_hundred(tokens: list[str], i: int) -> tuple[int, int] | None:
    """(value, next index) of a number word phrase below 100 starting at ``i``, or None."""
    if i >= len(tokens):
        return None
    tok = tokens[i]
    if tok in _TENS:
        value, i = _TENS[tok], i + 1
        if i < len(tokens) and tokens[i] in _ONES and 0 < _ONES[tokens[i]] < 10:
            value, i = value + _ONES[tokens[i]], i + 1
        return value, i
    if tok in _ONES:
        return _ONES[tok], i + 1
    return None


def _number_phrase(tokens: list[str], i: int) -> tuple[int, int] | None:
    """(value, next index) of a number word phrase below 1000 ("two hundred and five")."""
    head = _below_hundred(tokens, i)
    if head is None:
        return None
    value, j = head
    if 0 < value < 10 and j < len(tokens) and tokens[j] == "hundred":
        value, j = value * 100, j + 1
        k = j + 1 if j < len(tokens) and tokens[j] == "and" else j
        rest = _below_hundred(tokens, k)
        if rest is not None:
            value, j = value + rest[0], rest[1]
    return value, j


def _words_to_numbers(tokens: list[str]) -> list[str]:
    """Number words to digits; "minus"/"negative" before a number makes it negative."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        sign, j = "", i
        if tokens[i] in ("minus", "negative") and i + 1 < len(tokens):
            sign, j = "-", i + 1
        if _NUM.match(tokens[j]) and (sign or j == i):
            out.append(sign + tokens[j].lstrip("-") if sign else tokens[j])
            i = j + 1
            continue
        parsed = _number_phrase(tokens, j)
        if parsed is not None:
            out.append(f"{sign}{parsed[0]}")
            i = parsed[1]
            continue
        out.append(tokens[i])
        i += 1
    return out


def _glue_units(tokens: list[str]) -> list[str]:
    """Attach units to the number before them; unify unit spellings; times to H:MM|am."""
    out: list[str] = []
    i = 0
    n = len(tokens)
    while i < n:
        tok = tokens[i]
        if not _NUM.match(tok):
            if tok in ("per", "cent") and out and out[-1].endswith("|percent"):
                i += 1
                continue
            out.append(_UNITS.get(tok, tok) if tok not in ("am", "pm", "min") else tok)
            i += 1
            continue
        number = tok
        k = i + 1
        # "seven thirty pm" -> 7 30 pm -> 7:30|pm
        if (":" not in number and "." not in number and k + 1 < n and _NUM.match(tokens[k]) and tokens[k + 1] in ("am", "pm")
                and number.isdigit() and 1 <= int(number) <= 12 and tokens[k].isdigit() and 0 <= int(tokens[k]) < 60):
            number = f"{number}:{int(tokens[k]):02d}"
            k += 1
        unit = ""
        nxt = tokens[k] if k < n else ""
        if nxt in ("am", "pm"):
            unit = nxt
            k += 1
            if ":" not in number and number.isdigit():
                number = f"{number}:00"
        elif nxt in ("oclock",):
            unit = ""
            k += 1
            number = f"{number}:00"
        elif nxt in ("c",) or nxt in _UNITS:
            unit = _UNITS.get(nxt, "degrees")
            k += 1
            if unit == "km":  # km per hour / kilometers an hour / km h
                rest = tokens[k:k + 2]
                if rest[:2] in (["per", "hour"], ["an", "hour"], ["a", "hour"]):
                    unit, k = "kph", k + 2
                elif rest[:1] in (["h"], ["hour"]):
                    unit, k = "kph", k + 1
            elif unit == "degrees":
                while k < n and tokens[k] in ("celsius", "centigrade", "c"):
                    k += 1
            elif unit == "percent" and tokens[k:k + 1] == ["cent"]:
                k += 1
        elif nxt == "per" and tokens[k + 1:k + 2] == ["cent"]:
            unit, k = "percent", k + 2
        out.append(f"{number}|{unit}")
        i = k
    return out


def canonical_tokens(text: str) -> list[str]:
    """Canonical tokens of ``text`` (see the module docstring); numbers come out as ``N|unit``."""
    raw = _RAW_TOKEN.findall(_fold(text))
    return _glue_units(_words_to_numbers(raw))


def is_number(token: str) -> bool:
    return "|" in token


# --------------------------------------------------------------------------- label words (from the catalog)

_GENERIC_LABELS = frozenset(
    "label labeled called received route via color brightness volume currently indoors indoor inside "
    "fare driver arrives delivered text latest email message top story ride reminder thermostat trading "
    "now playing mix alarm set timer started ends lights delay wind".split()
)


def _catalog_label_words() -> frozenset[str]:
    """The fixed words of every facts template in ``pipeline.catalog`` (they name, not state, a value)."""
    try:
        from pipeline.catalog import TOOLS
    except ImportError:  # catalog absent: the generic list still covers the v4-style facts
        return frozenset()
    words: set[str] = set()
    for spec in TOOLS:
        for literal, _, _, _ in string.Formatter().parse(spec.facts):
            for tok in canonical_tokens(literal or ""):
                if not is_number(tok) and tok not in UNIT_TOKENS:
                    words.add(tok)
    return frozenset(words)


LABEL_WORDS = _GENERIC_LABELS | _catalog_label_words()

_FIELD_SEPARATORS = re.compile(r"[,;\n]|:\s")


def _leaves(facts: Any) -> list[str]:
    if facts is None:
        return []
    if isinstance(facts, dict):
        return [leaf for value in facts.values() for leaf in _leaves(value)]
    if isinstance(facts, (list, tuple)):
        return [leaf for value in facts for leaf in _leaves(value)]
    if isinstance(facts, str):
        return [part for part in _FIELD_SEPARATORS.split(facts) if part.strip()]
    return [str(facts)]


@dataclass(frozen=True)
class FactField:
    """One field of a facts block: its text, its value tokens, and its value spans (contiguous runs)."""

    text: str
    value_tokens: tuple[str, ...]
    spans: tuple[tuple[str, ...], ...]


def _strip_span(span: list[str]) -> tuple[str, ...]:
    while span and span[0] in STOPWORDS:
        span = span[1:]
    while span and span[-1] in STOPWORDS:
        span = span[:-1]
    return tuple(span)


def fact_fields(facts: Any) -> list[FactField]:
    """The fields of a facts block (string or object) that carry at least one value token."""
    fields: list[FactField] = []
    for text in _leaves(facts):
        tokens = canonical_tokens(text)
        spans: list[tuple[str, ...]] = []
        current: list[str] = []
        for tok in tokens:
            if not is_number(tok) and tok in LABEL_WORDS:
                if current:
                    spans.append(_strip_span(current))
                current = []
            else:
                current.append(tok)
        if current:
            spans.append(_strip_span(current))
        spans = [s for s in spans if s and any(t not in STOPWORDS for t in s)]
        values = tuple(dict.fromkeys(t for s in spans for t in s if t not in STOPWORDS))
        if values:
            fields.append(FactField(text=text.strip(), value_tokens=values, spans=tuple(spans)))
    return fields


# --------------------------------------------------------------------------- matching

@dataclass(frozen=True)
class ReplyIndex:
    """What a reply says, indexed for matching."""

    tokens: tuple[str, ...]
    words: frozenset[str]
    numbers: frozenset[str]  # "N|unit" including "N|"
    bare_numbers: frozenset[str]  # N of every number token, whatever its unit

    @classmethod
    def of(cls, text: str) -> "ReplyIndex":
        tokens = tuple(canonical_tokens(text))
        numbers = frozenset(t for t in tokens if is_number(t))
        return cls(
            tokens=tokens,
            words=frozenset(t for t in tokens if not is_number(t)),
            numbers=numbers,
            bare_numbers=frozenset(t.split("|")[0] for t in numbers),
        )

    def has_token(self, token: str) -> bool:
        if not is_number(token):
            return token in self.words
        number, unit = token.split("|")
        if token in self.numbers or f"{number}|" in self.numbers:
            return True
        return not unit and number in self.bare_numbers

    def ngrams(self, max_n: int) -> set[tuple[str, ...]]:
        toks = self.tokens
        return {toks[i:i + n] for n in range(1, max_n + 1) for i in range(len(toks) - n + 1)}


def field_stated(f: FactField, reply: ReplyIndex) -> bool:
    return all(reply.has_token(t) for t in f.value_tokens)


# --------------------------------------------------------------------------- training values

@dataclass
class TrainingValues:
    """Fact values seen in training: contiguous canonical spans from every training facts block."""

    spans: set[tuple[str, ...]] = field(default_factory=set)

    @classmethod
    def from_facts(cls, facts_blocks: Iterable[Any]) -> "TrainingValues":
        values = cls()
        for facts in facts_blocks:
            for f in fact_fields(facts):
                for span in f.spans:
                    if _distinctive(span):
                        values.spans.add(span)
        return values

    @property
    def max_len(self) -> int:
        return max((len(s) for s in self.spans), default=0)

    def __len__(self) -> int:
        return len(self.spans)


def _distinctive(span: tuple[str, ...]) -> bool:
    """A span worth counting as memorized: not a bare number, not only stop words, not one tiny word."""
    content = [t for t in span if t not in STOPWORDS]
    if not content:
        return False
    if len(content) == 1:
        tok = content[0]
        if is_number(tok):
            return bool(tok.split("|")[1])  # "14|degrees" yes, "14|" no
        return len(tok) >= 3
    return True


def _contains(haystack: Sequence[str], needle: Sequence[str]) -> bool:
    n = len(needle)
    return any(tuple(haystack[i:i + n]) == tuple(needle) for i in range(len(haystack) - n + 1))


# --------------------------------------------------------------------------- the score

@dataclass(frozen=True)
class NarrationScore:
    faithful: bool
    memorized: bool
    coverage: float | None  # stated fields / fields; None when the facts carry no value
    stated: tuple[str, ...]
    missing: tuple[str, ...]
    memorized_values: tuple[str, ...]
    reason: str

    def to_json(self) -> dict:
        return {
            "faithful": self.faithful, "memorized": self.memorized, "coverage": self.coverage,
            "stated": list(self.stated), "missing": list(self.missing),
            "memorized_values": list(self.memorized_values), "reason": self.reason,
        }


def score_narration(
    reply_text: str,
    facts: Any,
    training: TrainingValues | None = None,
    context_texts: Iterable[str] = (),
) -> NarrationScore:
    """Score one narration against its injected ``facts``.

    ``training``: values seen in training (None: memorized is always False).
    ``context_texts``: texts the model was given besides the facts (user
    request, tool descriptions); training values occurring in them are not
    counted as memorized.
    """
    fields = fact_fields(facts)
    reply = ReplyIndex.of(reply_text)
    stated = tuple(f.text for f in fields if field_stated(f, reply))
    missing = tuple(f.text for f in fields if not field_stated(f, reply))
    coverage = len(stated) / len(fields) if fields else None
    faithful = bool(fields) and not missing

    memorized_values: list[str] = []
    if training is not None and training.spans and reply.tokens:
        own_spans = [s for f in fields for s in f.spans]
        context = [tuple(canonical_tokens(t)) for t in context_texts]
        for span in sorted(reply.ngrams(training.max_len) & training.spans):
            if any(_contains(own, span) for own in own_spans) or any(_contains(c, span) for c in context):
                continue
            memorized_values.append(" ".join(span))
        # keep the longest: drop a value contained in another one found
        memorized_values = [v for v in memorized_values
                            if not any(v != w and _contains(w.split(), v.split()) for w in memorized_values)]
    memorized = bool(memorized_values)

    if not fields:
        reason = "facts carry no value tokens"
    elif faithful:
        reason = f"states all {len(fields)} fact values"
    else:
        reason = f"states {len(stated)}/{len(fields)} fact values; missing: {'; '.join(missing)}"
    if memorized:
        reason += f"; states training values: {', '.join(memorized_values)}"
    return NarrationScore(faithful, memorized, coverage, stated, missing, tuple(memorized_values), reason)
