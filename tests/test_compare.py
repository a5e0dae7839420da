"""`howsure compare` and the pipeline behind it: base against fine-tuned on the same items,
every figure the one `howsure evaluate` gives on each file alone."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from howsure.cli import app
from howsure.datasets.output import write_rows
from howsure.datasets.seed_sentiment import generate_seed_sentiment
from howsure.errors import DataError
from howsure.io.scored_tables import load_scored_items
from howsure.pipelines.evaluate import evaluate, EvaluationConfig
from howsure.pipelines.compare import CompareConfig, compare, load_scored_file, write_comparison
from howsure.report import json_ready

runner = CliRunner()
LABELS = ("positive", "negative")
FAST = ["--calibrator", "temperature", "--bootstrap", "50", "--folds", "3"]


def score_record(row: int, item: dict, p_positive: float) -> dict:
    """A record as `howsure score` writes it (`LabelScores.to_record` after row, id, text, label)."""
    probabilities = {"positive": round(p_positive, 8), "negative": round(1 - p_positive, 8)}
    prediction = max(probabilities, key=probabilities.get)
    return {"row": row, "id": item["id"], "text": item["text"], "label": item["label"],
            "prediction": prediction, "confidence": probabilities[prediction], "probabilities": probabilities,
            "label_mass": {k: round(v * 0.9, 8) for k, v in probabilities.items()}, "other_mass": 0.1,
            "top_tokens": [[" " + prediction, probabilities[prediction] * 0.9]]}


def write_scores(path, items, sharpness: float, seed: int, *, domain_pull: float = 0.0):
    """Scores whose P(positive) leans towards the gold label by ``sharpness`` (plus noise), and
    towards positive for sports / negative for work items by ``domain_pull``."""
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for row, item in enumerate(items):
            sign = 1.0 if item["label"] == "positive" else -1.0
            pull = {"sports": 1.0, "work": -1.0}.get(item["domain"], 0.0)
            logit = sharpness * sign + domain_pull * pull + rng.normal(0, 1.2)
            handle.write(json.dumps(score_record(row, item, float(1 / (1 + np.exp(-logit))))) + "\n")
    return path


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    items = generate_seed_sentiment(n=400, bias=0.9, seed=11)
    base = write_scores(folder / "base.jsonl", items, sharpness=0.4, seed=1)
    # The fine-tuned model reads the label better and has learned the domain bias.
    tuned = write_scores(folder / "tuned.jsonl", items[::-1], sharpness=2.5, seed=2, domain_pull=1.0)
    categories = write_rows(items, folder / "items.csv", ["id", "text", "label", "category", "domain"])
    return {"folder": folder, "items": items, "base": base, "tuned": tuned, "categories": categories}


def test_the_summary_holds_what_evaluate_gives_on_each_file_alone(scored, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["compare", str(scored["base"]), str(scored["tuned"]), "--out", str(out),
                                 "--categories", str(scored["categories"]), *FAST])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "comparison.json").read_text("utf-8"))
    config = EvaluationConfig(calibrator="temperature", n_boot=50, n_folds=3)
    for key in ("base", "tuned"):
        alone = json_ready(evaluate(load_scored_items(scored[key]), config).summary)
        assert summary["sides"][key]["metrics"] == alone["metrics"]
        assert summary["sides"][key]["calibration"] == alone["calibration"]
        by_key = {column["key"]: column["values"] for column in alone["metrics"]}
        for view in ("raw", "calibrated"):
            for name in ("accuracy", "ece", "brier", "auroc"):
                entry = summary["sides"][key]["headline"][view][name]
                assert entry == by_key[view][name]
                assert entry["low"] <= entry["value"] <= entry["high"]
    changes = summary["changes"]["raw"]
    base_accuracy = summary["sides"]["base"]["headline"]["raw"]["accuracy"]["value"]
    assert changes["accuracy"] == pytest.approx(
        summary["sides"]["tuned"]["headline"]["raw"]["accuracy"]["value"] - base_accuracy)
    assert changes["accuracy"] > 0.2  # the crafted fine-tune is much better


def test_certified_share_is_the_librarys_certificate_at_the_same_target_and_delta(scored, tmp_path):
    from howsure.decisions.recalibration import certify_with_split

    config = CompareConfig(EvaluationConfig(calibrator="temperature", n_boot=20, n_folds=3, target=0.85),
                           delta=0.1, targets=(0.8, 0.85))
    summary = compare(load_scored_file(scored["base"]), load_scored_file(scored["tuned"]), config)
    for key in ("base", "tuned"):
        items = load_scored_items(scored[key])
        expected = certify_with_split(items.labels, items.probabilities, calibrator="temperature", test_size=0.5,
                                      seed=0, texts=items.texts, target_accuracy=0.85, delta=0.1,
                                      labels=items.label_names).policy.guarantee
        certificate = summary["sides"][key]["certificate"]
        assert certificate["automation_rate"] == expected["automation_rate"]
        assert certificate["threshold"] == expected["threshold"]
        assert (certificate["target_accuracy"], certificate["delta"]) == (0.85, 0.1)
        table = {row["target_accuracy"]: row for row in summary["sides"][key]["targets"]}
        assert table[0.85]["automation_rate"] == expected["automation_rate"]
        # A looser target never automates less with the same calibrator and items.
        assert table[0.8]["automation_rate"] >= table[0.85]["automation_rate"]
    assert summary["sides"]["tuned"]["certificate"]["automation_rate"] > \
        summary["sides"]["base"]["certificate"]["automation_rate"]


def test_confusion_matrices_count_the_predictions(scored):
    config = CompareConfig(EvaluationConfig(calibrator="temperature", n_boot=10, n_folds=3))
    summary = compare(load_scored_file(scored["base"]), load_scored_file(scored["tuned"]), config)
    for key in ("base", "tuned"):
        records = [json.loads(line) for line in scored[key].read_text("utf-8").splitlines()]
        confusion = summary["sides"][key]["confusion"]
        assert confusion["labels"] == list(LABELS)
        raw = np.array(confusion["raw"])
        for gold, name in enumerate(LABELS):
            for predicted, other in enumerate(LABELS):
                assert raw[gold, predicted] == sum(r["label"] == name and r["prediction"] == other for r in records)
        assert np.array(confusion["calibrated"]).sum() == len(records)


def test_per_category_view_shows_the_learned_domain_bias(scored):
    base, tuned = load_scored_file(scored["base"]), load_scored_file(scored["tuned"])
    from howsure.pipelines.compare import groups_from_table

    for side in (base, tuned):
        side.groups = groups_from_table(scored["categories"], side.items.texts)
    summary = compare(base, tuned, CompareConfig(EvaluationConfig(calibrator="temperature", n_boot=10, n_folds=3)))
    blocks = {block["by"]: block["rows"] for block in summary["groups"]}
    assert set(blocks) == {"category", "domain", "category / domain"}
    counts = {row["group"]: row["n"] for row in blocks["category"]}
    expected = {}
    for item in scored["items"]:
        expected[item["category"]] = expected.get(item["category"], 0) + 1
    assert counts == expected
    cells = {row["group"]: row for row in blocks["category / domain"]}
    sports, work = cells["neutral_positive / sports"], cells["neutral_negative / work"]
    # The crafted fine-tune pulls sports towards positive and work towards negative.
    assert sports["tuned"]["raw_mean_probability"]["positive"] > sports["base"]["raw_mean_probability"]["positive"]
    assert work["tuned"]["raw_mean_probability"]["negative"] > work["base"]["raw_mean_probability"]["negative"]
    members = [i for i, item in enumerate(scored["items"]) if item["category"] == "strong_negative"]
    records = [json.loads(line) for line in scored["base"].read_text("utf-8").splitlines()]
    accuracy = np.mean([records[i]["prediction"] == records[i]["label"] for i in members])
    row = next(r for r in blocks["category"] if r["group"] == "strong_negative")
    assert row["base"]["raw_accuracy"] == pytest.approx(accuracy)


def test_the_html_is_self_contained(scored, tmp_path):
    config = CompareConfig(EvaluationConfig(calibrator="temperature", n_boot=10, n_folds=3))
    summary = compare(load_scored_file(scored["base"]), load_scored_file(scored["tuned"]), config,
                      title="Before <b>after</b>")
    html_path, json_path = write_comparison(summary, tmp_path)
    page = html_path.read_text("utf-8")
    references = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", page, flags=re.I)
    assert references and all(ref.startswith("data:image/png;base64,") for ref in references)
    assert "url(" not in page and "@import" not in page and "<script" not in page
    assert page.count("<img") == 4  # reliability and histograms, raw and calibrated
    assert "Before &lt;b&gt;after&lt;/b&gt;" in page  # titles are escaped
    assert "Confusion matrices" in page and "Certified automation" in page
    assert json.loads(json_path.read_text("utf-8"))["format"] == "howsure.comparison"


def test_files_of_other_items_are_refused_naming_how_many_differ(scored, tmp_path):
    lines = scored["tuned"].read_text("utf-8").splitlines()
    other = tmp_path / "other.jsonl"
    changed = [json.loads(line) for line in lines]
    for record in changed[:3]:
        record["text"] += " (edited)"
    other.write_text("".join(json.dumps(r) + "\n" for r in changed[:-2]), "utf-8")
    result = runner.invoke(app, ["compare", str(scored["base"]), str(other), "--out", str(tmp_path / "o"), *FAST])
    assert result.exit_code == 2
    assert "do not hold the same items: 5 of the 400 items of the first are not in the second and 3 of the 398" \
        in " ".join(result.output.split())
    assert not (tmp_path / "o").exists()


def test_other_gold_labels_or_labels_are_refused(scored, tmp_path):
    records = [json.loads(line) for line in scored["tuned"].read_text("utf-8").splitlines()]
    records[0]["label"] = "negative" if records[0]["label"] == "positive" else "positive"
    relabelled = tmp_path / "relabelled.jsonl"
    relabelled.write_text("".join(json.dumps(r) + "\n" for r in records), "utf-8")
    with pytest.raises(DataError, match="1 items have other gold labels"):
        compare(load_scored_file(scored["base"]), load_scored_file(relabelled))
    no_text = tmp_path / "no_text.jsonl"
    no_text.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "text"}) + "\n" for r in records), "utf-8")
    with pytest.raises(DataError, match="has no text column"):
        compare(load_scored_file(scored["base"]), load_scored_file(no_text))


def test_bad_options_are_named(scored, tmp_path):
    common = ["compare", str(scored["base"]), str(scored["tuned"]), "--out", str(tmp_path / "o")]
    result = runner.invoke(app, [*common, "--targets", "0.8,lots"])
    assert result.exit_code == 2 and "--targets entry 'lots' is not a number" in result.output
    result = runner.invoke(app, [*common, "--delta", "1.5"])
    assert result.exit_code == 2 and "1.5" in result.output
    result = runner.invoke(app, [*common, "--categories", str(scored["base"])])
    assert result.exit_code == 2 and "has no 'category' column" in result.output


def test_a_real_run_generate_score_with_two_models_compare(tmp_path, tiny_model_dir, tiny_plain_model_dir):
    """End to end through the commands a user runs: the synthetic set, `howsure score` with two
    (tiny, random) models on the same items, then `howsure compare` with the categories."""
    items = tmp_path / "items.csv"
    assert runner.invoke(app, ["datasets", "seed-sentiment", "--n", "120", "--seed", "3",
                               "--output", str(items)]).exit_code == 0
    outputs = []
    for name, model in (("base", tiny_model_dir), ("tuned", tiny_plain_model_dir)):
        out = tmp_path / f"{name}.jsonl"
        result = runner.invoke(app, ["score", "-i", str(items), "-o", str(out), "-m", str(model),
                                     "--label-column", "label", "--id-column", "id"])
        assert result.exit_code == 0, result.output
        outputs.append(out)
    result = runner.invoke(app, ["compare", *map(str, outputs), "--out", str(tmp_path / "cmp"),
                                 "--categories", str(items), *FAST])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "cmp" / "comparison.json").read_text("utf-8"))
    config = EvaluationConfig(calibrator="temperature", n_boot=50, n_folds=3)
    for key, path in zip(("base", "tuned"), outputs):
        alone = json_ready(evaluate(load_scored_items(path), config).summary)
        assert summary["sides"][key]["metrics"] == alone["metrics"]
    assert summary["sides"]["base"]["scoring"]["model"] == str(tiny_model_dir)
    assert summary["sides"]["tuned"]["scoring"]["model"] == str(tiny_plain_model_dir)
    assert not any("with itself" in note for note in summary["notes"])
    page = (tmp_path / "cmp" / "comparison.html").read_text("utf-8")
    assert str(tiny_plain_model_dir) in page
    itself = compare(load_scored_file(outputs[0]), load_scored_file(outputs[0]),
                     CompareConfig(EvaluationConfig(calibrator="temperature", n_boot=10, n_folds=3)))
    assert any("this compares a model with itself" in note for note in itself["notes"])
    assert {row["group"] for row in summary["groups"][0]["rows"]} == {
        "strong_positive", "medium_positive", "weak_positive", "neutral_positive",
        "strong_negative", "medium_negative", "weak_negative", "neutral_negative"}


def test_a_confidence_table_with_its_own_category_column(scored, tmp_path):
    """Tables of confidence and correctness (no label distribution) compare too; the category
    column of the scored file itself gives the per-category view; no certificate is claimed."""
    import csv

    paths = []
    for key in ("base", "tuned"):
        records = [json.loads(line) for line in scored[key].read_text("utf-8").splitlines()]
        category = {item["text"]: item["category"] for item in scored["items"]}
        path = tmp_path / f"{key}.csv"
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "confidence", "correct", "category"])
            for r in records:
                writer.writerow([r["text"], r["confidence"], int(r["prediction"] == r["label"]), category[r["text"]]])
        paths.append(path)
    summary = compare(load_scored_file(paths[0]), load_scored_file(paths[1]),
                      CompareConfig(EvaluationConfig(calibrator="platt", n_boot=10, n_folds=3)))
    assert summary["sides"]["base"]["certificate"] is None and summary["sides"]["base"]["confusion"] is None
    assert [block["by"] for block in summary["groups"]] == ["category"]
    assert any("confidence only" in note for note in summary["notes"])
    alone = json_ready(evaluate(load_scored_items(paths[1]),
                                EvaluationConfig(calibrator="platt", n_boot=10, n_folds=3)).summary)
    assert summary["sides"]["tuned"]["metrics"] == alone["metrics"]
    html_path, _ = write_comparison(summary, tmp_path / "out")
    assert "Needs per-label probabilities" in html_path.read_text("utf-8")


def test_the_published_llama_runs_compare_on_the_same_items(shared_data, tmp_path):
    """The public write-up's cached Llama-3.1-8B results, before and after its LoRA fine-tune, on
    the same 1,000 items (935 distinct texts): the binary distribution is rebuilt from the gold
    and predicted labels, and the file's own category column gives the per-category view."""
    results = shared_data / "sentiment" / "seed_cwc" / "results"
    base, tuned = results / "llama31_8b_base_results.json", results / "llama31_8b_finetuned_results.json"
    columns = ["--label-column", "expected", "--prediction-column", "prediction", "--prob-column", "confidence"]
    out = tmp_path / "llama"
    result = runner.invoke(app, ["compare", str(base), str(tuned), "--out", str(out), *columns, *FAST])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "comparison.json").read_text("utf-8"))
    assert summary["items"]["n_items"] == 1000 and summary["items"]["n_unique_texts"] == 935
    config = EvaluationConfig(calibrator="temperature", n_boot=50, n_folds=3)
    for key, path in (("base", base), ("tuned", tuned)):
        alone = evaluate(load_scored_items(path, label_column="expected", prediction_column="prediction",
                                           prob_column="confidence"), config)
        assert summary["sides"][key]["metrics"] == json_ready(alone.summary)["metrics"]
    sides = summary["sides"]
    assert sides["tuned"]["headline"]["raw"]["accuracy"]["value"] > sides["base"]["headline"]["raw"]["accuracy"]["value"]
    assert sides["tuned"]["certificate"]["automation_rate"] > sides["base"]["certificate"]["automation_rate"]
    weak = next(row for row in summary["groups"][0]["rows"] if row["group"] == "weak_positive")
    assert weak["n"] == 251 and weak["tuned"]["raw_accuracy"] > weak["base"]["raw_accuracy"]


