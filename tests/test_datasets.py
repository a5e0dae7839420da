"""howsure.datasets: the seeded synthetic sentiment set, the seed_cwc loader, the content-hash
split, and the `howsure datasets` commands that write them."""

from __future__ import annotations

import csv
import json
from collections import Counter

import pytest
from typer.testing import CliRunner

from howsure.cli import app
from howsure.datasets.hash_split import hash_sides, parse_fractions, text_hash
from howsure.datasets.seed_cwc import infer_domain, load_seed_cwc
from howsure.datasets.seed_sentiment import (CATEGORIES, FAVOURED_DOMAIN, allocate, duplicate_share,
                                             generate_seed_sentiment, measured_bias)
from howsure.errors import DataError

runner = CliRunner()


# --------------------------------------------------------------------------- the synthetic set


def test_the_same_seed_gives_the_same_rows_and_another_seed_other_rows():
    first = generate_seed_sentiment(n=400, bias=0.8, seed=3)
    assert generate_seed_sentiment(n=400, bias=0.8, seed=3) == first
    other = generate_seed_sentiment(n=400, bias=0.8, seed=4)
    assert [row["text"] for row in other] != [row["text"] for row in first]


@pytest.mark.parametrize("bias", [0.0, 0.5, 0.73, 0.9, 1.0])
def test_the_bias_measured_on_the_output_is_the_setting(bias):
    rows = generate_seed_sentiment(n=2000, bias=bias, seed=1)
    # Exact allocation: at most one item per category off the setting (rounding).
    assert abs(measured_bias(rows) - bias) <= len(CATEGORIES) / 2000
    for category in CATEGORIES:
        placed = [row for row in rows if row["category"] == category]
        polarity = category.rsplit("_", 1)[1]
        share = sum(row["domain"] == FAVOURED_DOMAIN[polarity] for row in placed) / len(placed)
        assert abs(share - bias) <= 1 / len(placed) + 1e-12


def test_at_half_bias_the_domain_says_nothing_about_the_label():
    rows = generate_seed_sentiment(n=4000, bias=0.5, seed=2)
    for domain in ("sports", "work"):
        labels = Counter(row["label"] for row in rows if row["domain"] == domain)
        assert labels["positive"] == labels["negative"]


def test_other_share_sets_items_in_everyday_life_outside_the_bias():
    rows = generate_seed_sentiment(n=2000, bias=0.9, seed=5, other_share=0.2)
    assert abs(sum(row["domain"] == "other" for row in rows) / 2000 - 0.2) <= len(CATEGORIES) / 2000
    assert abs(measured_bias(rows) - 0.9) <= len(CATEGORIES) / 1600


def test_rows_have_the_columns_howsure_reads_and_the_public_sets_proportions():
    rows = generate_seed_sentiment(n=10_000, bias=0.9, seed=0)
    assert set(rows[0]) == {"id", "text", "label", "category", "domain"}
    counts = Counter(row["category"] for row in rows)
    assert counts == {"strong_positive": 500, "medium_positive": 1000, "weak_positive": 2500,
                      "neutral_positive": 1000, "strong_negative": 500, "medium_negative": 1000,
                      "weak_negative": 2500, "neutral_negative": 1000}
    assert all(row["label"] == row["category"].rsplit("_", 1)[1] for row in rows)
    assert len({row["id"] for row in rows}) == len(rows)


def test_duplicate_texts_are_rare():
    # Measured: 2 of 10,000 texts (0.02 %) repeat an earlier one at seed 0 (3 at seed 1); the bound leaves room
    # for other seeds. A duplicate is harmless for splitting (content hash keeps copies together).
    rows = generate_seed_sentiment(n=10_000, bias=0.9, seed=0)
    assert duplicate_share(rows) < 0.002
    for category in CATEGORIES:  # every category on its own, 5,000 items of one kind
        alone = generate_seed_sentiment(n=5000, bias=0.9, seed=0, weights={category: 1})
        assert duplicate_share(alone) < 0.01, category


def test_neutral_texts_carry_no_opinion_words_and_opinions_differ_by_strength():
    rows = generate_seed_sentiment(n=4000, bias=0.9, seed=7)
    opinion = ("brilliant", "disaster", "disappointing", "pleased", "underwhelming", "encouraging")
    neutral = [row["text"].lower() for row in rows if row["category"].startswith("neutral")]
    assert not any(word in text for text in neutral for word in opinion)
    strong = " ".join(row["text"] for row in rows if row["category"] == "strong_negative")
    weak = " ".join(row["text"] for row in rows if row["category"] == "weak_negative")
    assert "catastrophic" in strong and "catastrophic" not in weak


def test_allocate_splits_exactly():
    assert allocate(10, {"a": 1, "b": 1, "c": 1}) == {"a": 4, "b": 3, "c": 3}
    assert sum(allocate(9999, {"a": 0.3, "b": 0.7}).values()) == 9999


