"""`python -m tasks.publish`: the trained model and its card, as one Hugging Face model repo (optional, not a stage).

    python -m tasks.publish --out release/           # assemble the folder only: no token, no network
    python -m tasks.publish --repo-id ORG/NAME [--private]   # upload (needs a token: HF_TOKEN or `hf auth login`)

`models/final` is the `train` stage's DVC output and `reports/model_card.md`
the `report` stage's. A stage may not write into another stage's output (DVC
refuses overlapping outputs, and a card written into models/final would change
the hash the eval stages depend on), and the card cannot be written by `train`
because it reports the evaluation of train's output. So the upload is
assembled here, from both outputs as DVC left them: every file of
models/final, plus the card as `README.md`. Before anything is copied or sent:

- the card must parse with `huggingface_hub.ModelCard` and name its `base_model`;
- a smoke-run card (tag `smoke-run`: random-init weights) is refused unless `--allow-smoke`;
- `dvc status --with-deps report` must be clean, so the card describes exactly these
  weights (`--skip-dvc-check` to publish outside a DVC workspace).

Never run by the pipeline or the tests against the Hub.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.artifacts import FINAL_MODEL_DIR, MODEL_CARD_MD
from pipeline.io import atomic_dir
from pipeline.params import StageError, stage_main

NAME = "publish"
CARD_STAGE = "report"  # the stage whose output is the card; its upstream includes train (models/final)
SMOKE_TAG = "smoke-run"  # set by tasks.report on a random-init smoke run's card


class PublishError(StageError):
    """Why nothing was assembled or uploaded; one line."""


@dataclass(frozen=True)
class Release:
    """What the model repo receives: (path in the repo, local file), the card's README.md last."""

    files: tuple[tuple[str, Path], ...]
    base_model: str
    n_results: int  # entries of the card's model-index


def read_card(card_path: Path, allow_smoke: bool = False) -> Any:
    """The card's metadata as `huggingface_hub` parses it; refused when it is not publishable."""
    from huggingface_hub import ModelCard

    if not card_path.is_file():
        raise PublishError(f"{card_path}: model card not found (run `dvc repro report`)")
    try:
        data = ModelCard.load(card_path).data
    except (ValueError, KeyError, TypeError) as err:  # bad YAML block or model-index
        raise PublishError(f"{card_path}: not a valid Hugging Face model card ({one_line(err)})") from None
    if not data.base_model:
        raise PublishError(f"{card_path}: the metadata block names no base_model")
    if SMOKE_TAG in (data.tags or []) and not allow_smoke:
        raise PublishError(f"{card_path}: a smoke-run card (random-init weights); --allow-smoke to publish it anyway")
    return data


def plan_release(model_dir: Path, card_path: Path, allow_smoke: bool = False) -> Release:
    data = read_card(card_path, allow_smoke)
    if not (model_dir / "config.json").is_file():
        raise PublishError(f"{model_dir}: not a model folder (no config.json; run `dvc repro train`)")
    files = sorted(str(p.relative_to(model_dir).as_posix()) for p in model_dir.rglob("*") if p.is_file())
    if "README.md" in files:
        raise PublishError(f"{model_dir}/README.md exists: the card would replace it; remove it from the model folder")
    return Release(files=tuple((f, model_dir / f) for f in files) + (("README.md", card_path),),
                   base_model=str(data.base_model), n_results=len(data.eval_results or []))


def stale_stages(root: Path, stage: str = CARD_STAGE) -> list[str]:
    """Stages between models/final and the card whose lock no longer matches the workspace ([] = up to date)."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            changes = repo.status(targets=[stage], with_deps=True)
    except DvcException as err:
        raise PublishError(f"dvc status {stage}: {one_line(err)} (--skip-dvc-check outside a DVC workspace)") from None
    return sorted(name.split(":")[-1] for name in changes)


def assemble(release: Release, out: Path) -> Path:
    """The model repo as a folder: hard links to the model files where the filesystem allows, else copies."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PublishError(f"{out}: exists and is not empty; give a new folder")
    with atomic_dir(out) as tmp:
        for name, source in release.files:
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if name == "README.md":
                shutil.copyfile(source, target)  # a copy: editing it must not edit reports/model_card.md
                continue
            try:
                os.link(source, target)
            except OSError:
                shutil.copy2(source, target)
    return out


def upload(release: Release, repo_id: str, private: bool, message: str) -> str:
    """One commit with every file; returns its URL. The token comes from HF_TOKEN or `hf auth login`."""
    import httpx
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HFValidationError

    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        commit = api.create_commit(
            repo_id, repo_type="model", commit_message=message,
            operations=[CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)) for name, path in release.files])
    except (OSError, HFValidationError, httpx.HTTPError) as err:  # offline, no/invalid token, bad id, network
        raise PublishError(f"upload to {repo_id} failed: {one_line(err)}") from None
    return commit.commit_url


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tasks.publish", description=__doc__.split("\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--repo-id", help="Hub model repo to create or update, e.g. my-org/lfm2.5-audio-tool-aware")
    target.add_argument("--out", type=Path, help="assemble the repo folder here instead (new or empty folder)")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument("--model-dir", type=Path, default=FINAL_MODEL_DIR)
    parser.add_argument("--card", type=Path, default=MODEL_CARD_MD)
    parser.add_argument("--message", default="Upload fine-tuned model and model card (tasks.publish)")
    parser.add_argument("--allow-smoke", action="store_true", help="publish a smoke-run (random-init) card too")
    parser.add_argument("--skip-dvc-check", action="store_true",
                        help="do not require `dvc status --with-deps report` to be clean")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def work() -> int:
        release = plan_release(args.model_dir, args.card, args.allow_smoke)
        if not args.skip_dvc_check:
            stale = stale_stages(Path.cwd())
            if stale:
                raise PublishError(f"the card does not describe {args.model_dir} as it is: stages changed since the "
                                   f"last run: {', '.join(stale)} (run `dvc repro {CARD_STAGE}` first)")
        size = sum(path.stat().st_size for _, path in release.files)
        summary = (f"{len(release.files)} files, {size / 1e6:.1f} MB, base_model {release.base_model}, "
                   f"{release.n_results} eval results")
        if args.out is not None:
            assemble(release, args.out)
            print(f"{NAME}: assembled {args.out} ({summary}); upload it with `hf upload <repo-id> {args.out}`")
        else:
            url = upload(release, args.repo_id, args.private, args.message)
            print(f"{NAME}: uploaded {summary} to {args.repo_id}: {url}")
        return 0

    return stage_main(NAME, work)


if __name__ == "__main__":
    sys.exit(main())
