"""Size bounds on a dataset row, checked by ``validate`` and the dataset stage before the row is parsed.

Every later stage does work in proportion to a row's size: tts synthesises every
text field (a 200 kB reply was ~3 h of audio), preprocess encodes that audio (it
grew to 22.7 GB until the kernel killed it), eval prefills the facts block (10,000
facts hung ``eval_classes`` on one row). The production recipe trains with a
512-token context (``preprocess.max_context_length``, ``train.context_length``;
the model card's command line), about 2,000 characters of English: a row far past
that can never be trained on and only costs time and memory downstream.

The bounds are ``dataset`` params (defaults below, each a multiple of what fits
the context, so no real row is refused). A row past one is a bad row like any
other: ``FILE:LINE: reason`` naming the field, the size and the params key, written
to ``quarantine.jsonl`` and counted against ``dataset.max_bad_fraction``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

from pipeline.jsonl import Line

FACT_SEPARATORS = ",;\n"  # a string facts block lists one fact per separated field (as records.fact_values reads it)


@dataclass(frozen=True)
class RowBounds:
    """The size limits of one row; the names are the ``dataset`` params keys."""

    max_text_chars: int = 4000  # any one text value (user, assistant, a tool description, ...): ~2x the context
    max_facts: int = 64  # values in a facts object, or fields of a facts string
    max_fact_chars: int = 4000  # the whole facts block as written (it is read out in one reply)
    max_tools: int = 16  # tools listed to the model (the system prompt); generated rows list 2-5
    max_row_bytes: int = 32768  # the JSONL line, UTF-8: bounds every field together (and nesting of many small ones)

    def problem(self, value: dict[str, Any], raw: str) -> str | None:
        """Why the decoded row ``value`` (line ``raw``) is past a bound, or None."""
        size = len(raw.encode("utf-8"))
        if size > self.max_row_bytes:
            return f"row has {size} bytes, more than dataset.max_row_bytes = {self.max_row_bytes}"
        for where, text in _strings(value, ""):
            if len(text) > self.max_text_chars:
                return (f"field '{where}' has {len(text)} characters, more than "
                        f"dataset.max_text_chars = {self.max_text_chars}")
        tools = value.get("tools")
        if isinstance(tools, list) and len(tools) > self.max_tools:
            return f"field 'tools' lists {len(tools)} tools, more than dataset.max_tools = {self.max_tools}"
        facts = value.get("facts")
        if facts is not None:
            count = _fact_count(facts)
            if count > self.max_facts:
                return f"field 'facts' has {count} facts, more than dataset.max_facts = {self.max_facts}"
            chars = sum(len(text) for _, text in _strings(facts, ""))
            if chars > self.max_fact_chars:
                return (f"field 'facts' has {chars} characters, more than "
                        f"dataset.max_fact_chars = {self.max_fact_chars}")
        return None

    def line_check(self) -> Callable[[Line], str | None]:
        """The check ``pipeline.records.parse_lines`` applies to each decoded line (``row_check=``)."""
        return lambda line: self.problem(line.value, line.raw)


def _strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    """(path, text) of every string in ``value``: object keys included, as ``facts.city`` / ``tools[2].name``."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            inner = f"{where}.{key}" if where else str(key)
            yield inner, str(key)
            yield from _strings(item, inner)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{where}[{index}]")


def _fact_count(facts: Any) -> int:
    """Leaf values of a facts object or list; fields of a facts string."""
    if isinstance(facts, dict):
        return sum(_fact_count(item) for item in facts.values())
    if isinstance(facts, list):
        return sum(_fact_count(item) for item in facts)
    if isinstance(facts, str):
        return 1 + sum(facts.count(sep) for sep in FACT_SEPARATORS)
    return 1