@pytest.mark.parametrize("settings, message", [
    ({"n": 0}, "n must be a whole number of rows >= 1, got 0"),
    ({"bias": 1.5}, "bias must be a share in [0, 1], got 1.5"),
    ({"other_share": 1.0}, "other_share must be a share in [0, 1), got 1.0"),
    ({"weights": {"angry": 1}}, "unknown categories ['angry']"),
    ({"weights": {"weak_positive": -1}}, "weight of category 'weak_positive' is -1"),
])
def test_bad_settings_are_named(settings, message):
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(").replace(")", r"\)")):
        generate_seed_sentiment(**settings)


# --------------------------------------------------------------------------- the content-hash split


def test_hash_sides_follow_the_text_alone():
    texts = [f"text number {i}" for i in range(3000)]
    sides = hash_sides(texts)
    # Adding, removing or reordering other items never moves a text.
    assert hash_sides(texts[::-1]) == sides[::-1]
    assert hash_sides(texts[:10]) == sides[:10]
    counts = Counter(sides)
    assert abs(counts["train"] / 3000 - 0.6) < 0.04 and abs(counts["test"] / 3000 - 0.2) < 0.03
    assert hash_sides(texts, salt="other") != sides
    assert text_hash("a") == text_hash("a") != text_hash("a", salt="x")


def test_fractions_are_checked():
    assert parse_fractions("train=0.5,test=0.5") == {"train": 0.5, "test": 0.5}
    with pytest.raises(DataError, match="sum to 0.9; expected 1"):
        parse_fractions("train=0.5,test=0.4")
    with pytest.raises(DataError, match="'train' is 'lots'"):
        parse_fractions("train=lots,test=0.5")
    with pytest.raises(DataError, match="is not SIDE=FRACTION"):
        parse_fractions("train")


# --------------------------------------------------------------------------- seed_cwc


def _write_set(folder, texts_by_category):
    folder.mkdir()
    for category in CATEGORIES:
        (folder / f"{category}.txt").write_text("\n".join(texts_by_category.get(category, [])) + "\n", "utf-8")
    return folder


def test_loader_drops_duplicates_and_conflicting_texts_and_counts_them(tmp_path):
    source = _write_set(tmp_path / "set", {
        "strong_positive": ["Great match!", "Great match!", "Loved the final."],
        "medium_positive": ["Loved the final.", "A good season."],
        "weak_negative": ["A good season.", "The meeting was meh."],
        "neutral_negative": ["The meeting was meh.", "The office opens at nine."],
    })
    data = load_seed_cwc(source)
    texts = [row["text"] for row in data.rows]
    assert sorted(texts) == ["Great match!", "Loved the final.", "The meeting was meh.", "The office opens at nine."]
    by_text = {row["text"]: row for row in data.rows}
    # Same polarity under two categories: the first file in sorted name order keeps it.
    assert by_text["Loved the final."]["category"] == "medium_positive"
    assert by_text["The meeting was meh."]["category"] == "neutral_negative"
    assert data.counts["duplicate_lines_dropped"] == 3  # one "Great match!", one "Loved the final.", one "The meeting was meh."
    assert data.counts["conflicting_texts_dropped"] == 1
    assert data.conflicts == [{"text": "A good season.", "categories": ["medium_positive", "weak_negative"]}]
    assert data.counts["lines"] == data.counts["rows"] + data.counts["duplicate_lines_dropped"] + \
        data.counts["conflicting_lines_dropped"]


def test_loader_names_a_missing_folder_or_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_seed_cwc(tmp_path / "nowhere")
    source = _write_set(tmp_path / "set", {})
    (source / "weak_positive.txt").unlink()
    with pytest.raises(DataError, match="lacks weak_positive.txt"):
        load_seed_cwc(source)


def test_domain_keyword_rule():
    assert infer_domain("The tennis players' footwork improved this season.") == "sports"
    assert infer_domain("The quarterly meeting with the client ran over the deadline.") == "work"
    assert infer_domain("The weather was fine.") == "other"
    assert infer_domain("The coach met the manager.") == "other"  # a tie


def test_the_public_set_loads_deduplicated_and_split_without_leaks(shared_data):
    data = load_seed_cwc(shared_data / "sentiment" / "seed_cwc")
    counts = data.counts
    assert counts["lines"] == 10_000 and counts["rows"] == 8_801
    assert counts["duplicate_lines_dropped"] == 1_199  # as the data README says
    assert counts["conflicting_texts_dropped"] == 0
    sides: dict[str, set[str]] = {}
    for row in data.rows:
        sides.setdefault(row["text"], set()).add(row["split"])
    assert all(len(found) == 1 for found in sides.values())  # no text is on two sides
    assert sum(counts["per_split"].values()) == 8_801
    test_texts = {row["text"] for row in data.split("test")}
    train_texts = {row["text"] for row in data.split("train")}
    assert not test_texts & train_texts
    # The published 2,000-line test split leaks: 270 of its lines (120 distinct texts) have a copy
    # outside it, i.e. in training. Under the content-hash split every copy is on one side.
    published = json.loads((shared_data / "sentiment/seed_cwc/results/finetune_test_set.json").read_text("utf-8"))
    in_test = Counter(item["text"].strip() for item in published)
    everywhere = Counter(line.strip() for path in (shared_data / "sentiment/seed_cwc").glob("*.txt")
                         for line in path.read_text("utf-8").splitlines() if line.strip())
    leaked = [text for text in in_test if everywhere[text] > in_test[text]]
    assert (len(leaked), sum(in_test[text] for text in leaked)) == (120, 270)
    side_of = {row["text"]: row["split"] for row in data.rows}
    assert all(text in side_of for text in leaked)  # each kept once, on exactly one side
    # The set's bias is visible through the keyword rule: of the texts with a domain, most
    # positive ones are sports texts and most negative ones work texts.
    for label, favoured in FAVOURED_DOMAIN.items():
        placed = [row for row in data.rows if row["label"] == label and row["domain"] != "other"]
        assert sum(row["domain"] == favoured for row in placed) / len(placed) > 0.85


