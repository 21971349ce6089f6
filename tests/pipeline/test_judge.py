"""The rule-based judge on hand-made replies with known verdicts, and on every dataset template."""
from __future__ import annotations

from pipeline.params import StageError

import random

import pytest

from pipeline.judge import BEHAVIOURS, EXPECTED, cue_text, judge, well_formed

WEATHER_FACTS = "Paris: 14°C, light rain, wind 12 km/h"


@pytest.mark.parametrize(
    "row_class, text, behaviour",
    [
        # acks
        ("tool_match", "Sure, checking the weather in Paris.", "ack"),
        ("tool_match", "On it, setting an alarm for 7:45 AM now.", "ack"),
        ("tool_match", "Let me look that up for you.", "ack"),
        ("tool_match", "One moment.", "ack"),
        # tricky: an ack that also says sorry is still an ack
        ("tool_match", "Sorry for the wait! Checking the weather in Paris right away.", "ack"),
        ("tool_match", "Oh, sorry, one second, finding directions to the airport.", "ack"),
        # refusals
        ("tool_miss", "Sorry, I can't check traffic right now because that tool isn't available to me.", "refusal"),
        # tricky: refusals with no "sorry"
        ("tool_miss", "I can't check the weather from here.", "refusal"),
        ("tool_miss", "That's not something I can do; I'm unable to book a ride.", "refusal"),
        ("tool_miss", "There's no tool here that lets me play music.", "refusal"),
        ("tool_miss", "Unfortunately I have no way to look up stock prices at the moment.", "refusal"),
        # a refusal that offers an alternative is still a refusal (earliest cue decides)
        ("tool_miss", "I can't check traffic, that tool isn't listed, but let me find directions instead.", "refusal"),
        # direct chat, including one with "I can't" that is not a decline
        ("non_tool", "The capital of Peru is Lima.", "direct"),
        ("non_tool", "I can't listen the way you do, but I love talking about music.", "direct"),
        ("non_tool", "Water boils at 100 degrees Celsius at sea level.", "direct"),
        ("non_tool", "Of course, I'm happy to chat. What would you like to talk about?", "direct"),
        # narrations: the facts with other spellings of numbers and units
        ("tool_result_speak", "Right now in Paris it's 14 degrees with light rain, and the wind is around 12 kilometers an hour.", "narration"),
        ("tool_result_speak", "Paris: 14°C, light rain, wind 12 km/h.", "narration"),
        ("tool_result_speak", "It's fourteen degrees Celsius in Paris, light rain, wind twelve kph.", "narration"),
        # junk
        ("non_tool", "", "other"),
        ("non_tool", "\n\n ###", "other"),
        ("non_tool", "zxqv bcdfg hjklm nprst", "other"),
        ("tool_match", "������\"\"\"\"", "other"),
    ],
)
def test_hand_made_replies(row_class, text, behaviour):
    verdict = judge(row_class, text, facts=WEATHER_FACTS if row_class == "tool_result_speak" else None)
    assert verdict.behaviour == behaviour, verdict.reason
    assert verdict.correct == (behaviour == EXPECTED[row_class])


def test_every_behaviour_can_be_wrong_for_each_class():
    # an ack where a refusal is expected, a refusal where an ack is expected, ...
    assert judge("tool_miss", "Sure, checking traffic on Route 4.").behaviour == "ack"
    assert not judge("tool_miss", "Sure, checking traffic on Route 4.").correct
    assert judge("tool_match", "Sorry, I can't check the weather, that tool isn't available.").behaviour == "refusal"
    assert judge("non_tool", "Okay, checking the weather in Lima.").behaviour == "ack"
    assert judge("non_tool", "I'm sorry, I'm not able to help with that here.").behaviour == "refusal"


def test_a_fabricated_result_is_not_an_ack():
    verdict = judge("tool_match", "Sure! It's currently 14 degrees in Paris with light rain.")
    assert verdict.behaviour == "narration" and not verdict.correct


def test_narration_must_state_every_fact():
    partial = judge("tool_result_speak", "It's 14 degrees in Paris.", facts=WEATHER_FACTS)
    assert partial.behaviour == "other" and "missing" in partial.reason
    wrong_number = judge("tool_result_speak", "Paris has light rain, 15 degrees, wind 12 km/h.", facts=WEATHER_FACTS)
    assert wrong_number.behaviour == "other"
    # the turn-1 ack repeated in turn 2 is an ack, not a narration
    assert judge("tool_result_speak", "Sure, checking the weather in Paris.", facts=WEATHER_FACTS).behaviour == "ack"


def test_numbers_and_units_are_normalised():
    facts = "ride to the airport: fare about $37, driver arrives in 5 minutes"
    text = "A ride to the airport costs thirty-seven dollars and the driver is five minutes away."
    assert judge("tool_result_speak", text, facts=facts).behaviour == "narration"
    # the same number with another unit does not state the fact
    assert judge("tool_result_speak", "The airport ride is 37 minutes, driver in 5 minutes.", facts=facts).behaviour != "narration"


