"""Linear probes: cross-validation that never scores an item it was fitted on, grouped folds, the
layer chosen on training folds only, the JSON file and its checks, answer-position hidden states
against a plain forward pass, and `probe fit` / `score --scorer probe` end to end."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from howsure.cli import app
from howsure.core.task import load_task
from howsure.errors import DataError, ModelError, TaskError
from howsure.probes import crossval
from howsure.probes.crossval import layer_scores, nested_crossfit
from howsure.probes.probe import LinearProbe, load_probe, save_probe
from howsure.probes.scorer import fit_probe, model_checksum

runner = CliRunner()


def memorisable(n=120, seed=0):
    """Random labels and, at layer 1, a one-hot of each item's identity: a probe fitted on an item
    knows its label, a probe that never saw it knows nothing. Layer 0 is pure noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    states = np.zeros((n, 2, n))
    states[:, 0] = rng.normal(size=(n, n))
    states[:, 1] = np.eye(n) * 10
    return states, y


def test_cross_validation_never_scores_an_item_it_was_fitted_on():
    states, y = memorisable()
    # Fitted and scored on the same items, the identity layer is perfect: leakage would show.
    from howsure.probes.crossval import fit_layer, probe_auroc

    in_sample = fit_layer(states[:, 1], y, 2, 1, C=10.0).predict_proba(states[:, 1])
    assert probe_auroc(y, in_sample) > 0.99
    scores = layer_scores(states, y, C=10.0)
    assert abs(scores.auroc[1] - 0.5) < 0.2  # out of fold the identity tells nothing
    assert not np.isnan(scores.oof).any()  # every item got exactly one out-of-fold probability
    nested = nested_crossfit(states, y, C=10.0)
    assert abs(nested.auroc - 0.5) < 0.2
    for fit_idx, held_out in nested.folds:
        assert np.intersect1d(fit_idx, held_out).size == 0
    assert np.sort(np.concatenate([held for _, held in nested.folds])).tolist() == list(range(y.size))


def test_grouped_folds_keep_a_group_on_one_side():
    # Each group is 3 copies of one item (same states, same label): a fold that split a group
    # would see its copy and score it perfectly.
    rng = np.random.default_rng(1)
    n_groups = 60
    y_group = rng.integers(0, 2, n_groups)
    identity = np.eye(n_groups) * 10
    states = np.repeat(identity[:, None, :], 3, axis=0)
    y = np.repeat(y_group, 3)
    groups = np.repeat(np.arange(n_groups), 3).tolist()
    ungrouped = layer_scores(states, y, C=10.0)
    assert ungrouped.auroc[0] > 0.95  # the leak the groups prevent
    grouped = layer_scores(states, y, groups=groups, C=10.0)
    assert abs(grouped.auroc[0] - 0.5) < 0.2
    nested = nested_crossfit(states, y, groups=groups, C=10.0)
    for fit_idx, held_out in nested.folds:
        assert not set(np.array(groups)[fit_idx]) & set(np.array(groups)[held_out])


def test_the_layer_is_chosen_on_training_folds_only(monkeypatch):
    rng = np.random.default_rng(2)
    n = 90
    y = rng.integers(0, 2, n)
    states = rng.normal(size=(n, 3, 8))
    states[:, 2, 1] += 3 * y  # layer 2 carries the label
    states[:, :, 0] = np.arange(n)[:, None]  # feature 0 names the item, so we can see who was used
    seen = []
    original = crossval.choose_layer

    def spy(fit_states, fit_y, **kwargs):
        seen.append(set(fit_states[:, 0, 0].astype(int).tolist()))
        return original(fit_states, fit_y, **kwargs)

    monkeypatch.setattr(crossval, "choose_layer", spy)
    nested = nested_crossfit(states, y, seed=3)
    assert len(seen) == len(nested.folds) == 5
    for items, (fit_idx, held_out) in zip(seen, nested.folds):
        assert items == set(fit_idx.tolist()) and not items & set(held_out.tolist())
    assert nested.chosen_layers == [2] * 5
    assert nested.auroc > 0.9