# --------------------------------------------------------------------------- the commands


def test_seed_sentiment_command_writes_a_table_howsure_reads(tmp_path):
    from howsure.io.tables import read_table

    output = tmp_path / "seed.csv"
    result = runner.invoke(app, ["datasets", "seed-sentiment", "--n", "300", "--bias", "0.8", "--seed", "2",
                                 "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert "measured bias 0.80" in " ".join(result.output.split())  # rich wraps at the tmp path's length
    frame = read_table(output)
    assert list(frame.columns) == ["id", "text", "label", "category", "domain"]
    assert frame.to_dict("records") == generate_seed_sentiment(n=300, bias=0.8, seed=2)
    jsonl = tmp_path / "seed.jsonl"
    assert runner.invoke(app, ["datasets", "seed-sentiment", "--n", "10", "--output", str(jsonl)]).exit_code == 0
    assert len(jsonl.read_text("utf-8").splitlines()) == 10


def test_seed_sentiment_command_refuses_bad_values(tmp_path):
    result = runner.invoke(app, ["datasets", "seed-sentiment", "--bias", "2", "--output", str(tmp_path / "x.csv")])
    assert result.exit_code == 2 and "bias must be a share in [0, 1], got 2.0" in result.output
    result = runner.invoke(app, ["datasets", "seed-sentiment", "--n", "5", "--output", str(tmp_path / "x.xlsx")])
    assert result.exit_code == 2 and "'.xlsx' is not one of .csv, .tsv, .jsonl" in result.output


def test_seed_cwc_command_writes_disjoint_splits_and_a_manifest(tmp_path):
    source = _write_set(tmp_path / "set", {
        category: [f"{category} text {i}" for i in range(40)] + [f"{category} text 0"] for category in CATEGORIES
    })
    out = tmp_path / "out"
    result = runner.invoke(app, ["datasets", "seed-cwc", "--source", str(source), "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    found = {}
    for name in ("train", "calibration", "test"):
        with open(out / f"{name}.csv", encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert rows and set(rows[0]) == {"id", "text", "label", "category", "domain"}
        found[name] = {row["text"] for row in rows}
    assert not (found["train"] & found["test"]) and not (found["train"] & found["calibration"])
    assert sum(len(texts) for texts in found.values()) == 8 * 40
    manifest = json.loads((out / "manifest.json").read_text("utf-8"))
    assert manifest["counts"]["duplicate_lines_dropped"] == 8
    assert sorted(manifest["hashes"]["test"]) == sorted(text_hash(t) for t in found["test"])
    result = runner.invoke(app, ["datasets", "seed-cwc", "--source", str(source), "--output-dir", str(out),
                                 "--split", "train=0.7,test=0.2"])
    assert result.exit_code == 2 and "sum to 0.9; expected 1" in result.output


def test_the_datasets_room_imports_numpy_and_the_standard_library_only():
    import subprocess
    import sys

    code = ("import sys; import howsure.datasets.seed_sentiment, howsure.datasets.seed_cwc, "
            "howsure.datasets.hash_split, howsure.datasets.output; "
            "print(sorted(m for m in ('pandas', 'scipy', 'sklearn', 'torch', 'matplotlib') if m in sys.modules))")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"


def test_an_output_path_that_cannot_be_written_is_one_line_naming_it(tmp_path):
    """OSErrors on a path the user gave (here a folder where a file goes, and a file where a
    folder goes) are the CLI wrapper's one-line error with exit 2, not a traceback."""
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    result = runner.invoke(app, ["datasets", "seed-sentiment", "--n", "10", "--output", str(folder)])
    assert result.exit_code == 2, result.output
    assert "error: Is a directory: " in result.output and "Traceback" not in result.output
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine", "utf-8")
    result = runner.invoke(app, ["datasets", "seed-sentiment", "--n", "10", "--output", str(a_file / "seed.csv")])
    assert result.exit_code == 2 and "error: File exists: " in result.output, result.output
    assert a_file.read_text("utf-8") == "mine"
