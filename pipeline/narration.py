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
       "$12.50" / "twelve dollars and fifty cents"         -> 12.5|dollars
       "£23.40" / "twenty-three pounds forty", "€95" / "95 EUR" -> 23.4|pounds, 95|euros
       "45%" / "45 percent" / "45 per cent"                -> 45|percent
       "7:45 PM" / "7:45 p.m." / "quarter to eight in the evening" / "19:45" -> 7:45|pm
       "7 am" / "7 o'clock" / "noon"                       -> 7:00|am / 7:00| / 12:00|pm
       "half an hour" / "30 minutes"                       -> 30|minutes

   Dates: "the 3rd of May" / "May third" / "3 May" -> 3 may (ordinal words are
   numbers only next to a month); "2027-03-14" -> 14 march 2027. British
   spellings become American (colour -> color, centre -> center, grey -> gray).

2. **Fact fields and values.** A facts block is split into fields (at ``,``
   ``;``, newlines and ``": "``; an object gives one field per leaf value).
   *Label words* -- the fixed words of the catalog's facts templates
   (``wind``, ``label``, ``route``, ``via``, ...) -- and stop words are not
   values; what is left of a field are its *value tokens*.

3. **Stated.** A field is stated when every value token occurs in the reply
   (order-free). A number with a unit is matched by the same number with the
   same unit, or by the bare number (``indoors 19`` states ``19 degrees``);
   the same number with another unit does not count. A price or time said as
   two bare numbers ("twelve fifty", "seven thirty") states ``12.50`` / ``7:30``.

4. **Faithful**: every field with value tokens is stated (coverage 1.0).
   **Memorized**: the reply contains, verbatim (contiguous canonical tokens), a
   fact value of a *training* row that is not part of this row's facts or
   request. Both are judged independently (a reply can be both).
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

from pipeline.catalog import TOOLS
from pipeline.text_norm import ONES, ORDINALS, TENS, UNITS, fold

# --------------------------------------------------------------------------- canonical tokens

_UNITS = UNITS
UNIT_TOKENS = frozenset(_UNITS.values())
CURRENCIES = frozenset({"dollars", "pounds", "euros"})
_SUBUNITS = {"cents": "dollars", "cent": "dollars", "pence": "pounds", "p": "pounds"}  # "fifty cents" = 0.50 dollars

_ONES, _TENS, _ORDINALS = ONES, TENS, ORDINALS  # pipeline/text_norm.py (num2words)
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
          "november", "december")
_MONTH_ABBREVIATIONS = {m[:3]: m for m in MONTHS if m != "may"} | {"sept": "september"}

# British -> American spellings, by family: -our, -tre, -ise/-yse, doubled l, and single words.
_OUR = "colour favour favourite flavour harbour honour humour labour neighbour neighbourhood rumour behaviour odour " \
       "savoury vapour armour parlour"
_TRE = "centre theatre metre litre fibre calibre sombre spectre lustre meagre kilometre centimetre millimetre"
_ISE = "organis realis recognis apologis prioritis customis summaris finalis minimis maximis memoris personalis " \
       "categoris authoris"
_YSE = "analys paralys"
_LL = "cancel travel label model fuel signal level counsel"
_SINGLE = {
    "grey": "gray", "greys": "grays", "programme": "program", "programmes": "programs", "jewellery": "jewelry",
    "tyre": "tire", "tyres": "tires", "aluminium": "aluminum", "defence": "defense", "licence": "license",
    "offence": "offense", "catalogue": "catalog", "analogue": "analog", "dialogue": "dialog",
    "pyjamas": "pajamas", "moustache": "mustache", "plough": "plow", "kerb": "curb", "cheque": "check",
    "enrol": "enroll", "fulfil": "fulfill", "traveller": "traveler", "travellers": "travelers",
}


