import numpy as np
import pytest
from typer.testing import CliRunner

from howsure.backends import load_backend
from howsure.cli import app
from howsure.errors import DataError, TaskError
from howsure.core.task import load_task
from howsure.pipelines.tune_task import load_candidates, rank_candidates

CANDIDATES = """
variant_rules = ["variants", "exact"]
[base]
labels = { positive = ["positive"], negative = ["negative"] }
[[candidate]]
name = "a"
instruction = "Positive or negative? {text}"
[[candidate]]
name = "b"
instruction = "{text}\\nSentiment:"
"""


def test_candidates_expand_over_variant_rules(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(CANDIDATES)
    tasks = load_candidates(path)
    assert [(t.name, t.variant_rule) for t in tasks] == [("a", "variants"), ("a", "exact"), ("b", "variants"), ("b", "exact")]


def test_auroc_ties_within_one_standard_error_are_broken_by_log_loss():
    from howsure.pipelines.tune_task import CandidateResult, auroc_standard_error

    y = np.array([0, 1] * 400)
    se = auroc_standard_error(0.85, y, 2)
    assert 0.01 < se < 0.02  # Hanley-McNeil for 400 + 400 items at 0.85

def test_ranking_is_by_auroc_then_log_loss(tmp_path, tiny_model_dir):
    path = tmp_path / "c.toml"
    path.write_text(CANDIDATES)
    backend = load_backend(str(tiny_model_dir))
    texts = ["good", "great film", "bad", "awful", "fine", "dull and stupid"]
    gold = ["positive", "positive", "negative", "negative", "positive", "negative"]
    results = rank_candidates(backend, load_candidates(path), texts, gold)
    best = max(r.auroc for r in results)
    se = max(results, key=lambda r: r.auroc).auroc_se
    tied = [r for r in results if r.auroc >= best - se]
    assert results[: len(tied)] == sorted(tied, key=lambda r: r.log_loss)
    rest = results[len(tied):]
    assert [(-r.auroc, r.log_loss) for r in rest] == sorted((-r.auroc, r.log_loss) for r in rest)
    assert all(r.n == 6 for r in results)
    # Each candidate's figures, recomputed by hand from its own scores: AUROC as the share of
    # (second label, first label) pairs ordered right by P(second label), ties counting half.
    for r in results:
        scores = backend.label_scores(r.task, texts, top_k=1)
        probs = np.clip(np.stack([s.probabilities for s in scores]), 1e-12, 1.0)
        probs /= probs.sum(1, keepdims=True)
        y = np.array([r.task.label_names.index(g) for g in gold])
        second, first = probs[y == 1, 1], probs[y == 0, 1]
        pairs = [1.0 if a > b else 0.5 if a == b else 0.0 for a in second for b in first]
        assert r.auroc == pytest.approx(sum(pairs) / len(pairs), abs=1e-12)
        assert r.accuracy == pytest.approx(np.mean(probs.argmax(1) == y))
        assert r.log_loss == pytest.approx(-np.mean(np.log(probs[np.arange(len(y)), y])))
        assert r.mean_label_mass == pytest.approx(np.mean([s.label_mass.sum() for s in scores]))


@pytest.mark.parametrize(
    "gold, match",
    [(["positive", "maybe"], "gold label 'maybe' is not one of"), (["positive", "positive"], "at least two classes")],
)
def test_bad_dev_labels(tiny_model_dir, gold, match):
    backend = load_backend(str(tiny_model_dir))
    with pytest.raises(DataError, match=match):
        rank_candidates(backend, [load_task("sentiment")], ["a", "b"], gold)


def test_bad_candidates_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[base]\nlabels = { a = ["x"], b = ["y"] }\n[[candidate]]\nname = "bad"\ninstruction = "no placeholder"\n')
    with pytest.raises(TaskError, match="candidate 'bad'.*placeholder"):
        load_candidates(path)


def test_tune_task_cli_writes_the_best_task(tmp_path, tiny_model_dir):
    candidates = tmp_path / "c.toml"
    candidates.write_text(CANDIDATES)
    dev = tmp_path / "dev.tsv"
    dev.write_text("label\tcontent\n1\tgood\n0\tbad\n1\tgreat\n0\tawful\n")
    best = tmp_path / "best.toml"
    result = CliRunner().invoke(app, ["tune-task", "-c", str(candidates), "-i", str(dev), "--text-column", "content",
                                      "--label-map", "0=negative", "--label-map", "1=positive", "-m", str(tiny_model_dir),
                                      "--best-out", str(best)])
    assert result.exit_code == 0, result.output
    assert load_task(best).label_names == ["positive", "negative"]
    bad = CliRunner().invoke(app, ["tune-task", "-c", str(candidates), "-i", str(dev), "--text-column", "content",
                                   "--label-map", "0negative", "-m", str(tiny_model_dir)])
    assert bad.exit_code == 2 and "must look like RAW=LABEL" in bad.output


def test_tune_task_reruns_from_the_score_cache(tmp_path, tiny_model_dir):
    candidates = tmp_path / "c.toml"
    candidates.write_text(CANDIDATES)
    dev = tmp_path / "dev.tsv"
    dev.write_text("label\tcontent\n1\tgood\n0\tbad\n1\tgreat\n0\tawful\n")
    command = ["tune-task", "-c", str(candidates), "-i", str(dev), "--text-column", "content", "--label-map", "0=negative",
               "--label-map", "1=positive", "-m", str(tiny_model_dir), "--cache", str(tmp_path / "scores.sqlite")]
    first = CliRunner().invoke(app, command + ["--json-out", str(tmp_path / "first.json")])
    assert first.exit_code == 0, first.output
    assert "score cache: 0 text(s)" in " ".join(first.output.split())
    second = CliRunner().invoke(app, command + ["--json-out", str(tmp_path / "second.json")])
    assert second.exit_code == 0, second.output
    # every candidate's every text comes from the cache: the model scores nothing the second time
    assert ", 0 scored by the model" in " ".join(second.output.split())
    assert (tmp_path / "first.json").read_text() == (tmp_path / "second.json").read_text()
