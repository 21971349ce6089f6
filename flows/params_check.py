"""Every selected stage's params checked with the stage's own typed loader, before the first `dvc repro`.

`dvc repro` removes a stage's outputs before it runs the stage's command, so a
params typo found by the stage itself (`train.learning_rate` for `lr`) has already
cost `models/final`, the preprocessed data and their metrics. The flow checks first:
for each stage whose command is `python -m tasks.<module>`, that module is imported and
every params group the stage lists in dvc.yaml that has a `StageParams` class
(`SECTION` = the group) is parsed from the workspace's params.yaml, exactly as the stage
will parse it. Stages with other commands (the toy pipeline's scripts) are not checked.
"""
from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

import yaml

from pipeline.params import StageError, group_classes, load_stage_params

TASK_COMMAND = re.compile(r"^python3? -m (tasks\.\w+)\b")


def _groups(entries) -> list[str]:
    """The params.yaml groups a dvc.yaml `params:` list names ('group' or 'group.key'; other files skipped)."""
    groups: list[str] = []
    for entry in entries or ():
        names = [entry] if isinstance(entry, str) else (entry.get("params.yaml", []) if isinstance(entry, dict) else [])
        groups += [name.split(".", 1)[0] for name in names if isinstance(name, str)]
    return list(dict.fromkeys(groups))


def check_stage_params(workdir: str | os.PathLike, stages: list[str]) -> list[str]:
    """One line per stage whose params would fail it (`<stage>: params.yaml: 'group.key' ...`); [] if all parse."""
    if not stages:
        return []
    root = Path(workdir)
    pipeline = yaml.safe_load((root / "dvc.yaml").read_text()) or {}
    params_file = root / "params.yaml"
    problems = []
    for spec in (pipeline.get("stages") or {}).values():  # every stage's module: each group's own class is known
        command = TASK_COMMAND.match(str((spec or {}).get("cmd", "")))
        if command:
            importlib.import_module(command.group(1))
    classes = group_classes()
    for name in stages:
        stage = (pipeline.get("stages") or {}).get(name) or {}
        if not TASK_COMMAND.match(str(stage.get("cmd", ""))):
            continue
        for group in _groups(stage.get("params")):
            if group not in classes:
                continue
            try:
                load_stage_params(classes[group], params_file)
            except StageError as err:
                problems.append(f"{name}: {str(err).splitlines()[0]}")
                break
    return problems
