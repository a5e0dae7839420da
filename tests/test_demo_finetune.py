"""The demo's fine-tuning stage: a training sample disjoint from the scored sentences, the adapter
trained (or given), the sentences scored again, both models certified on the same halves, and
the automation table, in the output and in summary.json."""

import json

import pytest
from typer.testing import CliRunner

import howsure.pipelines.demo as demo
from howsure.calibration.fitting import item_hashes
from howsure.cli import app
from howsure.core.task import load_task
from howsure.decisions.policy import Policy
from howsure.finetune import finetune, read_labelled_file, trained_hashes
from howsure.io.tables import read_table
from howsure.io.texts import sample_path
from howsure.pipelines.demo import FINETUNE_STAGES, SAMPLE, STAGES, TRAINING_SAMPLE


def letters_and_digits(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isascii() and ch.isalnum())


def test_the_training_sample_shares_no_text_with_the_scored_sentences():
    scored = read_table(sample_path(SAMPLE))["text"].tolist()
    training = read_labelled_file(sample_path(TRAINING_SAMPLE), load_task("sentiment"))
    assert len(scored) == 2000 and len(training.texts) == 400
    assert set(item_hashes(training.texts, "text")).isdisjoint(item_hashes(scored, "text"))
    # nor a copy that differs only in case or punctuation, and no sentence twice
    assert {letters_and_digits(t) for t in training.texts}.isdisjoint(letters_and_digits(t) for t in scored)
    assert len({letters_and_digits(t) for t in training.texts}) == 400
    assert training.labels.count("positive") == training.labels.count("negative") == 200


def test_demo_fine_tunes_compares_and_resumes(tmp_path, tiny_model_dir, monkeypatch):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--model", str(tiny_model_dir), "--limit", "200", "--target", "0.6"]
    trainings = []
    monkeypatch.setattr(demo, "finetune", lambda *a, **k: (trainings.append(finetune(*a, **k)), trainings[-1])[1])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    # The adapter trained on the bundled training sample only: none of the scored sentences.
    scored = [json.loads(line) for line in (out / "tuned" / "scores.jsonl").read_text().splitlines()]
    assert len(scored) == 200
    assert trained_hashes(out / "adapter").isdisjoint(item_hashes([row["text"] for row in scored], "text"))
    [trained] = trainings
    assert not trained.already_finished and trained.steps == trained.metadata["training"]["total_steps"] > 1
    summary = json.loads((out / "summary.json").read_text())
    table = summary["automation"]
    assert table["targets"] == [0.8, 0.85, 0.9, 0.95] and table["stated_target"] == 0.6
    comparison = json.loads((out / "comparison" / "comparison.json").read_text())
    for name, key in (("base", "base"), ("fine-tuned", "tuned")):
        side = comparison["sides"][key]
        assert table[name]["accuracy"] == side["headline"]["calibrated"]["accuracy"]["value"]
        assert set(table[name]["certified_share"]) == {"0.8", "0.85", "0.9", "0.95"}
        assert all(0.0 <= share <= 1.0 for share in table[name]["certified_share"].values())
    # The fine-tuned scores differ from the base ones, and both policies were certified on the
    # same half of the same items.
    base_rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert any(a["probabilities"] != b["probabilities"] for a, b in zip(base_rows, scored))
    base_policy, tuned_policy = Policy.load(out / "policy.json"), Policy.load(out / "tuned" / "policy.json")
    assert base_policy.guarantee["calibrator_fit"]["split"] == tuned_policy.guarantee["calibrator_fit"]["split"]
    assert base_policy.calibrator["fit_items"]["hashes"] == tuned_policy.calibrator["fit_items"]["hashes"]
    stages = summary["stage_seconds"]
    assert list(stages) == [*STAGES, *FINETUNE_STAGES, "total"]
    printed = " ".join(result.output.split())
    table_text = printed.split("certified automation share")[1]
    for target in ("0.80", "0.85", "0.90", "0.95"):
        assert target in table_text
    assert f"{table['fine-tuned']['certified_share']['0.8']:.1%}" in table_text

    # Run again: the finished adapter and both score files are reused, nothing retrained.
    weights = out / "adapter" / "adapter_model.safetensors"
    written = weights.stat().st_mtime_ns
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert trainings[-1].already_finished and weights.stat().st_mtime_ns == written
    assert json.loads((out / "summary.json").read_text())["automation"] == table
    assert len((out / "tuned" / "scores.jsonl").read_text().splitlines()) == 200


def test_demo_uses_a_given_adapter_and_refuses_one_trained_on_its_sentences(tmp_path, tiny_model_dir):
    from howsure.finetune import FinetuneConfig, finetune
    from howsure.finetune.data import LabelledTexts

    task = load_task("sentiment")
    frame = read_table(sample_path(SAMPLE)).head(120)
    leaky = tmp_path / "leaky"
    finetune(task, LabelledTexts(frame["text"].tolist(), frame["label"].tolist()), leaky, model=str(tiny_model_dir),
             config=FinetuneConfig(max_steps=1, batch_size=8, eval_interval=1))
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "out"), "--model", str(tiny_model_dir),
                                      "--limit", "150", "--target", "0.6", "--adapter", str(leaky)])
    assert result.exit_code != 0
    text = " ".join(result.output.split())
    assert "was trained on" in text and "of the 150 demo sentences" in text, text
    assert not (tmp_path / "out" / "tuned").exists()

    training = read_labelled_file(sample_path(TRAINING_SAMPLE), task)
    clean = tmp_path / "clean"
    finetune(task, LabelledTexts(training.texts[:60], training.labels[:60]), clean, model=str(tiny_model_dir),
             config=FinetuneConfig(max_steps=1, batch_size=8, eval_interval=1))
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "out"), "--model", str(tiny_model_dir),
                                      "--limit", "150", "--target", "0.6", "--adapter", str(clean)])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "out" / "adapter").exists()  # nothing trained
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["automation"]["adapter"] == str(clean)


@pytest.mark.model
def test_the_full_demo_on_the_bundled_model_automates_at_its_stated_target(tmp_path, bundled_model_ready):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--threads", "2"])
    assert result.exit_code == 0, result.output
    print(result.output)  # the table and the stage times, in the test log
    summary = json.loads((out / "summary.json").read_text())
    table = summary["automation"]
    stated = f"{table['stated_target']:g}"
    assert table["stated_target"] == demo.DemoConfig().target_accuracy
    # The point of the stage: the fine-tuned model automates a share at the stated target.
    assert table["fine-tuned"]["certified_share"][stated] > 0
    assert table["fine-tuned"]["accuracy"] > table["base"]["accuracy"]
    tuned_policy = Policy.load(out / "tuned" / "policy.json")
    assert tuned_policy.guarantee["certified"] and tuned_policy.guarantee["automation_rate"] > 0
    print("demo stage seconds:", summary["stage_seconds"])