def test_probe_json_round_trip_and_mismatch_errors(tmp_path):
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 60)
    states = rng.normal(size=(60, 3, 6))
    states[:, 1, 0] += 2 * y
    task = load_task("sentiment")
    texts = [f"text {i}" for i in range(60)]
    probe, scores, crossfit = fit_probe(states, y, task.labels, model_id="m", checksum="c" * 64, task=task,
                                        groups=texts, texts=texts)
    assert probe.layer == 1 == scores.best_layer and crossfit is not None
    path = save_probe(probe, tmp_path / "probe.json")
    data = json.loads(path.read_text())
    assert data["layer"] == 1 and data["model"] == {"id": "m", "checksum": "c" * 64}
    assert data["task"] == {"name": task.name, "fingerprint": task.fingerprint()}
    assert data["training"]["n_items"] == 60 and len(data["training"]["hashes"]) == 60
    loaded = load_probe(path)
    np.testing.assert_allclose(loaded.predict_proba(states), probe.predict_proba(states))
    loaded.check_model("m", "c" * 64)
    loaded.check_task(task)
    with pytest.raises(ModelError, match="checksum"):
        loaded.check_model("other", "d" * 64)
    with pytest.raises(TaskError, match="fingerprint"):
        loaded.check_task(load_task({**task.to_dict(), "instruction": "Something else: {text}"}))
    (tmp_path / "bad.json").write_text(json.dumps({**data, "weights": [[1.0]]}))
    with pytest.raises(DataError, match="malformed"):
        load_probe(tmp_path / "bad.json")
    (tmp_path / "pickle.json").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(DataError, match="not JSON"):
        load_probe(tmp_path / "pickle.json")


def test_multiclass_probe_is_multinomial():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 90)
    states = rng.normal(size=(90, 1, 5))
    states[np.arange(90), 0, y] += 3
    probe, scores, _ = fit_probe(states, y, ["a", "b", "c"], model_id="m", checksum="c", nested=False)
    p = probe.predict_proba(states)
    assert p.shape == (90, 3) and np.allclose(p.sum(1), 1)
    assert scores.auroc[0] > 0.85
    assert LinearProbe.from_dict(probe.to_dict()).fit.weights.shape == (3, 5)


def test_hidden_states_match_a_plain_forward_pass(tiny_model_dir):
    import torch

    from howsure.backends import load_backend
    from howsure.backends.transformers.hidden import answer_hidden_states

    backend = load_backend(str(tiny_model_dir), threads=1, batch_size=2)
    task = load_task("sentiment")
    texts = ["A gorgeous movie.", "dull and stupid, the worst film of the year", "witty", "very good"]
    states = answer_hidden_states(backend, task, texts)
    assert states.shape == (4, backend.model.config.num_hidden_layers + 1, backend.model.config.hidden_size)
    for i, text in enumerate(texts):
        with torch.inference_mode():
            out = backend.model(input_ids=torch.tensor([backend.encode(backend.prompt(task, text))]),
                                output_hidden_states=True)
        expected = torch.stack([h[0, -1] for h in out.hidden_states]).numpy()
        np.testing.assert_allclose(states[i], expected, atol=1e-4)
    np.testing.assert_allclose(answer_hidden_states(backend, task, texts, layers=[2])[:, 0], states[:, 2])
    with pytest.raises(DataError, match="layer 9"):
        answer_hidden_states(backend, task, texts, layers=[9])


