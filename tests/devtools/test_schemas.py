"""The JSON Schemas in schemas/ are what the models check, kept up to date, and accept the repo's own params."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

from devtools import schemas

ROOT = Path(__file__).resolve().parents[2]


def test_the_schema_files_are_up_to_date():
    for path, text in schemas.rendered().items():
        assert (ROOT / path).read_text() == text, f"{path} is stale: run `python -m devtools.schemas`"


def test_every_params_group_has_a_schema_and_params_yaml_validates():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    schema = json.loads((ROOT / schemas.PARAMS_SCHEMA).read_text())
    assert sorted(schema["properties"]) == sorted(params), "a params group's module is missing from PARAMS_MODULES"
    jsonschema.validate(params, schema)
    editor_line = (ROOT / "params.yaml").read_text().splitlines()[0]
    assert editor_line == f"# yaml-language-server: $schema={schemas.PARAMS_SCHEMA}"


def test_the_params_schema_refuses_what_the_loader_refuses():
    schema = json.loads((ROOT / schemas.PARAMS_SCHEMA).read_text())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for group, key, value in (("blip", "repeats", 0), ("train", "lrr", 1), ("train", "lr", "fast"),
                              ("preprocess", "blip_on", ["tool_match", "nope"])):
        bad = {**params, group: {**params[group], key: value}}
        errors = list(jsonschema.Draft202012Validator(schema).iter_errors(bad))
        assert errors, (group, key, value)


def test_the_row_schema_accepts_a_row_and_refuses_an_unsafe_id():
    validator = jsonschema.Draft202012Validator(json.loads((ROOT / schemas.ROW_SCHEMA).read_text()))
    row = {"id": "m1", "class": "tool_match", "tools": [{"name": "weather", "description": "get the weather"}],
           "user": "weather in Paris?", "assistant": "Checking.", "tool_call": {"name": "weather", "arguments": {}}}
    assert not list(validator.iter_errors(row))
    assert list(validator.iter_errors({**row, "id": "../x"})) and list(validator.iter_errors({**row, "class": "chat"}))
