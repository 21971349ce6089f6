"""The dataset stage: deterministic v4-style generation, stratified leak-free splits, validation that loses nothing."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from pipeline import templates
from pipeline.catalog import RELATED, TOOLS, is_hard_negative
from pipeline.records import CLASSES, DatasetRow, Tool, iter_leak_keys, read_rows
from tasks import dataset as stage
from tasks import tts as tts_stage
from pipeline.params import ParamsError, parse_params
from tasks.dataset import (DatasetError, DatasetParams, allocate, check_no_leakage, find_leaks, generate_splits,
                           run_stage, stratified_take, validate_files)

REPO = Path(__file__).resolve().parents[2]

PARAMS = {  # the smoke profile's sizes
    "source": "generate", "ingest_path": "data/raw/train_v4.distilled.jsonl", "seed": 41,
    "train_size": 24, "eval_size": 8, "heldout_per_class": 2, "novel_facts": 4, "max_bad_fraction": 0.02,
    "class_shares": {"tool_match": 0.30, "tool_result_speak": 0.20, "tool_miss": 0.28, "non_tool": 0.22},
    "hard_negative_share": 0.6, "tools_per_row": [2, 5],
}
PRODUCTION = {**PARAMS, "train_size": 3000, "eval_size": 400, "heldout_per_class": 30, "novel_facts": 60}


def config(**overrides) -> DatasetParams:
    return parse_params(DatasetParams, {**PARAMS, **overrides})


@pytest.fixture(scope="module")
def production_splits():
    return generate_splits(parse_params(DatasetParams, PRODUCTION))


def run_in(tmp_path: Path, cfg: DatasetParams) -> dict:
    return run_stage(cfg, tmp_path / "data/dataset", tmp_path / "reports/metrics/dataset.json")


# --------------------------------------------------------------------------- generation

def test_same_seed_gives_byte_identical_files(tmp_path):
    run_in(tmp_path / "a", config())
    run_in(tmp_path / "b", config())
    run_in(tmp_path / "c", config(seed=42))
    for name in stage.SPLITS:
        first = (tmp_path / "a/data/dataset" / f"{name}.jsonl").read_bytes()
        assert first and first == (tmp_path / "b/data/dataset" / f"{name}.jsonl").read_bytes()
    assert (tmp_path / "a/data/dataset/train.jsonl").read_bytes() != (tmp_path / "c/data/dataset/train.jsonl").read_bytes()


def test_separate_processes_write_identical_files(tmp_path):
    """Nothing depends on Python's per-process hash seed."""
    digests = []
    for hash_seed in ("1", "2"):
        work = tmp_path / hash_seed
        work.mkdir()
        (work / "params.yaml").write_text(yaml.safe_dump({"dataset": PARAMS}))
        subprocess.run([sys.executable, "-m", "tasks.dataset"], cwd=work, check=True, capture_output=True,
                       env={"PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
        digests.append([(work / "data/dataset" / f"{name}.jsonl").read_bytes() for name in stage.SPLITS])
    assert digests[0] == digests[1]


def test_production_sizes_and_class_proportions(production_splits):
    counts = {name: Counter(row.row_class for row in rows) for name, rows in production_splits.items()}
    assert {name: sum(c.values()) for name, c in counts.items()} == {
        "train": 3000, "eval": 400, "heldout": 120, "novel_facts": 60}
    assert counts["train"] == {"tool_match": 900, "tool_result_speak": 600, "tool_miss": 840, "non_tool": 660}
    assert counts["eval"]["tool_miss"] == 112  # 28% in eval too
    assert counts["heldout"] == {name: 30 for name in CLASSES}
    assert counts["novel_facts"] == {"tool_result_speak": 60}


def test_tool_miss_is_60_percent_hard_negatives(production_splits):
    misses = [row for row in production_splits["train"] if row.row_class == "tool_miss"]
    assert sum(map(is_hard_negative, misses)) == round(0.6 * len(misses))
    for row in misses:
        assert row.requested_tool not in row.tool_names
        related_listed = RELATED[row.requested_tool] & set(row.tool_names)
        assert bool(related_listed) == is_hard_negative(row)


def test_every_row_lists_two_to_five_tools_and_matches_list_their_tool(production_splits):
    for row in (row for rows in production_splits.values() for row in rows):
        assert 2 <= len(row.tools) <= 5
        call = row.tool_call or (row.turn1.tool_call if row.turn1 else None)
        if call is not None:
            assert call.name in row.tool_names


def test_catalog_has_ten_plus_tools_with_varied_phrasings_and_related_tools():
    names = {spec.name for spec in TOOLS}
    assert len(TOOLS) >= 10
    assert {"weather", "alarm", "email", "maps", "traffic", "iot_lights", "calendar", "timer", "music", "news"} <= names
    assert RELATED["traffic"] >= {"maps"}
    for spec in TOOLS:
        assert spec.description and len(set(spec.requests)) >= 8
        assert RELATED[spec.name], f"{spec.name} has no related tool for hard negatives"
        assert all(spec.name in RELATED[other] for other in RELATED[spec.name])  # symmetric


def test_at_least_19_ack_and_19_refusal_templates_are_used_in_training(production_splits):
    train = production_splits["train"]
    refusals = {row.assistant for row in train if row.row_class == "tool_miss"}
    used_refusals = {t for t in templates.REFUSAL_TEMPLATES
                     if any(re.fullmatch(re.escape(t).replace(r"\{capability\}", ".+"), text) for text in refusals)}
    acks = {row.assistant for row in train if row.row_class == "tool_match"}
    used_acks = {t for t in templates.ACK_TEMPLATES
                 if any(re.fullmatch(re.escape(t).replace(r"\{action\}", ".+"), text) for text in acks)}
    assert len(used_refusals) >= 19 and len(used_acks) >= 19


def test_narrations_state_the_numbers_of_their_facts(production_splits):
    rows = [row for name in ("train", "novel_facts") for row in production_splits[name]
            if row.row_class == "tool_result_speak"]
    for row in rows:
        assert set(re.findall(r"\d+", str(row.facts))) <= set(re.findall(r"\d+", row.assistant)), row.id


def test_non_tool_rows_are_chat_without_tool_fields(production_splits):
    chats = [row for row in production_splits["train"] if row.row_class == "non_tool"]
    assert len({row.user for row in chats}) > 100
    assert all(row.tool_call is None and row.facts is None and row.requested_tool is None for row in chats)


# --------------------------------------------------------------------------- splits and leakage

def test_allocate_is_proportional_and_exact():
    assert allocate(400, PARAMS["class_shares"]) == {
        "tool_match": 120, "tool_result_speak": 80, "tool_miss": 112, "non_tool": 88}
    assert sum(allocate(7, {"a": 1, "b": 1, "c": 1}).values()) == 7


def test_stratified_take_keeps_class_proportions():
    import random
    tools = (Tool("weather", "w"),)
    rows = [DatasetRow(f"r{i}", name, tools, f"u{i}", "a")
            for i, name in enumerate(["tool_match"] * 40 + ["tool_miss"] * 20 + ["non_tool"] * 40)]
    taken, rest = stratified_take(rows, 10, random.Random(0))
    assert Counter(row.row_class for row in taken) == {"tool_match": 4, "tool_miss": 2, "non_tool": 4}
    assert len(rest) == 90 and not {row.id for row in taken} & {row.id for row in rest}


@pytest.mark.parametrize("seed", [41, 7, 2024])
def test_generated_heldout_and_novel_facts_do_not_leak(seed):
    assert find_leaks(generate_splits(parse_params(DatasetParams, {**PRODUCTION, "seed": seed}))) == []


def test_leak_check_catches_a_copied_row():
    splits = generate_splits(config())
    leaked = dataclasses.replace(splits["heldout"][0], id="sneaky")
    splits["train"].append(leaked)
    assert any("sneaky" in leak for leak in find_leaks(splits))
    with pytest.raises(DatasetError, match="leak"):
        check_no_leakage(splits)


def test_leak_check_catches_same_text_up_to_case_and_punctuation():
    splits = generate_splits(config())
    held = splits["heldout"][0]
    twin = dataclasses.replace(splits["train"][0], user=held.user.upper() + "?!")
    if twin.turn1 is not None:
        twin = dataclasses.replace(twin, turn1=dataclasses.replace(twin.turn1, user=twin.user))
    splits["eval"].append(dataclasses.replace(twin, id="twin"))
    assert find_leaks(splits)


def test_leak_check_catches_a_shared_fact_value():
    splits = generate_splits(config())
    novel = splits["novel_facts"][0]
    trained = next(row for row in splits["train"] if row.row_class == "tool_result_speak")
    first_field = str(novel.facts).split(",")[0]
    splits["train"].append(dataclasses.replace(trained, id="copied-fact", facts=f"{first_field}, something else"))
    assert any("shares fact" in leak for leak in find_leaks(splits))


# --------------------------------------------------------------------------- the stage

def test_stage_writes_splits_quarantine_and_metrics(tmp_path):
    metrics = run_in(tmp_path, config())
    out = tmp_path / "data/dataset"
    assert (out / "quarantine.jsonl").read_text() == ""
    for name in stage.SPLITS:
        result = read_rows(out / f"{name}.jsonl")
        assert not result.bad and len(result.rows) == metrics["counts"][name]["total"]
    written = json.loads((tmp_path / "reports/metrics/dataset.details.json").read_text())
    compared = json.loads((tmp_path / "reports/metrics/dataset.timings.json").read_text())  # with the run before
    assert {**written, **compared} == metrics and set(compared) == {"new_rows", "moved_rows", "moved_examples"}
    assert json.loads((tmp_path / "reports/metrics/dataset.json").read_text()) == {"rows": 44, "new_rows": None}  # DVC's headline (first run: none new)
    assert written["counts"]["train"]["total"] == 24 and written["counts"]["heldout"] == {
        **{name: 2 for name in CLASSES}, "total": 8}
    assert written["bad_rows"] == 0 and written["bad_fraction"] == 0.0
    assert written["catalog"]["ack_templates"] >= 19 and written["catalog"]["refusal_templates"] >= 19


def ingest_file(tmp_path: Path, bad_lines: list[str]) -> Path:
    """Generated rows of every split in one file, with ``bad_lines`` after the 3rd row."""
    splits = generate_splits(config(heldout_per_class=3))
    lines = [row.to_line() for name in ("train", "eval", "heldout") for row in splits[name]]
    path = tmp_path / "raw.jsonl"
    path.write_text("\n".join(lines[:3] + bad_lines + lines[3:]) + "\n")
    return path


INGEST = {"source": "ingest", "heldout_share": 0.1, "eval_share": 0.25}  # 44 rows: enough for eval_size 8


def test_ingest_quarantines_bad_rows_and_splits_the_rest(tmp_path):
    path = ingest_file(tmp_path, ['{"id": "broken"', '{"id": "x", "class": "tool_miss"}'])
    metrics = run_in(tmp_path, config(**INGEST, ingest_path=str(path), max_bad_fraction=0.1))
    quarantine = [json.loads(line) for line in (tmp_path / "data/dataset/quarantine.jsonl").read_text().splitlines()]
    assert [(q["path"], q["line"], q["raw"]) for q in quarantine] == [
        (str(path), 4, '{"id": "broken"'), (str(path), 5, '{"id": "x", "class": "tool_miss"}')]
    assert quarantine[0]["reason"].startswith("invalid JSON") and quarantine[1]["reason"] == "missing field 'tools'"
    assert metrics["bad_rows"] == 2 and metrics["rows_read"] == 46
    assert metrics["bad_fraction"] == pytest.approx(2 / 46, abs=1e-6)
    counts = metrics["counts"]
    assert all(counts["heldout"][name] >= 2 for name in CLASSES)
    ingested_heldout = counts["heldout"]["total"] - sum(metrics["heldout_generated"].values())
    excluded = sum(metrics["leak_excluded"].values())
    assert counts["eval"]["total"] >= 8
    assert counts["train"]["total"] + counts["eval"]["total"] + ingested_heldout + excluded == 44  # nothing lost
    assert counts["novel_facts"]["tool_result_speak"] == 4


def test_ingest_fails_past_max_bad_fraction_but_keeps_quarantine_and_metrics(tmp_path):
    path = ingest_file(tmp_path, ["not json"] * 5)
    with pytest.raises(DatasetError, match=r"5 of 49 rows are bad \(10.2%\), more than dataset.max_bad_fraction"):
        run_in(tmp_path, config(source="ingest", ingest_path=str(path), max_bad_fraction=0.1))
    assert len((tmp_path / "data/dataset/quarantine.jsonl").read_text().splitlines()) == 5
    assert json.loads((tmp_path / "reports/metrics/dataset.details.json").read_text())["bad_rows"] == 5
    assert not (tmp_path / "data/dataset/train.jsonl").exists()


def test_ingest_tops_up_a_short_heldout_with_marked_generated_rows(tmp_path):
    path = ingest_file(tmp_path, [])
    metrics = run_in(tmp_path, config(**{**INGEST, "heldout_share": 0.0, "eval_share": 0.35}, ingest_path=str(path)))
    heldout = [json.loads(line) for line in (tmp_path / "data/dataset/heldout.jsonl").read_text().splitlines()]
    assert len(heldout) == 8 and all(row["origin"] == "generated" for row in heldout)
    assert metrics["heldout_generated"] == {name: 2 for name in CLASSES}
    assert (metrics["counts"]["train"]["total"] + metrics["counts"]["eval"]["total"]
            + sum(metrics["leak_excluded"].values())) == 44  # nothing lost


def test_a_training_row_touching_a_heldout_row_is_left_out_and_counted_never_the_heldout_row_moved(tmp_path):
    splits = generate_splits(config())
    path = tmp_path / "raw.jsonl"  # every row twice (new ids): a held-out row's twin would leak
    path.write_text("".join(json.dumps({**row.to_json(), "id": f"{row.id}-{copy}"}) + "\n"
                            for row in splits["train"] for copy in (1, 2)))
    metrics = run_in(tmp_path, config(**INGEST, ingest_path=str(path)))
    written = {name: read_rows(tmp_path / f"data/dataset/{name}.jsonl").rows for name in stage.SPLITS}
    assert find_leaks(written) == []
    ingested_heldout = [row for row in written["heldout"] if row.extra.get("origin") != "generated"]
    assert ingested_heldout and sum(metrics["leak_excluded"].values()) >= len(ingested_heldout)


# --------------------------------------------------------------------------- stable splits as data grows

def split_of_each_row(root: Path) -> dict[str, str]:
    return {row.id: name for name in stage.SPLITS
            for row in read_rows(root / f"data/dataset/{name}.jsonl").rows if row.extra.get("origin") != "generated"}


def growing_file() -> tuple[list[str], list[str]]:
    """A night's ingest file of 100 distinct generated rows and the 40 rows appended before the next night."""
    splits = generate_splits(config(train_size=120, eval_size=20))
    lines = [row.to_line() for row in splits["train"] + splits["eval"]]
    return lines[:100], lines[100:]


def run_two_nights(tmp_path: Path) -> tuple[dict, dict, dict, dict]:
    first, appended = growing_file()
    path = tmp_path / "raw.jsonl"
    path.write_text("\n".join(first) + "\n")
    before = run_in(tmp_path, config(**INGEST, ingest_path=str(path)))
    night1 = split_of_each_row(tmp_path)
    path.write_text("\n".join(first + appended) + "\n")
    after = run_in(tmp_path, config(**INGEST, ingest_path=str(path)))
    return before, night1, after, split_of_each_row(tmp_path)


def test_appending_rows_moves_no_existing_row_and_the_metrics_count_the_new_ones(tmp_path):
    before, night1, after, night2 = run_two_nights(tmp_path)
    assert {row_id: night2.get(row_id) for row_id in night1} == night1  # no row moved, none dropped
    assert before["new_rows"] == {name: None for name in stage.SPLITS} and before["moved_rows"] is None
    new_by_split = Counter(night2[row_id] for row_id in set(night2) - set(night1))
    assert after["new_rows"] == {name: new_by_split[name] for name in stage.SPLITS} and after["moved_rows"] == 0
    assert sum(after["new_rows"].values()) == 40 - sum(after["leak_excluded"].values()) + sum(
        before["leak_excluded"].values())
    assert json.loads((tmp_path / "reports/metrics/dataset.json").read_text())["new_rows"] == sum(
        after["new_rows"].values())


def test_a_split_drawn_from_the_whole_file_fails_the_append_check(tmp_path, monkeypatch):
    """The check above can fail: when a row's draw depends on the file around it, appended rows move old ones."""
    import random

    def file_dependent_split(seed, row_id, heldout_share, eval_share):
        point = random.Random(f"{seed}:{len((tmp_path / 'raw.jsonl').read_text())}:{row_id}").random()
        return "heldout" if point < heldout_share else "eval" if point < heldout_share + eval_share else "train"

    monkeypatch.setattr("pipeline.splits.split_of", file_dependent_split)
    _, night1, after, night2 = run_two_nights(tmp_path)
    assert after["moved_rows"] > 0
    assert {row_id: night2.get(row_id) for row_id in night1} != night1


def test_shuffling_the_ingest_file_changes_no_split_file(tmp_path):
    import random

    first, appended = growing_file()
    lines = first + appended
    outputs = []
    for order in range(2):
        root = tmp_path / f"order{order}"
        root.mkdir()
        random.Random(order).shuffle(lines)
        (root / "raw.jsonl").write_text("\n".join(lines) + "\n")
        metrics = run_in(root, config(**INGEST, ingest_path=str(root / "raw.jsonl")))
        outputs.append(({name: (root / f"data/dataset/{name}.jsonl").read_bytes() for name in stage.SPLITS},
                        metrics["heldout_hash"], metrics["novel_facts_hash"]))
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize(("change", "message"), [
    ({"source": "scrape"}, "'dataset.source' must be one of 'generate', 'ingest', got 'scrape'"),
    ({"class_shares": {"tool_match": 1.0}}, "'dataset.class_shares' must give a share > 0 to each of"),
    ({"class_shares": {**PARAMS["class_shares"], "non_tool": 0.0, "tool_match": 0.52}}, "'dataset.class_shares'"),
    ({"train_size": 0}, "'dataset.train_size' must be in [1, inf], got 0"),
    ({"eval_size": -1}, "'dataset.eval_size' must be in [1, inf]"),
    ({"max_bad_fraction": float("nan")}, "'dataset.max_bad_fraction' must be a number, got nan"),
    ({"tools_per_row": [5, 2]}, "'dataset.tools_per_row' must be [low, high] with low <= high"),
    ({"tools_per_row": [2, 9]}, "'dataset.tools_per_row' must be in [1, 8], got 9"),
    ({"source": "ingest", "ingest_path": None}, "'dataset.ingest_path' is required when dataset.source is 'ingest'"),
    ({"train_sizes": 3}, "'dataset.train_sizes' is not a known key"),
])
def test_params_errors_name_the_key(change, message):
    with pytest.raises(ParamsError) as caught:
        config(**change)
    assert str(caught.value).startswith("params.yaml: ") and message in str(caught.value)


def test_a_missing_params_key_is_named():
    with pytest.raises(ParamsError, match="'dataset.seed' is missing"):
        parse_params(DatasetParams, {key: value for key, value in PARAMS.items() if key != "seed"})


@pytest.mark.parametrize("n_rows", [0, 5])
def test_an_ingest_file_too_small_for_the_params_fails_naming_what_is_short(tmp_path, n_rows):
    splits = generate_splits(config(heldout_per_class=3))
    path = tmp_path / "raw.jsonl"
    path.write_text("".join(row.to_line() + "\n" for row in (splits["train"] + splits["eval"])[:n_rows]))
    with pytest.raises(DatasetError) as caught:
        run_in(tmp_path, config(source="ingest", heldout_share=0.0, eval_share=0.99, ingest_path=str(path)))
    message = str(caught.value)
    assert message.startswith(f"{path}: {n_rows} good rows, too few for the params: train has 0 rows "
                              "(tool_match 0, tool_result_speak 0, tool_miss 0, non_tool 0; needs at least 1 of each class)")
    assert f"eval has {n_rows} row" in message and "dataset.eval_size is 8" in message
    assert not (tmp_path / "data/dataset/train.jsonl").exists()  # nothing a later stage could pick up
    assert json.loads((tmp_path / "reports/metrics/dataset.details.json").read_text())["counts"]["train"]["total"] == 0


def test_a_class_missing_from_train_is_named(tmp_path):
    splits = generate_splits(config())
    path = tmp_path / "raw.jsonl"  # no tool_miss row at all
    path.write_text("".join(row.to_line() + "\n" for name in ("train", "eval", "heldout") for row in splits[name]
                            if row.row_class != "tool_miss"))
    with pytest.raises(DatasetError, match=r"train has \d+ rows \(tool_match \d+, tool_result_speak \d+, "
                                           r"tool_miss 0, non_tool \d+; needs at least 1 of each class\)"):
        run_in(tmp_path, config(source="ingest", ingest_path=str(path)))


def test_main_runs_the_stage_from_params_yaml(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"dataset": PARAMS}))
    assert stage.main([]) == 0
    assert "train 24, eval 8, heldout 8, novel_facts 4" in capsys.readouterr().out
    assert (tmp_path / "data/dataset/train.jsonl").exists() and (tmp_path / "reports/metrics/dataset.json").exists()


