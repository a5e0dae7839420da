"""Teaching the model to say it (`howsure finetune-verbal`): the loss is on the "Confidence: p"
target tokens only, the adapter round-trips and loads with --adapter, a resumed run equals an
uninterrupted one, bad records are named, and the before/after scoring flags a flat answer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from howsure.backends.transformers.adapters import METADATA_FILE, adapter_info, load_base_model
from howsure.calibration.fitting import item_hashes
from howsure.cli import app
from howsure.errors import DataError, ResumeError, TaskError
from howsure.finetune import FinetuneConfig, trained_hashes
from howsure.finetune.completion_eval import (
    confidence_after_answer, score_confidences, verbal_outputs,
)
from howsure.finetune.verbal import (
    IGNORE_INDEX, CompletionObjective, CompletionRow, PromptBuilder, VerbalRecords, completion_cross_entropy,
    completion_labels, confidence_text, finetune_verbal, read_verbal_file, verbal_task,
)
from howsure.finetune.data import split_train_validation
from howsure.core.task import load_task

TASK = verbal_task()
SMALL = dict(batch_size=8, eval_interval=2, checkpoint_interval=2, validation_fraction=0.25, patience=0,
             learning_rate=5e-3)


def toy_records(n: int = 40) -> VerbalRecords:
    questions = [f"What is {i} plus {i % 7}?" for i in range(n)]
    answers = [str(i + i % 7) if i % 3 else "twelve" for i in range(n)]
    correct = [bool(i % 3) for i in range(n)]
    return VerbalRecords(questions, answers, correct, [0.8 if c else 0.2 for c in correct])


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# ---------------------------------------------------------------------------------- the loss
def test_only_target_tokens_carry_labels_and_prompt_positions_get_no_gradient():
    rows = [CompletionRow([5, 6, 7], [8, 9]), CompletionRow([5, 6], [10, 11, 12])]
    ids, mask, labels = completion_labels(rows, pad_id=0)
    assert labels.tolist() == [[IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 8, 9],
                               [IGNORE_INDEX, IGNORE_INDEX, 10, 11, 12]]
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 20, requires_grad=True)
    completion_cross_entropy(logits, labels).backward()
    grad = logits.grad.abs().sum(-1)
    # Position t predicts token t + 1: row 0's positions 2, 3 predict 8, 9; row 1's 1, 2, 3.
    assert (grad[0, :2] == 0).all() and (grad[0, 2:4] > 0).all() and (grad[0, 4] == 0)
    assert (grad[1, :1] == 0).all() and (grad[1, 1:4] > 0).all() and (grad[1, 4] == 0)


def test_changing_a_prompt_tokens_target_leaves_loss_and_gradient_unchanged(tiny_model_dir):
    """The labels a prompt position would have (its next token) never enter: training on the same
    inputs with any other next-token labels in the prompt gives the same loss and gradients."""
    tokenizer, model = load_base_model(str(tiny_model_dir))
    builder = PromptBuilder(tokenizer, TASK)
    row = CompletionRow(builder.prompt_ids("What is 2 plus 2?", "4"), builder.target_ids(0.7, 1))
    ids, mask, labels = completion_labels([row], tokenizer.pad_token_id)

    def gradients(the_labels):
        model.zero_grad()
        loss = completion_cross_entropy(model(input_ids=ids, attention_mask=mask).logits, the_labels)
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    loss, grads = gradients(labels)
    tampered = labels.clone()
    tampered[0, 3] = 17  # a prompt position now "targets" a token
    tampered_loss, _ = gradients(tampered)
    assert tampered_loss != loss  # the tampered label would count if it were a target
    masked_again = tampered.clone()
    masked_again[0, :len(row.prompt)] = IGNORE_INDEX
    # and the objective's own loss equals the hand-computed sum of -log p(target token | prefix)
    other_loss, other_grads = gradients(masked_again)
    assert other_loss == loss and all(torch.equal(a, b) for a, b in zip(grads, other_grads))
    with torch.no_grad():
        log_probs = model(input_ids=ids).logits.float().log_softmax(-1)[0]
    start = len(row.prompt)
    by_hand = -np.mean([log_probs[start + k - 1, token].item() for k, token in enumerate(row.target)])
    assert loss == pytest.approx(by_hand, abs=1e-5)


def test_the_target_is_the_confidence_line_and_the_end_of_turn(tiny_model_dir):
    tokenizer, _ = load_base_model(str(tiny_model_dir))
    target = PromptBuilder(tokenizer, TASK).target_ids(0.734, 1)
    assert target[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(target[:-1]) == "\nConfidence: 0.7"
    assert confidence_text(0.734, 2) == "Confidence: 0.73" and confidence_text(1, 1) == "Confidence: 1.0"


# ---------------------------------------------------------------------------------- input
def test_a_record_without_a_target_or_with_one_outside_0_1_is_named(tmp_path):
    good = {"question": "q1", "answer": "a", "correct": True, "target_confidence": 0.4}
    path = write_jsonl(tmp_path / "ok.jsonl", [good, {**good, "question": "q2", "correct": 0, "target_confidence": 1}])
    records = read_verbal_file(path)
    assert records.targets == [0.4, 1.0] and records.correct == [True, False]
    missing = write_jsonl(tmp_path / "missing.jsonl", [good, {k: v for k, v in good.items() if k != "target_confidence"}])
    with pytest.raises(DataError, match=r"line 2: no 'target_confidence' value"):
        read_verbal_file(missing)
    without_column = write_jsonl(tmp_path / "nocol.jsonl", [{k: v for k, v in good.items() if k != "target_confidence"}])
    with pytest.raises(DataError, match=r"no column 'target_confidence'; columns are: question, answer, correct"):
        read_verbal_file(without_column)
    outside = write_jsonl(tmp_path / "outside.jsonl", [good, {**good, "target_confidence": 1.7}])
    with pytest.raises(DataError, match=r"line 2: 'target_confidence' is 1.7, outside \[0, 1\]"):
        read_verbal_file(outside)
    words = write_jsonl(tmp_path / "words.jsonl", [{**good, "probe": "high"}])
    with pytest.raises(DataError, match=r"'probe' is 'high', expected a number"):
        read_verbal_file(words, target_column="probe")
    unsure = write_jsonl(tmp_path / "unsure.jsonl", [{**good, "correct": "maybe"}])
    with pytest.raises(DataError, match=r"'correct' is 'maybe', expected true or false"):
        read_verbal_file(unsure)


def test_the_cli_turns_bad_input_into_one_line_and_exit_2(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"question": "q", "answer": "a", "correct": True,
                                                  "target_confidence": -0.1}])
    result = CliRunner().invoke(app, ["finetune-verbal", "--input", str(path), "--output", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "'target_confidence' is -0.1, outside [0, 1]" in result.output


# ---------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("verbal")
    result = finetune_verbal(toy_records(), output, model=str(tiny_model_dir),
                             config=FinetuneConfig(max_steps=6, **SMALL))
    return output, result


def test_training_holds_out_questions_and_records_the_objective(trained):
    output, result = trained
    metadata = json.loads((output / METADATA_FILE).read_text())
    split = split_train_validation(toy_records().as_labelled(), TASK, 0.25)
    assert split.validation.texts and split.train.texts
    assert set(metadata["split"]["train"]["items"]["hashes"]) == set(item_hashes(split.train.texts, "text"))
    assert trained_hashes(output) == set(item_hashes(toy_records().questions, "text"))
    assert metadata["objective"] == CompletionObjective(toy_records(), TASK, 1).fingerprint()
    assert metadata["task_fingerprint"] == TASK.fingerprint()
    assert [h["step"] for h in metadata["training"]["history"]] == [2, 4, 6]
    # the validation loss is the objective's token mean over the held-out questions only
    assert result.best_validation_loss == min(h["validation_loss"] for h in metadata["training"]["history"])


def test_the_adapter_round_trips_and_loads_with_adapter(trained, tiny_model_dir):
    from peft import PeftModel

    from howsure.backends.transformers import TransformersBackend
    from howsure.finetune.trainer import BEST_DIR

    output, result = trained
    tokenizer, base = load_base_model(str(tiny_model_dir))
    objective = CompletionObjective(toy_records(), TASK, 1)
    objective.prepare(tokenizer, split_train_validation(toy_records().as_labelled(), TASK, 0.25), 256)
    with torch.no_grad():
        base_loss = objective.validation_loss(base, 8, "cpu")
    peft_model = PeftModel.from_pretrained(base, str(output)).eval()
    with torch.no_grad():
        reloaded_loss = objective.validation_loss(peft_model, 8, "cpu")
    assert reloaded_loss == pytest.approx(result.best_validation_loss, abs=1e-5)
    assert abs(reloaded_loss - base_loss) > 1e-3  # the adapter changed what the model says
    backend = TransformersBackend(str(tiny_model_dir), adapter=str(output), threads=1)
    assert adapter_info(output).task_name == "verbal-confidence"
    with torch.no_grad():
        merged_loss = objective.validation_loss(backend.model, 8, "cpu")
    assert merged_loss == pytest.approx(reloaded_loss, abs=1e-4)
    with pytest.raises(TaskError, match="was trained for task 'verbal-confidence'"):
        backend.label_scores(load_task("sentiment"), ["fine"])
    assert (output / BEST_DIR / "adapter_model.safetensors").exists()


def _tensors(directory):
    from safetensors.torch import load_file

    return load_file(str(directory / "adapter_model.safetensors"))


def test_an_interrupted_run_resumes_to_the_same_adapter(tiny_model_dir, tmp_path):
    config = FinetuneConfig(max_steps=5, **SMALL)  # checkpoints at 2 and 4
    whole = finetune_verbal(toy_records(), tmp_path / "whole", model=str(tiny_model_dir), config=config)

    def crash(report):
        if report.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune_verbal(toy_records(), tmp_path / "cut", model=str(tiny_model_dir), config=config, on_step=crash)
    resumed = finetune_verbal(toy_records(), tmp_path / "cut", model=str(tiny_model_dir), config=config)
    assert resumed.resumed_from == 2 and resumed.steps == 5
    expected, got = _tensors(tmp_path / "whole"), _tensors(tmp_path / "cut")
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=0)
    assert resumed.metadata["training"]["history"] == whole.metadata["training"]["history"]
    other_targets = toy_records()
    other_targets.targets[0] = 0.5  # same questions, another target: another run, not a resume
    with pytest.raises(ResumeError, match="holds an adapter from another run"):
        finetune_verbal(other_targets, tmp_path / "cut", model=str(tiny_model_dir), config=config)


# ---------------------------------------------------------------------------------- before / after
@pytest.mark.parametrize("text, expected", [
    ("\nConfidence: 0.8", 0.8), ("Confidence: 80%", 0.8), ("confidence = .25", 0.25), ("Confidence: 70", 0.7),
    ("I am 90% sure", 0.9), ("Confidence: 1.0", 1.0), ("no idea", None), ("Confidence: 250", None),
])
def test_verbal_confidence_parsing(text, expected):
    assert confidence_after_answer(text) == (None if expected is None else pytest.approx(expected))


def test_a_flat_confidence_is_flagged_and_gets_no_ranking_credit():
    rng = np.random.default_rng(0)
    correct = rng.random(300) < 0.3
    flat = score_confidences(correct, [0.5] * 300)
    assert flat.auroc == pytest.approx(0.5) and flat.distinct_share == pytest.approx(1 / 300)
    assert any("nearly flat" in f for f in flat.flags)
    informative = score_confidences(correct, [0.8 if c else 0.2 for c in correct] [:-1] + [None])
    assert informative.auroc == pytest.approx(1.0) and informative.n_readable == 299
    assert any("1 of 300 outputs state no readable confidence" in f for f in informative.flags)
    assert not any("nearly flat" in f for f in informative.flags)  # two values, neither said 90 % of the time
    mostly = score_confidences(correct, [0.9 if i < 5 else 0.5 for i in range(300)])
    assert any("nearly flat: 0.5 for 295 of 300 answers (2 distinct value(s))" in f for f in mostly.flags)
    nothing = score_confidences(correct, [None] * 300)
    assert nothing.auroc is None and nothing.n_readable == 0


def test_generation_continues_after_the_fixed_answer(tiny_model_dir):
    """`verbal_outputs` (AnswerGenerator.continue_ids, batched and left-padded) says what the
    plain transformers `generate()` of each prompt alone says: the old private loop's output."""
    from howsure.answers.generation import AnswerGenerator
    from howsure.backends.transformers.backend import TransformersBackend

    records = toy_records(6)
    generator = AnswerGenerator(TransformersBackend(str(tiny_model_dir), threads=1), max_new_tokens=4, stop=(),
                                batch_size=4)
    outputs = verbal_outputs(generator, records, TASK)
    tokenizer, base = load_base_model(str(tiny_model_dir))
    builder = PromptBuilder(tokenizer, TASK)
    expected = []
    for q, a in zip(records.questions, records.answers):
        ids = torch.tensor([builder.prompt_ids(q, a)])
        with torch.no_grad():
            out = base.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=4,
                                pad_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
        expected.append(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip())
    assert len({*expected}) >= 2 and outputs == expected


def test_the_command_trains_and_a_rerun_has_nothing_to_do(tiny_model_dir, tmp_path):
    records = toy_records()
    path = write_jsonl(tmp_path / "qa.jsonl", [
        {"question": q, "answer": a, "correct": c, "probe": t}
        for q, a, c, t in zip(records.questions, records.answers, records.correct, records.targets)])
    command = ["finetune-verbal", "--input", str(path), "--output", str(tmp_path / "out"), "--model",
               str(tiny_model_dir), "--target-column", "probe", "--max-steps", "2", "--batch-size", "8",
               "--eval-interval", "1", "--validation-fraction", "0.25"]
    first = CliRunner().invoke(app, command)
    assert first.exit_code == 0, first.output
    assert "in 2 step(s); best validation loss" in " ".join(first.output.split())  # rich wraps long lines
    assert adapter_info(tmp_path / "out").metadata["data"]["source"] == str(path)
    again = CliRunner().invoke(app, command)
    assert again.exit_code == 0 and "already holds this run's adapter (2 steps)" in " ".join(again.output.split())