def test_probe_fit_and_score_with_the_probe_end_to_end(tmp_path, tiny_model_dir):
    rng = np.random.default_rng(6)
    words = ["gorgeous witty movie", "dull stupid film", "very good", "quite bad"]
    lines = ["label\tcontent"] + [f"{i % 2}\t{words[i % 4]} {rng.integers(1000)}" for i in range(40)]
    source = tmp_path / "train.tsv"
    source.write_text("\n".join(lines) + "\n")
    probe_path = tmp_path / "probe.json"
    result = runner.invoke(app, ["probe", "fit", "-i", str(source), "-o", str(probe_path), "-m", str(tiny_model_dir),
                                 "--text-column", "content", "--label-map", "0=negative", "--label-map", "1=positive",
                                 "--folds", "3"])
    assert result.exit_code == 0, result.output
    assert "chosen layer" in result.output and "nested cross-fitted AUROC" in result.output
    probe = load_probe(probe_path)
    assert probe.model_checksum and probe.labels == ["positive", "negative"]
    out = tmp_path / "scored.jsonl"
    result = runner.invoke(app, ["score", "-i", str(source), "-o", str(out), "-m", str(tiny_model_dir),
                                 "--text-column", "content", "--label-column", "label", "--scorer", "probe",
                                 "--probe", str(probe_path)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 40
    from howsure.backends import load_backend
    from howsure.backends.transformers.hidden import answer_hidden_states

    backend = load_backend(str(tiny_model_dir), threads=1)
    states = answer_hidden_states(backend, load_task("sentiment"), [r["text"] for r in records])
    expected = probe.predict_proba(states)
    got = np.array([[r["probabilities"]["positive"], r["probabilities"]["negative"]] for r in records])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # evaluate reads the probe's output unchanged.
    result = runner.invoke(app, ["evaluate", str(out), "--label-map", "0=negative,1=positive", "--bootstrap", "50",
                                 "--folds", "3", "-o", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["input"]["n_items"] == 40
    # A probe fitted on another model is refused before anything is scored.
    data = json.loads(probe_path.read_text())
    data["model"]["checksum"] = "0" * 64
    (tmp_path / "other.json").write_text(json.dumps(data))
    result = runner.invoke(app, ["score", "-i", str(source), "-o", str(tmp_path / "x.jsonl"), "-m", str(tiny_model_dir),
                                 "--text-column", "content", "--scorer", "probe", "--probe", str(tmp_path / "other.json")])
    assert result.exit_code == 2 and "checksum" in result.output
    result = runner.invoke(app, ["score", "-i", str(source), "-o", str(tmp_path / "y.jsonl"), "-m", str(tiny_model_dir),
                                 "--text-column", "content", "--scorer", "probe"])
    assert result.exit_code == 2 and "--probe" in result.output
    assert model_checksum(backend) == probe.model_checksum


def test_bundled_model_probe_on_a_few_sst2_texts(bundled_backend, shared_data):
    from howsure.io.texts import read_texts
    from howsure.probes.scorer import ProbeScorer, fit_task_probe

    rows = read_texts(shared_data / "sentiment" / "sst2" / "dev.tsv", "content", None, "label")
    texts = rows.texts[:18]
    gold = [{"0": "negative", "1": "positive"}[g] for g in rows.labels[:18]]
    task = load_task("sentiment")
    probe, scores, crossfit = fit_task_probe(bundled_backend, task, texts, gold, layers=[10, 20, 29], n_folds=3,
                                             inner_folds=2)
    assert scores.layers == [10, 20, 29] and probe.layer in (10, 20, 29)
    assert set(crossfit.chosen_layers) <= {10, 20, 29} and not np.isnan(crossfit.probabilities).any()
    assert probe.cv["chosen_layer"] == probe.layer and probe.training["n_items"] == 18
    scored = ProbeScorer(bundled_backend, probe).label_scores(task, texts[:4])
    from howsure.backends.transformers.hidden import answer_hidden_states

    states = answer_hidden_states(bundled_backend, task, texts[:4], layers=[probe.layer])
    np.testing.assert_allclose([s.probabilities for s in scored], probe.predict_proba(states[:, 0]), atol=1e-6)
    assert scored[0].labels == list(task.labels) and scored[0].other_mass == 0.0


@pytest.mark.parametrize("option, value, message", [("--C", "0", "--C must be a number > 0, got 0.0"),
                                                     ("--C", "-1", "--C must be a number > 0, got -1.0"),
                                                     ("--folds", "1", "--folds must be at least 2, got 1")])
def test_probe_fit_refuses_bad_settings_before_reading_anything(tmp_path, option, value, message):
    # The input does not even exist: the check comes before the file and the model's hidden states.
    result = runner.invoke(app, ["probe", "fit", "-i", str(tmp_path / "absent.tsv"), "-o", str(tmp_path / "p.json"),
                                 option, value])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "p.json").exists()