def test_main_reports_failures_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"dataset": {**PARAMS, "source": "ingest",
                                                                      "ingest_path": "missing.jsonl"}}))
    assert stage.main([]) == 1
    assert capsys.readouterr().err == "dataset: missing.jsonl: file not found\n"
    (tmp_path / "missing.jsonl").write_text("")
    assert stage.main([]) == 1
    assert capsys.readouterr().err.startswith("dataset: missing.jsonl: 0 good rows, too few for the params: ")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"dataset": {**PARAMS, "eval_sizes": 8}}))
    assert stage.main([]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dataset: params.yaml: 'dataset.eval_sizes' is not a known key") and err.count("\n") == 1


# --------------------------------------------------------------------------- the validator

GOOD = ('{"id": "a", "class": "non_tool", "tools": [{"name": "weather", "description": "forecasts"}], '
        '"user": "Hi!", "assistant": "Hello!"}')
TOOLS_JSON = '[{"name": "weather", "description": "forecasts"}, {"name": "maps", "description": "directions"}]'
MALFORMED = [  # (line, expected message or None for good/blank lines)
    (GOOD, None),
    ('{"id": "b", "class": "non_tool"', "invalid JSON (Expecting ',' delimiter at column 32)"),
    ('["not", "an", "object"]', "not a JSON object (got list)"),
    ('{"id": "c", "class": "non_tool", "tools": ' + TOOLS_JSON + ', "assistant": "Hello!"}', "missing field 'user'"),
    ('{"id": "d", "class": "non_tool", "tools": ' + TOOLS_JSON + ', "user": "Hi", "assistant": ""}',
     "empty field 'assistant'"),
    ('{"id": "e", "class": "smalltalk", "tools": ' + TOOLS_JSON + ', "user": "Hi", "assistant": "Yo"}',
     "unknown class 'smalltalk' (expected one of tool_match, tool_result_speak, tool_miss, non_tool)"),
    ('{"id": "f", "class": "tool_match", "tools": ' + TOOLS_JSON + ', "user": "play jazz", "assistant": "Sure.",'
     ' "tool_call": {"name": "music", "arguments": {}}}',
     "tool_match calls 'music', which is not among the listed tools (weather, maps)"),
    ('{"id": "g", "class": "tool_miss", "tools": ' + TOOLS_JSON + ', "user": "route home", "assistant": "Sorry.",'
     ' "requested_tool": "maps"}', "tool_miss requests 'maps', which IS listed (that would be a tool_match)"),
    ('{"id": "h", "class": "tool_result_speak", "tools": ' + TOOLS_JSON + ', "user": "weather?", "assistant": "Sunny.",'
     ' "turn1": {"user": "weather?", "assistant": "Sure.", "tool_call": {"name": "weather", "arguments": {}}}}',
     "missing field 'facts'"),
    ('{"id": "i", "class": "non_tool", "tools": ' + TOOLS_JSON + ', "user": ["Hi"], "assistant": "Hello!"}',
     "field 'user' must be a string, got list"),
    (GOOD, "duplicate id 'a' (first on line 1)"),
    ("", None),
    (GOOD.replace('"a"', '"z"'), None),
]


def test_validator_reports_every_bad_line_with_number_and_reason(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(line for line, _ in MALFORMED) + "\n")
    assert validate_files([path]) == 1
    expected = [f"{path}:{number}: {reason}" for number, (_, reason) in enumerate(MALFORMED, start=1) if reason]
    assert capsys.readouterr().out.splitlines() == expected + ["12 rows, 10 bad"]


def test_validator_exits_0_on_a_clean_file(tmp_path, capsys):
    run_in(tmp_path, config())
    assert validate_files([tmp_path / "data/dataset/train.jsonl"]) == 0
    assert capsys.readouterr().out == "24 rows, 0 bad\n"


def test_validator_cli_missing_file_is_one_clear_line_and_exit_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tasks.dataset", "validate", str(tmp_path / "nope.jsonl")],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == f"error: {tmp_path / 'nope.jsonl'}: file not found\n"


def test_validator_cli_never_prints_a_traceback_for_bad_data(tmp_path):
    path = tmp_path / "junk.jsonl"
    path.write_bytes(b'\xff\xfe garbage\n{"id": 1}\n[[[[\nnull\n' + b"[" * 100_000 + b"\n")
    result = subprocess.run([sys.executable, "-m", "tasks.dataset", "validate", str(path)],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr + result.stdout
    assert result.stdout.splitlines()[-1] == "5 rows, 5 bad"


# --------------------------------------------------------------------------- hostile input, through the stages

def non_tool_line(user_json: str, row_id: str = "hostile") -> str:
    """A non_tool row as raw text, with ``user`` given as raw JSON (so escapes stay as written)."""
    return ('{"id": ' + json.dumps(row_id) + ', "class": "non_tool", "tools": [{"name": "weather", "description": '
            '"forecasts"}], "user": ' + user_json + ', "assistant": "Glad to chat about that."}')


def speak_line(facts_json: str) -> str:
    """A tool_result_speak row as raw text, with ``facts`` given as raw JSON."""
    return ('{"id": "hostile", "class": "tool_result_speak", "tools": [{"name": "weather", "description": '
            '"forecasts"}], "user": "how warm is it in Quito", "assistant": "It is warm in Quito.", "turn1": {"user": '
            '"how warm is it in Quito", "assistant": "Checking Quito.", "tool_call": {"name": "weather", '
            '"arguments": {}}}, "facts": ' + facts_json + '}')


def ingest_then_read_like_the_tts_stage(tmp_path: Path, hostile: str) -> tuple[Path, dict, dict]:
    """Run the dataset stage on generated rows plus ``hostile`` (line 4), then read every split as tts does."""
    path = ingest_file(tmp_path, [hostile])
    metrics = run_in(tmp_path, config(**INGEST, ingest_path=str(path), max_bad_fraction=0.1))
    voiced = {}
    for name in stage.SPLITS:
        split = tmp_path / "data/dataset" / f"{name}.jsonl"
        rows = tts_stage.read_split(split)
        assert len(rows) == split.read_bytes().count(b"\n") == metrics["counts"][name]["total"]
        voiced.update({row.id: row for row in rows})
    for name in stage.SPLITS:  # fact extraction (the leak check, narration scoring) on every written row
        for row in read_rows(tmp_path / "data/dataset" / f"{name}.jsonl", on_bad="fail").rows:
            list(iter_leak_keys(row))
    return path, metrics, voiced


ACCEPTED_TEXT = [  # (user text as raw JSON in the ingest file, the text every later stage must read)
    ('"call me\u2028maybe"', "call me\u2028maybe"),  # raw U+2028 in the file (str.splitlines splits there)
    ('"call me\u2029maybe"', "call me\u2029maybe"),
    ('"call me\u0085maybe"', "call me\u0085maybe"),
    ('"call me\\u2028maybe"', "call me\u2028maybe"),  # escaped in the file (ASCII), raw once decoded
    ('"caf\\u00e9 \\ud83d\\ude00 ok"', "café \U0001F600 ok"),  # a valid surrogate pair is one character
]


@pytest.mark.parametrize(("user_json", "text"), ACCEPTED_TEXT, ids=["U+2028", "U+2029", "U+0085", "escaped U+2028", "pair"])
def test_unicode_line_separators_in_a_text_field_reach_the_tts_stage_unchanged(tmp_path, user_json, text):
    _, metrics, voiced = ingest_then_read_like_the_tts_stage(tmp_path, non_tool_line(user_json))
    assert metrics["bad_rows"] == 0
    assert voiced["hostile"].user == text


REJECTED = [  # (raw line, the reason the dataset stage quarantines it with)
    (non_tool_line('"hi \\ud800"'), "'user' holds a lone surrogate \"\\ud800\" (not valid Unicode)"),
    (non_tool_line('"hi \\udfff there"'), "'user' holds a lone surrogate"),
    (speak_line('{"a": ' * 600 + '"x"' + "}" * 600), "nested deeper than 32 levels"),
    (speak_line('{"population": ' + "7" * 5000 + "}"), "integer with 5000 digits (more than 64 bits)"),
    (speak_line('{"temp_c": NaN}'), "NaN is not valid JSON"),
    (speak_line('{"temp_c": Infinity}'), "Infinity is not valid JSON"),
    (speak_line('{"temp_c": 1e999}'), "number 1e999 is out of range"),
    (non_tool_line('"hi", "user": "bye"'), "key \"user\" occurs twice in one object"),
    (non_tool_line('"hi\\u0000there"'), "field 'user' contains U+0000"),
    (non_tool_line('"hi"', row_id="../../reports/model_card"), "field 'id' must be usable as a file name"),
]


@pytest.mark.parametrize(("line", "reason"), REJECTED, ids=[
    "lone high surrogate", "lone low surrogate", "600-deep facts", "5000-digit integer", "NaN", "Infinity",
    "overflowing float", "duplicate key", "NUL in text", "path in id"])
def test_rows_a_later_stage_cannot_handle_are_quarantined_and_the_stages_run_on(tmp_path, line, reason):
    path, metrics, voiced = ingest_then_read_like_the_tts_stage(tmp_path, line)
    quarantine = [json.loads(q) for q in (tmp_path / "data/dataset/quarantine.jsonl").read_text().splitlines()]
    assert [(q["path"], q["line"], q["raw"]) for q in quarantine] == [(str(path), 4, line)]
    assert quarantine[0]["reason"].startswith(reason)
    assert metrics["bad_rows"] == 1 and "hostile" not in voiced


def test_validator_cli_reports_every_hostile_line_without_a_traceback(tmp_path):
    path = tmp_path / "hostile.jsonl"
    path.write_text("".join(line + "\n" for line, _ in REJECTED) + non_tool_line('"fine"', "ok") + "\n")
    result = subprocess.run([sys.executable, "-m", "tasks.dataset", "validate", str(path)],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr + result.stdout
    *reported, summary = result.stdout.splitlines()
    assert [line.split(": ", 1)[0] for line in reported] == [f"{path}:{n}" for n in range(1, len(REJECTED) + 1)]
    assert all(line.split(": ", 1)[1].startswith(reason) for line, (_, reason) in zip(reported, REJECTED))
    assert summary == f"{len(REJECTED) + 1} rows, {len(REJECTED)} bad"



def test_giant_rows_are_quarantined_by_the_stage_and_named_by_the_validator(tmp_path):
    """A 200 kB reply and a 10,000-fact row (what broke tts, preprocess and eval_classes): FILE:LINE, counted."""
    giant_reply = non_tool_line('"hi"', "giant").replace('"Glad to chat about that."', json.dumps("word " * 40_000))
    many_facts = speak_line(json.dumps({f"fact_{i}": i for i in range(10_000)})).replace('"hostile"', '"facts"', 1)
    path = ingest_file(tmp_path, [giant_reply, many_facts])
    metrics = run_in(tmp_path, config(source="ingest", ingest_path=str(path), max_bad_fraction=0.1, eval_size=2))
    quarantine = [json.loads(line) for line in (tmp_path / "data/dataset/quarantine.jsonl").read_text().splitlines()]
    assert [(q["line"], q["reason"].split(",")[0]) for q in quarantine] == [
        (4, "row has 200127 bytes"), (5, "row has 188097 bytes")]
    assert metrics["bad_rows"] == 2
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "tasks.dataset", "validate", str(path)],
                            cwd=tmp_path, env=env, capture_output=True, text=True)  # no params.yaml: the defaults
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stdout.splitlines()[:2] == [
        f"{path}:4: row has 200127 bytes, more than dataset.max_row_bytes = 32768",
        f"{path}:5: row has 188097 bytes, more than dataset.max_row_bytes = 32768"]
    # The same rows under a params.yaml with a larger row size: the field bounds name the field.
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"dataset": {**PARAMS, "max_row_bytes": 10**7}}))
    result = subprocess.run([sys.executable, "-m", "tasks.dataset", "validate", str(path)],
                            cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.stdout.splitlines()[:2] == [
        f"{path}:4: field 'assistant' has 200000 characters, more than dataset.max_text_chars = 4000",
        f"{path}:5: field 'facts' has 10000 facts, more than dataset.max_facts = 64"], result.stderr