def _american_spellings() -> dict[str, str]:
    table = dict(_SINGLE)
    for word in _OUR.split():
        for form in (word, word + "s"):
            table[form] = form.replace("our", "or")
    for word in _TRE.split():
        for form in (word, word + "s"):
            table[form] = form[:-3] + "ter" + form[len(word):]
    for stem, z in [(w, "z") for w in _ISE.split()] + [(w, "z") for w in _YSE.split()]:
        for ending in ("e", "es", "ed", "ing", "ation", "ations"):
            table[stem + ending] = stem[:-1] + z + ending
    for stem in _LL.split():
        for ending in ("led", "ling", "ler", "lers"):
            table[stem + ending] = stem + ending[1:]
    return table


AMERICAN_SPELLING = _american_spellings()
"""colour -> color, centre -> center, organised -> organized, cancelled -> canceled, grey -> gray, ..."""

STOPWORDS = frozenset(
    "a an the and or of to in on at for with by from is are was be it its im my your you i me this that "
    "there as about around its s per until till".split()
)

_RAW_TOKEN = re.compile(r"-?\d+(?:[.:]\d+)*|[a-z]+")
_NUM = re.compile(r"-?\d+(?:[.:]\d+)*$")
_INT = re.compile(r"\d+$")


def _iso_date(m: re.Match[str]) -> str:
    year, month, day = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return m.group(0)
    return f" {day} {MONTHS[month - 1]} {year} "


