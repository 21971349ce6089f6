"""The system prompt is the card's format, byte for byte; chats are laid out the same for every consumer."""
from __future__ import annotations

from pipeline.prompts import Turn, build_chat_turns, facts_system_prompt, format_facts, system_prompt
from pipeline.records import DatasetRow, Tool, ToolCall, Turn1

TOOLS = (Tool("weather", "get current weather and forecasts for a location"), Tool("alarm", "set or cancel alarms"))

EXPECTED_PROMPT = (
    "Respond with interleaved text and audio.\n"
    "\n"
    "Tools available:\n"
    "- weather: get current weather and forecasts for a location\n"
    "- alarm: set or cancel alarms\n"
    "\n"
    "If a request needs a tool that is not listed above, politely decline instead of pretending to use it."
)


def test_system_prompt_for_two_tools_is_exact():
    assert system_prompt(TOOLS) == EXPECTED_PROMPT


def test_tools_are_listed_in_row_order():
    assert system_prompt(TOOLS[::-1]).index("- alarm") < system_prompt(TOOLS[::-1]).index("- weather")


def test_turn2_prompt_appends_the_facts_block():
    facts = "Paris: 14°C, light rain, wind 12 km/h"
    assert facts_system_prompt(TOOLS, facts) == (
        EXPECTED_PROMPT + "\n\nKnown facts you must use when relevant:\nParis: 14°C, light rain, wind 12 km/h")


def test_object_facts_render_one_key_per_line():
    assert format_facts({"city": "Paris", "temp_c": 14, "sky": ["rain"]}) == 'city: Paris\ntemp_c: 14\nsky: ["rain"]'


def test_single_turn_rows_are_system_user_assistant():
    row = DatasetRow("n1", "non_tool", TOOLS, "Good morning!", "Good morning! How can I help?")
    assert build_chat_turns(row) == [
        Turn("system", EXPECTED_PROMPT),
        Turn("user", "Good morning!"),
        Turn("assistant", "Good morning! How can I help?"),
    ]


def test_tool_result_speak_is_turn1_then_facts_prompt_and_narration():
    call = ToolCall("weather", {"city": "Paris"})
    row = DatasetRow("r1", "tool_result_speak", TOOLS, "weather in Paris?", "It's 14 degrees and raining in Paris.",
                     facts="Paris: 14°C, light rain", turn1=Turn1("weather in Paris?", "Sure, checking Paris.", call))
    turns = build_chat_turns(row)
    assert [(turn.role, turn.is_turn2_system) for turn in turns] == [
        ("system", False), ("user", False), ("assistant", False), ("system", True), ("assistant", False)]
    assert turns[1].text == "weather in Paris?" and turns[2].text == "Sure, checking Paris."
    assert turns[3].text == facts_system_prompt(TOOLS, "Paris: 14°C, light rain")
    assert turns[4].text == "It's 14 degrees and raining in Paris."
