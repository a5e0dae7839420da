"""`howsure finetune` from the command line: bad input in one line, an adapter that `score
--adapter` uses exactly as `score --model MERGED`, and resume after the process is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from typer.testing import CliRunner

from howsure.cli import app

runner = CliRunner()
SRC = Path(__file__).resolve().parents[1] / "src"


def flat(output: str) -> str:
    return " ".join(output.split())


def write_training_file(path: Path, n: int = 60) -> Path:
    lines = ["sentence\tgold"] + [f"a good witty movie number {i}\t1" if i % 2 else f"the worst dull film {i}\t0"
                                  for i in range(n)]
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


def finetune_args(train: Path, output: Path, model: Path, *extra: str) -> list[str]:
    return ["finetune", "--train", str(train), "--output", str(output), "--model", str(model),
            "--text-column", "sentence", "--label-column", "gold", "--label-map", "0=negative",
            "--label-map", "1=positive", "--batch-size", "4", "--validation-fraction", "0.2", *extra]


def test_bad_input_is_one_line_and_a_non_zero_exit(tmp_path, tiny_model_dir):
    train = write_training_file(tmp_path / "train.tsv")
    result = runner.invoke(app, ["finetune", "--train", str(train), "--output", str(tmp_path / "out"),
                                 "--model", str(tiny_model_dir), "--text-column", "sentence"])
    assert result.exit_code == 2
    assert "has no label column 'label'; columns are: sentence, gold" in flat(result.output)
    result = runner.invoke(app, finetune_args(train, tmp_path / "out", tiny_model_dir, "--target-module", "qkv"))
    assert result.exit_code == 2
    assert "target module 'qkv' is not a linear layer of this model" in flat(result.output)
    result = runner.invoke(app, finetune_args(train, tmp_path / "out", tiny_model_dir, "--rank", "0"))
    assert result.exit_code == 2 and "rank must be a whole number >= 1, got 0" in flat(result.output)
    assert not (tmp_path / "out").exists()


def test_score_with_the_adapter_equals_score_with_the_merged_model(tmp_path, tiny_model_dir):
    train = write_training_file(tmp_path / "train.tsv")
    merged = tmp_path / "merged"
    result = runner.invoke(app, finetune_args(train, tmp_path / "adapter", tiny_model_dir, "--max-steps", "4",
                                              "--learning-rate", "0.005", "--eval-interval", "2", "--merge", str(merged)))
    assert result.exit_code == 0, result.output
    assert "fine-tuned 4 step(s)" in flat(result.output) and (merged / "config.json").exists()
    again = runner.invoke(app, finetune_args(train, tmp_path / "adapter", tiny_model_dir, "--max-steps", "4",
                                             "--learning-rate", "0.005", "--eval-interval", "2"))
    assert again.exit_code == 0 and "already holds this run's adapter (4 steps)" in flat(again.output)
    texts = tmp_path / "texts.tsv"
    texts.write_text("text\ngreat film\nawful\nnothing much\n", "utf-8")
    outputs = {}
    for name, options in (("adapter", ["-m", str(tiny_model_dir), "--adapter", str(tmp_path / "adapter")]),
                          ("merged", ["-m", str(merged)])):
        out = tmp_path / f"{name}.jsonl"
        scored = runner.invoke(app, ["score", "-i", str(texts), "-o", str(out), *options])
        assert scored.exit_code == 0, scored.output
        records = [json.loads(line) for line in out.read_text().splitlines() if '"probabilities"' in line]
        outputs[name] = np.array([[r["probabilities"][k] for k in ("positive", "negative")] for r in records])
    assert outputs["adapter"].shape == (3, 2)
    np.testing.assert_allclose(outputs["adapter"], outputs["merged"], atol=1e-5)
    wrong_task = runner.invoke(app, ["inspect", "x", "-m", str(tiny_model_dir), "--adapter", str(tmp_path / "adapter"),
                                     "--task", str(write_other_task(tmp_path))])
    assert wrong_task.exit_code == 2 and "was trained for task 'sentiment'" in flat(wrong_task.output)
    # serve --adapter: a policy certified on the base model's scores is refused, before any model loads.
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(base_model_policy()), "utf-8")
    served = runner.invoke(app, ["serve", "--db", str(tmp_path / "reviews.db"), "--policy", str(policy),
                                 "-m", str(tiny_model_dir), "--adapter", str(tmp_path / "adapter")])
    assert served.exit_code == 2
    assert (f"--adapter {tmp_path / 'adapter'} is not the adapter policy version 1 was certified with (the base "
            "model, no adapter)") in flat(served.output)


def base_model_policy() -> dict:
    """A policy certified on synthetic base-model scores (it records no adapter)."""
    from howsure.decisions.policy_certification import certify_policy

    rng = np.random.default_rng(0)
    raw = rng.dirichlet([0.5, 0.5], size=400)
    truth = [("negative", "positive")[int(i)] for i in raw.argmax(axis=1)]
    task = {"name": "sentiment", "instruction": "Sentiment of: {text}", "labels": {"negative": ["negative"],
                                                                                  "positive": ["positive"]}}
    return certify_policy(truth, raw, target_accuracy=0.8, delta=0.1, labels=["negative", "positive"], task=task,
                          model_id="test-model").to_dict()


def write_other_task(tmp_path: Path) -> Path:
    path = tmp_path / "other.toml"
    path.write_text('name = "other"\ninstruction = "{text}?"\n[labels]\nyes = ["yes"]\nno = ["no"]\n', "utf-8")
    return path


def test_a_killed_run_resumes_to_the_adapter_of_an_uninterrupted_one(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    train = write_training_file(tmp_path / "train.tsv", 80)
    settings = ("--max-steps", "150", "--checkpoint-interval", "5", "--eval-interval", "25", "--patience", "0",
                "--learning-rate", "0.003", "--threads", "1")
    whole = runner.invoke(app, finetune_args(train, tmp_path / "whole", tiny_model_dir, *settings))
    assert whole.exit_code == 0, whole.output
    cut = tmp_path / "cut"
    child = subprocess.Popen([sys.executable, "-m", "howsure", *finetune_args(train, cut, tiny_model_dir, *settings)],
                             env={**os.environ, "PYTHONPATH": str(SRC)}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (cut / "checkpoint" / "trainer_state.pt").exists():
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
        time.sleep(0.3)  # a few steps past a checkpoint
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stderr.close()
    assert not (cut / "howsure-finetune.json").exists(), "the run finished before it was killed"
    checkpoint_step = torch.load(cut / "checkpoint" / "trainer_state.pt", weights_only=True)["state"]["step"]
    resumed = runner.invoke(app, finetune_args(train, cut, tiny_model_dir, *settings))
    assert resumed.exit_code == 0, resumed.output
    assert f"resumed from step {checkpoint_step}" in flat(resumed.output) and 0 < checkpoint_step < 150
    expected, got = load_file(str(tmp_path / "whole" / "adapter_model.safetensors")), load_file(
        str(cut / "adapter_model.safetensors"))
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=0)


def test_training_and_merging_never_overwrite_files_no_fine_tune_wrote(tmp_path, tiny_model_dir):
    train = write_training_file(tmp_path / "train.tsv")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "adapter_config.json").write_text("my own", "utf-8")
    result = runner.invoke(app, finetune_args(train, foreign, tiny_model_dir))
    assert result.exit_code == 2
    assert "holds files that no fine-tune wrote" in result.output
    assert (foreign / "adapter_config.json").read_text("utf-8") == "my own"
    # --merge into someone's folder is refused before any training, their files kept.
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "chapter1.txt").write_text("keep me", "utf-8")
    result = runner.invoke(app, finetune_args(train, tmp_path / "out", tiny_model_dir, "--merge", str(thesis)))
    assert result.exit_code == 2
    assert "holds files that are no merged model from howsure" in result.output
    assert (thesis / "chapter1.txt").read_text("utf-8") == "keep me"
    assert not (tmp_path / "out").exists()


def test_no_resume_with_a_bad_option_keeps_the_previous_adapter(tmp_path, tiny_model_dir):
    train = write_training_file(tmp_path / "train.tsv")
    output = tmp_path / "out"
    assert runner.invoke(app, finetune_args(train, output, tiny_model_dir, "--max-steps", "2")).exit_code == 0
    before = {p.name: p.read_bytes() for p in output.iterdir() if p.is_file()}
    result = runner.invoke(app, finetune_args(train, output, tiny_model_dir, "--no-resume", "--target-module", "qkv"))
    assert result.exit_code == 2
    assert {p.name: p.read_bytes() for p in output.iterdir() if p.is_file()} == before
