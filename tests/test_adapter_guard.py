"""Split discipline for fine-tuned scores: `howsure score --adapter` records the adapter, a resume
with another adapter (or none) is refused, the score cache keys rows by the adapter's weights,
and thresholds / evaluate / compare refuse items the adapter trained on unless --allow-overlap,
which the policy and the reports then state. Also: a warning during a backend load does not hang."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from howsure.backends.cache import adapter_checksum
from howsure.cli import app
from howsure.decisions.policy import Policy
from howsure.finetune import FinetuneConfig, LabelledTexts, finetune, trained_hashes
from howsure.core.task import load_task

runner = CliRunner()
SRC = Path(__file__).resolve().parents[1] / "src"
SENTIMENT = load_task("sentiment")
SMALL = dict(batch_size=8, eval_interval=2, checkpoint_interval=2, validation_fraction=0.2, patience=0,
             max_steps=2, learning_rate=5e-3)
TRAIN = [f"a good witty movie number {i}" if i % 2 else f"the worst dull film {i}" for i in range(40)]
FRESH = [f"an unseen lovely story {i}" if i % 2 else f"an unseen boring mess {i}" for i in range(30)]
N_TRAINED_IN_MIXED = 10


def flat(output: str) -> str:
    return " ".join(output.split())


def label_of(text: str) -> str:
    return "positive" if any(word in text for word in ("good", "lovely")) else "negative"


def write_texts(path: Path, texts: list[str]) -> Path:
    path.write_text("text\tlabel\n" + "".join(f"{t}\t{label_of(t)}\n" for t in texts), "utf-8")
    return path


def score(tmp: Path, texts: Path, out: Path, model: Path, *extra: str):
    return runner.invoke(app, ["score", "-i", str(texts), "-o", str(out), "-m", str(model),
                               "--label-column", "label", *extra])


@pytest.fixture(scope="module")
def guarded(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("guard")
    data = LabelledTexts(TRAIN, [label_of(t) for t in TRAIN])
    adapters = {}
    for name, seed in (("a", 0), ("b", 1)):
        adapters[name] = tmp / f"adapter-{name}"
        finetune(SENTIMENT, data, adapters[name], model=str(tiny_model_dir),
                 config=FinetuneConfig(seed=seed, **SMALL))
    held = write_texts(tmp / "held.tsv", FRESH)
    # Every text is written for the train/validation split: some of them are surely in it.
    trained = [t for t in TRAIN if t in _texts_trained(adapters["a"])][:N_TRAINED_IN_MIXED]
    mixed = write_texts(tmp / "mixed.tsv", FRESH[:30 - N_TRAINED_IN_MIXED] + trained)
    files = {}
    for name, texts, options in (("held", held, ["--adapter", str(adapters["a"])]),
                                 ("mixed", mixed, ["--adapter", str(adapters["a"])]),
                                 ("held_base", held, []), ("mixed_base", mixed, [])):
        files[name] = tmp / f"{name}.jsonl"
        result = score(tmp, texts, files[name], tiny_model_dir, *options)
        assert result.exit_code == 0, result.output
    return {"tmp": tmp, "adapters": adapters, "files": files, "inputs": {"held": held, "mixed": mixed},
            "model": tiny_model_dir}


def _texts_trained(adapter: Path) -> set[str]:
    from howsure.calibration.fitting import item_hashes

    hashes = trained_hashes(adapter)
    return {t for t, h in zip(TRAIN, item_hashes(TRAIN, "text")) if h in hashes}


# ---------------------------------------------------------------------------------- score header


def test_the_score_meta_records_the_adapter_and_a_resume_with_another_or_none_is_refused(guarded):
    adapter, out = guarded["adapters"]["a"], guarded["files"]["held"]
    meta = json.loads(out.with_name(out.name + ".meta.json").read_text())
    assert meta["adapter"] == {"directory": str(adapter.resolve()), "checksum": adapter_checksum(adapter)}
    base_meta = json.loads((guarded["tmp"] / "held_base.jsonl.meta.json").read_text())
    assert base_meta["adapter"] is None

    partial = guarded["tmp"] / "partial.jsonl"
    shutil.copy(out, partial)
    shutil.copy(out.with_name(out.name + ".meta.json"), partial.with_name(partial.name + ".meta.json"))
    held, model = guarded["inputs"]["held"], guarded["model"]
    for options, words in (([], "this run scores without an adapter"),
                           (["--adapter", str(guarded["adapters"]["b"])], "this run scores with adapter")):
        result = score(guarded["tmp"], held, partial, model, *options)
        assert result.exit_code == 2, result.output
        assert f"was scored with adapter {str(adapter.resolve())!r}" in flat(result.output)
        assert words in flat(result.output) and "mix two models' scores" in flat(result.output)
    base = guarded["tmp"] / "held_base.jsonl"
    result = score(guarded["tmp"], held, base, model, "--adapter", str(adapter))
    assert result.exit_code == 2 and "was scored without an adapter" in flat(result.output)
    moved = guarded["tmp"] / "moved-adapter"  # the same adapter elsewhere: the same weights, so it resumes
    shutil.copytree(adapter, moved)
    result = score(guarded["tmp"], held, partial, model, "--adapter", str(moved))
    assert result.exit_code == 0, result.output
    assert "scored 0 text(s), 30 already done" in flat(result.output)


def test_cache_rows_are_keyed_by_the_adapters_weights(guarded, tmp_path):
    cache, held, model = tmp_path / "scores.sqlite", guarded["inputs"]["held"], guarded["model"]
    runs = []
    for name in ("a", "b", "a"):
        out = tmp_path / f"{name}-{len(runs)}.jsonl"
        result = score(tmp_path, held, out, model, "--cache", str(cache), "--adapter", str(guarded["adapters"][name]))
        assert result.exit_code == 0, result.output
        runs.append((flat(result.output), [json.loads(line)["probabilities"] for line in out.read_text().splitlines()]))
    assert "score cache: 0 text(s)" in runs[0][0] and "30 scored by the model" in runs[0][0]
    assert "score cache: 0 text(s)" in runs[1][0] and "30 scored by the model" in runs[1][0]  # no row shared
    assert "score cache: 30 text(s)" in runs[2][0] and "0 scored by the model" in runs[2][0]
    assert runs[0][1] == runs[2][1] and runs[0][1] != runs[1][1]


# ---------------------------------------------------------------------------------- the guard


def test_thresholds_refuses_items_the_adapter_trained_on_and_allow_overlap_says_so_in_the_policy(guarded, tmp_path):
    adapter, mixed = guarded["adapters"]["a"], guarded["files"]["mixed"]
    refused = runner.invoke(app, ["thresholds", str(mixed), "--out", str(tmp_path / "p.json"), "--target", "0.6"])
    assert refused.exit_code == 2, refused.output
    assert (f"{N_TRAINED_IN_MIXED} of the 30 items of {str(mixed)!r} were in the training data of adapter "
            f"{str(adapter.resolve())!r}") in flat(refused.output)
    assert not (tmp_path / "p.json").exists()
    allowed = runner.invoke(app, ["thresholds", str(mixed), "--out", str(tmp_path / "p.json"), "--target", "0.6",
                                  "--allow-overlap"])
    assert allowed.exit_code == 0, allowed.output
    statement = json.loads((tmp_path / "p.json").read_text())["guarantee"]["adapter_overlap"]
    assert statement["n_overlap"] == N_TRAINED_IN_MIXED and statement["allowed"] is True
    assert statement["words"] == (f"{N_TRAINED_IN_MIXED} of 30 items were in the training data of adapter "
                                  f"{str(adapter.resolve())!r} (--allow-overlap): the guarantee does not hold.")
    assert "the guarantee does not hold" in flat(allowed.output)
    assert Policy.load(tmp_path / "p.json").guarantee["adapter_overlap"] == statement  # the service can load it
    held = runner.invoke(app, ["thresholds", str(guarded["files"]["held"]), "--out", str(tmp_path / "h.json")])
    assert held.exit_code == 0, held.output
    statement = json.loads((tmp_path / "h.json").read_text())["guarantee"]["adapter_overlap"]
    assert (statement["n_overlap"], statement["allowed"], statement["checksum"]) == (0, False, adapter_checksum(adapter))


def test_the_adapter_flag_guards_a_table_without_meta_and_must_match_the_recorded_adapter(guarded, tmp_path):
    table = tmp_path / "mixed.jsonl"
    shutil.copy(guarded["files"]["mixed"], table)  # no meta file beside it: only --adapter tells
    assert runner.invoke(app, ["thresholds", str(table), "--out", str(tmp_path / "p.json")]).exit_code == 0
    result = runner.invoke(app, ["thresholds", str(table), "--out", str(tmp_path / "p.json"),
                                 "--adapter", str(guarded["adapters"]["a"])])
    assert result.exit_code == 2 and "were in the training data of adapter" in flat(result.output)
    result = runner.invoke(app, ["thresholds", str(guarded["files"]["held"]), "--out", str(tmp_path / "p.json"),
                                 "--adapter", str(guarded["adapters"]["b"])])
    assert result.exit_code == 2, result.output
    assert "is another one (checksum" in flat(result.output) and "pass the adapter the scores came from" in flat(result.output)


def test_evaluate_refuses_overlap_and_allow_overlap_puts_it_in_the_report(guarded, tmp_path):
    mixed = guarded["files"]["mixed"]
    args = ["evaluate", str(mixed), "--out", str(tmp_path / "r"), "--bootstrap", "50", "--folds", "3"]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2 and f"{N_TRAINED_IN_MIXED} of the 30 items" in flat(refused.output)
    assert not (tmp_path / "r").exists()
    allowed = runner.invoke(app, [*args, "--allow-overlap"])
    assert allowed.exit_code == 0, allowed.output
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    words = f"{N_TRAINED_IN_MIXED} of 30 items were in the training data of adapter"
    assert summary["adapter"]["n_overlap"] == N_TRAINED_IN_MIXED and words in summary["notes"][0]
    assert words in (tmp_path / "r" / "report.html").read_text()
    held = runner.invoke(app, ["evaluate", str(guarded["files"]["held"]), "--out", str(tmp_path / "h"),
                               "--bootstrap", "50", "--folds", "3"])
    assert held.exit_code == 0, held.output
    assert json.loads((tmp_path / "h" / "summary.json").read_text())["adapter"]["n_overlap"] == 0


def test_compare_refuses_overlap_on_the_tuned_side_and_allow_overlap_says_so(guarded, tmp_path):
    files = guarded["files"]
    args = ["compare", str(files["mixed_base"]), str(files["mixed"]), "--out", str(tmp_path / "c"),
            "--bootstrap", "50", "--folds", "3", "--targets", "0.6"]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2 and f"{N_TRAINED_IN_MIXED} of the 30 items" in flat(refused.output)
    allowed = runner.invoke(app, [*args, "--allow-overlap"])
    assert allowed.exit_code == 0, allowed.output
    summary = json.loads((tmp_path / "c" / "comparison.json").read_text())
    assert summary["sides"]["base"]["adapter"] is None
    assert summary["sides"]["tuned"]["adapter"]["n_overlap"] == N_TRAINED_IN_MIXED
    assert "the guarantee does not hold" in (tmp_path / "c" / "comparison.html").read_text()
    held = runner.invoke(app, ["compare", str(files["held_base"]), str(files["held"]), "--out", str(tmp_path / "h"),
                               "--bootstrap", "50", "--folds", "3", "--targets", "0.6"])
    assert held.exit_code == 0, held.output
    assert json.loads((tmp_path / "h" / "comparison.json").read_text())["sides"]["tuned"]["adapter"]["n_overlap"] == 0


# ---------------------------------------------------------------------------------- warnings


def test_a_warning_during_a_backend_load_is_shown_and_does_not_hang():
    script = textwrap.dedent("""
        import warnings
        import howsure.backends as backends

        def load_backend(*args, **kwargs):
            warnings.warn("peft says something", FutureWarning)
            return object()

        backends.load_backend = load_backend
        from howsure.cli.scoring import open_backend

        open_backend("any-model", "float32", None)
        print("loaded")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(SRC)})
    assert done.returncode == 0, done.stderr
    assert "loaded" in done.stdout and "FutureWarning: peft says something" in done.stderr


