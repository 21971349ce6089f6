"""The one text layer the judge and the narration scorer share (pipeline/text_norm.py)."""
from __future__ import annotations

import ast
from pathlib import Path

from pipeline import judge, narration
from pipeline.text_norm import ONES, ORDINALS, TENS, UNITS, fold

ROOT = Path(__file__).resolve().parents[2]


def test_fold_reads_accents_apostrophes_and_minus_signs_one_way():
    assert fold("Café ÉCLAIR") == "cafe eclair"
    assert fold("It’s") == fold("It‘s") == fold("It`s") == fold("it's") == "it's"
    assert fold("−5 °C") == "-5 °c"


def test_number_words_come_from_num2words():
    assert ONES["seven"] == 7 and ONES["nineteen"] == 19 and TENS["ninety"] == 90
    assert ORDINALS["twentieth"] == 20 and ORDINALS["thirtieth"] == 30 and ORDINALS["third"] == 3
    assert UNITS["kilometres"] == UNITS["km"] == "km"


def test_judge_and_narration_normalise_alike():
    """The same reply, typed with curly or straight apostrophes and accents or none, gives the same verdict."""
    for a, b in (("I’m checking the weather in Malmö.", "I'm checking the weather in Malmo."),
                 ("Sorry, I can’t book rides.", "Sorry, I can't book rides.")):
        assert judge.cue_text(a) == judge.cue_text(b)
        assert judge.judge("tool_match", a).behaviour == judge.judge("tool_match", b).behaviour
        assert narration.canonical_tokens(a) == narration.canonical_tokens(b)


def test_no_cue_list_can_be_silently_empty():
    """The catalog's cues are imported, never guarded by `except ImportError` that would empty them."""
    for module in ("pipeline/judge.py", "pipeline/narration.py"):
        tree = ast.parse((ROOT / module).read_text())
        guarded = [h for h in ast.walk(tree) if isinstance(h, ast.ExceptHandler) and isinstance(h.type, ast.Name)
                   and h.type.id == "ImportError"]
        assert not guarded, f"{module}: an `except ImportError` at line {guarded[0].lineno}"
    assert judge.ACTION_PREFIXES and judge.CAPABILITIES and narration.LABEL_WORDS > narration._GENERIC_LABELS
