"""End to end on the real bundled model (SmolLM2-135M-Instruct): never replaced by the tiny one."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from howsure.cli import app
from howsure.models import PRESETS, converted_dir, sha256_file, preset_file
from howsure.backends.labels import LOW_LABEL_MASS
from howsure.core.task import load_task

pytestmark = pytest.mark.model

POSITIVE = ["An absolute masterpiece, I loved every minute of it.", "Wonderful, moving and beautifully acted.",
            "the best film of the year", "a brilliant, funny and touching film."]
NEGATIVE = ["Terrible acting and an awful script. I hated it.", "dull and lifeless",
            "A boring, stupid waste of two hours.", "the worst movie I have ever seen."]


def test_bundled_weights_are_the_pinned_file(bundled_model_ready):
    preset = PRESETS[bundled_model_ready]
    assert sha256_file(preset_file(preset)) == preset.file_sha256
    provenance = json.loads((converted_dir(preset) / "howsure-source.json").read_text())
    assert provenance["sha256"] == preset.file_sha256


def test_obvious_texts_are_ranked_apart_with_real_label_mass(bundled_backend):
    """A 135M model leans positive before calibration (docs/scoring.md), so the raw argmax is not
    asserted; what must hold is the ranking, and that the labels carry real probability."""
    task = load_task("sentiment")
    results = bundled_backend.label_scores(task, POSITIVE + NEGATIVE)
    for r in results:
        assert r.label_mass.sum() > LOW_LABEL_MASS  # the prompt works: the labels are real answers
        assert r.probabilities.sum() == pytest.approx(1.0)
    p_pos = np.array([r.probabilities[0] for r in results])
    assert p_pos[: len(POSITIVE)].min() > p_pos[len(POSITIVE):].max()
    assert [r.prediction for r in results[: len(POSITIVE)]] == ["positive"] * len(POSITIVE)


def test_inspect_and_score_on_the_bundled_model(tmp_path, bundled_model_ready):
    runner = CliRunner()
    result = runner.invoke(app, ["inspect", "Not bad", "--threads", "2"])
    assert result.exit_code == 0, result.output
    assert "positive" in result.output and "negative" in result.output and "(other)" in result.output
    source = tmp_path / "in.csv"
    source.write_text("text,label\n" + "".join(f'"{t}",positive\n' for t in POSITIVE) + "".join(f'"{t}",negative\n' for t in NEGATIVE))
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["score", "-i", str(source), "-o", str(out), "--label-column", "label", "--threads", "2"])
    assert result.exit_code == 0, result.output
    assert "median probability on the labels" not in result.output  # no low label mass warning
    records = [json.loads(line) for line in out.read_text().splitlines()]
    p_pos = [r["probabilities"]["positive"] for r in records]
    assert min(p_pos[: len(POSITIVE)]) > max(p_pos[len(POSITIVE):])
    assert [r["label"] for r in records] == ["positive"] * len(POSITIVE) + ["negative"] * len(NEGATIVE)


def test_a_gguf_file_loads_directly_and_matches_the_cached_copy(bundled_backend):
    """--model path/to/file.gguf goes through transformers' GGUF loader (no cache involved)."""
    from howsure.backends import load_backend

    gguf = preset_file(PRESETS["smollm2-135m"])
    direct = load_backend(str(gguf), threads=2)
    task = load_task("sentiment")
    a = direct.label_scores(task, POSITIVE[:2])
    b = bundled_backend.label_scores(task, POSITIVE[:2])
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.probabilities, y.probabilities, atol=1e-5)