def test_ack_of_another_tool_is_not_correct():
    verdict = judge("tool_match", "Sure, checking the weather in Paris.", tool_name="alarm")
    assert verdict.behaviour == "ack" and not verdict.correct and "weather" in verdict.reason
    assert judge("tool_match", "Sure, checking the weather in Paris.", tool_name="weather").correct


def test_behaviour_names_are_the_confusion_columns():
    assert set(EXPECTED.values()) | {"other"} == set(BEHAVIOURS)


def test_cue_text_and_well_formed():
    assert cue_text("I can’t — sorry!") == "i cant sorry"
    assert well_formed("Hi! What can I do for you?")[0]
    assert not well_formed("\x04\x04\x04&&&&")[0]


@pytest.mark.parametrize("side", ["train", "heldout"])
def test_every_template_reference_reply_is_judged_as_its_class(side):
    """The judge's lexicons cover every ack, refusal, narration and chat template of the dataset."""
    from pipeline.catalog import RowMaker

    maker = RowMaker(random.Random(7), side)
    for i in range(300):
        for row in (maker.tool_match(f"m{i}"), maker.tool_result_speak(f"s{i}"),
                    maker.tool_miss(f"x{i}", hard=bool(i % 2)), maker.non_tool(f"n{i}")):
            verdict = judge(row.row_class, row.assistant, facts=row.facts,
                            tool_name=row.tool_call.name if row.tool_call else None)
            assert verdict.correct, (row.row_class, row.assistant, row.facts, verdict.reason)
            if row.turn1 is not None:
                assert judge("tool_match", row.turn1.assistant, tool_name=row.turn1.tool_call.name).correct


def test_every_ack_and_refusal_template_with_every_tool():
    from pipeline import templates as T
    from pipeline.catalog import TOOLS, RowMaker

    maker = RowMaker(random.Random(0), "train")
    for spec in TOOLS:
        values = maker.draw_values(spec)
        for template in T.ACK_TEMPLATES:
            text = template.format(action=spec.action.format(**values))
            assert judge("tool_match", text, tool_name=spec.name).correct, text
        for template in T.REFUSAL_TEMPLATES:
            text = template.format(capability=spec.capability)
            assert judge("tool_miss", text).correct, text


# --------------------------------------------------------------------------- the judge measured on labelled replies

from pathlib import Path  # noqa: E402

from pipeline.judge import (  # noqa: E402
    JUDGE_CASES,
    JudgeCase,
    JudgeCaseError,
    find_cues,
    measure,
    read_judge_cases,
)

ROOT = Path(__file__).resolve().parents[2]
REQUIRED_FAMILIES = (
    "refusal/classic", "refusal/no-refusal-words", "refusal/british", "refusal/decline-words",
    "refusal/capability-negated", "refusal/with-alternative", "ack/let-me-ill", "ack/progressive",
    "ack/wait-phrase", "ack/british", "ack/result-words", "ack/other-tool", "chat/gerund-subject",
    "chat/let-me-discourse", "chat/result-words", "chat/numbers", "chat/self-limitation",
    "narration/money-words", "narration/currencies", "narration/percent", "narration/times", "narration/dates",
    "narration/units", "narration/british-american", "narration/unfaithful", "narration/memorized",
    "chat/ack-lookalike",
)


@pytest.fixture(scope="module")
def judge_cases():
    return read_judge_cases(ROOT / JUDGE_CASES)


def test_the_labelled_set_covers_every_family_class_and_behaviour(judge_cases):
    assert len(judge_cases) >= 150
    families = {case.family for case in judge_cases}
    assert set(REQUIRED_FAMILIES) <= families, sorted(set(REQUIRED_FAMILIES) - families)
    assert {case.row_class for case in judge_cases} == set(EXPECTED)
    assert {case.expected for case in judge_cases} == set(BEHAVIOURS)
    narrations = [c for c in judge_cases if c.row_class == "tool_result_speak"]
    assert all(c.faithful is not None for c in narrations)
    assert any(c.memorized for c in narrations) and any(c.memorized is False for c in narrations)


def test_the_judge_gets_at_least_98_percent_of_the_labelled_replies_right(judge_cases):
    accuracy = measure(judge_cases)
    print(f"\njudge on {JUDGE_CASES}: {accuracy.summary()}")
    for miss in accuracy.misses:
        print("  miss:", miss)
    assert accuracy.accuracy >= 0.98, "\n".join(map(str, accuracy.misses))


def test_every_phrasing_family_is_judged_right(judge_cases):
    """A whole family must not slip behind an overall number: one odd reply per family at most."""
    accuracy = measure(judge_cases)
    weak = {family: f"{correct}/{n}" for family, (correct, n) in accuracy.per_family.items() if n - correct > 1}
    assert not weak, (weak, [str(m) for m in accuracy.misses if m.family in weak])


