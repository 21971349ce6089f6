"""The system prompt and the chat layout of a row, shared by training and inference.

The model only behaves as trained if it sees, at inference, the very prompt it
was trained on, so this module is the one place that spells it out (format from
the v4.1 model card)::

    Respond with interleaved text and audio.

    Tools available:
    - weather: get current weather and forecasts for a location
    - alarm: set or cancel alarms

    If a request needs a tool that is not listed above, politely decline instead of pretending to use it.

Turn 2 of the two-turn flow (``set_context``) appends the tool result::

    <the prompt above>

    Known facts you must use when relevant:
    Paris: 14°C, light rain, wind 12 km/h

:func:`build_chat_turns` lays a dataset row out as the conversation that
preprocessing trains on and evaluation replays.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

from pipeline.records import DatasetRow, Tool

PREAMBLE = "Respond with interleaved text and audio."
TOOLS_HEADER = "Tools available:"
DECLINE_INSTRUCTION = (
    "If a request needs a tool that is not listed above, politely decline instead of pretending to use it."
)
FACTS_HEADER = "Known facts you must use when relevant:"


def system_prompt(tools: Iterable[Tool]) -> str:
    """The turn-1 system prompt listing ``tools`` in the given order."""
    tool_lines = [f"- {tool.name}: {tool.description}" for tool in tools]
    return "\n".join([PREAMBLE, "", TOOLS_HEADER, *tool_lines, "", DECLINE_INSTRUCTION])


def format_facts(facts: str | dict[str, Any]) -> str:
    """A facts block as text: a string verbatim; an object as one ``key: value`` line per key."""
    if isinstance(facts, str):
        return facts
    return "\n".join(
        f"{key}: {value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)}"
        for key, value in facts.items()
    )


def facts_system_prompt(tools: Iterable[Tool], facts: str | dict[str, Any]) -> str:
    """The turn-2 system prompt (set_context): the turn-1 prompt plus the injected tool result."""
    return f"{system_prompt(tools)}\n\n{FACTS_HEADER}\n{format_facts(facts)}"


@dataclass(frozen=True)
class Turn:
    """One message of a chat. ``is_turn2_system`` marks the facts prompt of the two-turn flow."""

    role: str  # "system" | "user" | "assistant"
    text: str
    is_turn2_system: bool = False


def build_chat_turns(row: DatasetRow) -> list[Turn]:
    """The conversation a row stands for.

    - tool_match, tool_miss, non_tool: system, user, assistant.
    - tool_result_speak: turn 1 (system, user, the spoken ack), then turn 2
      (the facts system prompt, the narration as assistant). There is no user
      message in turn 2: the tool result arrives through the system prompt.
    """
    prompt = system_prompt(row.tools)
    if row.row_class != "tool_result_speak":
        return [Turn("system", prompt), Turn("user", row.user), Turn("assistant", row.assistant)]
    assert row.turn1 is not None and row.facts is not None, "validated tool_result_speak rows carry turn1 and facts"
    return [
        Turn("system", prompt),
        Turn("user", row.turn1.user),
        Turn("assistant", row.turn1.assistant),
        Turn("system", facts_system_prompt(row.tools, row.facts), is_turn2_system=True),
        Turn("assistant", row.assistant),
    ]