def test_an_evaluation_already_run_is_reused_only_with_the_same_settings(scored, monkeypatch):
    """The demo hands `compare` the base side's own evaluation: the summary is the one a fresh
    evaluation gives, the base side is not cross-fitted again, and an evaluation made with other
    settings is not taken for it."""
    import howsure.pipelines.compare as compare_module

    settings = EvaluationConfig(calibrator="temperature", n_boot=20, n_folds=3, title="the demo's own")
    config = CompareConfig(settings)
    fresh = compare(load_scored_file(scored["base"]), load_scored_file(scored["tuned"]), config)
    calls = []
    real = compare_module.evaluate
    monkeypatch.setattr(compare_module, "evaluate", lambda items, *a, **k: calls.append(items) or real(items, *a, **k))
    base = load_scored_file(scored["base"])
    base.evaluation = evaluate(base.items, settings)
    tuned = load_scored_file(scored["tuned"])
    reused = compare(base, tuned, config)
    assert [items is tuned.items for items in calls] == [True]  # only the tuned side was evaluated
    for key in ("sides", "changes"):
        assert json.dumps(json_ready(reused[key]), sort_keys=True) == json.dumps(json_ready(fresh[key]), sort_keys=True)
    calls.clear()
    base.evaluation = evaluate(base.items, EvaluationConfig(calibrator="temperature", n_boot=20, n_folds=5))
    compare(base, tuned, config)
    assert len(calls) == 2  # other folds: evaluated again
