"""Stage report: the model card rendered from hand-made metrics files (one of them missing)."""
from __future__ import annotations

import json
import shutil

import yaml

from tasks.report import delta, run
from tests.pipeline.test_metrics_models import example

CLASSES_METRICS = example("eval_classes")
BLIP_METRICS = example("eval_blip")
RECORDS = [
    {"id": "h1", "class": "tool_miss", "user": "how much is a lyft to the airport", "behaviour": "ack", "correct": False,
     "reason": "ack cue 'checking'", "reference_verdict": {"correct": True}, "reply": {"text": "Sure, checking rides."}},
    {"id": "h2", "class": "non_tool", "user": "Have a nice flight.", "behaviour": "refusal", "correct": False,
     "reason": "refusal cue", "reference_verdict": {"correct": True}, "reply": {"text": "Sorry, I can't fly."}},
    {"id": "h3", "class": "tool_match", "user": "wake me at 7", "behaviour": "ack", "correct": True, "reply": {"text": "On it."}},
]
PARAMS = {
    "base_models": {"source": "hub", "lfm_repo": "LiquidAI/LFM2.5-Audio-1.5B"},
    "train": {"lr": 5.0e-5, "batch_size": 2, "num_processes": 2, "max_steps": 1120, "warmup_steps": 100,
              "mixed_precision": "bf16", "context_length": 512},
    "dataset": {"train_size": 3000, "eval_size": 400},
    "report": {"profile": "v4.1", "n_worst": 5},
}


def workspace(tmp_path, repo_root, params=PARAMS, with_narration=False):
    metrics = tmp_path / "reports/metrics"
    metrics.mkdir(parents=True)
    (metrics / "eval_classes.details.json").write_text(json.dumps(CLASSES_METRICS))
    (metrics / "eval_blip.details.json").write_text(json.dumps(BLIP_METRICS))
    (metrics / "train.details.json").write_text(json.dumps(example("train", final_val_loss=0.9012, final_train_loss=0.7)))
    if with_narration:
        (metrics / "eval_narration.details.json").write_text(json.dumps(example("eval_narration")))
    (tmp_path / "reports/eval").mkdir(parents=True)
    (tmp_path / "reports/eval/eval_classes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "configs").mkdir()
    shutil.copy(repo_root / "configs/baselines.yaml", tmp_path / "configs/baselines.yaml")
    return tmp_path


def render(root):
    return run(root / "reports/model_card.md", metrics_dir=root / "reports/metrics",
               records=root / "reports/eval/eval_classes.jsonl", baselines=root / "configs/baselines.yaml",
               params_path=root / "params.yaml")


def test_card_has_the_published_columns_delta_and_this_run(tmp_path, repo_root):
    card = render(workspace(tmp_path, repo_root))
    assert (tmp_path / "reports/model_card.md").read_text() == card
    assert "| tool_match | 86.7% | 100.0% | 100.0% (30/30) | 0 |" in card
    assert "| tool_miss | 100.0% | 96.7% | 96.7% (29/30) | 0 |" in card
    assert "| non_tool | 86.7% | 83.3% | 90.0% (27/30) | +6.7 |" in card
    assert "| **Overall** | 93.3% | 95.0% | 96.7% (116/120) | +1.7 |" in card
    assert "Held-out eval, 120 rows × 30 per class" in card
    assert "SMOKE" not in card


def test_missing_metrics_are_unavailable_not_zero(tmp_path, repo_root):
    card = render(workspace(tmp_path, repo_root, with_narration=False))
    assert "unavailable (" in card and "eval_narration.details.json: not found" in card
    assert "| cb0 OR cb3 | 95.0% (38/40) | unavailable (made up for the test) |" in card
    assert "| cb0-only (semantic codebook) | 95.0% (38/40) | 90.0% (27/30) |" in card
    assert "false positives on non_tool/tool_miss | not reported | 1.7% (1/60) |" in card
    assert "0.0% faithful" not in card


def test_narration_recipe_limitations_and_plots(tmp_path, repo_root):
    card = render(workspace(tmp_path, repo_root, with_narration=True))
    assert "**96.7% faithful / 0.0% memorized**" in card and "v4.1: 96.7% / 0.0%" in card
    assert "- Learning rate: 5e-05" in card and "- Steps: 1120" in card
    assert "- Grad clipping (max norm): unknown" in card  # absent key -> unknown
    assert "- Final val_loss = 0.9012" in card
    assert "how much is a lyft to the airport" in card and "Have a nice flight." in card
    assert "wake me at 7" not in card  # a correct row is not a limitation
    assert "![Confusion matrix" in card and "(plots/confusion_matrix.png)" in card
    assert "(plots/blip_positions.png)" in card
    assert "3/30 tool_match replies miss the blip on cb0" in card


def test_smoke_card_says_its_numbers_mean_nothing(tmp_path, repo_root):
    smoke = {**PARAMS, "base_models": {"source": "fabricate"}, "report": {"profile": "smoke"}}
    root = workspace(tmp_path, repo_root, params=smoke)
    (root / "reports/metrics/train.details.json").unlink()
    card = render(root)
    assert "THESE NUMBERS MEAN NOTHING" in card.split("##")[0] and "random-init" in card.split("##")[0]
    assert "Final val_loss: unavailable" in card and "train.details.json: not found" in card


def test_every_metrics_file_missing(tmp_path, repo_root):
    root = tmp_path
    (root / "configs").mkdir()
    shutil.copy(repo_root / "configs/baselines.yaml", root / "configs/baselines.yaml")
    (root / "params.yaml").write_text("report: {profile: smoke}\n")
    card = render(root)
    assert card.count("unavailable (") >= 4 and "unknown" in card


def test_delta_signs():
    assert delta(1.0, 86.7) == "+13.3" and delta(0.95, 95.0) == "0" and delta(0.9, 96.7) == "−6.7"
    assert delta(None, 95.0) == "—"


def test_unreadable_record_lines_make_the_failures_unavailable_not_fewer(tmp_path, repo_root):
    root = workspace(tmp_path, repo_root)
    records = root / "reports/eval/eval_classes.jsonl"
    lines = records.read_text().splitlines()
    records.write_text("\n".join([lines[0][:-1], lines[1].replace("false", "False"), lines[2]]) + "\n")  # 2 of 3 damaged
    card = render(root)
    assert "held-out failures (" not in card  # not "0 held-out failures" from the one line left
    assert (f"- Held-out failures: unavailable (2 of 3 lines unreadable, first {records}:1: invalid JSON"
            in card)


def test_a_unicode_line_separator_in_a_reply_does_not_split_its_record(tmp_path, repo_root):
    root = workspace(tmp_path, repo_root)
    records = root / "reports/eval/eval_classes.jsonl"
    changed = [{**r, "reply": {"text": "Sure,\u2028checking rides."}} if r["id"] == "h1" else r for r in RECORDS]
    records.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in changed))  # as eval_classes writes
    card = render(root)
    assert "- 2 held-out failures (1 tool_miss, 1 non_tool)" in card