def _fold(text: str) -> str:
    text = fold(text).replace("–", " ")
    text = text.replace("a.m.", "am").replace("p.m.", "pm")
    text = re.sub(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b", _iso_date, text)  # 2027-03-14 -> 14 march 2027
    text = re.sub(r"\b(\d{1,2})\.(\d{2})\s?(am|pm)\b", r"\1:\2 \3", text)  # 7.30pm -> 7:30 pm
    text = re.sub(r"\b(\d+)(?:st|nd|rd|th)\b", r"\1", text)  # 3rd -> 3
    for symbol, unit in (("$", "dollars"), ("£", "pounds"), ("€", "euros")):
        text = re.sub(re.escape(symbol) + r"\s?(\d[\d,]*(?:\.\d+)?)", rf" \1 {unit} ", text)
        text = re.sub(r"(\d)\s?" + re.escape(symbol), rf"\1 {unit} ", text)
    text = re.sub(r"(\d)\s?%", r"\1 percent ", text)
    text = re.sub(r"°\s?[cf]?\b", " degrees ", text)
    text = re.sub(r"\bkm\s?/\s?h\b", " kph ", text)
    text = re.sub(r"(\d),(\d{3})\b", r"\1\2", text)
    text = re.sub(r"'s\b", "", text)
    text = text.replace("'", "")
    text = re.sub(r"(?<=[a-z])-(?=[a-z])", " ", text)  # twenty-four, stop-and-go
    text = re.sub(r"(?<![\w])-(?!\d)", " ", text)
    return text


# ---- number words

def _below_hundred(tokens: list[str], i: int) -> tuple[int, int, bool] | None:
    """(value, next index, ordinal?) of a number word phrase below 100 at ``i`` ("forty two", "twenty-first")."""
    if i >= len(tokens):
        return None
    tok = tokens[i]
    if tok in _TENS:
        value, j = _TENS[tok], i + 1
        if j < len(tokens) and 0 < _ONES.get(tokens[j], 0) < 10:
            return value + _ONES[tokens[j]], j + 1, False
        if j < len(tokens) and 0 < _ORDINALS.get(tokens[j], 0) < 10:
            return value + _ORDINALS[tokens[j]], j + 1, True
        return value, j, False
    if tok in _ONES:
        return _ONES[tok], i + 1, False
    if tok in _ORDINALS:
        return _ORDINALS[tok], i + 1, True
    return None


def _below_thousand(tokens: list[str], i: int) -> tuple[int, int, bool] | None:
    """"two hundred and five", "a hundred eighty-seven", "twelve hundred"."""
    n = len(tokens)
    if i + 1 < n and tokens[i] == "a" and tokens[i + 1] in ("hundred", "thousand"):
        value, j, ordinal = 1, i + 1, False
    else:
        head = _below_hundred(tokens, i)
        if head is None:
            return None
        value, j, ordinal = head
    if not ordinal and 0 < value < 100 and j < n and tokens[j] == "hundred":
        value, j = value * 100, j + 1
        k = j + 1 if j < n and tokens[j] == "and" else j
        rest = _below_hundred(tokens, k)
        if rest is not None:
            value, j, ordinal = value + rest[0], rest[1], rest[2]
    return value, j, ordinal


def _number_phrase(tokens: list[str], i: int) -> tuple[str, int, bool] | None:
    """(digits, next index, ordinal?) of a number word phrase: thousands, "point five", "and a half"."""
    n = len(tokens)
    head = _below_thousand(tokens, i)
    if head is None:
        return None
    value, j, ordinal = head
    if not ordinal and j < n and tokens[j] == "thousand":
        value, j = value * 1000, j + 1
        k = j + 1 if j < n and tokens[j] == "and" else j
        rest = _below_thousand(tokens, k)
        if rest is not None:
            value, j, ordinal = value + rest[0], rest[1], rest[2]
    digits = str(value)
    if ordinal:
        return digits, j, True
    if j + 1 < n and tokens[j] == "point" and tokens[j + 1] in _ONES and _ONES[tokens[j + 1]] < 10:
        decimals = ""
        j += 1
        while j < n and tokens[j] in _ONES and _ONES[tokens[j]] < 10:
            decimals += str(_ONES[tokens[j]])
            j += 1
        digits = f"{value}.{decimals}"
    elif tokens[j:j + 3] == ["and", "a", "half"]:
        digits, j = f"{value}.5", j + 3
    return digits, j, False


def _date_context(tokens: list[str], start: int, end: int) -> bool:
    """An ordinal is a day of the month: "the third of May", "May 3rd", "June first"."""
    after = tokens[end + 1] if end < len(tokens) and tokens[end] == "of" and end + 1 < len(tokens) else \
        (tokens[end] if end < len(tokens) else "")
    before = start - 1
    if before >= 0 and tokens[before] == "the":
        before -= 1
    return after in MONTHS or (before >= 0 and tokens[before] in MONTHS)


def _words_to_numbers(tokens: list[str]) -> list[str]:
    """Number words to digits; "minus"/"negative" before a number makes it negative; ordinals only in dates."""
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
        if parsed is not None and parsed[2] and not _date_context(tokens, j, parsed[1]):
            # an ordinal outside a date is a word ("first meeting", "one second"); "twenty first" keeps its 20
            parsed = (str(_TENS[tokens[j]]), j + 1, False) if tokens[j] in _TENS else None
        if parsed is not None:
            out.append(f"{sign}{parsed[0]}")
            i = parsed[1]
            continue
        out.append(tokens[i])
        i += 1
    return out


# ---- spoken times and durations

_DAY_PARTS = (
    (("in", "the", "morning"), "am"), (("this", "morning"), "am"), (("tomorrow", "morning"), "am"),
    (("in", "the", "afternoon"), "pm"), (("this", "afternoon"), "pm"), (("tomorrow", "afternoon"), "pm"),
    (("in", "the", "evening"), "pm"), (("this", "evening"), "pm"), (("tomorrow", "evening"), "pm"),
    (("at", "night"), "pm"), (("tonight",), "pm"), (("tomorrow", "night"), "pm"),
)
_TO_CONTEXT = frozenset("at by until till from before after around about".split())


def _day_part(tokens: list[str], k: int) -> str:
    """"am"/"pm" when a day part ("in the morning", "tonight") starts at ``k``, else ""."""
    for phrase, half in _DAY_PARTS:
        if tuple(tokens[k:k + len(phrase)]) == phrase:
            return half
    return ""


def _hour(token: str) -> int | None:
    return int(token) if _INT.match(token) and 1 <= int(token) <= 12 else None


def _spoken_times(tokens: list[str]) -> list[str]:
    """"half past seven" -> 7:30, "a quarter to seven" -> 6:45, "ten past nine" -> 9:10, "noon" -> 12:00 pm;
    "half an hour" -> 30 minutes, "an hour and a half" -> 90 minutes, "2 hours" -> 120 minutes."""
    out: list[str] = []
    i, n = 0, len(tokens)
    while i < n:
        tok, rest = tokens[i], tokens[i:]
        if tok in ("noon", "midday", "midnight"):
            if out and out[-1] == "12":
                out.pop()
            out += ["12:00", "am" if tok == "midnight" else "pm"]
            i += 1
            continue
        if rest[:2] in (["half", "past"], ["quarter", "past"], ["quarter", "to"]) and len(rest) > 2 and _hour(rest[2]):
            hour = _hour(rest[2])
            if out and out[-1] == "a":
                out.pop()
            if rest[1] == "to":
                out.append(f"{hour - 1 if hour > 1 else 12}:45")
            else:
                out.append(f"{hour}:{30 if tok == 'half' else 15:02d}")
            i += 3
            continue
        if _INT.match(tok) and 0 < int(tok) < 30:
            k = i + 1 + (rest[1:2] in (["minutes"], ["minute"]))
            if k + 1 < n and tokens[k] in ("past", "to") and _hour(tokens[k + 1]):
                hour, minutes = _hour(tokens[k + 1]), int(tok)
                if tokens[k] == "past":
                    out.append(f"{hour}:{minutes:02d}")
                    i = k + 2
                    continue
                after = tokens[k + 2] if k + 2 < n else ""
                if (out and out[-1] in _TO_CONTEXT) or after in ("am", "pm", "oclock") or _day_part(tokens, k + 2):
                    out.append(f"{hour - 1 if hour > 1 else 12}:{60 - minutes:02d}")
                    i = k + 2
                    continue
        if tok == "half" and rest[1:2] in (["a"], ["an"]) and len(rest) > 2 and rest[2] in _UNITS:
            out.append("0.5")  # "half a percent", "half a kilometre"
            i += 2
            continue
        durations = (
            (["half", "an", "hour"], 30), (["half", "hour"], 30), (["quarter", "of", "an", "hour"], 15),
            (["quarter", "hour"], 15), (["3", "quarters", "of", "an", "hour"], 45),
            (["an", "hour", "and", "a", "half"], 90), (["1", "hour", "and", "a", "half"], 90),
        )
        for phrase, minutes in durations:
            if rest[:len(phrase)] == phrase:
                if phrase[0] == "quarter" and out and out[-1] == "a":
                    out.pop()
                out += [str(minutes), "minutes"]
                i += len(phrase)
                break
        else:
            if _NUM.match(tok) and ":" not in tok and rest[1:2] in (["hours"], ["hour"]) and float(tok) * 60 == int(float(tok) * 60):
                minutes, k = int(float(tok) * 60), i + 2
                extra = tokens[k + (tokens[k:k + 1] == ["and"]):]
                if len(extra) > 1 and _INT.match(extra[0]) and extra[1] in ("minutes", "minute", "mins"):
                    minutes, k = minutes + int(extra[0]), k + (tokens[k:k + 1] == ["and"]) + 2
                out += [str(minutes), "minutes"]
                i = k
                continue
            out.append(tok)
            i += 1
    return out


# ---- units

def _plain_number(number: str) -> str:
    """12.50 -> 12.5, 12.0 -> 12 (a price said "twelve fifty" and written "$12.50" is one number)."""
    if number.count(".") == 1 and ":" not in number:
        whole, decimals = number.split(".")
        decimals = decimals.rstrip("0")
        return f"{whole}.{decimals}" if decimals else whole
    return number


def _clock(number: str, half: str) -> tuple[str, str]:
    """A H:MM time in 12-hour form: 19:45 -> 7:45 pm, 08:05 -> 8:05 am, 07:30 am -> 7:30 am."""
    hour_text, minutes = number.split(":", 1)
    hour = int(hour_text)
    if not half and (hour == 0 or hour >= 13 or (hour_text.startswith("0") and len(hour_text) == 2)) and hour < 24:
        half = "am" if hour < 12 else "pm"
    if half and hour >= 13:
        hour -= 12
    if half and hour == 0:
        hour = 12
    return f"{hour}:{minutes}", half


def _glue_units(tokens: list[str]) -> list[str]:
    """Attach units to the number before them; unify unit spellings; times to H:MM|am; prices to N.MM|currency."""
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
        # "seven thirty pm" / "ten thirty in the morning" -> 10:30
        if (number.isdigit() and _hour(number) and k < n and _INT.match(tokens[k]) and 10 <= int(tokens[k]) < 60
                and (tokens[k + 1:k + 2] in (["am"], ["pm"], ["oclock"]) or _day_part(tokens, k + 1))):
            number = f"{number}:{int(tokens[k]):02d}"
            k += 1
        unit = ""
        nxt = tokens[k] if k < n else ""
        if nxt in ("am", "pm"):
            unit = nxt
            k += 1
            if ":" not in number and number.isdigit():
                number = f"{number}:00"
        elif nxt == "oclock":
            k += 1
            number = f"{number}:00"
        elif nxt in _SUBUNITS and _INT.match(number) and int(number) < 100:  # "fifty cents" alone
            number, unit, k = f"0.{int(number):02d}", _SUBUNITS[nxt], k + 1
        elif nxt in ("c",) or nxt in _UNITS:
            unit = _UNITS.get(nxt, "degrees")
            k += 1
            if unit == "km":  # km per hour / kilometers an hour / km h
                rest = tokens[k:k + 2]
                if rest[:2] in (["per", "hour"], ["an", "hour"], ["a", "hour"]):
                    unit, k = "kph", k + 2
                elif rest[:1] in (["h"], ["hour"]):
                    unit, k = "kph", k + 1
            elif unit == "miles" and tokens[k:k + 2] in (["per", "hour"], ["an", "hour"], ["a", "hour"]):
                unit, k = "mph", k + 2
            elif unit == "degrees":
                while k < n and tokens[k] in ("celsius", "centigrade", "c", "fahrenheit", "f"):
                    k += 1
            elif unit == "percent" and tokens[k:k + 1] == ["cent"]:
                k += 1
            elif unit in CURRENCIES and _INT.match(number):  # "twelve dollars and fifty cents", "23 pounds 40"
                rest = tokens[k:k + 3]
                if len(rest) == 3 and rest[0] == "and" and _INT.match(rest[1]) and int(rest[1]) < 100 \
                        and _SUBUNITS.get(rest[2]) == unit:
                    number, k = f"{number}.{int(rest[1]):02d}", k + 3
                elif rest and _INT.match(rest[0]) and 10 <= int(rest[0]) < 100 and (
                        len(rest) < 2 or rest[1] not in _UNITS or _SUBUNITS.get(rest[1]) == unit):
                    number, k = f"{number}.{int(rest[0]):02d}", k + 1 + (len(rest) > 1 and _SUBUNITS.get(rest[1]) == unit)
        elif nxt == "per" and tokens[k + 1:k + 2] == ["cent"]:
            unit, k = "percent", k + 2
        if ":" in number and unit in ("", "am", "pm"):
            number, unit = _clock(number, unit)
        if unit == "" and (":" in number or _hour(number)):
            half = _day_part(tokens, k)  # "7:30 tomorrow morning", "eleven in the morning" (day part kept)
            if half:
                number, unit = (number if ":" in number else f"{number}:00"), half
        out.append(f"{_plain_number(number)}|{unit}")
        i = k
    return out


def canonical_tokens(text: str) -> list[str]:
    """Canonical tokens of ``text`` (see the module docstring); numbers come out as ``N|unit``."""
    raw = [AMERICAN_SPELLING.get(t, _MONTH_ABBREVIATIONS.get(t, t)) for t in _RAW_TOKEN.findall(_fold(text))]
    return _glue_units(_spoken_times(_words_to_numbers(raw)))


def is_number(token: str) -> bool:
    return "|" in token


# --------------------------------------------------------------------------- label words (from the catalog)

_GENERIC_LABELS = frozenset(
    "label labeled called received route via color brightness volume currently indoors indoor inside "
    "fare driver arrives delivered text latest email message top story ride reminder thermostat trading "
    "now playing mix alarm set timer started ends lights delay wind".split()
)
# Field labels of tool results outside the catalog (ingested data): they name a value, they are not one.
_RESULT_FIELD_LABELS = frozenset(
    "total subtotal order delivery departs departure arrival opens closes starts begins due expires expiry "
    "battery status confirmed booking reservation event entry price cost fee weight distance duration logged "
    "eta date".split()
)


def _catalog_label_words() -> frozenset[str]:
    """The fixed words of every facts template in ``pipeline.catalog`` (they name, not state, a value)."""
    words: set[str] = set()
    for spec in TOOLS:
        for literal, _, _, _ in string.Formatter().parse(spec.facts):
            for tok in canonical_tokens(literal or ""):
                if not is_number(tok) and tok not in UNIT_TOKENS:
                    words.add(tok)
    return frozenset(words)


LABEL_WORDS = _GENERIC_LABELS | _RESULT_FIELD_LABELS | _catalog_label_words()

_FIELD_SEPARATORS = re.compile(r"(?<!\d),|,(?!\d{3}(?!\d))|[;\n]|:\s")  # not the comma of 1,250


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
    spoken_pairs: frozenset[str]  # two bare numbers said in a row: "twelve fifty" -> 12.5 and 12:50

    @classmethod
    def of(cls, text: str) -> "ReplyIndex":
        tokens = tuple(canonical_tokens(text))
        numbers = frozenset(t for t in tokens if is_number(t))
        return cls(
            tokens=tokens,
            words=frozenset(t for t in tokens if not is_number(t)),
            numbers=numbers,
            bare_numbers=frozenset(t.split("|")[0] for t in numbers),
            spoken_pairs=frozenset(_spoken_pairs(tokens)),
        )

    def has_token(self, token: str) -> bool:
        if not is_number(token):
            return token in self.words
        number, unit = token.split("|")
        if token in self.numbers or f"{number}|" in self.numbers or number in self.spoken_pairs:
            return True
        return not unit and number in self.bare_numbers

    def ngrams(self, max_n: int) -> set[tuple[str, ...]]:
        toks = self.tokens
        return {toks[i:i + n] for n in range(1, max_n + 1) for i in range(len(toks) - n + 1)}


def _spoken_pairs(tokens: Sequence[str]) -> Iterator[str]:
    """A price or a time said as groups of numbers without unit: "twelve fifty" (12.5), "seven fifteen"
    (7:15), "one seventy-eight" (178), "one seventy-eight forty" (178.4)."""
    def group(token: str) -> int | None:
        return int(token[:-1]) if token.endswith("|") and token[:-1].isdigit() else None

    values = [group(t) for t in tokens] + [None, None]
    for i, (a, b, c) in enumerate(zip(values, values[1:], values[2:])):
        if a is None or b is None or not 10 <= b < 100:
            continue
        yield _plain_number(f"{a}.{b:02d}")
        if 1 <= a <= 12 and b < 60:
            yield f"{a}:{b:02d}"
        if 1 <= a <= 9:
            yield str(a * 100 + b)
            if c is not None and c < 100:
                yield _plain_number(f"{a * 100 + b}.{c:02d}")


def field_stated(f: FactField, reply: ReplyIndex) -> bool:
    return all(reply.has_token(t) for t in f.value_tokens)


def stated_values(reply_text: str, facts: Any) -> tuple[str, ...]:
    """The fact value tokens a reply states, whether or not it completes their field."""
    reply = ReplyIndex.of(reply_text)
    return tuple(dict.fromkeys(t for f in fact_fields(facts) for t in f.value_tokens if reply.has_token(t)))


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