# ---------------------------------------------------------------------------------- tune-task


def test_tune_task_scores_with_the_adapter_and_names_a_candidate_it_was_not_trained_for(guarded, tmp_path):
    import tomli_w

    trained = {k: v for k, v in SENTIMENT.to_dict().items() if v not in (None, [])}
    candidates = tmp_path / "c.toml"
    candidates.write_text(tomli_w.dumps({"candidate": [trained]}))
    args = ["tune-task", "-c", str(candidates), "-i", str(guarded["inputs"]["held"]), "-m", str(guarded["model"])]
    rankings = []
    for options in ([], ["--adapter", str(guarded["adapters"]["a"])]):
        out = tmp_path / f"ranking{len(rankings)}.json"
        result = runner.invoke(app, [*args, "--json-out", str(out), *options])
        assert result.exit_code == 0, result.output
        rankings.append(json.loads(out.read_text())[0])
    assert rankings[0]["log_loss"] != rankings[1]["log_loss"]  # the adapter's scores, not the base model's
    other = dict(trained, name="other", instruction="Review: {text}\nPositive or negative?")
    candidates.write_text(tomli_w.dumps({"candidate": [other]}))
    result = runner.invoke(app, [*args, "--adapter", str(guarded["adapters"]["a"])])
    assert result.exit_code == 2 and "was trained for task 'sentiment'" in flat(result.output)