def test_report_params_are_checked_and_errors_are_one_line(tmp_path, repo_root, monkeypatch, capsys):
    from tasks import report

    root = workspace(tmp_path, repo_root, params={**PARAMS, "report": {"profile": "v4.1", "n_worst": 5, "n_best": 3}})
    monkeypatch.chdir(root)
    assert report.main() == 1
    assert capsys.readouterr().err == ("report: params.yaml: 'report.n_best' is not a known key "
                                       "(known: n_worst, profile)\n")
    (root / "params.yaml").write_text(yaml.safe_dump({**PARAMS, "report": {"n_worst": -1}}))
    assert report.main() == 1
    assert "'report.n_worst' must be in [0, 100], got -1" in capsys.readouterr().err
    (root / "params.yaml").write_text(yaml.safe_dump({**PARAMS, "report": {"profile": "smoke"}}))
    assert report.main() == 0
    assert "SMOKE RUN" in (root / "reports/model_card.md").read_text()


# --------------------------------------------------------------------------- the Hugging Face metadata block

def hub_card(root):
    """The card as the Hub reads it (huggingface_hub's own parser, local file, no network)."""
    from huggingface_hub import ModelCard

    return ModelCard.load(root / "reports/model_card.md")


def hub_values(card) -> dict[tuple[str, str | None], float]:
    return {(r.metric_type, r.metric_config): r.metric_value for r in card.data.eval_results or []}


