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
