"""tasks.publish: models/final plus the card as README.md, checked before anything is copied or sent (no network)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tasks import publish

CARD = textwrap.dedent("""\
    ---
    base_model: LiquidAI/LFM2.5-Audio-1.5B
    base_model_relation: finetune
    license: other
    license_name: lfm1.0
    pipeline_tag: audio-to-audio
    tags: [liquid, tool-use]
    model-index:
    - name: LFM2.5-Audio-1.5B-tool-aware
      results:
      - task: {type: audio-to-audio}
        dataset: {type: tool-aware-heldout, name: Held-out tool-aware dialogues}
        metrics:
        - {type: accuracy, value: 95.0}
    ---

    # A fine-tune
    """)


def model_folder(root):
    folder = root / "models/final"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "lfm2_audio"}')
    (folder / "model.safetensors").write_bytes(b"\x00weights" * 100)
    (folder / "sub/tokenizer.json").write_text("{}")
    return folder


def card_file(root, text=CARD):
    path = root / "reports/model_card.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_release_is_every_model_file_plus_the_card_as_readme(tmp_path):
    release = publish.plan_release(model_folder(tmp_path), card_file(tmp_path))
    assert [name for name, _ in release.files] == ["config.json", "model.safetensors", "sub/tokenizer.json", "README.md"]
    assert release.base_model == "LiquidAI/LFM2.5-Audio-1.5B" and release.n_results == 1

    out = publish.assemble(release, tmp_path / "release")
    for name, source in release.files:
        assert (out / name).read_bytes() == source.read_bytes()
    (out / "README.md").write_text("edited")
    assert (tmp_path / "reports/model_card.md").read_text() == CARD  # the README is a copy, not a link


def test_an_existing_folder_is_never_overwritten(tmp_path):
    release = publish.plan_release(model_folder(tmp_path), card_file(tmp_path))
    (tmp_path / "release").mkdir()
    (tmp_path / "release/mine.txt").write_text("keep")
    with pytest.raises(publish.PublishError, match="exists and is not empty"):
        publish.assemble(release, tmp_path / "release")
    assert (tmp_path / "release/mine.txt").read_text() == "keep"


@pytest.mark.parametrize("card, why", [
    (CARD.replace("base_model: LiquidAI/LFM2.5-Audio-1.5B\n", ""), "names no base_model"),
    (CARD.replace("dataset: {type: tool-aware-heldout, ", "dataset: {"), "not a valid Hugging Face model card"),
    (CARD.replace("tags: [liquid, tool-use]", "tags: [liquid, smoke-run]"), "a smoke-run card"),
])
def test_a_card_that_is_not_publishable_stops_in_one_line(tmp_path, monkeypatch, capsys, card, why):
    model_folder(tmp_path)
    card_file(tmp_path, card)
    monkeypatch.chdir(tmp_path)
    assert publish.main(["--out", "release", "--skip-dvc-check"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("publish: reports/model_card.md: ") and why in err and err.count("\n") == 1
    assert not (tmp_path / "release").exists()


def test_a_smoke_card_is_published_only_when_allowed(tmp_path, monkeypatch):
    model_folder(tmp_path)
    card_file(tmp_path, CARD.replace("tags: [liquid, tool-use]", "tags: [liquid, smoke-run]"))
    monkeypatch.chdir(tmp_path)
    assert publish.main(["--out", "release", "--skip-dvc-check", "--allow-smoke"]) == 0
    assert (tmp_path / "release/README.md").is_file()


def test_without_the_hub_an_upload_fails_in_one_line(tmp_path, monkeypatch, capsys):
    model_folder(tmp_path)
    card_file(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert publish.main(["--repo-id", "someone/tool-aware", "--skip-dvc-check"]) == 1  # HF_HUB_OFFLINE=1 (conftest)
    err = capsys.readouterr().err
    assert err.startswith("publish: upload to someone/tool-aware failed: ") and "offline" in err
    assert err.count("\n") == 1


def dvc_workspace(root):
    """A real DVC workspace: `train` writes models/final, `report` the card from it."""
    (root / "card.src").write_text(CARD)
    (root / "train.py").write_text("import pathlib\nout = pathlib.Path('models/final')\nout.mkdir(parents=True)\n"
                                   "(out / 'config.json').write_text('{}')\n(out / 'model.safetensors').write_bytes(b'w')\n")
    (root / "dvc.yaml").write_text(textwrap.dedent("""\
        stages:
          train:
            cmd: python train.py
            deps: [train.py]
            outs: [models/final]
          report:
            cmd: mkdir -p reports && cp card.src reports/model_card.md
            deps: [models/final, card.src]
            outs: [{reports/model_card.md: {cache: false}}]
        """))
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q", "--no-scm"], cwd=root, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "repro", "-q"], cwd=root, check=True, capture_output=True)
    return root


def test_the_card_must_describe_the_weights_as_dvc_last_recorded_them(tmp_path, monkeypatch, capsys):
    root = dvc_workspace(tmp_path)
    monkeypatch.chdir(root)
    assert publish.stale_stages(root) == []
    assert publish.main(["--out", "release"]) == 0
    (root / "models/final/model.safetensors").write_bytes(b"retrained by hand")  # the card no longer matches
    assert publish.main(["--out", "release-2"]) == 1
    err = capsys.readouterr().err
    assert "stages changed since the last run: report, train" in err and not (root / "release-2").exists()