def test_the_card_is_a_hub_model_card_whose_numbers_are_the_metrics_files(tmp_path, repo_root):
    from pipeline.records import CLASSES

    root = workspace(tmp_path, repo_root, with_narration=True)
    render(root)
    card = hub_card(root)
    data = card.data
    assert (data.base_model, data.base_model_relation) == ("LiquidAI/LFM2.5-Audio-1.5B", "finetune")
    assert (data.license, data.license_name) == ("other", "lfm1.0")
    assert data.license_link == "https://huggingface.co/LiquidAI/LFM2.5-Audio-1.5B/blob/main/LICENSE"
    assert data.pipeline_tag == "audio-to-audio" and "tool-use" in data.tags and "smoke-run" not in data.tags

    metrics = {name: json.loads((root / f"reports/metrics/{name}.details.json").read_text())
               for name in ("eval_classes", "eval_narration", "eval_blip")}
    percent = lambda rate: round(100 * rate, 1)  # noqa: E731 - as the body's tables show it
    classes, narration, blip = metrics["eval_classes"], metrics["eval_narration"], metrics["eval_blip"]
    expected = {("accuracy", c): percent(classes["per_class"][c]) for c in CLASSES}
    expected[("accuracy", None)] = percent(classes["overall_accuracy"])
    expected |= {(k, None): percent(narration[k]) for k in ("faithful_rate", "memorized_rate")}
    expected |= {(k, None): percent(blip[k]) for k in ("full_match_rate", "cb0_match_rate",
                                                       "detector_true_positive_rate", "false_positive_rate")}
    assert hub_values(card) == expected  # cb0_or_cb3_match_rate is null in eval_blip.json: left out, not 0
    assert f"| **Overall** | 93.3% | 95.0% | {expected[('accuracy', None)]}% (116/120) |" in card.text
    assert card.text.lstrip().startswith("# LFM2.5-Audio-1.5B — Tool-Aware Fine-Tune (this run)")


def test_an_unavailable_metric_is_left_out_of_the_metadata_and_said_in_the_body(tmp_path, repo_root):
    root = workspace(tmp_path, repo_root, with_narration=False)
    render(root)
    card = hub_card(root)
    assert not {"faithful_rate", "memorized_rate", "cb0_or_cb3_match_rate"} & {t for t, _ in hub_values(card)}
    assert "This run: unavailable (" in card.text and "unavailable (made up for the test)" in card.text


def test_a_smoke_card_parses_names_its_base_and_carries_the_eval_results(tmp_path, repo_root):
    smoke = {**PARAMS, "base_models": {"source": "fabricate", "lfm_repo": "LiquidAI/LFM2.5-Audio-1.5B"},
             "report": {"profile": "smoke"}}
    root = workspace(tmp_path, repo_root, params=smoke)
    zero = {**CLASSES_METRICS, "per_class": dict.fromkeys(CLASSES_METRICS["per_class"], 0.0), "overall_accuracy": 0.0}
    (root / "reports/metrics/eval_classes.details.json").write_text(json.dumps(zero))  # what a random-init model scores
    render(root)
    card = hub_card(root)
    assert card.data.base_model == "LiquidAI/LFM2.5-Audio-1.5B" and "smoke-run" in card.data.tags
    assert hub_values(card)[("accuracy", None)] == 0.0 and len(card.data.eval_results) == 9
    assert "THESE NUMBERS MEAN NOTHING" in card.text


def test_with_no_metrics_at_all_the_card_still_parses_without_eval_results(tmp_path, repo_root):
    (tmp_path / "configs").mkdir()
    shutil.copy(repo_root / "configs/baselines.yaml", tmp_path / "configs/baselines.yaml")
    (tmp_path / "params.yaml").write_text("report: {profile: smoke}\n")
    render(tmp_path)
    card = hub_card(tmp_path)
    assert card.data.eval_results is None and card.data.license == "other" and card.data.base_model is None


def test_the_card_reads_train_speed_from_the_timings_file(tmp_path, repo_root):
    """Wall-clock readings live in train.timings.json (not in the cached details): the card still shows them."""
    root = workspace(tmp_path, repo_root)
    (root / "reports/metrics/train.timings.json").write_text(json.dumps({"tokens_per_s": 1234.5, "peak_memory_gib": 7.5}))
    card = render(root)
    assert "- Train tokens/s: 1234.5" in card and "- Train peak memory GiB: 7.5" in card
