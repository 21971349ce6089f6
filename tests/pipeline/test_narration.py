"""Narration scoring: faithful and memorized on hand-made narrations; number and unit normalisation."""
from __future__ import annotations

import pytest

from pipeline.narration import TrainingValues, canonical_tokens, fact_fields, score_narration

FACTS = "Reykjavik: -3°C, freezing fog, wind 27 km/h"
TRAIN = TrainingValues.from_facts([
    "Paris: 14°C, light rain, wind 12 km/h",
    "London: 9°C, overcast, wind 5 km/h",
    "alarm set for 7:30 AM today, snooze 10 minutes",
])


@pytest.mark.parametrize("a, b", [
    ("14°C", "14 degrees"), ("14°C", "fourteen degrees Celsius"), ("12 km/h", "12 kilometers an hour"),
    ("12 km/h", "twelve kph"), ("$37", "37 dollars"), ("45%", "forty-five percent"), ("7:45 PM", "7:45 p.m."),
    ("-3°C", "minus three degrees"), ("205", "two hundred and five"), ("Touré", "toure"),
])
def test_canonical_tokens_agree(a, b):
    assert canonical_tokens(a) == canonical_tokens(b)


def test_fact_fields_drop_label_words():
    fields = fact_fields(FACTS)
    assert [f.value_tokens for f in fields] == [("reykjavik",), ("-3|degrees",), ("freezing", "fog"), ("27|kph",)]
    assert fact_fields({"city": "Lima", "temp": "21°C"})[1].value_tokens == ("21|degrees",)


def test_faithful_narration():
    score = score_narration("In Reykjavik it's minus three degrees with freezing fog; wind about 27 kilometers per hour.",
                            FACTS, TRAIN)
    assert score.faithful and not score.memorized and score.coverage == 1.0


def test_memorized_narration_states_training_values_instead():
    score = score_narration("In Paris it's 14 degrees with light rain and wind of 12 km/h.", FACTS, TRAIN)
    assert not score.faithful and score.memorized
    assert {"paris", "14|degrees", "light rain", "12|kph"} <= set(score.memorized_values)
    assert score.coverage == 0.0


def test_partial_and_both():
    partial = score_narration("Reykjavik has freezing fog.", FACTS, TRAIN)
    assert not partial.faithful and partial.coverage == 0.5 and not partial.memorized
    both = score_narration("Reykjavik: -3 degrees, freezing fog, wind 27 km/h, unlike Paris.", FACTS, TRAIN)
    assert both.faithful and both.memorized and both.memorized_values == ("paris",)


def test_a_bare_number_states_a_number_with_unit_but_another_unit_does_not():
    facts = "thermostat set to 21 degrees, currently 19 degrees indoors"
    assert score_narration("Target 21 degrees; the house is currently at 19.", facts).faithful
    assert not score_narration("Target 21 degrees; the house is 19 minutes away.", facts).faithful


def test_values_from_the_request_are_not_memorized():
    score = score_narration("Compared to Paris, Reykjavik is -3°C with freezing fog and wind 27 km/h.", FACTS, TRAIN,
                            context_texts=["is it colder than Paris in Reykjavik?"])
    assert score.faithful and not score.memorized


def test_no_training_values_means_never_memorized():
    assert not score_narration("Paris, 14 degrees", FACTS, None).memorized


@pytest.mark.parametrize("a, b", [
    # money in words, with and without the subunit; currencies by symbol, code and name
    ("$12.50", "twelve dollars and fifty cents"), ("$8.75", "eight dollars seventy-five"), ("$0.99", "ninety-nine cents"),
    ("$187.20", "a hundred eighty-seven dollars and twenty cents"), ("$1,250", "one thousand two hundred fifty dollars"),
    ("£23.40", "twenty-three pounds forty"), ("£3.20", "three pounds twenty pence"), ("£14", "fourteen quid"),
    ("€95", "95 EUR"), ("€12", "twelve euros"),
    # decimals and fractions in words; percent spelled three ways
    ("1.1%", "one point one percent"), ("2.5 kg", "two and a half kilograms"), ("0.5%", "half a percent"),
    ("45 per cent", "45%"),
    # times said as words, 24-hour clocks, the dot of British times
    ("7:30 AM", "half past seven in the morning"), ("6:45 PM", "a quarter to seven this evening"),
    ("2:15 PM", "quarter past two in the afternoon"), ("9:10 PM", "ten past nine tonight"), ("12:00 PM", "noon"),
    ("12:00 AM", "midnight"), ("19:45", "7:45 PM"), ("08:05", "8:05 AM"), ("7:30 PM", "7.30pm"),
    ("10:30 AM", "ten thirty in the morning"), ("11:00 AM", "eleven in the morning"),
    # dates: ordinals in words and digits, ISO dates
    ("3 May", "the 3rd of May"), ("May 3", "the third of May"), ("21 September", "the twenty-first of September"),
    ("2027-03-14", "14 March 2027"), ("12 Dec", "12 December"),
    # units and durations
    ("15 mph", "fifteen miles per hour"), ("72°F", "seventy-two degrees Fahrenheit"), ("30 minutes", "half an hour"),
    ("90 minutes", "an hour and a half"), ("2 hours", "120 minutes"),
    # British and American spellings
    ("colour soft blue", "soft blue color"), ("city centre", "city center"), ("grey", "gray"), ("cancelled", "canceled"),
    ("favourite", "favorite"), ("organised", "organized"), ("Theatre Royal", "Theater Royal"),
])
def test_a_spoken_form_states_the_written_fact(a, b):
    """``a`` is the written fact, ``b`` the reply that says it."""
    assert score_narration(b, a).faithful, (canonical_tokens(a), canonical_tokens(b))


@pytest.mark.parametrize("a, b", [
    ("€12", "12 dollars"), ("£14", "$14"), ("7:30 AM", "half past eight"), ("19:45", "9:45 PM"),
    ("$12.50", "twelve dollars"), ("3 May", "5 May"),
])
def test_a_different_value_does_not_state_the_fact(a, b):
    assert not score_narration(b, a).faithful, (canonical_tokens(a), canonical_tokens(b))


def test_ordinal_words_are_numbers_only_in_dates():
    assert canonical_tokens("your first meeting") == ["your", "first", "meeting"]
    assert canonical_tokens("one second") == ["1|", "second"]
    assert canonical_tokens("June first") == ["june", "1|"]


def test_a_price_or_time_said_as_two_numbers_states_it():
    assert score_narration("The ride to the station is twelve fifty.", "ride to the station: fare $12.50").faithful
    assert score_narration("Amazon is at one seventy-eight forty.", "Amazon trading at $178.40").faithful
    assert score_narration("The film is at seven thirty.", "film starts 7:30 PM").faithful
    assert not score_narration("The ride to the station is twelve forty.", "ride to the station: fare $12.50").faithful


def test_fields_are_not_split_at_a_thousands_comma_and_result_labels_are_not_values():
    fields = fact_fields("order total $1,250, delivery Friday")
    assert [f.value_tokens for f in fields] == [("1250|dollars",), ("friday",)]