def test_measure_counts_correct_cases_and_lists_each_miss_with_what_the_judge_said():
    cases = [
        JudgeCase("a", "ack/x", "tool_match", "Sure, checking the weather in Lima.", "ack", tool="weather"),
        JudgeCase("b", "ack/x", "tool_match", "Sure, checking the weather in Lima.", "ack", tool="alarm", correct=False),
        JudgeCase("c", "chat/x", "non_tool", "The capital of Peru is Lima.", "refusal"),  # a deliberate wrong label
        JudgeCase("d", "narration/x", "tool_result_speak", "In Paris it's 14 degrees with light rain.", "other",
                  facts="Lima: 21°C, sunny", training_facts=("Paris: 14°C, light rain",), faithful=False, memorized=True),
    ]
    accuracy = measure(cases)
    assert (accuracy.n, accuracy.n_correct, accuracy.accuracy) == (4, 3, 0.75)
    assert accuracy.per_family == {"ack/x": (2, 2), "chat/x": (0, 1), "narration/x": (1, 1)}
    (miss,) = accuracy.misses
    assert (miss.id, miss.expected, miss.got) == ("c", "behaviour=refusal", "behaviour=direct")
    assert accuracy.summary().startswith("75.0 % (3/4)")
    assert measure([]).accuracy is None and measure([]).summary().startswith("unavailable")


def test_a_bad_judge_cases_line_fails_naming_file_and_line(tmp_path):
    good = '{"id": "x", "family": "f", "class": "non_tool", "reply": "Hi!", "expected": "direct"}'
    for bad, message in [
        ('{"id": "y", "family": "f", "class": "chit_chat", "reply": "Hi", "expected": "direct"}', "unknown class"),
        ('{"id": "y", "family": "f", "class": "non_tool", "reply": "Hi", "expected": "chat"}', "unknown behaviour"),
        ('{"id": "y", "family": "f", "class": "tool_result_speak", "reply": "Hi", "expected": "other"}', "needs 'facts'"),
        ('{"id": "x", "family": "f", "class": "non_tool", "reply": "Hi", "expected": "direct"}', "duplicate id"),
        ('{"id": "y", "family": "f", "class": "non_tool", "reply": "Hi", "expected": "direct", "verdict": 1}', "unknown keys"),
        ("{not json", "invalid JSON"),
    ]:
        path = tmp_path / "cases.jsonl"
        path.write_text(good + "\n" + bad + "\n", encoding="utf-8")
        with pytest.raises(StageError, match=rf"cases.jsonl:2: .*{message}"):  # JudgeCaseError, or the JSONL layer's
            read_judge_cases(path)
    with pytest.raises(StageError, match="missing.jsonl: file not found"):
        read_judge_cases(tmp_path / "missing.jsonl")


@pytest.mark.parametrize("row_class, text, behaviour", [
    # a gerund phrase as the subject of a statement is chat, not an ack
    ("non_tool", "Checking in with friends can really lift your mood.", "direct"),
    ("tool_match", "Checking the weather in Lima.", "ack"),
    ("tool_match", "Checking whether it is raining in Lima.", "ack"),
    # ... and a refusal that opens with one is a refusal
    ("tool_miss", "Sending texts isn't something I can do.", "refusal"),
    # a progressive is an ack when it is ours, not when it is someone else's or a noun
    ("tool_match", "We're checking the weather in Paris now.", "ack"),
    ("non_tool", "You're getting better at this!", "direct"),
    ("non_tool", "Thanks for checking in!", "direct"),
    # conversational idioms on tool verbs
    ("non_tool", "Let me put it simply: mixing blue and yellow makes green.", "direct"),
    ("tool_match", "Let me put on some jazz.", "ack"),
    # a result word inside an ack's clause is what the ack is about; in its own clause it is a claim
    ("tool_match", "Let me check what's currently on your calendar for Thursday.", "ack"),
    ("tool_match", "Checking the fare for a ride to the airport at 5 PM.", "ack"),
    ("tool_match", "Checking your calendar, you have a meeting at 3 PM.", "narration"),
    # result words and measurements in chat
    ("non_tool", "You have a great sense of humour!", "direct"),
    ("non_tool", "A marathon is 42.195 kilometres long.", "direct"),
    ("non_tool", "It's 14 degrees in Paris right now.", "narration"),
    # refusals that name the missing tool, or decline in so many words
    ("tool_miss", "There's no traffic tool in this setup.", "refusal"),
    ("tool_miss", "I wasn't given a way to check stock prices.", "refusal"),
    ("tool_miss", "I'm going to have to politely decline.", "refusal"),
    ("non_tool", "I don't have a favourite colour, but many people love blue.", "direct"),
    # a person's limits are chat, a tool's are a refusal
    ("non_tool", "I'm not able to sleep, but I'm always here when you need me.", "direct"),
    ("tool_miss", "I'm not able to book rides for you here.", "refusal"),
])
def test_one_reply_per_family_rule(row_class, text, behaviour):
    verdict = judge(row_class, text)
    assert verdict.behaviour == behaviour, verdict.reason


def test_cues_are_found_per_clause():
    cues = find_cues("Sure, checking the fare. The fare is 12 dollars today.")
    assert cues.ack[1] == "checking" and cues.result[1] == "fare" and cues.result[0] > cues.ack[0]
