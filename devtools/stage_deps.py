"""Code deps of every DVC stage, computed from its imports (DESIGN.md, principle 1).

A stage runs as ``python -m tasks.<stage>``; the project modules that command can
import (tasks/, pipeline/, coordinator/, flows/; lazy function-level imports and the
package ``__init__`` files on the way included) are its code deps. ``dvc.yaml`` lists
exactly those files, so an edit reruns the stages that import the edited module and
no others.

    python -m devtools.stage_deps --check   # exit 1 naming stage, module and import chain
    python -m devtools.stage_deps --write   # rewrite the code deps in dvc.yaml (comments kept)
"""
from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path

PROJECT_PACKAGES = ("tasks", "pipeline", "coordinator", "flows")


def module_file(root: Path, module: str) -> Path | None:
    """``a.b`` -> ``a/b.py`` or ``a/b/__init__.py`` under ``root``; None if not a project module."""
    if module.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_chain(module: str) -> list[str]:
    """Importing ``a.b.c`` runs ``a``, ``a.b`` and ``a.b.c``."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def imported_modules(root: Path, file: Path) -> list[str]:
    """Every project module a file's code can import, at any depth of the file."""
    rel = file.relative_to(root).with_suffix("")
    package_parts = list(rel.parts[:-1])  # a/b/c.py and a/b/__init__.py both live in package a.b
    found: list[str] = []
    for node in ast.walk(ast.parse(file.read_text(), filename=str(file))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package_parts[: len(package_parts) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.append(base)
            # `from pkg import name` imports pkg/name.py when name is a submodule
            found += [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]
    modules: list[str] = []
    for name in found:
        for module in _package_chain(name):
            if module_file(root, module) is not None and module not in modules:
                modules.append(module)
    return modules


@dataclass(frozen=True)
class Closure:
    """The project files a stage's command imports, each with the import chain that reaches it."""

    stage: str
    chains: dict[str, tuple[str, ...]]  # file (relative, posix) -> modules from tasks.<stage> to it

    @property
    def files(self) -> list[str]:
        return sorted(self.chains)


def stage_closure(root: Path, stage: str) -> Closure:
    start = f"tasks.{stage}"
    chains: dict[str, tuple[str, ...]] = {}
    todo: list[tuple[str, ...]] = [(m,) for m in _package_chain(start)]
    seen: set[str] = set()
    while todo:
        chain = todo.pop(0)
        module = chain[-1]
        if module in seen:
            continue
        seen.add(module)
        file = module_file(root, module)
        if file is None:
            continue
        chains[file.relative_to(root).as_posix()] = chain
        todo += [chain + (nxt,) for nxt in imported_modules(root, file) if nxt not in seen]
    return Closure(stage, chains)


def is_code_dep(dep: str) -> bool:
    return dep.split("/")[0] in PROJECT_PACKAGES


def stage_commands(dvc_yaml: dict) -> dict[str, str]:
    """Stage name -> module it runs (every stage runs ``python -m tasks.<name>``)."""
    out = {}
    for name, spec in dvc_yaml["stages"].items():
        cmd = spec["cmd"].split()
        if cmd[:2] != ["python", "-m"] or not cmd[2].startswith("tasks."):
            raise ValueError(f"dvc.yaml: stage '{name}': cmd must be 'python -m tasks.<module>', got {spec['cmd']!r}")
        out[name] = cmd[2].removeprefix("tasks.")
    return out


def problems(root: Path) -> list[str]:
    """Every mismatch between the stages' import closures and their code deps, one line each."""
    import yaml

    dvc_yaml = yaml.safe_load((root / "dvc.yaml").read_text())
    lines = []
    for stage, module in stage_commands(dvc_yaml).items():
        closure = stage_closure(root, module)
        deps = [d if isinstance(d, str) else next(iter(d)) for d in dvc_yaml["stages"][stage].get("deps", [])]
        listed = {d.rstrip("/") for d in deps if is_code_dep(d)}
        for file in closure.files:
            if file not in listed:
                chain = " -> ".join(closure.chains[file])
                lines.append(f"dvc.yaml: stage '{stage}' misses dep {file} (imported via {chain})")
        for dep in sorted(listed - set(closure.files)):
            what = "a directory: list its modules" if (root / dep).is_dir() else "not imported by the stage"
            lines.append(f"dvc.yaml: stage '{stage}' lists dep {dep} ({what})")
    return lines


def write(root: Path) -> int:
    """Rewrite each stage's code deps as its closure, sorted, before its data deps."""
    from ruamel.yaml import YAML

    yml = YAML()
    yml.preserve_quotes = True
    yml.indent(mapping=2, sequence=4, offset=2)
    path = root / "dvc.yaml"
    doc = yml.load(path.read_text())
    changed = 0
    for stage, module in stage_commands(doc).items():
        deps = doc["stages"][stage].setdefault("deps", [])
        code = stage_closure(root, module).files
        if [d for d in deps if isinstance(d, str) and is_code_dep(d)] == code and list(deps[: len(code)]) == code:
            continue
        changed += 1
        for i in reversed(range(len(deps))):  # item by item, so comments on data deps stay with them
            if isinstance(deps[i], str) and is_code_dep(deps[i]):
                del deps[i]
        for i, file in enumerate(code):
            deps.insert(i, file)
    if changed:
        from pipeline.io import atomic_path

        with atomic_path(path) as tmp, open(tmp, "w") as handle:
            yml.dump(doc, handle)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 if dvc.yaml's code deps differ from the imports")
    mode.add_argument("--write", action="store_true", help="rewrite dvc.yaml's code deps from the imports")
    parser.add_argument("--root", type=Path, default=Path("."))
    args = parser.parse_args(argv)
    if args.write:
        print(f"dvc.yaml: code deps rewritten for {write(args.root)} stage(s)")
        return 0
    found = problems(args.root)
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
